import XCTest
import Foundation
import XRTensor
import XRProbe
import XRData
import XRPipeline
import XRRecipes
@testable import XRPackage
import TestSupport

/// The feature-based methods on an EVA-X encoder: a study with `representation: [pooled]` (fc_norm
/// of the patch-token mean) runs the probes, packs, and `predict` on the test images reproduces the
/// packaged evaluation; the tuning methods are refused by name until EVA-02 trains.
final class EVAPackageTests: XCTestCase {
    func study(_ dir: URL, methods: String) throws -> (URL, DemoData.Summary) {
        let demo = try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 30)
        let recipe = dir.appendingPathComponent("r.yaml")
        try """
        version: 1
        name: eva
        model: {path: \(Fixtures.url("eva/eva_x_ti.pt").path), heads: 2}
        representation: [pooled]
        data: {manifest: demo/manifest.csv, label_column: labels, labels: [effusion], patient_column: patient_id, split_column: split}
        methods:
        \(methods)
        shots: [4]
        seeds: 1
        bootstrap: 50
        output: run
        """.write(to: recipe, atomically: true, encoding: .utf8)
        return (recipe, demo)
    }

    func testProbesPackAndPredictOnEVAXFeatures() throws {
        let dir = Fixtures.tempDir("xrlab-eva-pack")
        let (recipe, demo) = try study(dir, methods: "  - {name: logistic, C: [1]}\n  - {name: knn, k: [3]}\n  - {name: prototype}")
        var ro = RunOptions()
        ro.quiet = true
        let s = try Runner.run(try RecipeLoader.load(recipe), options: ro)
        XCTAssertTrue(s.complete)
        XCTAssertEqual(s.computed, 3)
        var o = PackOptions(name: "eva", registry: dir.appendingPathComponent("reg"))
        o.version = "1.0.0"
        o.fit.method = "logistic"
        o.quiet = true
        let res = try Packer.pack(runDirectory: s.directory, options: o)
        let p = try PackageReader.open(res.archive)
        XCTAssertEqual(p.manifest.base_encoder.config?.blockKind, .eva02)
        XCTAssertEqual(p.manifest.base_encoder.dim, 32)
        XCTAssertEqual(p.manifest.base_encoder.preprocessing, .evaX(size: 32), "EVA-X's default preprocessing travels")

        var eo = EmbedOptions()
        eo.quiet = true
        eo.cache = nil
        let pred = try Predictor.predict(p, base: Fixtures.url("eva/eva_x_ti.pt"), inputs: try InputList.resolve(demo.manifest), options: eo)
        let table = try CSVTable(contentsOf: demo.manifest)
        let split = table.header.firstIndex(of: "split")!, labels = table.header.firstIndex(of: "labels")!
        let test = table.rows.indices.filter { table.rows[$0][split] == "test" }
        let prob = test.map { Double(pred.rows[$0][1])! }
        let truth = test.map { table.rows[$0][labels].split(separator: "|").contains("effusion") }
        XCTAssertEqual(Metrics.auroc(prob, truth)!, p.manifest.evaluation[0].metrics["auroc"]!.value, accuracy: 2e-4)
        // Another encoder's weights are refused as the base.
        XCTAssertThrowsError(try Predictor.predict(p, base: Fixtures.url("eva/eva_x_s.pt"), inputs: [], options: eo))
    }

    func testTuningMethodsAreRefusedByName() throws {
        let dir = Fixtures.tempDir("xrlab-eva-tune")
        let (recipe, _) = try study(dir, methods: "  - {name: lora, rank: 2, epochs: 1, batch_size: 4}")
        var ro = RunOptions()
        ro.quiet = true
        XCTAssertThrowsError(try Runner.run(try RecipeLoader.load(recipe), options: ro)) { e in
            XCTAssertTrue("\(e)".contains("EVA-02 encoders are not trainable yet"), "\(e)")
        }
    }
}
