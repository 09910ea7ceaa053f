import XCTest
import Foundation
import XRTensor
@testable import XRPackage
import TestSupport

/// A hand-made ustar writer, so tests can build archives xrlab itself would never write:
/// unsafe names, links, devices, lying sizes.
struct RawTar {
    var bytes: [UInt8] = []

    mutating func add(_ name: String, type: Character = "0", data: [UInt8] = [], declaredSize: Int? = nil, link: String = "") {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ s: String, _ at: Int, _ len: Int) { for (i, b) in Array(s.utf8).prefix(len).enumerated() { h[at + i] = b } }
        func octal(_ v: Int, _ at: Int, _ len: Int) {
            put(
                String(String(v, radix: 8).reversed()).padding(toLength: len - 1, withPad: "0", startingAt: 0).reversed().map(String.init).joined(), at, len - 1
            )
        }
        put(name, 0, 100)
        octal(0o644, 100, 8); octal(0, 108, 8); octal(0, 116, 8)
        octal(declaredSize ?? data.count, 124, 12); octal(0, 136, 12)
        h[156] = type.asciiValue!
        put(link, 157, 100)
        put("ustar", 257, 6); put("00", 263, 2)
        for i in 148..<156 { h[i] = 32 }
        let sum = h.reduce(0) { $0 + Int($1) }
        put(String(format: "%06o", sum), 148, 6); h[154] = 0; h[155] = 32
        bytes += h
        bytes += data
        bytes += [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
    }

    func finished() -> Data { Data(bytes + [UInt8](repeating: 0, count: 1024)) }
}

final class ArchiveTests: XCTestCase {
    func write(_ tar: RawTar) throws -> URL {
        let u = Fixtures.tempDir("xrlab-archive").appendingPathComponent("a.tar")
        try tar.finished().write(to: u)
        return u
    }

    func assertRefused(_ tar: RawTar, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let u = try write(tar)
        XCTAssertThrowsError(try TarArchive.read(u), file: file, line: line) { e in
            let m = "\(e)"
            XCTAssertTrue(m.contains(fragment), "expected '\(fragment)' in: \(m)", file: file, line: line)
            XCTAssertTrue(m.contains(u.path), "error should name the archive: \(m)", file: file, line: line)
        }
    }

    func testRoundTripSortedAndReproducible() throws {
        let dir = Fixtures.tempDir("xrlab-archive")
        let entries = [
            ArchiveEntry(name: "b/x.bin", data: Data((0..<5000).map { UInt8($0 % 251) })),
            ArchiveEntry(name: "a.txt", data: Data("hello".utf8)), ArchiveEntry(name: "empty", data: Data())
        ]
        for c in [TarArchive.Compression.gzip, .zstd, .none] {
            let u1 = dir.appendingPathComponent("1-\(c).tar"), u2 = dir.appendingPathComponent("2-\(c).tar")
            try TarArchive.write(entries, to: u1, compression: c, mtime: 1_700_000_000)
            Thread.sleep(forTimeInterval: 1.1) // a timestamp in the gzip header would now differ
            try TarArchive.write(entries.reversed(), to: u2, compression: c, mtime: 1_700_000_000)
            XCTAssertEqual(try Data(contentsOf: u1), try Data(contentsOf: u2), "\(c): same entries must give identical bytes")
            let back = try TarArchive.read(u1)
            XCTAssertEqual(back.map(\.name), ["a.txt", "b/x.bin", "empty"])
            XCTAssertEqual(back, entries.sorted { $0.name < $1.name })
            if c == .none { break }
        }
    }

    func testWriterRefusesUnsafeAndDuplicateNames() {
        let u = Fixtures.tempDir("xrlab-archive").appendingPathComponent("w.tar")
        for bad in ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", ""] {
            XCTAssertThrowsError(try TarArchive.write([ArchiveEntry(name: bad, data: Data())], to: u), bad)
        }
        XCTAssertThrowsError(try TarArchive.write([ArchiveEntry(name: "a", data: Data()), ArchiveEntry(name: "a", data: Data())], to: u))
        XCTAssertFalse(FileManager.default.fileExists(atPath: u.path), "nothing written on refusal")
    }

    func testAbsolutePathRefused() throws {
        var t = RawTar(); t.add("/tmp/evil", data: Array("x".utf8)); try assertRefused(t, "absolute path")
    }

    func testDotDotRefused() throws {
        var t = RawTar(); t.add("ok/../../evil", data: Array("x".utf8)); try assertRefused(t, "'..' component")
    }

    func testSymlinkRefused() throws {
        var t = RawTar(); t.add("link", type: "2", link: "/etc/passwd"); try assertRefused(t, "symbolic link")
    }

    func testHardLinkRefused() throws {
        var t = RawTar(); t.add("a", data: Array("x".utf8)); t.add("b", type: "1", link: "a"); try assertRefused(t, "hard link")
    }

    func testDeviceAndFIFORefused() throws {
        var t = RawTar(); t.add("dev", type: "3"); try assertRefused(t, "device")
        var f = RawTar(); f.add("fifo", type: "6"); try assertRefused(f, "FIFO")
    }

    func testDirectoryEntryRefused() throws {
        var t = RawTar(); t.add("dir", type: "5"); try assertRefused(t, "directory entries are not allowed")
        var s = RawTar(); s.add("dir/", type: "5"); try assertRefused(s, "unsafe entry name 'dir/'")
    }

    func testDuplicateNamesRefused() throws {
        var t = RawTar(); t.add("manifest.json", data: Array("{}".utf8)); t.add("manifest.json", data: Array("{}".utf8))
        try assertRefused(t, "duplicate entry name")
    }

    func testEntryLargerThanDeclaredSizeRefused() throws {
        // 600 bytes of data behind a header that declares 10: the surplus is read as a header.
        var t = RawTar(); t.add("weights", data: [UInt8](repeating: 0x41, count: 600), declaredSize: 10)
        try assertRefused(t, "corrupt or truncated")
    }

    func testEntryOverSizeCapRefused() throws {
        var t = RawTar(); t.add("big", data: [UInt8](repeating: 1, count: 4096))
        let u = try write(t)
        var limits = TarArchive.Limits()
        limits.maxEntryBytes = 1000
        XCTAssertThrowsError(try TarArchive.read(u, limits: limits)) { XCTAssertTrue("\($0)".contains("over the 1000-byte cap"), "\($0)") }
        limits = TarArchive.Limits()
        limits.maxTotalBytes = 2000
        var two = RawTar(); two.add("a", data: [UInt8](repeating: 1, count: 1500)); two.add("b", data: [UInt8](repeating: 1, count: 1500))
        XCTAssertThrowsError(try TarArchive.read(try write(two), limits: limits)) { XCTAssertTrue("\($0)".contains("cap"), "\($0)") }
    }

    func testTruncatedAndGarbageRefused() throws {
        let dir = Fixtures.tempDir("xrlab-archive")
        let u = dir.appendingPathComponent("ok.tar.gz")
        try TarArchive.write([ArchiveEntry(name: "w", data: Data((0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7919) }))], to: u)
        let full = try Data(contentsOf: u)
        let cut = dir.appendingPathComponent("cut.tar.gz")
        try full.prefix(full.count / 2).write(to: cut)
        XCTAssertThrowsError(try TarArchive.read(cut)) { XCTAssertTrue("\($0)".contains("truncated"), "\($0)") }
        var raw = RawTar(); raw.add("w", data: [UInt8](repeating: 7, count: 3000))
        let rawCut = dir.appendingPathComponent("cut.tar")
        try raw.finished().prefix(1200).write(to: rawCut)
        XCTAssertThrowsError(try TarArchive.read(rawCut)) { XCTAssertTrue("\($0)".contains("truncated"), "\($0)") }
        let junk = dir.appendingPathComponent("junk.xrpkg")
        try Data("this is not an archive at all, just some text that is long enough".utf8).write(to: junk)
        XCTAssertThrowsError(try TarArchive.read(junk)) { XCTAssertTrue("\($0)".contains(junk.path), "\($0)") }
        XCTAssertThrowsError(try TarArchive.read(dir.appendingPathComponent("missing.xrpkg"))) { XCTAssertTrue("\($0)".contains("not found"), "\($0)") }
    }
}
