import Foundation
import XCTest
import XRData
import XRTensor
import TestSupport

final class CSVTests: XCTestCase {
    func testQuotingNewlinesCRLFAndBOM() throws {
        let text = "\u{FEFF}path,report,labels\r\na.png,\"clear, no effusion\",no_finding\r\nb.png,\"line one\r\nline \"\"two\"\"\",effusion|nodule\r\n"
        let t = try CSVTable(string: text, source: "m.csv")
        XCTAssertEqual(t.header, ["path", "report", "labels"])
        XCTAssertEqual(t.rows.count, 2)
        XCTAssertEqual(t.rows[0][1], "clear, no effusion")
        XCTAssertEqual(t.rows[1][1], "line one\r\nline \"two\"", "line breaks inside quotes are kept as written")
        XCTAssertEqual(try CSVTable(string: t.encoded()).rows, t.rows, "round trip")
        XCTAssertEqual(try t.values("labels"), ["no_finding", "effusion|nodule"])
    }

    func testEdgeCasesOfFields() throws {
        // Empty fields, trailing comma, quoted empty, no final newline, blank lines, lone CR, unicode.
        let t = try CSVTable(string: "a,b,c\n,,\n1,\"\",3\n\n4,5,\r7,8,9\n\"é,ü\",\"\"\"\",x", source: "m.csv")
        XCTAssertEqual(t.rows, [["", "", ""], ["1", "", "3"], ["4", "5", ""], ["7", "8", "9"], ["é,ü", "\"", "x"]])
        // A one-column table with an empty value survives a round trip (quoted, not a blank line).
        let one = CSVTable(header: ["note"], rows: [["x"], [""], ["y"]])
        XCTAssertEqual(try CSVTable(string: one.encoded()).rows, one.rows)
    }

    func expectError(_ text: String, field: String, contains: String, line: UInt = #line) {
        XCTAssertThrowsError(try CSVTable(string: text, source: "m.csv"), line: line) { e in
            XCTAssertEqual((e as? XRError)?.file, "m.csv", line: line)
            XCTAssertEqual((e as? XRError)?.field, field, "\(e)", line: line)
            XCTAssertTrue("\(e)".contains(contains), "\(e)", line: line)
        }
    }

    /// Ragged rows are named by row number (the header is row 1), with the line when they differ.
    func testRaggedRowNamesRow() {
        expectError("a,b\n1,2\n3\n", field: "row 3", contains: "has 1 fields but the header has 2")
        expectError("a,b\n\"1\n2\",2\n3,4,5\n", field: "row 3", contains: "(line 4)")
    }

    func testMalformedQuoting() {
        expectError("a,b\n\"x,1\n", field: "row 2", contains: "unterminated quoted field starting on line 2")
        expectError("a,b\nx\"y\",1\n", field: "row 2", contains: "quote inside an unquoted field")
        expectError("a,b\n\"x\"y,1\n", field: "row 2", contains: "after a closing quote")
        expectError("a,a\n1,2\n", field: "row 1", contains: "duplicate column name 'a'")
        XCTAssertThrowsError(try CSVTable(string: "", source: "m.csv"))
        XCTAssertThrowsError(try CSVTable(string: "\n\n", source: "m.csv"))
    }

    func testInvalidUTF8AndMissingFile() throws {
        let dir = Fixtures.tempDir()
        let u = dir.appendingPathComponent("bad.csv")
        try Data([0x61, 0x2C, 0x62, 0x0A, 0xFF, 0xFE, 0x2C, 0x31, 0x0A]).write(to: u)
        XCTAssertThrowsError(try CSVTable(contentsOf: u)) { XCTAssertEqual(($0 as? XRError)?.file, u.path) }
        let missing = dir.appendingPathComponent("none.csv")
        XCTAssertThrowsError(try CSVTable(contentsOf: missing)) { XCTAssertEqual(($0 as? XRError)?.file, missing.path) }
    }

    func testMissingColumnListsColumns() throws {
        let t = try CSVTable(string: "path,split\nx,train\n", source: "m.csv")
        XCTAssertThrowsError(try t.column("labels")) { e in
            XCTAssertEqual((e as? XRError)?.file, "m.csv")
            XCTAssertEqual((e as? XRError)?.field, "labels")
            XCTAssertTrue("\(e)".contains("columns: path, split"), "\(e)")
        }
    }

    func testWriteIsAtomicAndRoundTrips() throws {
        let dir = Fixtures.tempDir()
        let u = dir.appendingPathComponent("out.csv")
        let t = CSVTable(header: ["id", "text"], rows: [["1", "a \"quoted\", multi\nline"], ["2", " spaced "]])
        try t.write(to: u)
        let back = try CSVTable(contentsOf: u)
        XCTAssertEqual(back.header, t.header)
        XCTAssertEqual(back.rows, t.rows)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["out.csv"])
    }

    /// The shared real-data manifest parses; its images decode with the sizes and value ranges
    /// its README states (8-bit, shorter side 256 under images/; 16-bit 10-bit-valued DICOM
    /// derivatives under originals/dicom/). The IU reports CSV (quoted multi-line text) parses too.
    func testSharedManifestAndImages() throws {
        let root = try Fixtures.requireSharedData()
        let t = try CSVTable(contentsOf: root.appendingPathComponent("manifest.csv"))
        XCTAssertEqual(t.rows.count, 702)
        XCTAssertEqual(t.header, ["path", "split", "labels", "anatomy", "view", "sex", "age", "report", "source_repo", "source_path", "license"])
        let path = try t.column("path")
        XCTAssertEqual(Set(try t.values("split")), ["train", "test"])
        var dicom: [String: (Int, Int)] = [:], bulk = 0
        for r in t.rows {
            let p = r[path]
            if p.hasPrefix("originals/dicom/") {
                let img = try PNGCodec.read(root.appendingPathComponent(p))
                XCTAssertEqual(img.bitDepth, 16, p)
                XCTAssertEqual(img.channels, 1, p)
                XCTAssertLessThanOrEqual(img.samples16.max() ?? .max, 1023, "\(p): 10 bits stored")
                XCTAssertGreaterThan(Set(img.samples16).count, 256, "\(p): more levels than 8 bits hold")
                dicom[p] = (img.width, img.height)
            } else if p.hasPrefix("images/") && bulk < 12 && t.rows.firstIndex(of: r).map({ $0 % 50 == 0 }) == true {
                let img = try PNGCodec.read(root.appendingPathComponent(p))
                XCTAssertEqual(img.bitDepth, 8, p)
                XCTAssertEqual(min(img.width, img.height), 256, "\(p): shorter side is 256")
                XCTAssertTrue(img.pixels.allSatisfy { $0 >= 0 && $0 <= 1 }, p)
                bulk += 1
            }
        }
        XCTAssertEqual(dicom.values.map { [$0.0, $0.1] }.sorted { $0[0] < $1[0] }, [[440, 440], [1760, 1760]])
        XCTAssertGreaterThanOrEqual(bulk, 10)
        let reports = try CSVTable(contentsOf: root.appendingPathComponent("reports_text_only.csv"))
        XCTAssertEqual(reports.rows.count, 1000)
        let texts = try reports.values("report")
        XCTAssertGreaterThan(texts.filter { $0.contains("IMPRESSION:") }.count, 990)
        XCTAssertGreaterThan(texts.filter { $0.contains(",") }.count, 100, "quoted fields with commas")
    }
}
