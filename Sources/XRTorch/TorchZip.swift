// The zip container of `torch.save` (PyTorch ≥ 1.6), read with libarchive: `<prefix>/data.pkl`,
// `<prefix>/byteorder`, `<prefix>/data/<key>` storages, and a few version records. The central
// directory is read (seekable zip support), so a truncated file is refused rather than read in part.
import Foundation
import CArchive
import XRTensor

/// Where a checkpoint's bytes come from.
enum ZipSource {
    case file(URL)
    case memory(Data)
}

/// Reads the entries of a checkpoint zip within size caps.
struct TorchZip {
    let source: ZipSource
    let path: String

    /// Largest `data.pkl` accepted (a state dict's pickle is a few MB).
    static let maxPickleBytes = 512 << 20
    static let maxEntries = 1_000_000
    /// torch.save stores entries uncompressed; a compressed archive may expand at most this many
    /// times its own size (plus 1 MiB) in one pass, so a small crafted file cannot make xrlab
    /// allocate gigabytes.
    static let maxExpansion = 16

    /// The archive's size in bytes.
    var archiveBytes: Int {
        switch source {
        case .file(let url): return ((try? FileManager.default.attributesOfItem(atPath: url.path)[.size]) as? NSNumber)?.intValue ?? 0
        case .memory(let data): return data.count
        }
    }

    /// Visit every regular entry once, in archive order. `body` gets the entry name and a reader
    /// that returns at most `limit` bytes of the entry (`nil`: skip the data).
    func forEach(_ body: (String, (Int) throws -> [UInt8]) throws -> Void) throws {
        switch source {
        case .file(let url):
            try withArchive(open: { archive_read_open_filename($0, url.path, 1 << 16) }, body)
        case .memory(let data):
            try data.withUnsafeBytes { raw in
                try withArchive(open: { archive_read_open_memory($0, raw.baseAddress, raw.count) }, body)
            }
        }
    }

    private func withArchive(open: (OpaquePointer) -> Int32, _ body: (String, (Int) throws -> [UInt8]) throws -> Void) throws {
        guard let a = archive_read_new() else { throw XRError("libarchive: out of memory", file: path) }
        defer { archive_read_free(a) }
        func message() -> String { archive_error_string(a).map { String(cString: $0) } ?? "unknown error" }
        _ = archive_read_support_format_zip_seekable(a)
        guard open(a) == ARCHIVE_OK else {
            throw XRError(
                "not a readable zip archive (\(message()))", file: path,
                hint: "the file is truncated, corrupt, or not a torch.save checkpoint")
        }
        var entry: OpaquePointer?
        var count = 0
        let (scaled, overflow) = archiveBytes.multipliedReportingOverflow(by: Self.maxExpansion)
        var budget = overflow ? Int.max : scaled + (1 << 20)
        while true {
            let r = archive_read_next_header(a, &entry)
            if r == ARCHIVE_EOF { break }
            guard r == ARCHIVE_OK || r == ARCHIVE_WARN, let e = entry else {
                throw XRError("zip archive is damaged (\(message()))", file: path, hint: "the file is truncated or corrupt")
            }
            count += 1
            guard count <= Self.maxEntries else { throw XRError("zip archive has more than \(Self.maxEntries) entries", file: path) }
            guard let cname = archive_entry_pathname(e) else { continue }
            let name = String(cString: cname)
            // Directories and links carry no data a checkpoint uses.
            guard archive_entry_filetype(e) == 0o100000 else { continue }
            try body(name) { limit in
                var out: [UInt8] = []
                var chunk = [UInt8](repeating: 0, count: 1 << 16)
                while out.count < limit {
                    let want = min(chunk.count, limit - out.count)
                    let n = chunk.withUnsafeMutableBytes { archive_read_data(a, $0.baseAddress, want) }
                    if n == 0 { break }
                    guard n > 0 else {
                        throw XRError(
                            "cannot read zip entry (\(message()))", file: path, field: name,
                            hint: "the file is truncated or corrupt")
                    }
                    budget -= n
                    guard budget >= 0 else {
                        throw XRError(
                            "the archive expands to more than \(Self.maxExpansion) times its size", file: path, field: name,
                            hint: "torch.save writes uncompressed archives; this one is not a plain checkpoint")
                    }
                    out += chunk[0..<n]
                }
                return out
            }
        }
    }
}
