import Foundation
import XCTest
import XRTensor
import TestSupport

final class SafeTensorsTests: XCTestCase {
    /// Files written by the Python `safetensors` library in F32, F16 and BF16 read back to the
    /// exact f32 values PyTorch holds after the same storage round trip.
    func testReadsReferenceFilesInAllFloatDtypes() throws {
        let expected = try SafeTensorsFile(contentsOf: Fixtures.url("tensor/expected_f32.safetensors"))
        for dt in ["F32", "F16", "BF16"] {
            let f = try SafeTensorsFile(contentsOf: Fixtures.url("tensor/\(dt.lowercased()).safetensors"))
            XCTAssertEqual(f.names, ["a", "b", "nested.c"])
            XCTAssertEqual(f.metadata["note"], "xrlab fixture")
            XCTAssertEqual(f.info("a")?.dtype.rawValue, dt)
            for n in f.names {
                let got = try f.tensor(n), want = try expected.tensor("\(dt).\(n)")
                XCTAssertEqual(got.shape, want.shape, "\(dt)/\(n)")
                XCTAssertEqual(got.scalars, want.scalars, "\(dt)/\(n) must be exact")
            }
        }
    }

    func testRoundTripAllWriteDtypes() throws {
        var rng = XRRandom(seed: 9)
        let t = Tensor(shape: [4, 3], scalars: (0..<12).map { _ in rng.nextGaussian() * 10 })
        let dir = Fixtures.tempDir()
        for dt in [SafeTensorsDType.F32, .F16, .BF16] {
            let u = dir.appendingPathComponent("\(dt.rawValue).safetensors")
            try SafeTensors.write(
                [("w", t), ("scalar", Tensor(shape: [], scalars: [3]))], dtype: dt,
                metadata: ["k": "v \"quoted\""], to: u)
            let f = try SafeTensorsFile(contentsOf: u)
            XCTAssertEqual(f.metadata["k"], "v \"quoted\"")
            let back = try f.tensor("w")
            XCTAssertEqual(back.shape, [4, 3])
            let tol: Float = dt == .F32 ? 0 : (dt == .F16 ? 1e-2 : 8e-2)
            for (a, b) in zip(back.scalars, t.scalars) { XCTAssertEqual(a, b, accuracy: abs(b) * tol) }
            XCTAssertEqual(try f.tensor("scalar").scalars, [3])
        }
    }

    func testBF16RoundsToNearestEven() {
        // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to even (1.0).
        XCTAssertEqual(SafeTensors.bf16Bits(1 + 1.0 / 256), 0x3F80)
        XCTAssertEqual(SafeTensors.bf16Bits(1 + 3.0 / 256), 0x3F82)
        XCTAssertEqual(SafeTensors.bf16Bits(.nan) & 0x7F80, 0x7F80)
    }

    // MARK: bad input

    private func valid() throws -> Data {
        try SafeTensors.encode([
            ("x", Tensor(shape: [2, 2], scalars: [1, 2, 3, 4])),
            ("y", Tensor(shape: [3], scalars: [5, 6, 7]))
        ])
    }

    /// Write `data` as a file and expect opening it to fail with a message naming the file and `field`.
    private func expectFailure(
        _ data: Data, field: String?, contains text: String,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        let u = Fixtures.tempDir().appendingPathComponent("bad.safetensors")
        XCTAssertNoThrow(try data.write(to: u))
        XCTAssertThrowsError(try SafeTensorsFile(contentsOf: u), file: file, line: line) { error in
            guard let e = error as? XRError else { return XCTFail("not an XRError: \(error)", file: file, line: line) }
            XCTAssertEqual(e.file, u.path, file: file, line: line)
            if let field { XCTAssertEqual(e.field, field, "\(e)", file: file, line: line) }
            XCTAssertTrue(e.description.contains(text), "\(e)", file: file, line: line)
        }
    }

    /// Replace the JSON header of a valid file (keeping the data section).
    private func withHeader(_ json: String, data: Data) -> Data {
        var h = Array(json.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        let n = Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian })
        var out = Data()
        withUnsafeBytes(of: UInt64(h.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: h)
        out.append(data.dropFirst(8 + n))
        return out
    }

    func testEmptyAndTinyFiles() throws {
        expectFailure(Data(), field: "header length", contains: "too short")
        expectFailure(Data([1, 2, 3]), field: "header length", contains: "too short")
    }

    func testHeaderLengthPastEOF() throws {
        var d = try valid()
        d.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { Data($0) })
        expectFailure(d, field: "header length", contains: "past the end")
    }

    func testTruncatedFile() throws {
        let d = try valid()
        expectFailure(d.prefix(d.count - 5), field: "y", contains: "outside")
    }

    func testHeaderNotJSON() throws {
        expectFailure(withHeader("{not json", data: try valid()), field: "header", contains: "not valid JSON")
        expectFailure(withHeader("[1,2]", data: try valid()), field: "header", contains: "not a JSON object")
    }

    func testUnknownDtype() throws {
        let h = #"{"x":{"dtype":"F8_E4M3","shape":[2,2],"data_offsets":[0,4]}}"#
        expectFailure(withHeader(h, data: try valid()), field: "x", contains: "unknown dtype 'F8_E4M3'")
    }

    func testOffsetsOutOfRange() throws {
        let h = #"{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[1000,1016]}}"#
        expectFailure(withHeader(h, data: try valid()), field: "x", contains: "outside")
    }

    func testDecreasingOffsets() throws {
        let h = #"{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[16,0]}}"#
        expectFailure(withHeader(h, data: try valid()), field: "x", contains: "increasing")
    }

    func testShapeSizeMismatch() throws {
        let h = #"{"x":{"dtype":"F32","shape":[3,2],"data_offsets":[0,16]}}"#
        expectFailure(withHeader(h, data: try valid()), field: "x", contains: "needs 24 bytes")
    }

    /// Element count fits Int but its byte size does not: used to trap in the size check.
    func testShapeWhoseByteSizeOverflows() throws {
        let h = #"{"x":{"dtype":"F32","shape":[4503599627370496,1024],"data_offsets":[0,16]}}"#
        expectFailure(withHeader(h, data: try valid()), field: "x", contains: "too large")
        let h2 = #"{"x":{"dtype":"F64","shape":[4503599627370496,4503599627370496,4503599627370496],"data_offsets":[0,16]}}"#
        expectFailure(withHeader(h2, data: try valid()), field: "x", contains: "too large")
    }

    func testNegativeDimension() throws {
        let h = #"{"x":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]}}"#
        expectFailure(withHeader(h, data: try valid()), field: "x", contains: "negative")
    }

    func testOverlappingTensors() throws {
        let h = #"{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"y":{"dtype":"F32","shape":[3],"data_offsets":[8,20]}}"#
        expectFailure(withHeader(h, data: try valid()), field: "y", contains: "overlaps 'x'")
    }

    func testMissingTensorNamesFileAndKey() throws {
        let u = Fixtures.url("tensor/f32.safetensors")
        let f = try SafeTensorsFile(contentsOf: u)
        XCTAssertThrowsError(try f.tensor("nope")) { e in
            XCTAssertEqual((e as? XRError)?.field, "nope")
            XCTAssertEqual((e as? XRError)?.file, u.path)
        }
    }

    /// Integer tensors read as f32 only where f32 is exact; larger values are refused, not rounded.
    func testLargeIntegersRefused() throws {
        func file(_ dtype: String, _ bytes: [UInt8]) -> Data {
            let h = "{\"x\":{\"dtype\":\"\(dtype)\",\"shape\":[1],\"data_offsets\":[0,\(bytes.count)]}}"
            var hb = Array(h.utf8); while hb.count % 8 != 0 { hb.append(0x20) }
            var d = Data()
            withUnsafeBytes(of: UInt64(hb.count).littleEndian) { d.append(contentsOf: $0) }
            d.append(contentsOf: hb); d.append(contentsOf: bytes)
            return d
        }
        let dir = Fixtures.tempDir()
        let ok = dir.appendingPathComponent("ok.safetensors")
        try file("I32", withUnsafeBytes(of: Int32(1 << 24).littleEndian) { Array($0) }).write(to: ok)
        XCTAssertEqual(try SafeTensorsFile(contentsOf: ok).tensor("x").scalars, [16_777_216])
        let big = dir.appendingPathComponent("big.safetensors")
        try file("I64", withUnsafeBytes(of: Int64(16_777_217).littleEndian) { Array($0) }).write(to: big)
        XCTAssertThrowsError(try SafeTensorsFile(contentsOf: big).tensor("x")) { e in
            XCTAssertEqual((e as? XRError)?.field, "x")
            XCTAssertTrue("\(e)".contains("16777217"), "\(e)")
        }
    }

    func testMissingFile() {
        XCTAssertThrowsError(try SafeTensorsFile(contentsOf: URL(fileURLWithPath: "/nonexistent/x.safetensors"))) { e in
            XCTAssertEqual((e as? XRError)?.file, "/nonexistent/x.safetensors")
        }
    }
}

/// fp16 → f32 in integer arithmetic, for all 65536 bit patterns, against the definition
/// (±m·2⁻²⁴ for subnormals, ±(1024 + m)·2^(e−25) otherwise) evaluated in Double. Swift's own
/// Float16 conversion gives zeros for subnormals once a kernel has set flush-to-zero on the thread.
final class HalfConversionTests: XCTestCase {
    func testEveryHalfBitPatternConvertsExactly() {
        var wrong: [UInt16] = []
        for b in 0...UInt16.max {
            let sign: Double = b & 0x8000 != 0 ? -1 : 1
            let e = Int((b >> 10) & 0x1F), m = Double(b & 0x3FF)
            let got = floatFromHalf(bits: b)
            if e == 0x1F {
                if m == 0 ? got != Float(sign * .infinity) : !got.isNaN { wrong.append(b) }
                continue
            }
            let want = Float(e == 0 ? sign * m * 0x1p-24 : sign * (1024 + m) * pow(2, Double(e - 25)))
            if got.bitPattern != want.bitPattern { wrong.append(b) }
        }
        XCTAssertEqual(wrong.count, 0, "first wrong patterns: \(wrong.prefix(5).map { String($0, radix: 16) })")
        XCTAssertEqual(floatFromHalf(bits: 0x0001), 0x1p-24)
        XCTAssertEqual(floatFromHalf(bits: 0x8200), -0x1p-15)
        XCTAssertEqual(floatFromHalf(bits: 0x3C00), 1)
    }
}
