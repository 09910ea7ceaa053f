import XCTest
import Foundation
import CArchive
import XRTensor
import XRModels
@testable import XRPackage
import TestSupport

/// Decompression bombs: packages of a few hundred KB on disk whose entries expand to gigabytes of
/// zeros. `verify` used to read every entry whole into memory (7.4 GB for two 3.5 GiB entries);
/// now an entry the manifest does not account for is refused from its header.
final class PackageBombTests: XCTestCase {
    /// Write `entries` (in this order) as a zstd tar; an entry with `zeros` streams that many zero
    /// bytes in 1 MiB chunks, so nothing large is ever in memory or on disk uncompressed.
    static func writeBomb(_ url: URL, _ entries: [(name: String, data: Data, zeros: Int64)]) throws {
        let a = try XCTUnwrap(archive_write_new())
        defer { archive_write_free(a) }
        XCTAssertEqual(archive_write_set_format_ustar(a), ARCHIVE_OK)
        XCTAssertEqual(archive_write_add_filter_zstd(a), ARCHIVE_OK)
        XCTAssertEqual(archive_write_open_filename(a, url.path), ARCHIVE_OK)
        let chunk = [UInt8](repeating: 0, count: 1 << 20)
        for e in entries {
            let entry = try XCTUnwrap(archive_entry_new())
            defer { archive_entry_free(entry) }
            archive_entry_set_pathname(entry, e.name)
            archive_entry_set_filetype(entry, 0o100000)
            archive_entry_set_perm(entry, 0o644)
            archive_entry_set_size(entry, Int64(e.data.count) + e.zeros)
            XCTAssertEqual(archive_write_header(a, entry), ARCHIVE_OK)
            if !e.data.isEmpty { e.data.withUnsafeBytes { _ = archive_write_data(a, $0.baseAddress, $0.count) } }
            var left = e.zeros
            while left > 0 {
                let n = Int(min(left, Int64(chunk.count)))
                let w = chunk.withUnsafeBytes { archive_write_data(a, $0.baseAddress, n) }
                XCTAssertEqual(w, n)
                left -= Int64(n)
            }
        }
        XCTAssertEqual(archive_write_close(a), ARCHIVE_OK)
    }

    /// A real probe package's entries (SHA256SUMS and manifest.json first, as xrlab writes them).
    func packageEntries(_ dir: URL) throws -> [ArchiveEntry] {
        let run = try PackageTests.runStudy(dir)
        var o = PackOptions(name: "site-model", registry: dir.appendingPathComponent("registry"))
        o.version = "1.0.0"
        o.quiet = true
        return try TarArchive.read(Packer.pack(runDirectory: run, options: o).archive)
    }

    func assertRefused(_ url: URL, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try PackageReader.verify(url, base: nil), file: file, line: line) { e in
            for f in fragments + [url.path] { XCTAssertTrue("\(e)".contains(f), "\(e) lacks \(f)", file: file, line: line) }
        }
    }

    func testDecompressionBombsAreRefusedFromTheirHeaders() throws {
        let dir = Fixtures.tempDir("xrlab-bomb")
        let real = try packageEntries(dir).map { ($0.name, $0.data, Int64(0)) }
        // The reproducer: two 3.5 GiB entries of zeros after a valid package (about 240 KB on disk).
        let bomb = dir.appendingPathComponent("bomb.xrpkg")
        let big: Int64 = 3584 << 20
        try Self.writeBomb(bomb, real + [("weights/merged.0.safetensors", Data(), big), ("weights/merged.1.safetensors", Data(), big)])
        let onDisk = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: bomb.path)[.size] as? Int)
        XCTAssertLessThan(onDisk, 1 << 20, "the bomb is small on disk")
        assertRefused(bomb, ["weights/merged.0.safetensors", "not listed in SHA256SUMS"])
        // Under --trust unlisted entries are left for the signature to name, but the manifest's
        // size caps still refuse them from their headers, before any of their data is inflated.
        XCTAssertThrowsError(try PackageReader.open(bomb, trust: [SigningKey.generate().publicKey])) { e in
            for f in ["weights/merged.0.safetensors", "more than the", "the manifest accounts for", bomb.path] {
                XCTAssertTrue("\(e)".contains(f), "\(e) lacks \(f)")
            }
        }

        // Listed in SHA256SUMS (and so checked by hash only at the end): still refused from the
        // header, for being larger than this probe package's manifest accounts for.
        var sums = String(decoding: try XCTUnwrap(real.first { $0.0 == "SHA256SUMS" }).1, as: UTF8.self)
        sums += String(repeating: "0", count: 64) + "  weights/head.safetensors.bak\n"
        let listed = real.map { $0.0 == "SHA256SUMS" ? ($0.0, Data(sums.utf8), $0.2) : $0 }
        let bomb2 = dir.appendingPathComponent("bomb2.xrpkg")
        try Self.writeBomb(bomb2, listed + [("weights/head.safetensors.bak", Data(), 256 << 20)])
        assertRefused(bomb2, ["weights/head.safetensors.bak", "more than the \(Limits.packageInMemoryEntryBytes) bytes the manifest accounts for"])

        // Before manifest.json (so before any size is known): at most the in-memory cap.
        let bomb3 = dir.appendingPathComponent("bomb3.xrpkg")
        try Self.writeBomb(bomb3, [("0.bin", Data(), 256 << 20)] + real)
        assertRefused(bomb3, ["0.bin", "entries before manifest.json may hold at most \(Limits.packageInMemoryEntryBytes) bytes"])

        // The head weights may not exceed what the heads' rows, classes and dimension need.
        let head = try XCTUnwrap(real.first { $0.0 == "weights/head.safetensors" })
        let bomb4 = dir.appendingPathComponent("bomb4.xrpkg")
        try Self.writeBomb(bomb4, real.filter { $0.0 != head.0 } + [(head.0, head.1, 256 << 20)])
        assertRefused(bomb4, ["weights/head.safetensors", "the manifest accounts for"])

        // unpack refuses the same way and leaves nothing behind.
        let dest = dir.appendingPathComponent("out/model")
        XCTAssertThrowsError(try PackageReader.unpack(bomb, to: dest))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("out").path), [], "no partial folders")
    }

    /// A manifest claiming a billion training rows allows a 4 GiB head: weights over the in-memory cap
    /// (64 MiB; 1 MiB here, to keep the test fast) stream to a temporary file, but their safetensors header is checked as soon as it arrives, so zeros are
    /// refused after eight bytes; a well-formed large head is read from disk and checked as usual.
    func testLargeHeadWeightsStreamAndAreCheckedEarly() throws {
        let dir = Fixtures.tempDir("xrlab-bomb-head")
        var entries = try packageEntries(dir)
        func index(_ n: String) throws -> Int { try XCTUnwrap(entries.firstIndex { $0.name == n }) }
        var manifest = try XCTUnwrap(JSONSerialization.jsonObject(with: entries[index("manifest.json")].data) as? [String: Any])
        manifest["heads"] = (manifest["heads"] as? [[String: Any]] ?? []).map {
            var h = $0; h["n_train"] = 1_000_000_000; return h
        }
        entries[try index("manifest.json")].data = try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys])
        func write(head: Data, zeros: Int64, to url: URL) throws {
            var hasher = SHA256()
            hasher.update(head)
            hasher.update(Data(count: Int(zeros)))
            var sums = ""
            for e in entries.sorted(by: { $0.name < $1.name }) where e.name != "SHA256SUMS" {
                sums += (e.name == "weights/head.safetensors" ? hexString(hasher.finalize()) : SHA256.hex(e.data)) + "  \(e.name)\n"
            }
            var out = entries.filter { $0.name != "weights/head.safetensors" }.map { ($0.name, $0.data, Int64(0)) }
            out[try XCTUnwrap(out.firstIndex { $0.0 == "SHA256SUMS" })].1 = Data(sums.utf8)
            try Self.writeBomb(url, out + [("weights/head.safetensors", head, zeros)])
        }
        func assertRefused(_ url: URL, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try PackageReader.open(url, inMemoryBytes: 1 << 20), file: file, line: line) { e in
                for f in fragments + [url.path] { XCTAssertTrue("\(e)".contains(f), "\(e) lacks \(f)", file: file, line: line) }
            }
        }
        let zeros = dir.appendingPathComponent("zeros.xrpkg")
        try write(head: Data(), zeros: 4 << 20, to: zeros)
        assertRefused(zeros, ["weights/head.safetensors", "header length 0 does not fit"])
        // A valid header and 4 MiB of data: read through the temporary file, refused for its tensors.
        var header = Array(#"{"x":{"dtype":"F32","shape":[1048576],"data_offsets":[0,4194304]}}"#.utf8)
        header += [UInt8](repeating: 32, count: (8 - header.count % 8) % 8)
        var head = Data()
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { head.append(contentsOf: $0) }
        head.append(contentsOf: header)
        let big = dir.appendingPathComponent("big.xrpkg")
        try write(head: head, zeros: 4 << 20, to: big)
        assertRefused(big, ["weights/head.safetensors", "heads.0."])
    }

    /// The size caps the manifest implies: a ViT-B's parameters for tuned heads and merged
    /// weights, rows × dimension for probe heads; arithmetic saturates instead of trapping.
    func testSizeCapsFollowTheManifest() throws {
        let vitB = ViTConfig(imageSize: 224, patchSize: 16, dim: 768, depth: 12, heads: 12)
        let params = PackageSizeCaps.parameters(vitB)
        XCTAssertGreaterThanOrEqual(params, 85_798_656, "at least ViT-B/16's encoder parameters (85,798,656 without a classifier)")
        XCTAssertLessThan(params, 90_000_000)
        var huge = vitB
        huge.dim = Int.max / 2
        XCTAssertEqual(PackageSizeCaps.parameters(huge), .max)
    }
}
