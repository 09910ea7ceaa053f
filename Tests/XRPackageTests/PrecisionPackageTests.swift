import XCTest
import Foundation
import XRTensor
import XRProbe
import XRData
import XRModels
import XRPipeline
import XRRecipes
@testable import XRPackage
import TestSupport

/// A package made from a `model.precision: int8` study records int8, says so in its card, and
/// predicts with int8 (reproducing its packaged evaluation, which fp32 features do not); manifests
/// without the field read as fp32.
final class PrecisionPackageTests: XCTestCase {
    func testInt8PackageRecordsAndPredictsInt8() throws {
        let dir = Fixtures.tempDir("xrlab-int8-pack")
        let demo = try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 30)
        let recipe = dir.appendingPathComponent("r.yaml")
        try """
        version: 1
        name: int8
        model: {path: \(Fixtures.url("eva/eva_x_ti.pt").path), heads: 2, precision: int8}
        representation: [pooled]
        data: {manifest: demo/manifest.csv, label_column: labels, labels: [effusion], patient_column: patient_id, split_column: split}
        methods:
          - {name: logistic, C: [1]}
        shots: [4]
        seeds: 1
        bootstrap: 50
        output: run
        """.write(to: recipe, atomically: true, encoding: .utf8)
        var ro = RunOptions()
        ro.quiet = true
        let s = try Runner.run(try RecipeLoader.load(recipe), options: ro)
        XCTAssertTrue(s.complete)
        var o = PackOptions(name: "int8", registry: dir.appendingPathComponent("reg"))
        o.version = "1.0.0"
        o.quiet = true
        let res = try Packer.pack(runDirectory: s.directory, options: o)
        let p = try PackageReader.open(res.archive)
        XCTAssertEqual(p.manifest.base_encoder.precision, .int8)
        XCTAssertEqual(p.manifest.recipe.model?.precision, .int8)
        XCTAssertTrue(p.card.contains("int8 linear layers"), p.card)

        var eo = EmbedOptions()
        eo.quiet = true
        eo.cache = nil
        let inputs = try InputList.resolve(demo.manifest)
        let pred = try Predictor.predict(p, base: Fixtures.url("eva/eva_x_ti.pt"), inputs: inputs, options: eo)
        let table = try CSVTable(contentsOf: demo.manifest)
        let split = table.header.firstIndex(of: "split")!, labels = table.header.firstIndex(of: "labels")!
        let test = table.rows.indices.filter { table.rows[$0][split] == "test" }
        let truth = test.map { table.rows[$0][labels].split(separator: "|").contains("effusion") }
        let prob = test.map { Double(pred.rows[$0][1])! }
        XCTAssertEqual(Metrics.auroc(prob, truth)!, p.manifest.evaluation[0].metrics["auroc"]!.value, accuracy: 2e-4)
        // Asked for fp32, the same package runs the fp32 encoder: other probabilities.
        let fp32 = try Predictor.predict(p, base: Fixtures.url("eva/eva_x_ti.pt"), inputs: inputs, options: eo, precision: .fp32)
        XCTAssertNotEqual(fp32.rows.map { $0[1] }, pred.rows.map { $0[1] })
        XCTAssertEqual(try PackageReader.encoder(for: p, base: Fixtures.url("eva/eva_x_ti.pt")).precision, .int8)
    }

    /// The committed format-1 package predates the field: it reads as fp32.
    func testOldManifestsReadAsFP32() throws {
        let p = try PackageReader.open(Fixtures.url("packages/format1.xrpkg"))
        XCTAssertNil(p.manifest.base_encoder.precision)
        XCTAssertEqual(p.manifest.base_encoder.encoderPrecision, .fp32)
        XCTAssertNil((p.manifestJSON["base_encoder"] as? [String: Any])?["precision"])
    }
}
