import Foundation
import XCTest
import XRData
import XRTensor
import TestSupport
import CZlib

/// Raw DEFLATE of bytes (for writing deflated-syntax fixtures).
func deflateRaw(_ input: [UInt8]) -> [UInt8] {
    var s = z_stream()
    _ = deflateInit2_(&s, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
    var inp = input
    var out = [UInt8](repeating: 0, count: input.count + 1024)
    inp.withUnsafeMutableBufferPointer { i in out.withUnsafeMutableBufferPointer { o in
        s.next_in = i.baseAddress; s.avail_in = UInt32(i.count)
        s.next_out = o.baseAddress; s.avail_out = UInt32(o.count)
        _ = deflate(&s, Z_FINISH)
    } }
    let n = out.count - Int(s.avail_out)
    deflateEnd(&s)
    return Array(out.prefix(n))
}

/// PackBits with literal runs only (valid RLE, not optimal).
func packBits(_ b: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    var i = 0
    while i < b.count {
        let n = min(128, b.count - i)
        out.append(UInt8(n - 1))
        out += b[i..<(i + n)]
        i += n
    }
    if out.count % 2 == 1 { out.append(0x80) }  // no-op byte pads to even length
    return out
}

/// Writes small Part-10 files for tests (uncompressed transfer syntaxes).
struct DICOMWriter {
    var syntax = TransferSyntax.explicitLittle
    var rows = 3, columns = 4, bitsAllocated = 16, bitsStored = 12, signed = false
    var photometric = "MONOCHROME2"
    var pixels: [Int] = []
    var extra: [(UInt16, UInt16, String, String)] = []   // group, element, VR, string value (groups < 0028)
    var strings: [(UInt16, UInt16, String, String)] = [] // group 0028 string elements (window, rescale, …)
    var padding: Int? = nil
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
        // (RLE and deflated files use explicit little endian for their data elements.)
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
        var group28: [(Int, String, [UInt8])] = [
            (0x0002, "US", u16(1)), (0x0004, "CS", Array(photometric.utf8)), (0x0010, "US", u16(rows)),
            (0x0011, "US", u16(columns)), (0x0100, "US", u16(bitsAllocated)), (0x0101, "US", u16(bitsStored)),
            (0x0102, "US", u16(bitsStored - 1)), (0x0103, "US", u16(signed ? 1 : 0)),
        ]
        if let padding { group28.append((0x0120, "US", u16(padding))) }
        for (_, e, vr, v) in strings { group28.append((Int(e), vr, Array(v.utf8))) }
        for (e, vr, v) in group28.sorted(by: { $0.0 < $1.0 }) { element(0x0028, e, vr, v) }
        if !omitPixels && syntax == TransferSyntax.rle {
            // Encapsulated: empty offset table item, one fragment (64-byte header + segments), delimiter.
            let bps = bitsAllocated / 8
            var segments: [[UInt8]] = []
            for s in 0..<bps {
                let shift = 8 * (bps - 1 - s)
                segments.append(packBits(pixels.map { UInt8(truncatingIfNeeded: ($0 & ((1 << bitsAllocated) - 1)) >> shift) }))
            }
            var frag = le32(bps)
            var off = 64
            for s in 0..<15 { frag += le32(s < bps ? off : 0); if s < bps { off += segments[s].count } }
            for seg in segments { frag += seg }
            out.append(contentsOf: le16(0x7FE0) + le16(0x0010) + Array("OB".utf8) + [0, 0] + le32(0xFFFF_FFFF))
            out.append(contentsOf: le16(0xFFFE) + le16(0xE000) + le32(0))
            out.append(contentsOf: le16(0xFFFE) + le16(0xE000) + le32(frag.count) + frag)
            out.append(contentsOf: le16(0xFFFE) + le16(0xE0DD) + le32(0))
        } else if !omitPixels {
            var px: [UInt8] = []
            for v in pixels {
                let u = v & ((1 << bitsAllocated) - 1)
                px += bitsAllocated == 16 ? u16(u) : [UInt8(u)]
            }
            element(0x7FE0, 0x0010, bitsAllocated == 16 ? "OW" : "OB", px)
        }
        if syntax == TransferSyntax.deflatedExplicitLittle {
            let metaEnd = 132 + 12 + meta.count
            return out.prefix(metaEnd) + Data(deflateRaw(Array(out.dropFirst(metaEnd))))
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
        for ts in [TransferSyntax.explicitLittle, TransferSyntax.implicitLittle, TransferSyntax.explicitBig,
                   TransferSyntax.rle, TransferSyntax.deflatedExplicitLittle] {
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
        let expected: Double = 2000.0 / 8190.0   // (1000·2 − 1024 − (−1024)) / (4095·2)
        XCTAssertEqual(Double(img.pixels[1]), expected, accuracy: 1e-6)
        let m1 = try DICOMFile.parse(voiFile(center: 2048, width: 1000, function: "LINEAR_EXACT", photometric: "MONOCHROME1"), source: "m1.dcm")
        XCTAssertEqual(try m1.image(.voi).pixels[0], 1, "MONOCHROME1: the darkest window value becomes white")
    }

    func testPaddingValueIsMasked() throws {
        let f = try DICOMFile.parse(voiFile(center: 2048, width: 1000, function: "LINEAR", padding: 3000), source: "p.dcm")
        XCTAssertEqual(try f.image(.voi).pixels[7], 0)
    }

    /// A 12-bit MONOCHROME2 file with optional window, rescale and padding elements.
    func voiFile(center: Double?, width: Double?, function: String?, slope: Double = 1, intercept: Double = 0,
                 padding: Int? = nil, photometric: String = "MONOCHROME2") -> Data {
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
}
