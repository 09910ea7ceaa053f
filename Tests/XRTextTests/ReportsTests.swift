import XCTest
import Foundation
@testable import XRText
import TestSupport

final class ReportsTests: XCTestCase {
    func testNormalisation() {
        XCTAssertEqual(ReportText.normalize("  The  XXXX is\tclear.\n xxxx, (XXXX-XXXX) X-XXXX XX "), "The XXXX is clear. XXXX, (XXXX) XXXX XXXX")
        XCTAssertEqual(ReportText.normalize("x-ray box ox"), "x-ray box ox", "words with x stay")
        let s = ReportText.sections("FINDINGS: Heart size normal.  Lungs clear. IMPRESSION: No acute disease.")
        XCTAssertEqual(s.findings, "Heart size normal. Lungs clear.")
        XCTAssertEqual(s.impression, "No acute disease.")
        XCTAssertEqual(ReportText.sections("IMPRESSION: Normal. FINDINGS: Clear lungs.").impression, "Normal.")
        XCTAssertEqual(ReportText.sections("Just text.").findings, "Just text.")
    }

    func testManifestErrorsNameFileAndRow() throws {
        let dir = Fixtures.tempDir("xrlab-reports")
        let ok = dir.appendingPathComponent("ok.csv")
        try "path,split,findings,impression\na.png,train,Heart  normal.,No acute disease.\nb.png,test,,Small XXXX effusion.\n".write(
            to: ok, atomically: true, encoding: .utf8)
        let pairs = try PairedReports.load(ok)
        XCTAssertEqual(pairs.map(\.findings), ["Heart normal.", ""])
        XCTAssertEqual(pairs[1].target(), "Small XXXX effusion.")
        XCTAssertEqual(pairs[1].row, 3)
        let empty = dir.appendingPathComponent("empty.csv")
        try "path,findings,impression\na.png,Clear.,Normal.\nb.png, ,\n".write(to: empty, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try PairedReports.load(empty)) { XCTAssertTrue("\($0)".contains("row 3") && "\($0)".contains("without a report"), "\($0)") }
        let bad = dir.appendingPathComponent("bad.csv")
        var bytes = Array("path,findings\na.png,Clear.\nb.png,Ca".utf8)
        bytes += [0xff, 0xfe]
        bytes += Array("rdiomegaly.\n".utf8)
        try Data(bytes).write(to: bad)
        XCTAssertThrowsError(try PairedReports.load(bad)) { XCTAssertTrue("\($0)".contains("line 3") && "\($0)".contains("UTF-8"), "\($0)") }
        let noText = dir.appendingPathComponent("notext.csv")
        try "path,label\na.png,x\n".write(to: noText, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try PairedReports.load(noText)) { XCTAssertTrue("\($0)".contains("report column"), "\($0)") }
    }

    func testTruncationIsCounted() throws {
        let tok = try BPETokenizer.load(Fixtures.url("text/bpe/tokenizer.json"))
        let texts = ["Short.", String(repeating: "The heart size is normal. ", count: 40)]
        let t = TokenizedReports(texts, tokenizer: tok, maxTokens: 32, bos: 0, eos: 0)
        XCTAssertEqual(t.truncated, 1)
        XCTAssertEqual(t.sequences[1].count, 32)
        XCTAssertGreaterThan(t.longest, 32)
        XCTAssertEqual(t.sequences[0].first, 0)
    }

    func testSharedPairedProxyLoads() throws {
        let shared = try Fixtures.requireSharedData()
        let pairs = try PairedReports.load(shared.appendingPathComponent("paired_reports_proxy.csv"))
        XCTAssertGreaterThan(pairs.count, 50)
        XCTAssertTrue(pairs.allSatisfy { FileManager.default.fileExists(atPath: $0.image.path) }, "every paired image exists")
        XCTAssertFalse(pairs.contains { $0.target().lowercased().contains("xxxx-xxxx") })
        let r = try PairedReports.load(shared.appendingPathComponent("reports_text_only.csv"), imageColumn: "report_id")
        XCTAssertEqual(r.count, 1000)
    }
}
