import Foundation
import XCTest
@testable import XRData
import XRTensor
import TestSupport

/// JPEG Lossless (native) and JPEG 2000 (OpenJPEG) pixel data, checked against codestreams and
/// pixels written by `fixtures/make_dicom_fixtures.py` (libjpeg-turbo / OpenJPEG as encoders).
final class DICOMCompressedTests: XCTestCase {
    struct Case: Decodable { var file: String; var rows: Int; var columns: Int; var bits: Int; var signed: Bool; var lossless: Bool; var predictor: Int? }

    func cases() throws -> [(String, Case)] {
        let data = try Data(contentsOf: Fixtures.url("dicom/cases.json"))
        return try JSONDecoder().decode([String: Case].self, from: data).sorted { $0.key < $1.key }
    }

    func codestream(_ c: Case) throws -> [UInt8] { [UInt8](try Data(contentsOf: Fixtures.url("dicom/\(c.file)"))) }

    func expected(_ name: String) throws -> [Int] { try NPY.read(Fixtures.url("dicom/\(name).npy")).scalars.map { Int($0) } }

    /// A DICOM file holding one case's codestream in `fragments` pieces.
    func wrap(_ c: Case, syntax: String, pieces: Int = 1, photometric: String = "MONOCHROME2") throws -> DICOMWriter {
        var w = DICOMWriter()
        w.syntax = syntax
        w.rows = c.rows; w.columns = c.columns
        w.bitsAllocated = c.bits > 8 ? 16 : 8
        w.bitsStored = c.bits
        w.signed = c.signed
        w.photometric = photometric
        let s = try codestream(c)
        // Fragments have even lengths (PS3.5 A.4): cut at even offsets; only the last one is padded.
        let cut = (0...pieces).map { $0 == pieces ? s.count : ($0 * s.count / pieces) & ~1 }
        w.fragments = (0..<pieces).map { Array(s[cut[$0]..<cut[$0 + 1]]) }
        w.extra = [(0x0008, 0x0060, "CS", "DX"), (0x0010, 0x0010, "PN", "PLANTED^NAME^XR7")]
        return w
    }

    /// Stored values back from the [0, 1] mapping of `storedImage()`.
    func storedValues(_ img: XRImage, bits: Int, signed: Bool) -> [Int] {
        let top = Float((1 << bits) - 1)
        return img.pixels.map { Int(($0 * top).rounded()) - (signed ? 1 << (bits - 1) : 0) }
    }

    func testJPEGLosslessEveryPredictorMatchesReference() throws {
        var n = 0
        for (name, c) in try cases() where name.hasPrefix("jpll") {
            // SV1 files use the .70 syntax; other predictors only exist in .57.
            let ts = c.predictor == 1 ? TransferSyntax.jpegLosslessSV1 : TransferSyntax.jpegLossless
            let f = try DICOMFile.parse(try wrap(c, syntax: ts).data(), source: "\(name).dcm")
            let img = try f.storedImage()
            XCTAssertEqual([img.height, img.width], [c.rows, c.columns], name)
            let got = storedValues(img, bits: c.bits, signed: false), want = try expected(name)
            XCTAssertEqual(got.count, want.count, name)
            XCTAssertTrue(
                got == want,
                "\(name): \(zip(got, want).filter { $0 != $1 }.count) samples differ; first at \((0..<min(got.count, want.count)).first { got[$0] != want[$0] } ?? -1)"
            )
            n += 1
        }
        XCTAssertEqual(n, 13, "10 libjpeg-turbo streams, 3 with restart intervals / point transform")
    }

    func testJPEG2000MatchesReference() throws {
        var n = 0
        for (name, c) in try cases() where name.hasPrefix("j2k") {
            let f = try DICOMFile.parse(try wrap(c, syntax: TransferSyntax.jpeg2000Lossless).data(), source: "\(name).dcm")
            let got = storedValues(try f.storedImage(), bits: c.bits, signed: c.signed), want = try expected(name)
            XCTAssertTrue(got == want, "\(name): \(zip(got, want).filter { $0 != $1 }.count) samples differ")
            n += 1
        }
        XCTAssertEqual(n, 3)
    }

    /// 8-bit JPEG Baseline through libjpeg: the pixels libjpeg-turbo itself decoded when the
    /// fixture was made (same accurate integer IDCT; ±1 allowed for a different libjpeg build).
    func testJPEGBaselineMatchesLibjpegDecode() throws {
        let all = Dictionary(uniqueKeysWithValues: try cases())
        guard let c = all["jpeg_baseline_8"] else { return XCTFail("fixture case missing") }
        for ts in [TransferSyntax.jpegBaseline, TransferSyntax.jpegExtended] {
            let f = try DICOMFile.parse(try wrap(c, syntax: ts, pieces: 2).data(), source: "base.dcm")
            let got = storedValues(try f.storedImage(), bits: 8, signed: false), want = try expected("jpeg_baseline_8")
            XCTAssertEqual(got.count, want.count)
            let worst = zip(got, want).map { abs($0 - $1) }.max() ?? 99
            XCTAssertLessThanOrEqual(worst, 1, ts)
        }
        var w = try wrap(c, syntax: TransferSyntax.jpegBaseline)
        let s = try codestream(c)
        w.fragments = [Array(s.prefix(s.count * 2 / 3))]
        expectError(w, contains: "cannot decode the JPEG data")
    }

    /// A codestream split over several fragments, MONOCHROME1, and the modality/VOI paths.
    func testFragmentsAndValueModes() throws {
        let all = Dictionary(uniqueKeysWithValues: try cases())
        guard let c = all["jpll_p1_12"], let j = all["j2k_12"] else { return XCTFail("fixture cases missing") }
        let want = try expected("jpll_p1_12")
        for (case_, syntax, name) in [(c, TransferSyntax.jpegLosslessSV1, "jpll_p1_12"), (j, TransferSyntax.jpeg2000, "j2k_12")] {
            let f = try DICOMFile.parse(try wrap(case_, syntax: syntax, pieces: 3, photometric: "MONOCHROME1").data(), source: "frag.dcm")
            let got = storedValues(try f.storedImage(), bits: 12, signed: false).map { 4095 - $0 }
            XCTAssertTrue(got == (name == "jpll_p1_12" ? want : try expected(name)), name)
            // Modality values of an unsigned 12-bit file without rescale: v / 4095, inverted.
            let m = try f.image(.modality).pixels
            XCTAssertEqual(m.first ?? -1, 1 - Float(got[0]) / 4095, accuracy: 1e-6)
        }
    }

    /// Multi-frame encapsulated data: the Basic Offset Table picks the first frame's fragments.
    func testBasicOffsetTableSelectsFirstFrame() throws {
        let all = Dictionary(uniqueKeysWithValues: try cases())
        guard let a = all["jpll_p2_12"], let b = all["jpll_p3_12"] else { return XCTFail("fixture cases missing") }
        var w = try wrap(a, syntax: TransferSyntax.jpegLossless, pieces: 2)
        let second = try codestream(b)
        let firstItems = (w.fragments ?? []).map { 8 + $0.count + $0.count % 2 }.reduce(0, +)
        w.fragments = (w.fragments ?? []) + [second]
        w.offsetTable = [0, firstItems]
        w.strings = [(0x0028, 0x0008, "IS", "2")]
        let f = try DICOMFile.parse(w.data(), source: "mf.dcm")
        XCTAssertTrue(f.warnings.first?.contains("first frame") ?? false)
        XCTAssertEqual(storedValues(try f.storedImage(), bits: 12, signed: false), try expected("jpll_p2_12"))
    }

    // MARK: bad compressed input

    func expectError(_ w: DICOMWriter, contains: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try ImageDecoder.decode(w.data(), source: "bad.dcm"), file: file, line: line) { e in
            guard let x = e as? XRError else { return XCTFail("\(e)", file: file, line: line) }
            XCTAssertEqual(x.file, "bad.dcm", file: file, line: line)
            XCTAssertTrue((x.field ?? "").contains("Pixel Data") || (x.field ?? "").contains("Bits"), "\(x)", file: file, line: line)
            XCTAssertTrue(x.description.contains(contains), "\(x)", file: file, line: line)
        }
    }

    /// j2k_8 with the three bytes Fuzz/ dicom changed (a tile 11,796,487 samples wide and two
    /// bytes of tile data): OpenJPEG reads past the end of the data. The read callback answered
    /// the end of the data with `OPJ_SIZE_T.max`, i.e. `Int.max` (`size_t` is imported as `Int`),
    /// not `(OPJ_SIZE_T)-1`; OpenJPEG took it for 2^63 bytes read and copied past its 64 KiB buffer.
    func testJPEG2000EndOfDataIsReportedAsSuch() throws {
        XCTAssertEqual(UInt(bitPattern: JPEG2000.endOfStream), UInt.max, "OpenJPEG's end-of-stream value is (OPJ_SIZE_T)-1")
        let all = Dictionary(uniqueKeysWithValues: try cases())
        guard let c = all["j2k_8"] else { return XCTFail("fixture case j2k_8 missing") }
        var w = try wrap(c, syntax: TransferSyntax.jpeg2000Lossless)
        var s = try codestream(c)
        s[25] = 0xB4; s[66] = 0x24; s[99] = 0x34
        w.fragments = [s]
        expectError(w, contains: "cannot read the JPEG 2000 header")
    }

    func testTruncatedAndCorruptCodestreams() throws {
        let all = Dictionary(uniqueKeysWithValues: try cases())
        guard let c = all["jpll_p1_16"], let j = all["j2k_12"] else { return XCTFail("fixture cases missing") }
        var w = try wrap(c, syntax: TransferSyntax.jpegLosslessSV1)
        let s = try codestream(c)
        w.fragments = [Array(s.prefix(s.count / 2))]
        expectError(w, contains: "truncated")
        w.fragments = [Array(s.dropFirst(2))]
        expectError(w, contains: "SOI")
        var jw = try wrap(j, syntax: TransferSyntax.jpeg2000Lossless)
        let js = try codestream(j)
        jw.fragments = [Array(js.prefix(js.count / 2))]
        expectError(jw, contains: "JPEG 2000")
        jw.fragments = [[0x12, 0x34] + Array(js.dropFirst(2))]
        expectError(jw, contains: "JPEG 2000")
        // A restart marker out of sequence.
        if let r = all["jpll_rst_p4_12"] {
            var rw = try wrap(r, syntax: TransferSyntax.jpegLossless)
            var rs = try codestream(r)
            guard let at = (0..<(rs.count - 1)).first(where: { rs[$0] == 0xFF && rs[$0 + 1] == 0xD0 }) else { return XCTFail("no RST0") }
            rs[at + 1] = 0xD5
            rw.fragments = [rs]
            expectError(rw, contains: "restart marker RST0 missing before row 3")
        } else {
            XCTFail("fixture case jpll_rst_p4_12 missing")
        }
        // Rows / Columns disagreeing with the codestream's own size.
        var sized = try wrap(c, syntax: TransferSyntax.jpegLosslessSV1)
        sized.rows += 1
        expectError(sized, contains: "Rows / Columns")
        var sizedJ2K = try wrap(j, syntax: TransferSyntax.jpeg2000Lossless)
        sizedJ2K.columns = 4000
        expectError(sizedJ2K, contains: "Rows / Columns say 4000x")
        // A baseline (lossy) codestream inside a lossless syntax is refused, not misread.
        if let base = all["jpeg_baseline_8"] {
            var bw = try wrap(base, syntax: TransferSyntax.jpegLossless)
            bw.bitsAllocated = 8
            expectError(bw, contains: "SOF0")
        }
        // 16-bit samples declared as 8 bits allocated.
        var narrow = try wrap(c, syntax: TransferSyntax.jpegLosslessSV1)
        narrow.bitsAllocated = 8; narrow.bitsStored = 8
        expectError(narrow, contains: "Bits Allocated is 8")
    }
}
