import Foundation
import XCTest
@testable import XRData
import XRTensor
import TestSupport

final class IngestTests: XCTestCase {
    let planted = ["PLANTED^NAME^XR7", "PLANTEDID-4471", "PLANTEDID-9902", "PLANTEDACC-99", "19700101", "1.2.826.0.1.3680043.8.498.12345"]

    /// Three DICOMs (two of one patient), one PNG, and a labels CSV keyed by file name.
    func makeFolder() throws -> (dir: URL, labels: URL) {
        let dir = Fixtures.tempDir("ingest")
        let imgs = dir.appendingPathComponent("incoming")
        try FileManager.default.createDirectory(at: imgs, withIntermediateDirectories: true)
        for (name, patient, view, seed) in [("a.dcm", "PLANTEDID-4471", "PA", 1), ("b.dcm", "PLANTEDID-4471", "LL", 2), ("c.dcm", "PLANTEDID-9902", "AP", 3)] {
            var w = DICOMWriter()
            w.pixels = (0..<12).map { ($0 * 300 + seed * 77) % 4096 }
            w.extra = [
                (0x0008, 0x0050, "SH", "PLANTEDACC-99"), (0x0008, 0x0060, "CS", "DX"), (0x0010, 0x0010, "PN", "PLANTED^NAME^XR7"),
                (0x0010, 0x0020, "LO", patient), (0x0010, 0x0030, "DA", "19700101"), (0x0010, 0x0040, "CS", "M"),
                (0x0010, 0x1010, "AS", "045Y"), (0x0018, 0x0015, "CS", "CHEST"), (0x0018, 0x5101, "CS", view),
                (0x0020, 0x000D, "UI", "1.2.826.0.1.3680043.8.498.12345")
            ]
            try w.data().write(to: imgs.appendingPathComponent(name))
        }
        try PNGCodec.encodeGray8(width: 4, height: 3, pixels: [UInt8](repeating: 90, count: 12)).write(to: imgs.appendingPathComponent("d.png"))
        let labels = dir.appendingPathComponent("labels.csv")
        try "filename,labels,split\na.dcm,effusion,train\nb.dcm,effusion|nodule,train\nc.dcm,,test\nd.png,nodule,test\n"
            .write(to: labels, atomically: true, encoding: .utf8)
        return (dir, labels)
    }

    func testIngestWritesKeyedDeidentifiedManifest() throws {
        let (dir, labels) = try makeFolder()
        let out = dir.appendingPathComponent("out/manifest.csv")
        let key = SiteKey(secret: Array("a site secret of enough length".utf8))
        let r = try Ingest.run(dir.appendingPathComponent("incoming"), labels: labels, joinOn: .filename, out: out, key: key)
        XCTAssertEqual(r.rows, 4)
        let t = try CSVTable(contentsOf: out)
        let p = try t.column("patient_key"), path = try t.column("path"), age = try t.column("age"), lab = try t.column("labels")
        XCTAssertEqual(t.rows.map { $0[path] }, ["../incoming/a.dcm", "../incoming/b.dcm", "../incoming/c.dcm", "../incoming/d.png"])
        XCTAssertEqual(t.rows[0][p], t.rows[1][p], "same patient, same key")
        XCTAssertNotEqual(t.rows[0][p], t.rows[2][p])
        XCTAssertEqual(t.rows[0][p].count, 16)
        XCTAssertEqual(t.rows[0][age], "45")
        XCTAssertEqual(t.rows[1][lab], "effusion|nodule")
        XCTAssertTrue(r.summary.contains("images per patient"), r.summary)
        // A different site secret gives different keys.
        let other = try Ingest.run(
            dir.appendingPathComponent("incoming"), labels: labels, joinOn: .filename,
            out: dir.appendingPathComponent("out/other.csv"), key: SiteKey(secret: Array("another site's secret value".utf8)))
        XCTAssertNotEqual(try CSVTable(contentsOf: other.manifest).rows[0][p], t.rows[0][p])
        // Check: the manifest is patient-disjoint, so only warnings (imbalance) may appear.
        let findings = try ManifestCheck.run(out)
        XCTAssertTrue(findings.allSatisfy { $0.severity == .warning }, "\(findings)")
        // No identifier anywhere in what was written.
        scanForIdentifiers(dir.appendingPathComponent("out"))
    }

    /// Every file under `dir` is free of the planted identifiers.
    func scanForIdentifiers(_ dir: URL, file: StaticString = #filePath, line: UInt = #line) {
        let e = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: nil)
        var scanned = 0
        while let u = e?.nextObject() as? URL {
            guard let d = try? Data(contentsOf: u) else { continue }
            let text = String(decoding: d, as: UTF8.self)
            for id in planted { XCTAssertFalse(text.contains(id), "\(u.lastPathComponent) contains \(id)", file: file, line: line) }
            scanned += 1
        }
        XCTAssertGreaterThan(scanned, 0, file: file, line: line)
    }

    func testLabelsMatchingNoFileAndDuplicateKeys() throws {
        let (dir, _) = try makeFolder()
        let bad = dir.appendingPathComponent("bad.csv")
        try "filename,labels\nzzz.dcm,effusion\n".write(to: bad, atomically: true, encoding: .utf8)
        let key = SiteKey(secret: Array("a site secret of enough length".utf8))
        XCTAssertThrowsError(
            try Ingest.run(
                dir.appendingPathComponent("incoming"), labels: bad, joinOn: .filename,
                out: dir.appendingPathComponent("o.csv"), key: key)
        ) { e in
            XCTAssertTrue("\(e)".contains("matches any file"), "\(e)")
        }
        try "filename,labels\na.dcm,effusion\na.dcm,nodule\n".write(to: bad, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(
            try Ingest.run(
                dir.appendingPathComponent("incoming"), labels: bad, joinOn: .filename,
                out: dir.appendingPathComponent("o.csv"), key: key)
        ) { e in
            XCTAssertEqual((e as? XRError)?.field, "line 3")
            XCTAssertTrue("\(e)".contains("duplicate key 'a.dcm'"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("o.csv").path), "no partial output")
    }

    func testJoinOnAccession() throws {
        let (dir, _) = try makeFolder()
        let acc = dir.appendingPathComponent("acc.csv")
        try "accession,labels\nPLANTEDACC-99,pneumonia\n".write(to: acc, atomically: true, encoding: .utf8)
        let key = SiteKey(secret: Array("a site secret of enough length".utf8))
        // PNG files have no accession: a clear error.
        XCTAssertThrowsError(
            try Ingest.run(
                dir.appendingPathComponent("incoming"), labels: acc, joinOn: .accession,
                out: dir.appendingPathComponent("o.csv"), key: key)
        ) { e in
            XCTAssertEqual((e as? XRError)?.field, "--join-on")
        }
    }

    func testSiteKeyCreatedPrivateAndRefusedInsideOutput() throws {
        let dir = Fixtures.tempDir("key")
        let keyFile = dir.appendingPathComponent("private/site.key")
        let k1 = try SiteKey.load(keyFile)
        let k2 = try SiteKey.load(keyFile)
        XCTAssertEqual(k1.key("patient", "x"), k2.key("patient", "x"), "the key persists")
        let attrs = try FileManager.default.attributesOfItem(atPath: keyFile.path)
        XCTAssertEqual((attrs[.posixPermissions] as? NSNumber)?.intValue, 0o600)
        XCTAssertThrowsError(try SiteKey.load(dir.appendingPathComponent("private/site.key"), outputDirectory: dir.appendingPathComponent("private")))
    }

    func testCheckFindsLeakageDuplicatesLabelsAndNearDuplicates() throws {
        let dir = Fixtures.tempDir("check")
        var rng = XRRandom(seed: 3)
        var base: [UInt16] = []
        for i in 0..<(64 * 64) {
            let v: Int = ((i % 64) * 900 + (i / 64) * 300) % 60000
            base.append(UInt16(v))
        }
        func write(_ name: String, _ px: [UInt16]) throws {
            try PNGCodec.encodeGray16(width: 64, height: 64, pixels: px).write(to: dir.appendingPathComponent(name))
        }
        try write("a.png", base)
        try write("b.png", base) // identical to a
        var near: [UInt16] = []
        for v in base { near.append(UInt16(clamping: Int(v) + rng.nextInt(below: 200))) }
        try write("c.png", near) // near a
        var noise: [UInt16] = []
        for _ in 0..<(64 * 64) { noise.append(UInt16(rng.nextInt(below: 65536))) }
        try write("d.png", noise)
        let manifest = dir.appendingPathComponent("m.csv")
        try """
        path,patient_id,split,labels
        a.png,P1,train,effusion
        b.png,P2,test,effusion
        c.png,P3,test,effusionn
        d.png,P1,test,nodule

        """.write(to: manifest, atomically: true, encoding: .utf8)
        var o = ManifestCheck.Options()
        o.allowedLabels = ["effusion", "nodule"]
        let f = try ManifestCheck.run(manifest, options: o)
        let kinds = Set(f.map(\.kind))
        XCTAssertTrue(kinds.isSuperset(of: ["patient-across-splits", "duplicate-across-splits", "impossible-label", "near-duplicates-across-splits"]), "\(f)")
        XCTAssertEqual(f.first { $0.kind == "patient-across-splits" }?.lines, [2, 5])
        XCTAssertEqual(f.first { $0.kind == "impossible-label" }?.lines, [4])
    }

    /// The same image stored uncompressed and as RLE / deflated, with different headers, has one
    /// content hash, so `check` sees it across splits; the age comes from the birth date when
    /// Patient's Age is absent (and the birth date is written nowhere).
    func testPixelContentHashAndAgeFromBirthDate() throws {
        let dir = Fixtures.tempDir("pixelhash")
        let imgs = dir.appendingPathComponent("in")
        try FileManager.default.createDirectory(at: imgs, withIntermediateDirectories: true)
        let pixels = (0..<12).map { ($0 * 311) % 4096 }
        for (name, ts, patient) in [
            ("x.dcm", TransferSyntax.explicitLittle, "PLANTEDID-4471"), ("y.dcm", TransferSyntax.rle, "PLANTEDID-9902"),
            ("z.dcm", TransferSyntax.deflatedExplicitLittle, "PLANTEDID-9902")
        ] {
            var w = DICOMWriter()
            w.syntax = ts
            w.pixels = name == "z.dcm" ? pixels.map { 4095 - $0 } : pixels
            w.extra = [
                (0x0008, 0x0020, "DA", "20150610"), (0x0008, 0x0050, "SH", "PLANTEDACC-99"), (0x0010, 0x0010, "PN", "PLANTED^NAME^XR7"),
                (0x0010, 0x0020, "LO", patient), (0x0010, 0x0030, "DA", "19700101")
            ]
            try w.data().write(to: imgs.appendingPathComponent(name))
        }
        let labels = dir.appendingPathComponent("labels.csv")
        try "filename,labels,split\nx.dcm,a,train\ny.dcm,a,test\nz.dcm,b,test\n".write(to: labels, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("out/m.csv")
        _ = try Ingest.run(imgs, labels: labels, joinOn: .filename, out: out, key: SiteKey(secret: Array("a site secret of enough length".utf8)))
        let t = try CSVTable(contentsOf: out)
        let sha = try t.column("sha256"), age = try t.column("age")
        XCTAssertEqual(t.rows[0][sha], t.rows[1][sha], "same pixels, different transfer syntax and header")
        XCTAssertNotEqual(t.rows[0][sha], t.rows[2][sha])
        XCTAssertEqual(t.rows.map { $0[age] }, ["45", "45", "45"], "20150610 − 19700101")
        let f = try ManifestCheck.run(out)
        XCTAssertEqual(f.first { $0.kind == "duplicate-across-splits" }?.lines, [2, 3], "\(f)")
        scanForIdentifiers(dir.appendingPathComponent("out"))
    }

    func testAgeStrings() {
        XCTAssertEqual(Ingest.age("045Y"), "45")
        XCTAssertEqual(Ingest.age("018M"), "1")
        XCTAssertEqual(Ingest.age("45Y"), "")
        XCTAssertEqual(Ingest.age(birthDate: "19700611", on: "20150610"), "44")
        XCTAssertEqual(Ingest.age(birthDate: "19700610", on: "20150610"), "45")
        XCTAssertEqual(Ingest.age(birthDate: "1970", on: "20150610"), "")
        XCTAssertEqual(Ingest.age(birthDate: "20200101", on: "20150610"), "", "born after the study")
    }

    /// Real files: the four WG04 RG3 encodings (uncompressed, RLE, JPEG Lossless, JPEG 2000) get
    /// one content hash and one patient key; in different splits, `check` reports both leaks.
    func testSharedRealDICOMIngestFindsTheSameImageAcrossEncodings() throws {
        let root = try Fixtures.requireSharedData()
        let dir = Fixtures.tempDir("real-ingest")
        let labels = dir.appendingPathComponent("labels.csv")
        try """
        filename,labels,split
        WG04_RG3_UNC.dcm,fibroma,train
        WG04_RG3_RLE.dcm,fibroma,train
        WG04_RG3_JPLL.dcm,fibroma,test
        WG04_RG3_J2KR.dcm,fibroma,test
        CR-MONO1-10-chest.dcm,normal,test

        """.write(to: labels, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("out/manifest.csv")
        let r = try Ingest.run(
            root.appendingPathComponent("dicom"), labels: labels, joinOn: .filename, out: out,
            key: SiteKey(secret: Array("a site secret of enough length".utf8)))
        XCTAssertEqual(r.rows, 5)
        let t = try CSVTable(contentsOf: out)
        let sha = try t.column("sha256"), p = try t.column("patient_key"), path = try t.column("path")
        let rg3 = t.rows.filter { $0[path].contains("WG04_RG3") }
        XCTAssertEqual(rg3.count, 4)
        XCTAssertEqual(Set(rg3.map { $0[sha] }).count, 1, "one image, four encodings")
        XCTAssertEqual(Set(rg3.map { $0[p] }).count, 1)
        var o = ManifestCheck.Options()
        o.nearDuplicates = false // decoding the 1760 × 1760 images again adds nothing here
        let kinds = Set(try ManifestCheck.run(out, options: o).filter { $0.severity == .error }.map(\.kind))
        XCTAssertEqual(kinds, ["patient-across-splits", "duplicate-across-splits"])
    }
}
