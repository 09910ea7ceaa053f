import Foundation
import XCTest
import XRTensor
import TestSupport

final class NPYTests: XCTestCase {
    struct Expected: Decodable { var sha256: [String: String]; var f2_values: [Float] }

    func testReadsNumpyFiles() throws {
        let ref = try SafeTensorsFile(contentsOf: Fixtures.url("tensor/f32.safetensors")).tensor("a")
        let f4 = try NPY.read(Fixtures.url("tensor/f4.npy"))
        XCTAssertEqual(f4, ref)
        let f8 = try NPY.read(Fixtures.url("tensor/f8.npy"))
        XCTAssertEqual(f8, ref)
        let exp = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: Fixtures.url("tensor/expected.json")))
        XCTAssertEqual(try NPY.read(Fixtures.url("tensor/f2.npy")).scalars, exp.f2_values)
        XCTAssertEqual(try NPY.read(Fixtures.url("tensor/vec.npy")).shape, [7])
    }

    func testRoundTrip() throws {
        let t = Tensor(shape: [2, 3, 1], scalars: [1, -2, 3.5, 4, 5, 6])
        let u = Fixtures.tempDir().appendingPathComponent("t.npy")
        try NPY.write(t, to: u)
        XCTAssertEqual(try NPY.read(u), t)
        let d = NPY.encode(t)
        XCTAssertEqual((d.count - d.count % 64) % 64, 0)
    }

    func testFortranOrderRefused() {
        XCTAssertThrowsError(try NPY.read(Fixtures.url("tensor/fortran.npy"))) { e in
            XCTAssertEqual((e as? XRError)?.field, "fortran_order")
        }
    }

    func testBadMagicAndTruncation() throws {
        let dir = Fixtures.tempDir()
        let bad = dir.appendingPathComponent("bad.npy")
        try Data("hello world, not numpy".utf8).write(to: bad)
        XCTAssertThrowsError(try NPY.read(bad)) { e in XCTAssertEqual((e as? XRError)?.field, "magic") }
        let full = NPY.encode(Tensor(shape: [10], scalars: [Float](repeating: 1, count: 10)))
        let trunc = dir.appendingPathComponent("trunc.npy")
        try full.prefix(full.count - 8).write(to: trunc)
        XCTAssertThrowsError(try NPY.read(trunc)) { e in
            XCTAssertEqual((e as? XRError)?.field, "data")
            XCTAssertEqual((e as? XRError)?.file, trunc.path)
        }
    }
}
