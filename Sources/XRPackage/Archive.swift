// Tar archives through libarchive: a reproducible writer (sorted entries, fixed times and owners,
// gzip without a timestamp) and a defensive streaming reader that refuses anything but plain
// files with safe relative names, within size caps, and never writes to disk itself.
import Foundation
import CArchive
import XRTensor

/// One file inside an archive.
public struct ArchiveEntry: Sendable, Equatable {
    public var name: String
    public var data: Data
    public init(name: String, data: Data) {
        self.name = name
        self.data = data
    }
}

// libarchive's AE_IF* file types (macros with casts, not imported into Swift).
let fileTypeRegular: UInt32 = 0o100000
let fileTypeSymlink: UInt32 = 0o120000
let fileTypeDirectory: UInt32 = 0o040000

public enum TarArchive {
    /// Compression of written archives.
    public enum Compression: String, Sendable { case gzip, zstd, none }

    /// Largest entry read (4 GiB covers merged ViT-L weights), largest archive total and most
    /// entries (defaults in `XRTensor.Limits`).
    public struct Limits: Sendable {
        public var maxEntryBytes: Int64 = XRTensor.Limits.packageEntryBytes
        public var maxTotalBytes: Int64 = XRTensor.Limits.packageBytes
        public var maxEntries = XRTensor.Limits.packageEntries
        public init() {}
    }

    /// Write `entries` as a tar archive at `url` (atomically: a temp file renamed into place).
    /// Entries are sorted by name; every entry has mode 0644, uid/gid 0, no owner names and the
    /// modification time `mtime`, so the same entries give a byte-identical file.
    public static func write(_ entries: [ArchiveEntry], to url: URL, compression: Compression = .gzip, mtime: Int64 = 0) throws {
        var seen = Set<String>()
        for e in entries {
            try checkName(e.name, archive: url.path)
            guard seen.insert(e.name).inserted else { throw XRError("duplicate entry name", file: url.path, field: e.name) }
        }
        let tmp = url.deletingLastPathComponent().appendingPathComponent(
            ".\(url.lastPathComponent).tmp-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileManager.default.removeItem(at: tmp) }
        guard let a = archive_write_new() else { throw XRError("libarchive: out of memory", file: url.path) }
        defer { archive_write_free(a) }
        func check(_ r: Int32, _ what: String) throws {
            if r != ARCHIVE_OK {
                throw XRError("libarchive: \(what): \((archive_error_string(a).map { String(cString: $0) } ?? "unknown error"))", file: url.path)
            }
        }
        try check(archive_write_set_format_ustar(a), "ustar format")
        switch compression {
        case .gzip:
            try check(archive_write_add_filter_gzip(a), "gzip filter")
            // No timestamp or file name in the gzip header: reproducible output.
            _ = archive_write_set_filter_option(a, "gzip", "timestamp", nil)
            _ = archive_write_set_filter_option(a, "gzip", "compression-level", "6")
        case .zstd:
            try check(archive_write_add_filter_zstd(a), "zstd filter")
        case .none:
            break
        }
        // Pad the last block to the tar record size libarchive uses by default (10240 bytes).
        try check(archive_write_open_filename(a, tmp.path), "open")
        for e in entries.sorted(by: { $0.name < $1.name }) {
            guard let entry = archive_entry_new() else { throw XRError("libarchive: out of memory", file: url.path) }
            defer { archive_entry_free(entry) }
            archive_entry_set_pathname(entry, e.name)
            archive_entry_set_filetype(entry, fileTypeRegular)
            archive_entry_set_perm(entry, 0o644)
            archive_entry_set_size(entry, Int64(e.data.count))
            archive_entry_set_uid(entry, 0)
            archive_entry_set_gid(entry, 0)
            archive_entry_set_mtime(entry, time_t(mtime), 0)
            try check(archive_write_header(a, entry), "header of \(e.name)")
            try e.data.withUnsafeBytes { raw in
                var off = 0
                while off < raw.count {
                    let n = archive_write_data(a, raw.baseAddress! + off, raw.count - off)
                    if n <= 0 {
                        throw XRError(
                            "libarchive: writing \(e.name): \((archive_error_string(a).map { String(cString: $0) } ?? "unknown error"))", file: url.path)
                    }
                    off += n
                }
            }
        }
        try check(archive_write_close(a), "close")
        if FileManager.default.fileExists(atPath: url.path) {
            _ = try FileManager.default.replaceItemAt(url, withItemAt: tmp)
        } else {
            try FileManager.default.moveItem(at: tmp, to: url)
        }
    }

    /// Names must be relative paths of plain components: no leading `/`, no `.` or `..`, no empty
    /// component, no backslash, no control characters.
    static func checkName(_ name: String, archive: String) throws {
        func bad(_ why: String) -> XRError { XRError("unsafe entry name '\(name)': \(why)", file: archive, field: "entry") }
        if name.isEmpty { throw bad("empty") }
        if name.hasPrefix("/") { throw bad("absolute path") }
        if name.contains("\\") { throw bad("backslash") }
        if name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) { throw bad("control character") }
        for c in name.split(separator: "/", omittingEmptySubsequences: false) {
            if c == ".." { throw bad("'..' component") }
            if c == "." || c.isEmpty { throw bad("empty or '.' component") }
        }
    }

    /// Read every entry of the archive at `url` into memory, refusing unsafe content (see
    /// `stream`). For small archives and tests; packages are read with `stream`.
    public static func read(_ url: URL, limits: Limits = Limits()) throws -> [ArchiveEntry] {
        var entries: [ArchiveEntry] = []
        try stream(url, limits: limits) { name, _ in
            entries.append(ArchiveEntry(name: name, data: Data()))
            let i = entries.count - 1
            return { entries[i].data.append(contentsOf: $0) }
        }
        return entries
    }

    /// Bytes handed to an entry's consumer at a time.
    static let chunkBytes = 1 << 20

    /// Stream the archive at `url` entry by entry, refusing unsafe content: absolute or `..`
    /// names, symlinks, hard links, devices, FIFOs, directories, duplicate names, entries over
    /// the size caps, truncated or corrupt data. For each entry `visit(name, declaredSize)` is
    /// called after its header is checked (it may throw to refuse the entry before any of its
    /// data is decompressed) and returns the consumer of the entry's bytes, which receives them
    /// in chunks of at most 1 MiB; nothing but one chunk is held in memory here.
    public static func stream(
        _ url: URL, limits: Limits = Limits(),
        visit: (_ name: String, _ size: Int64) throws -> (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        let path = url.path
        guard FileManager.default.fileExists(atPath: path) else { throw XRError("archive not found", file: path) }
        guard let a = archive_read_new() else { throw XRError("libarchive: out of memory", file: path) }
        defer { archive_read_free(a) }
        archive_read_support_format_tar(a)
        archive_read_support_filter_gzip(a)
        archive_read_support_filter_zstd(a)
        archive_read_support_filter_none(a)
        func message() -> String { (archive_error_string(a).map { String(cString: $0) } ?? "unknown error") }
        guard archive_read_open_filename(a, path, 65536) == ARCHIVE_OK else {
            throw XRError("not a readable tar archive (\(message()))", file: path, hint: "xrlab packages are gzip- or zstd-compressed tar files")
        }
        var names = Set<String>()
        var last: String? = nil
        var total: Int64 = 0
        var entry: OpaquePointer? = nil
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let r = archive_read_next_header(a, &entry)
            if r == ARCHIVE_EOF { break }
            guard r == ARCHIVE_OK || r == ARCHIVE_WARN, let entry else {
                throw XRError("corrupt or truncated archive (\(message()))", file: path, field: last.map { "after entry \($0)" } ?? "first entry")
            }
            let name = archive_entry_pathname(entry).map { String(cString: $0) } ?? ""
            try checkName(name, archive: path)
            if archive_entry_hardlink(entry) != nil {
                throw XRError("hard link entries are not allowed", file: path, field: name)
            }
            let type = archive_entry_filetype(entry)
            switch type {
            case fileTypeRegular: break
            case fileTypeSymlink: throw XRError("symbolic link entries are not allowed", file: path, field: name)
            case fileTypeDirectory: throw XRError("directory entries are not allowed (packages hold files only)", file: path, field: name)
            default: throw XRError("device, FIFO or socket entries are not allowed (type \(String(type, radix: 8)))", file: path, field: name)
            }
            guard names.insert(name).inserted else { throw XRError("duplicate entry name", file: path, field: name) }
            guard names.count <= limits.maxEntries else { throw XRError("more than \(limits.maxEntries) entries", file: path) }
            guard archive_entry_size_is_set(entry) != 0 else { throw XRError("entry without a declared size", file: path, field: name) }
            let size = archive_entry_size(entry)
            guard size >= 0, size <= limits.maxEntryBytes else {
                throw XRError("entry declares \(size) bytes, over the \(limits.maxEntryBytes)-byte cap", file: path, field: name)
            }
            total += size
            guard total <= limits.maxTotalBytes else { throw XRError("archive content over the \(limits.maxTotalBytes)-byte cap", file: path, field: name) }
            last = name
            let consume = try visit(name, size)
            var got: Int64 = 0
            while got < size {
                let n = archive_read_data(a, buffer.baseAddress, Int(min(Int64(chunkBytes), size - got)))
                guard n > 0 else {
                    throw XRError("entry data truncated or corrupt: read \(got) of \(size) declared bytes (\(message()))", file: path, field: name)
                }
                try consume(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                got += Int64(n)
            }
            // Nothing may follow the declared size within the entry.
            let extra = archive_read_data(a, buffer.baseAddress, 1)
            if extra != 0 { throw XRError("entry holds more data than its declared \(size) bytes", file: path, field: name) }
        }
    }
}
