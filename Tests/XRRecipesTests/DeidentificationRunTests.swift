import Foundation
import XCTest
import XRRecipes
import XRData
import XRTensor
import TestSupport

/// A full run on DICOM files with planted identifiers — ingest, leakage check, encoding,
/// probes, report — and then every output file is scanned for those identifiers.
final class DeidentificationRunTests: XCTestCase {
    let planted = ["PLANTED^NAME^XR7", "PLANTEDID-", "PLANTEDACC-", "19700101"]

    func testNoIdentifierInAnyOutputOfAFullRun() throws {
        let root = Fixtures.tempDir("deid")
        let incoming = root.appendingPathComponent("incoming")
        try FileManager.default.createDirectory(at: incoming, withIntermediateDirectories: true)
        var labels = "filename,labels,split\n"
        var rng = XRRandom(seed: 12)
        for i in 0..<24 {
            var w = DICOMWriter()
            w.rows = 32; w.columns = 32
            let positive = i % 2 == 0
            w.pixels = (0..<(32 * 32)).map { p in (positive && p % 32 < 16 ? 2500 : 1200) + rng.nextInt(below: 400) }
            w.extra = [
                (0x0008, 0x0050, "SH", "PLANTEDACC-\(i)"), (0x0008, 0x0060, "CS", "CR"),
                (0x0010, 0x0010, "PN", "PLANTED^NAME^XR7"), (0x0010, 0x0020, "LO", "PLANTEDID-\(i / 2)"),
                (0x0010, 0x0030, "DA", "19700101"), (0x0010, 0x0040, "CS", i % 3 == 0 ? "F" : "M"),
                (0x0018, 0x0015, "CS", "CHEST"), (0x0018, 0x5101, "CS", "PA")
            ]
            try w.data().write(to: incoming.appendingPathComponent(String(format: "img%02d.dcm", i)))
            // Split by patient (two images per patient).
            labels += String(format: "img%02d.dcm,%@,%@\n", i, positive ? "effusion" : "", (i / 2) % 3 == 0 ? "test" : "train")
        }
        let labelsURL = root.appendingPathComponent("labels.csv")
        try labels.write(to: labelsURL, atomically: true, encoding: .utf8)
        let out = root.appendingPathComponent("study")
        let key = try SiteKey.load(root.appendingPathComponent("secret/site.key"), outputDirectory: out)
        _ = try Ingest.run(incoming, labels: labelsURL, joinOn: .filename, out: out.appendingPathComponent("manifest.csv"), key: key)
        try FileManager.default.copyItem(at: Fixtures.url("vit/hf_dinov2"), to: out.appendingPathComponent("model"))
        let recipe = """
            version: 1
            name: deid-check
            model: {path: model}
            data:
              manifest: manifest.csv
              label_column: labels
              labels: [effusion]
              patient_column: patient_key
              split_column: split
              subgroups: {sex: {column: sex}}
            methods: [{name: logistic}, {name: prototype}]
            shots: [1, 2]
            seeds: 2
            bootstrap: 20
            output: run
            """
        let recipeURL = out.appendingPathComponent("recipe.yaml")
        try recipe.write(to: recipeURL, atomically: true, encoding: .utf8)
        var o = RunOptions()
        o.quiet = true
        let s = try Runner.run(try RecipeLoader.load(recipeURL), options: o)
        XCTAssertTrue(s.complete)
        var scanned = 0
        let e = FileManager.default.enumerator(at: out, includingPropertiesForKeys: nil)
        while let u = e?.nextObject() as? URL {
            guard let d = try? Data(contentsOf: u), !u.path.contains("/model/") else { continue }
            let text = String(decoding: d, as: UTF8.self)
            for id in planted { XCTAssertFalse(text.contains(id), "\(u.path) contains \(id)") }
            scanned += 1
        }
        XCTAssertGreaterThan(scanned, 8, "manifest, checks, cells, results, summary, plots, report, run info")
    }
}
