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

    func testLargeIntegersRefused() throws {
        var header = "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }"
        header += String(repeating: " ", count: (64 - (10 + header.utf8.count + 1) % 64) % 64) + "\n"
        var d = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        withUnsafeBytes(of: UInt16(header.utf8.count).littleEndian) { d.append(contentsOf: $0) }
        d.append(contentsOf: Array(header.utf8))
        for v: Int64 in [5, 1 << 40] { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        XCTAssertThrowsError(try NPY.decode(d, source: "ids.npy")) { e in
            XCTAssertEqual((e as? XRError)?.field, "data")
            XCTAssertEqual((e as? XRError)?.file, "ids.npy")
        }
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

    /// A header shape whose product overflows Int (it used to trap in `shape.reduce(1, *)`), one whose
    /// byte size overflows, and one that is merely larger than the data: each a named error.
    func testHostileShapesAreRefused() throws {
        func npy(_ shape: String, descr: String = "<f4", payload: Int = 960) -> Data {
            var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape), }"
            header += String(repeating: " ", count: (64 - (10 + header.utf8.count + 1) % 64) % 64) + "\n"
            var d = Data([0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xff), UInt8(header.utf8.count >> 8)])
            d.append(contentsOf: Array(header.utf8))
            d.append(Data(count: payload))
            return d
        }
        let cases: [(String, String, String)] = [
            ("(240, 9223372036854775807)", "<f4", "too large"),
            ("(9223372036854775807, 2)", "<f4", "too large"),
            ("(2305843009213693952,)", "<f8", "too large"),
            ("(1152921504606846976, 4)", "|u1", "needs 4611686018427387904"),
            ("(240, 1000000)", "<f4", "needs 960000000")
        ]
        for (shape, descr, fragment) in cases {
            XCTAssertThrowsError(try NPY.decode(npy(shape, descr: descr), source: "hostile.npy"), shape) { e in
                XCTAssertEqual((e as? XRError)?.file, "hostile.npy")
                XCTAssertTrue("\(e)".contains(fragment), "\(e)")
            }
        }
        // A zero dimension after large ones is a valid, empty array.
        XCTAssertEqual(try NPY.decode(npy("(0, 9223372036854775807)"), source: "empty.npy").scalars.count, 0)
        XCTAssertNil(Limits.elementCount([Int.max, 2]))
        XCTAssertEqual(Limits.elementCount([Int.max, 2, 0]), 0)
        XCTAssertNil(Limits.byteCount([Int.max / 2], bytesPerElement: 4))
    }

    /// A header whose shape value has a ')' before its '(' (found by Fuzz/ npy): the shape text
    /// was sliced from '(' to the first ')' in the header, a reversed range that trapped.
    func testShapeWithCloseBeforeOpenIsRefused() throws {
        let found = Data(
            base64Encoded:
                "k05VTVBZAQB2AHsnZGVzY3InOiAnPGYzJywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogejQsIDUpLCB9ICAgICAgICAgICCTbHNlLCAnc2hhcGUnOiAoOSwgMTEpLCB9ICAgICAgICAgICAgICAgICAgICAgICAgICAg"
        )!
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': 4), (5,), }"
        var small = Data([0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count), 0])
        small.append(contentsOf: Array(header.utf8))
        for d in [found, small] {
            XCTAssertThrowsError(try NPY.decode(d, source: "fuzz.npy")) { e in
                XCTAssertEqual((e as? XRError)?.file, "fuzz.npy")
            }
        }
    }
}
