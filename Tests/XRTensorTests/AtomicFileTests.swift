import Foundation
import XCTest
import XRTensor
import TestSupport

final class AtomicFileTests: XCTestCase {
    func testFailedWriteLeavesNothing() throws {
        let dir = Fixtures.tempDir()
        let out = dir.appendingPathComponent("out.bin")
        struct Boom: Error {}
        XCTAssertThrowsError(
            try AtomicFile.write(to: out) { tmp in
                try Data([1, 2, 3]).write(to: tmp)
                throw Boom()
            })
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        XCTAssertEqual(left, [], "a failed write must leave no file behind")
    }

    func testWriteReplaces() throws {
        let out = Fixtures.tempDir().appendingPathComponent("sub/out.txt")
        try AtomicFile.write("one", to: out)
        try AtomicFile.write("two", to: out)
        XCTAssertEqual(try String(contentsOf: out, encoding: .utf8), "two")
    }
}
