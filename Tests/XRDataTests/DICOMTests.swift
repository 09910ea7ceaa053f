import Foundation
import XCTest
import XRData
import XRTensor
import TestSupport

final class DICOMTests: XCTestCase {
    func sample(_ syntax: String, bits: Int = 12, signed: Bool = false, photometric: String = "MONOCHROME2") -> DICOMWriter {
        var w = DICOMWriter()
        w.syntax = syntax
        w.bitsStored = bits
        w.signed = signed
        w.photometric = photometric
        w.pixels = signed ? [-2048, -1, 0, 1, 100, 2047, -100, 5, 6, 7, 8, 9] : [0, 1, 2, 100, 1000, 4095, 7, 8, 9, 10, 11, 12]
        w.extra = [
            (0x0008, 0x0060, "CS", "CR"), (0x0010, 0x0010, "PN", "PLANTED^NAME^XR7"), (0x0010, 0x0020, "LO", "PLANTEDID-4471"),
            (0x0010, 0x0040, "CS", "F"), (0x0018, 0x0015, "CS", "CHEST"), (0x0018, 0x5101, "CS", "PA")
        ]
        return w
    }

    func testUncompressedTransferSyntaxesDecodeExactly() throws {
        for ts in [
            TransferSyntax.explicitLittle, TransferSyntax.implicitLittle, TransferSyntax.explicitBig,
            TransferSyntax.rle, TransferSyntax.deflatedExplicitLittle
        ] {
            let w = sample(ts)
            let f = try DICOMFile.parse(w.data(), source: "t-\(ts).dcm")
            XCTAssertEqual(f.modality, "CR", ts)
            XCTAssertEqual(f.bodyPart, "CHEST", ts)
            XCTAssertEqual(f.viewPosition, "PA", ts)
            XCTAssertEqual(f.patientSex, "F", ts)
            let img = try f.storedImage()
            XCTAssertEqual([img.height, img.width], [3, 4])
            XCTAssertEqual(img.pixels.map { Int(($0 * 4095).rounded()) }, w.pixels, ts)
        }
    }

    func testMonochrome1IsInvertedAndSignedIsOffset() throws {
        let m1 = try DICOMFile.parse(sample(TransferSyntax.explicitLittle, photometric: "MONOCHROME1").data(), source: "m1.dcm").storedImage()
        XCTAssertEqual(m1.pixels.map { Int(($0 * 4095).rounded()) }, [4095, 4094, 4093, 3995, 3095, 0, 4088, 4087, 4086, 4085, 4084, 4083])
        let s = sample(TransferSyntax.explicitLittle, signed: true)
        let img = try DICOMFile.parse(s.data(), source: "s.dcm").storedImage()
        XCTAssertEqual(img.pixels.map { Int(($0 * 4095).rounded()) - 2048 }, s.pixels)
        var eight = sample(TransferSyntax.explicitLittle, bits: 8)
        eight.bitsAllocated = 8
        eight.pixels = [0, 255, 128, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        XCTAssertEqual(try DICOMFile.parse(eight.data(), source: "8.dcm").storedImage().pixels[1], 1)
    }

    // MARK: bad input

    func expect(_ data: Data, field: String, contains: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try ImageDecoder.decode(data, source: "x.dcm"), file: file, line: line) { e in
            guard let x = e as? XRError else { return XCTFail("\(e)", file: file, line: line) }
            XCTAssertEqual(x.file, "x.dcm", file: file, line: line)
            XCTAssertTrue((x.field ?? "").contains(field), "\(x)", file: file, line: line)
            XCTAssertTrue(x.description.contains(contains), "\(x)", file: file, line: line)
        }
    }

    func testNotDICOM() {
        XCTAssertThrowsError(try DICOMFile.parse(Data(repeating: 7, count: 300), source: "x.dcm")) { e in
            XCTAssertEqual((e as? XRError)?.field, "preamble")
        }
        expect(Data(repeating: 7, count: 300), field: "signature", contains: "not a PNG or DICOM")
    }

    func testCorruptDeflateAndRLE() {
        let d = sample(TransferSyntax.deflatedExplicitLittle).data()
        expect(d.prefix(d.count - 10), field: "deflated", contains: "deflated data set")
        // RLE fragment header: 2 segments at offset 64 → claim 3 segments.
        var rle = [UInt8](sample(TransferSyntax.rle).data())
        let header: [UInt8] = [2, 0, 0, 0, 64, 0, 0, 0]
        guard let at = (0..<(rle.count - 8)).first(where: { Array(rle[$0..<($0 + 8)]) == header }) else { return XCTFail("no RLE header") }
        rle[at] = 3
        expect(Data(rle), field: "RLE", contains: "3 segments")
        let cut = sample(TransferSyntax.rle).data()
        expect(cut.prefix(cut.count - 12), field: "Pixel Data", contains: "truncated")
    }

    func testNoPixelData() {
        var w = sample(TransferSyntax.explicitLittle); w.omitPixels = true
        expect(w.data(), field: "Pixel Data", contains: "no pixel data")
    }

    func testTruncatedPixelData() {
        let d = sample(TransferSyntax.explicitLittle).data()
        expect(d.prefix(d.count - 6), field: "Pixel Data", contains: "truncated")
    }

    func testRowsColumnsBitsInconsistentWithPixelData() {
        var w = sample(TransferSyntax.explicitLittle); w.rows = 5 // 5 × 4 × 16 bits, but 12 values written
        expect(w.data(), field: "Pixel Data", contains: "needs 40")
    }

    func testUnsupportedTransferSyntaxIsNamed() {
        let w = sample("1.2.840.10008.1.2.4.80")
        expect(w.data(), field: "Transfer Syntax", contains: "JPEG-LS Lossless")
        expect(sample("1.2.840.10008.1.2.4.100").data(), field: "Transfer Syntax", contains: "1.2.840.10008.1.2.4.100")
    }

    // MARK: real files

    /// The shared set's DICOMs decode to exactly the stored values in its 16-bit PNGs (MONOCHROME1
    /// inverted, as that folder's README says), and the four RG3 files — uncompressed, RLE, JPEG
    /// Lossless SV1, JPEG 2000 lossless — to identical arrays.
    func testSharedRealDICOMMatchesItsPNGs() throws {
        let root = try Fixtures.requireSharedData()
        for (dcm, png) in [
            ("CR-MONO1-10-chest.dcm", "CR-MONO1-10-chest.png"), ("WG04_RG3_UNC.dcm", "WG04_RG3_J2KR.png"),
            ("WG04_RG3_J2KR.dcm", "WG04_RG3_J2KR.png")
        ] {
            let f = try DICOMFile.read(root.appendingPathComponent("dicom/\(dcm)"))
            let bits = f.us(0x0028_0101) ?? 16
            let img = try f.storedImage()
            let ref = try PNGCodec.read(root.appendingPathComponent("originals/dicom/\(png)"))
            XCTAssertEqual([img.width, img.height], [ref.width, ref.height], dcm)
            let maxV = Float((1 << bits) - 1)
            let mine = img.pixels.map { Int(($0 * maxV).rounded()) }, theirs = ref.pixels.map { Int(($0 * 65535).rounded()) }
            XCTAssertEqual(mine.count, theirs.count)
            XCTAssertTrue(mine == theirs, "\(dcm): \(zip(mine, theirs).filter { $0 != $1 }.count) pixels differ")
        }
        let unc = try DICOMFile.read(root.appendingPathComponent("dicom/WG04_RG3_UNC.dcm")).storedImage()
        for dcm in ["WG04_RG3_RLE.dcm", "WG04_RG3_JPLL.dcm", "WG04_RG3_J2KR.dcm"] {
            let f = try DICOMFile.read(root.appendingPathComponent("dicom/\(dcm)"))
            let img = try f.storedImage()
            XCTAssertEqual([img.width, img.height], [unc.width, unc.height], dcm)
            XCTAssertTrue(img.pixels == unc.pixels, "\(dcm) and WG04_RG3_UNC.dcm differ in \(zip(img.pixels, unc.pixels).filter { $0 != $1 }.count) pixels")
        }
    }
}

final class DICOMValueTests: XCTestCase {
    /// PS3.3 C.11.2.1.2 window functions, computed by hand for centre 2048, width 1000.
    func testWindowFunctions() throws {
        let c = 2048.0, w = 1000.0
        func linear(_ x: Double) -> Double { x <= c - 0.5 - (w - 1) / 2 ? 0 : (x > c - 0.5 + (w - 1) / 2 ? 1 : (x - (c - 0.5)) / (w - 1) + 0.5) }
        func exact(_ x: Double) -> Double { x <= c - w / 2 ? 0 : (x > c + w / 2 ? 1 : (x - c) / w + 0.5) }
        func sigmoid(_ x: Double) -> Double { 1 / (1 + exp(-4 * (x - c) / w)) }
        let cases: [(String, (Double) -> Double)] = [("LINEAR", linear), ("LINEAR_EXACT", exact), ("SIGMOID", sigmoid)]
        for (fn, ref) in cases {
            let f = try DICOMFile.parse(voiFile(center: c, width: w, function: fn), source: "v.dcm")
            let img = try f.image(.voi)
            let xs: [Double] = [0, 1000, 1500, 2000, 2047, 2048, 2500, 3000, 4095, 100, 200, 300]
            for (got, x) in zip(img.pixels, xs) { XCTAssertEqual(Double(got), ref(x), accuracy: 1e-6, "\(fn) at \(x)") }
        }
    }

    func testModalityRescaleAndMonochrome1() throws {
        let f = try DICOMFile.parse(voiFile(center: nil, width: nil, function: nil, slope: 2, intercept: -1024), source: "m.dcm")
        let img = try f.image(.modality)
        // Range of modality values: 0·2 − 1024 … 4095·2 − 1024.
        let expected: Double = 2000.0 / 8190.0 // (1000·2 − 1024 − (−1024)) / (4095·2)
        XCTAssertEqual(Double(img.pixels[1]), expected, accuracy: 1e-6)
        let m1 = try DICOMFile.parse(voiFile(center: 2048, width: 1000, function: "LINEAR_EXACT", photometric: "MONOCHROME1"), source: "m1.dcm")
        XCTAssertEqual(try m1.image(.voi).pixels[0], 1, "MONOCHROME1: the darkest window value becomes white")
    }

    func testVOILUTSequenceIsApplied() throws {
        for ts in [TransferSyntax.explicitLittle, TransferSyntax.implicitLittle] {
            var w = DICOMWriter()
            w.syntax = ts
            w.bitsStored = 12
            w.pixels = [0, 1000, 1500, 2000, 2047, 2048, 2500, 3000, 4095, 100, 200, 300]
            // 8 entries starting at 1000, 8-bit output: entry k = 30·k.
            w.voiLUT = (1000, 8, (0..<8).map { 30 * $0 })
            w.strings = [(0x0028, 0x1050, "DS", "2048"), (0x0028, 0x1051, "DS", "100")] // the LUT takes precedence
            let img = try DICOMFile.parse(w.data(), source: "lut.dcm").image(.voi)
            let expected = w.pixels.map { v in Float(30 * min(max(v - 1000, 0), 7)) / 255 }
            XCTAssertEqual(img.pixels, expected, ts)
        }
    }

    func testMultiFrameReadsFirstFrameWithWarning() throws {
        var w = DICOMWriter()
        w.pixels = (0..<24).map { $0 } // two frames of 3 × 4
        w.extra = [(0x0008, 0x0060, "CS", "DX")]
        w.strings = [(0x0028, 0x0008, "IS", "2")]
        let f = try DICOMFile.parse(w.data(), source: "mf.dcm")
        XCTAssertEqual(f.frameCount, 2)
        XCTAssertTrue(f.warnings.first?.contains("first frame") ?? false)
        XCTAssertEqual(try f.storedImage().pixels.map { Int(($0 * 4095).rounded()) }, Array(0..<12))
    }

    func testPaddingValueIsMasked() throws {
        let f = try DICOMFile.parse(voiFile(center: 2048, width: 1000, function: "LINEAR", padding: 3000), source: "p.dcm")
        XCTAssertEqual(try f.image(.voi).pixels[7], 0)
    }

    /// A 12-bit MONOCHROME2 file with optional window, rescale and padding elements.
    func voiFile(
        center: Double?, width: Double?, function: String?, slope: Double = 1, intercept: Double = 0,
        padding: Int? = nil, photometric: String = "MONOCHROME2"
    ) -> Data {
        var w = DICOMWriter()
        w.bitsStored = 12
        w.photometric = photometric
        w.pixels = [0, 1000, 1500, 2000, 2047, 2048, 2500, 3000, 4095, 100, 200, 300]
        w.strings = [(0x0028, 0x1052, "DS", String(intercept)), (0x0028, 0x1053, "DS", String(slope))]
        if let center, let width { w.strings += [(0x0028, 0x1050, "DS", String(center)), (0x0028, 0x1051, "DS", String(width))] }
        if let function { w.strings.append((0x0028, 0x1056, "CS", function)) }
        w.padding = padding
        return w.data()
    }

    /// An RLE file declaring 65535 × 65535 pixels in a few hundred bytes (found by Fuzz/ dicom):
    /// the pixel hash `xrlab ingest` computes allocated the whole frame (3.9 GB) before finding
    /// the data missing. It now refuses the declared size first, as image decoding does.
    func testPixelHashRefusesHugeDeclaredSizeBeforeAllocating() throws {
        var w = DICOMWriter()
        w.syntax = TransferSyntax.rle
        w.rows = 65535; w.columns = 65535
        w.pixels = [Int](repeating: 7, count: 64)
        let f = try DICOMFile.parse(w.data(), source: "huge.dcm")
        let growth = try peakMemoryGrowthMB {
            XCTAssertThrowsError(try f.pixelHash()) { e in
                XCTAssertEqual((e as? XRError)?.file, "huge.dcm")
                XCTAssertTrue("\(e)".contains("exceeds the limit of 100000000 pixels"), "\(e)")
            }
        }
        if let growth { XCTAssertLessThan(growth, 64, "peak memory rose \(growth) MB") }
        XCTAssertThrowsError(try f.pixelHash(maxPixels: 1000))
    }
}
