import Foundation
import XCTest
import XRData
import XRTensor
import TestSupport

/// Writes small Part-10 files for tests (uncompressed transfer syntaxes).
struct DICOMWriter {
    var syntax = TransferSyntax.explicitLittle
    var rows = 3, columns = 4, bitsAllocated = 16, bitsStored = 12, signed = false
    var photometric = "MONOCHROME2"
    var pixels: [Int] = []
    var extra: [(UInt16, UInt16, String, String)] = []   // group, element, VR, string value
    var omitPixels = false

    func data() -> Data {
        var out = Data(count: 128)
        out.append(contentsOf: Array("DICM".utf8))
        // Meta group: explicit VR little endian.
        var meta = Data()
        func le16(_ v: Int) -> [UInt8] { [UInt8(v & 255), UInt8(v >> 8 & 255)] }
        func le32(_ v: Int) -> [UInt8] { [UInt8(v & 255), UInt8(v >> 8 & 255), UInt8(v >> 16 & 255), UInt8(v >> 24 & 255)] }
        var ts = Array(syntax.utf8); if ts.count % 2 == 1 { ts.append(0) }
        meta.append(contentsOf: le16(0x0002) + le16(0x0010) + Array("UI".utf8) + le16(ts.count) + ts)
        out.append(contentsOf: le16(0x0002) + le16(0x0000) + Array("UL".utf8) + le16(4) + le32(meta.count))
        out.append(meta)
        let big = syntax == TransferSyntax.explicitBig, explicit = syntax != TransferSyntax.implicitLittle
        func u16(_ v: Int) -> [UInt8] { big ? [UInt8(v >> 8 & 255), UInt8(v & 255)] : le16(v) }
        func u32(_ v: Int) -> [UInt8] { big ? [UInt8(v >> 24 & 255), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] : le32(v) }
        func element(_ g: Int, _ e: Int, _ vr: String, _ value: [UInt8]) {
            var v = value; if v.count % 2 == 1 { v.append(vr == "UI" ? 0 : 0x20) }
            out.append(contentsOf: u16(g) + u16(e))
            if explicit {
                out.append(contentsOf: Array(vr.utf8))
                if ["OB", "OW", "SQ", "UN", "UT"].contains(vr) { out.append(contentsOf: [0, 0] + u32(v.count)) }
                else { out.append(contentsOf: u16(v.count)) }
            } else {
                out.append(contentsOf: u32(v.count))
            }
            out.append(contentsOf: v)
        }
        for (g, e, vr, s) in extra.sorted(by: { ($0.0, $0.1) < ($1.0, $1.1) }) where g < 0x0028 { element(Int(g), Int(e), vr, Array(s.utf8)) }
        element(0x0028, 0x0002, "US", u16(1))
        element(0x0028, 0x0004, "CS", Array(photometric.utf8))
        element(0x0028, 0x0010, "US", u16(rows))
        element(0x0028, 0x0011, "US", u16(columns))
        element(0x0028, 0x0100, "US", u16(bitsAllocated))
        element(0x0028, 0x0101, "US", u16(bitsStored))
        element(0x0028, 0x0102, "US", u16(bitsStored - 1))
        element(0x0028, 0x0103, "US", u16(signed ? 1 : 0))
        if !omitPixels {
            var px: [UInt8] = []
            for v in pixels {
                let u = v & ((1 << bitsAllocated) - 1)
                px += bitsAllocated == 16 ? u16(u) : [UInt8(u)]
            }
            element(0x7FE0, 0x0010, bitsAllocated == 16 ? "OW" : "OB", px)
        }
        return out
    }
}

final class DICOMTests: XCTestCase {
    func sample(_ syntax: String, bits: Int = 12, signed: Bool = false, photometric: String = "MONOCHROME2") -> DICOMWriter {
        var w = DICOMWriter()
        w.syntax = syntax
        w.bitsStored = bits
        w.signed = signed
        w.photometric = photometric
        w.pixels = signed ? [-2048, -1, 0, 1, 100, 2047, -100, 5, 6, 7, 8, 9] : [0, 1, 2, 100, 1000, 4095, 7, 8, 9, 10, 11, 12]
        w.extra = [(0x0008, 0x0060, "CS", "CR"), (0x0010, 0x0010, "PN", "PLANTED^NAME^XR7"), (0x0010, 0x0020, "LO", "PLANTEDID-4471"),
                   (0x0010, 0x0040, "CS", "F"), (0x0018, 0x0015, "CS", "CHEST"), (0x0018, 0x5101, "CS", "PA")]
        return w
    }

    func testUncompressedTransferSyntaxesDecodeExactly() throws {
        for ts in [TransferSyntax.explicitLittle, TransferSyntax.implicitLittle, TransferSyntax.explicitBig] {
            let w = sample(ts)
            let f = try DICOMFile.parse(w.data(), source: "t.dcm")
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

    func testNoPixelData() {
        var w = sample(TransferSyntax.explicitLittle); w.omitPixels = true
        expect(w.data(), field: "Pixel Data", contains: "no pixel data")
    }

    func testTruncatedPixelData() {
        let d = sample(TransferSyntax.explicitLittle).data()
        expect(d.prefix(d.count - 6), field: "Pixel Data", contains: "truncated")
    }

    func testRowsColumnsBitsInconsistentWithPixelData() {
        var w = sample(TransferSyntax.explicitLittle); w.rows = 5   // 5 × 4 × 16 bits, but 12 values written
        expect(w.data(), field: "Pixel Data", contains: "needs 40")
    }

    func testUnsupportedTransferSyntaxIsNamed() {
        let w = sample("1.2.840.10008.1.2.4.70")
        expect(w.data(), field: "Transfer Syntax", contains: "JPEG Lossless (Process 14, SV1)")
    }

    // MARK: real files

    /// The shared set's uncompressed DICOMs decode to exactly the stored values in its 16-bit PNGs
    /// (MONOCHROME1 inverted, as that folder's README says); compressed ones are refused by name.
    func testSharedRealDICOMMatchesItsPNGs() throws {
        let root = try Fixtures.requireSharedData()
        for (dcm, png) in [("CR-MONO1-10-chest.dcm", "CR-MONO1-10-chest.png"), ("WG04_RG3_UNC.dcm", "WG04_RG3_J2KR.png")] {
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
        // RLE decodes natively to the same pixels as the uncompressed file.
        let unc = try DICOMFile.read(root.appendingPathComponent("dicom/WG04_RG3_UNC.dcm")).storedImage()
        let rle = try DICOMFile.read(root.appendingPathComponent("dicom/WG04_RG3_RLE.dcm")).storedImage()
        XCTAssertTrue(unc.pixels == rle.pixels, "RLE and uncompressed RG3 differ")
        for dcm in ["WG04_RG3_JPLL.dcm", "WG04_RG3_J2KR.dcm"] {
            XCTAssertThrowsError(try DICOMFile.read(root.appendingPathComponent("dicom/\(dcm)"))) { e in
                XCTAssertTrue((e as? XRError)?.field?.contains("Transfer Syntax") ?? false, "\(e)")
            }
        }
    }
}
