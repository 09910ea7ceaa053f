import Foundation
import XCTest
import XRData
import XRTensor
import TestSupport

final class CSVTests: XCTestCase {
    func testQuotingNewlinesCRLFAndBOM() throws {
        let text = "\u{FEFF}path,report,labels\r\na.png,\"clear, no effusion\",no_finding\r\nb.png,\"line one\nline \"\"two\"\"\",effusion|nodule\r\n"
        let t = try CSVTable(string: text, source: "m.csv")
        XCTAssertEqual(t.header, ["path", "report", "labels"])
        XCTAssertEqual(t.rows.count, 2)
        XCTAssertEqual(t.rows[0][1], "clear, no effusion")
        XCTAssertEqual(t.rows[1][1], "line one\nline \"two\"")
        XCTAssertEqual(try CSVTable(string: t.encoded()).rows, t.rows, "round trip")
    }

    func testRaggedRowNamesLine() {
        XCTAssertThrowsError(try CSVTable(string: "a,b\n1,2\n3\n", source: "m.csv")) { e in
            XCTAssertEqual((e as? XRError)?.field, "line 3")
            XCTAssertEqual((e as? XRError)?.file, "m.csv")
        }
    }

    func testMissingColumnListsColumns() throws {
        let t = try CSVTable(string: "path,split\nx,train\n", source: "m.csv")
        XCTAssertThrowsError(try t.column("labels")) { e in
            XCTAssertTrue("\(e)".contains("columns: path, split"), "\(e)")
        }
    }

    func testUnterminatedQuoteAndDuplicateColumns() {
        XCTAssertThrowsError(try CSVTable(string: "a,b\n\"x,1\n", source: "m.csv"))
        XCTAssertThrowsError(try CSVTable(string: "a,a\n1,2\n", source: "m.csv"))
        XCTAssertThrowsError(try CSVTable(string: "", source: "m.csv"))
    }

    /// The shared real-data manifest parses, and its images decode at the stated sizes.
    func testSharedManifestAndImages() throws {
        let root = try Fixtures.requireSharedData()
        let t = try CSVTable(contentsOf: root.appendingPathComponent("manifest.csv"))
        XCTAssertEqual(t.rows.count, 702)
        let path = try t.column("path")
        var sixteen = 0, checked = 0
        for r in t.rows where r[path].hasPrefix("originals/dicom") || checked < 5 {
            let img = try PNGCodec.read(root.appendingPathComponent(r[path]))
            XCTAssertGreaterThan(img.width, 100)
            XCTAssertTrue(img.pixels.allSatisfy { $0 >= 0 && $0 <= 1 })
            if img.bitDepth == 16 { sixteen += 1 }
            checked += 1
        }
        XCTAssertEqual(sixteen, 2, "the two DICOM-derived originals are 16-bit")
    }
}
