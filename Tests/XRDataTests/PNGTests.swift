import Foundation
import XCTest
import XRData
import XRTensor
import TestSupport

final class PNGTests: XCTestCase {
    /// Every PNG flavour decodes to the values the fixture script put in (v / (2^depth - 1)).
    func testDecodesAllFlavours() throws {
        let ref = try SafeTensorsFile(contentsOf: Fixtures.url("preprocess/expected.safetensors"))
        for (name, channels, depth) in [("gray16", 1, 16), ("gray8", 1, 8), ("rgb8", 3, 8), ("gray_alpha16", 1, 16),
                                        ("palette", 3, 8), ("gray1", 1, 8)] {
            let img = try PNGCodec.read(Fixtures.url("preprocess/\(name).png"))
            let want = try ref.tensor("decoded.\(name)")
            XCTAssertEqual([img.channels, img.height, img.width], want.shape, name)
            XCTAssertEqual(img.channels, channels, name)
            XCTAssertEqual(img.bitDepth, depth, name)
            for (a, b) in zip(img.pixels, want.scalars) { XCTAssertEqual(a, b, accuracy: 1e-7, name) }
        }
    }

    func testSixteenBitKeepsFullPrecision() throws {
        let img = try PNGCodec.read(Fixtures.url("preprocess/gray16.png"))
        let distinct = Set(img.pixels.map { Int(($0 * 65535).rounded()) })
        XCTAssertGreaterThan(distinct.count, 1000, "16-bit values must not be squeezed into 8 bits")
    }

    func testRoundTripEncodings() throws {
        let w = 5, h = 3
        let g16: [UInt16] = (0..<(w * h)).map { UInt16($0 * 4000) }
        let d = try PNGCodec.decode(try PNGCodec.encodeGray16(width: w, height: h, pixels: g16), source: "mem")
        XCTAssertEqual(d.pixels.map { UInt16(($0 * 65535).rounded()) }, g16)
        let rgb: [UInt8] = (0..<(w * h * 3)).map { UInt8($0 * 5) }
        let r = try PNGCodec.decode(try PNGCodec.encodeRGB8(width: w, height: h, pixels: rgb), source: "mem")
        XCTAssertEqual(r.channels, 3)
        XCTAssertEqual(r.pixels[0 * w * h + 1], Float(rgb[3]) / 255)  // R of pixel 1
        XCTAssertEqual(r.pixels[2 * w * h + 1], Float(rgb[5]) / 255)  // B of pixel 1
    }

    // MARK: bad input

    func expectError(_ data: Data, field: String?, contains text: String, maxPixels: Int = 100_000_000,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try PNGCodec.decode(data, source: "scan.png", maxPixels: maxPixels), file: file, line: line) { e in
            guard let x = e as? XRError else { return XCTFail("not an XRError: \(e)", file: file, line: line) }
            XCTAssertEqual(x.file, "scan.png", file: file, line: line)
            if let field { XCTAssertEqual(x.field, field, "\(x)", file: file, line: line) }
            XCTAssertTrue(x.description.contains(text), "\(x)", file: file, line: line)
        }
    }

    func testEmptyFile() { expectError(Data(), field: "signature", contains: "empty file") }

    func testNotAPNG() { expectError(Data("GIF89a this is not a png".utf8), field: "signature", contains: "not a PNG") }

    func testTruncated() throws {
        let full = try Data(contentsOf: Fixtures.url("preprocess/gray16.png"))
        expectError(full.prefix(full.count / 2), field: "IDAT", contains: "cannot decode")
        expectError(full.prefix(20), field: "IHDR", contains: "cannot decode")
    }

    func testCorruptChecksum() throws {
        var d = try Data(contentsOf: Fixtures.url("preprocess/gray8.png"))
        d[d.count - 20] ^= 0xFF  // inside the last IDAT / its CRC
        expectError(d, field: nil, contains: "cannot decode")
    }

    func testAbsurdDimensionsRejectedBeforeAllocation() {
        expectError(pngWithHeader(width: 100_000, height: 100_000), field: "IHDR", contains: "exceeds the limit")
    }

    func testOnePixelImage() throws {
        let d = try PNGCodec.encodeGray8(width: 1, height: 1, pixels: [200])
        let img = try PNGCodec.decode(d, source: "one.png")
        XCTAssertEqual(img.pixels, [Float(200) / 255])
        // A 1×1 image still preprocesses to the model size (resized, then cropped).
        let x = try Preprocessing.imagenet(size: 28).apply(img)
        XCTAssertEqual(x.count, 3 * 28 * 28)
        XCTAssertTrue(x.allSatisfy(\.isFinite))
    }

    /// A PNG with a valid IHDR (correct CRC) declaring the given size, and no pixel data.
    func pngWithHeader(width: UInt32, height: UInt32) -> Data {
        var d = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var ihdr = Data("IHDR".utf8)
        for v in [width, height] { ihdr.append(contentsOf: [UInt8(v >> 24), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)]) }
        ihdr.append(contentsOf: [8, 0, 0, 0, 0])
        d.append(contentsOf: [0, 0, 0, 13])
        d.append(ihdr)
        let c = crc32(ihdr)
        d.append(contentsOf: [UInt8(c >> 24), UInt8(c >> 16 & 255), UInt8(c >> 8 & 255), UInt8(c & 255)])
        return d
    }

    func crc32(_ data: Data) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in data {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0xEDB8_8320 : c >> 1 }
        }
        return ~c
    }
}
