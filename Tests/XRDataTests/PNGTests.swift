import Foundation
import XCTest
import XRData
import XRTensor
import TestSupport

final class PNGTests: XCTestCase {
    struct Meta: Decodable { var depth: [String: Int] }

    /// Every PNG flavour decodes to exactly the samples the fixture script wrote (checked there
    /// with pypng's own decoder), mapped to v / (2^depth - 1).
    func testDecodesAllFlavoursExactly() throws {
        let ref = try SafeTensorsFile(contentsOf: Fixtures.url("preprocess/expected.safetensors"))
        let depth = try JSONDecoder().decode(Meta.self, from: Data(contentsOf: Fixtures.url("preprocess/cases.json"))).depth
        let expect: [(String, Int, Int)] = [ // name, channels, decoded bit depth
            ("gray16", 1, 16), ("gray8", 1, 8), ("rgb8", 3, 8), ("gray_alpha16", 1, 16), ("palette", 3, 8),
            ("gray1", 1, 8), ("gray2", 1, 8), ("gray4", 1, 8), ("gray_alpha8", 1, 8), ("rgba8", 3, 8), ("rgb16", 3, 16),
            ("palette4_trns", 3, 8), ("gray16_interlaced", 1, 16), ("rgb8_interlaced", 3, 8), ("one_pixel", 1, 8)
        ]
        XCTAssertEqual(Set(expect.map(\.0)), Set(depth.keys), "every fixture image is checked")
        for (name, channels, bits) in expect {
            let img = try PNGCodec.read(Fixtures.url("preprocess/\(name).png"))
            let raw = try ref.tensor("raw.\(name)")
            XCTAssertEqual([img.channels, img.height, img.width], raw.shape, name)
            XCTAssertEqual(img.channels, channels, name)
            XCTAssertEqual(img.bitDepth, bits, name)
            let srcMax = Float((1 << (depth[name] ?? 0)) - 1)
            var bad = 0
            for (i, v) in raw.scalars.enumerated() where img.pixels[i] != v / srcMax {
                if bad == 0 { XCTFail("\(name): pixel \(i) is \(img.pixels[i]), want \(v)/\(srcMax)") }
                bad += 1
            }
            XCTAssertEqual(bad, 0, "\(name): \(bad) pixels differ")
            XCTAssertEqual(try ref.tensor("decoded.\(name)").scalars.count, img.pixels.count, name)
        }
    }

    func testSixteenBitKeepsEverySample() throws {
        let img = try PNGCodec.read(Fixtures.url("preprocess/gray16.png"))
        let raw = try SafeTensorsFile(contentsOf: Fixtures.url("preprocess/expected.safetensors")).tensor("raw.gray16")
        XCTAssertEqual(img.samples16, raw.scalars.map { UInt16($0) }, "16-bit samples survive decode exactly")
        XCTAssertGreaterThan(Set(img.samples16).count, 1000, "16-bit values must not be squeezed into 8 bits")
    }

    func testRoundTripEncodings() throws {
        let w = 5, h = 3
        let g8: [UInt8] = (0..<(w * h)).map { UInt8($0 * 17) }
        XCTAssertEqual(
            try PNGCodec.decode(PNGCodec.encodeGray8(width: w, height: h, pixels: g8), source: "mem").samples16,
            g8.map(UInt16.init))
        let g16: [UInt16] = (0..<(w * h)).map { UInt16($0 * 4000 + 7) }
        let d = try PNGCodec.decode(try PNGCodec.encodeGray16(width: w, height: h, pixels: g16), source: "mem")
        XCTAssertEqual(d.bitDepth, 16)
        XCTAssertEqual(d.samples16, g16)
        let extremes: [UInt16] = [0, 1, 255, 256, 32767, 32768, 65534, 65535]
        XCTAssertEqual(try PNGCodec.decode(PNGCodec.encodeGray16(width: 8, height: 1, pixels: extremes), source: "mem").samples16, extremes)
        // Interleaved RGB(A) in, planar out (alpha dropped).
        let rgb: [UInt8] = (0..<(w * h * 3)).map { UInt8($0 * 5) }
        let r = try PNGCodec.decode(try PNGCodec.encodeRGB8(width: w, height: h, pixels: rgb), source: "mem")
        XCTAssertEqual(r.channels, 3)
        let planar = (0..<3).flatMap { k in (0..<(w * h)).map { UInt16(rgb[$0 * 3 + k]) } }
        XCTAssertEqual(r.samples16, planar)
        var rgba: [UInt8] = []
        for i in 0..<(w * h) { rgba += [UInt8(i), UInt8(2 * i), UInt8(3 * i), UInt8(255 - i)] }
        let a = try PNGCodec.decode(try PNGCodec.encodeRGBA8(width: w, height: h, pixels: rgba), source: "mem")
        XCTAssertEqual(a.channels, 3)
        XCTAssertEqual(a.samples16, (0..<3).flatMap { k in (0..<(w * h)).map { UInt16(rgba[$0 * 4 + k]) } })
    }

    func testEncodeRejectsWrongSampleCounts() {
        for (w, h, n) in [(5, 3, 14), (0, 3, 0), (-1, 3, 3), (Int.max / 2, 4, 1)] {
            XCTAssertThrowsError(try PNGCodec.encodeGray8(width: w, height: h, pixels: [UInt8](repeating: 0, count: n))) { e in
                XCTAssertEqual((e as? XRError)?.field, "pixels", "\(e)")
            }
        }
        XCTAssertThrowsError(try PNGCodec.encodeRGB8(width: 2, height: 2, pixels: [UInt8](repeating: 0, count: 4)))
    }

    func testWriteIsAtomicAndReadable() throws {
        let dir = Fixtures.tempDir()
        let url = dir.appendingPathComponent("plot.png")
        let rgb = [UInt8](repeating: 128, count: 4 * 3 * 3)
        try PNGCodec.write(try PNGCodec.encodeRGB8(width: 4, height: 3, pixels: rgb), to: url)
        try PNGCodec.write(try PNGCodec.encodeRGB8(width: 4, height: 3, pixels: rgb.map { $0 / 2 }), to: url) // replaces
        XCTAssertEqual(try PNGCodec.read(url).samples16.first, 64)
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        XCTAssertEqual(left, ["plot.png"], "no temporary files are left behind")
    }

    // MARK: bad input

    func expectError(
        _ data: Data, field: String?, contains text: String, maxPixels: Int = PNGCodec.defaultMaxPixels,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertThrowsError(try PNGCodec.decode(data, source: "scan.png", maxPixels: maxPixels), file: file, line: line) { e in
            guard let x = e as? XRError else { return XCTFail("not an XRError: \(e)", file: file, line: line) }
            XCTAssertEqual(x.file, "scan.png", file: file, line: line)
            if let field { XCTAssertEqual(x.field, field, "\(x)", file: file, line: line) }
            XCTAssertTrue(x.description.contains(text), "\(x)", file: file, line: line)
        }
    }

    func testEmptyFile() { expectError(Data(), field: "signature", contains: "empty file") }

    func testNotAPNG() {
        expectError(Data("GIF89a this is not a png".utf8), field: "signature", contains: "not a PNG")
        expectError(Data([0x89, 0x50]), field: "signature", contains: "not a PNG")
    }

    func testMissingFileNamesIt() {
        let u = Fixtures.tempDir().appendingPathComponent("absent.png")
        XCTAssertThrowsError(try PNGCodec.read(u)) { XCTAssertEqual(($0 as? XRError)?.file, u.path) }
    }

    func testTruncated() throws {
        let full = try Data(contentsOf: Fixtures.url("preprocess/gray16.png"))
        expectError(full.prefix(full.count / 2), field: "IDAT", contains: "truncated")
        expectError(full.prefix(20), field: "IHDR", contains: "truncated")
        expectError(full.prefix(full.count - 12), field: nil, contains: "cannot decode") // IEND cut off
    }

    func testCorruptHeaderChecksum() throws {
        var d = try Data(contentsOf: Fixtures.url("preprocess/gray8.png"))
        d[29] ^= 0xFF // IHDR CRC (bytes 29...32)
        expectError(d, field: "IHDR", contains: "CRC")
    }

    func testCorruptDataChecksum() throws {
        var d = try Data(contentsOf: Fixtures.url("preprocess/gray8.png"))
        let idat = try XCTUnwrap(chunkOffset(d, "IDAT"))
        let len = Int(d[idat - 4]) << 24 | Int(d[idat - 3]) << 16 | Int(d[idat - 2]) << 8 | Int(d[idat - 1])
        d[idat + 4 + len] ^= 0x01 // first CRC byte of the IDAT chunk
        expectError(d, field: "IDAT", contains: "CRC")
    }

    func testCorruptCompressedDataWithValidChecksum() throws {
        var d = try Data(contentsOf: Fixtures.url("preprocess/gray8.png"))
        let idat = try XCTUnwrap(chunkOffset(d, "IDAT"))
        let len = Int(d[idat - 4]) << 24 | Int(d[idat - 3]) << 16 | Int(d[idat - 2]) << 8 | Int(d[idat - 1])
        for i in (idat + 4 + 2)..<(idat + 4 + min(len, 40)) { d[i] = 0xFF } // garbage deflate stream
        let c = crc32(d[idat..<(idat + 4 + len)])
        d.replaceSubrange((idat + 4 + len)..<(idat + 8 + len), with: bigEndian(c))
        expectError(d, field: "IDAT", contains: "cannot decode")
    }

    func testAbsurdDimensionsRejectedBeforeAllocation() {
        expectError(pngWithHeader(width: 100_000, height: 100_000), field: "IHDR", contains: "exceeds the limit")
        expectError(pngWithHeader(width: 2000, height: 2000), field: "IHDR", contains: "exceeds the limit", maxPixels: 1_000_000)
    }

    /// A 67-byte file whose sPLT chunk declares 1.95 GB (found by Fuzz/ png): libpng read such
    /// text and palette-suggestion chunks into a zeroed buffer of the declared length, 1.9 GB of
    /// memory before it noticed the file ends. Those chunks are now skipped unread. Every chunk
    /// type read that way (iTXt, pCAL, sCAL, sPLT, tEXt, zTXt) is tried at the largest length.
    func testHugeAncillaryChunkIsSkippedNotAllocated() throws {
        let found = Data(base64Encoded: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACnRJTUV4nGM4AQAAygDJmcpdfnRFWHRzUExUrkJggg==")!
        var inputs = [found]
        for type in ["iTXt", "pCAL", "sCAL", "sPLT", "tEXt", "zTXt"] {
            var d = pngWithHeader(width: 1, height: 1)
            d.append(bigEndian(0x7FFF_FFFF))
            d.append(Data(type.utf8))
            d.append(Data("xx".utf8))
            inputs.append(d)
        }
        for d in inputs {
            let growth = peakMemoryGrowthMB { expectError(d, field: nil, contains: "truncated") }
            guard let growth else { throw XCTSkip("peak RSS cannot be reset here (/proc/self/clear_refs)") }
            XCTAssertLessThan(growth, 64, "peak memory rose \(growth) MB decoding a \(d.count)-byte file")
        }
    }

    func testZeroSizeRejected() {
        expectError(pngWithHeader(width: 0, height: 10), field: "IHDR", contains: "zero width or height")
        expectError(pngWithHeader(width: 10, height: 0), field: "IHDR", contains: "zero width or height")
    }

    /// A 1×1 image decodes; preprocessing to a model size upsamples it to a constant image
    /// (see PreprocessingTests for the torch parity of that case).
    func testOnePixelImage() throws {
        let d = try PNGCodec.encodeGray8(width: 1, height: 1, pixels: [200])
        let img = try PNGCodec.decode(d, source: "one.png")
        XCTAssertEqual(img.pixels, [Float(200) / 255])
        let x = try Preprocessing.imagenet(size: 28).apply(img)
        XCTAssertEqual(x.count, 3 * 28 * 28)
        XCTAssertEqual(x[0], (Float(200) / 255 - 0.485) / 0.229, accuracy: 1e-5)
        XCTAssertEqual(Set(x[0..<(28 * 28)]).count, 1, "a constant image stays constant")
    }

    // MARK: helpers

    /// Offset of a chunk's type field.
    func chunkOffset(_ d: Data, _ type: String) -> Int? {
        var p = 8
        let bytes = [UInt8](d)
        while p + 8 <= bytes.count {
            let len = Int(bytes[p]) << 24 | Int(bytes[p + 1]) << 16 | Int(bytes[p + 2]) << 8 | Int(bytes[p + 3])
            if String(decoding: bytes[(p + 4)..<(p + 8)], as: UTF8.self) == type { return p + 4 }
            p += 12 + len
        }
        return nil
    }

    /// A PNG with a valid IHDR (correct CRC) declaring the given size, and no pixel data.
    func pngWithHeader(width: UInt32, height: UInt32) -> Data {
        var d = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var ihdr = Data("IHDR".utf8)
        ihdr.append(bigEndian(width))
        ihdr.append(bigEndian(height))
        ihdr.append(contentsOf: [8, 0, 0, 0, 0])
        d.append(contentsOf: [0, 0, 0, 13])
        d.append(ihdr)
        d.append(bigEndian(crc32(ihdr)))
        return d
    }

    func bigEndian(_ v: UInt32) -> Data { Data([UInt8(v >> 24), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)]) }

    func crc32(_ data: Data) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in data {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0xEDB8_8320 : c >> 1 }
        }
        return ~c
    }
}
