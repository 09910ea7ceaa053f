import XCTest
import Foundation
import XRTensor
import XRProbe
import XRData
import XRPipeline
import XRRecipes
@testable import XRPackage
import TestSupport

/// Packages of tuned encoders (LoRA, last-k): the tuned parameters travel, the base encoder is
/// checked, and `predict` on the test images reproduces the packaged evaluation.
final class TunedPackageTests: XCTestCase {
    func testLoRAPackagePredictsWhatItRecorded() throws {
        let dir = Fixtures.tempDir("xrlab-tuned-pack")
        let demo = try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 30)
        let recipe = dir.appendingPathComponent("r.yaml")
        try """
        version: 1
        name: tuned
        model: {path: demo/model}
        data: {manifest: demo/manifest.csv, label_column: labels, labels: [effusion], patient_column: patient_id, split_column: split}
        methods:
          - {name: lora, rank: 2, epochs: 2, batch_size: 4, head_hidden: 6}
          - {name: logistic, C: [1]}
        shots: [2]
        seeds: 1
        bootstrap: 50
        output: run
        """.write(to: recipe, atomically: true, encoding: .utf8)
        var ro = RunOptions()
        ro.quiet = true
        let run = try Runner.run(try RecipeLoader.load(recipe), options: ro).directory
        var o = PackOptions(name: "tuned", registry: dir.appendingPathComponent("reg"))
        o.version = "1.0.0"
        o.fit.method = "lora"
        o.merged = true
        o.quiet = true
        let res = try Packer.pack(runDirectory: run, options: o)
        let p = try PackageReader.open(res.archive)
        XCTAssertEqual(p.heads.map(\.info.kind), ["lora"])
        XCTAssertEqual(p.manifest.base_encoder.input_size, 128)
        XCTAssertTrue(p.heads[0].tensors.keys.contains("blocks.0.attn.qkv.lora_A.weight"))
        XCTAssertTrue(p.heads[0].tensors.keys.contains("head.weight"))
        XCTAssertEqual(p.heads[0].tensors["head.fc1.weight"]?.shape, [6, 96], "the MLP head travels")
        XCTAssertFalse(p.heads[0].tensors.keys.contains("blocks.0.attn.qkv.weight"), "frozen base weights are not copied")
        XCTAssertNotNil(p.sizes["weights/merged.0.safetensors"], "--merged adds the full tuned weights")

        var eo = EmbedOptions()
        eo.quiet = true
        eo.cache = nil
        let inputs = try InputList.resolve(demo.manifest)
        let pred = try Predictor.predict(p, base: demo.modelDir, inputs: inputs, options: eo)
        let table = try CSVTable(contentsOf: demo.manifest)
        let split = table.header.firstIndex(of: "split")!, labels = table.header.firstIndex(of: "labels")!
        let test = table.rows.indices.filter { table.rows[$0][split] == "test" }
        let prob = test.map { Double(pred.rows[$0][1])! }
        let truth = test.map { table.rows[$0][labels].split(separator: "|").contains("effusion") }
        XCTAssertEqual(Metrics.auroc(prob, truth)!, p.manifest.evaluation[0].metrics["auroc"]!.value, accuracy: 2e-4)
        // The base encoder is checked; features cannot stand in for images.
        let other = try DemoData.generate(in: dir.appendingPathComponent("other"), patients: 1, seed: 9)
        XCTAssertThrowsError(try Predictor.predict(p, base: other.modelDir, inputs: inputs, options: eo)) {
            XCTAssertTrue("\($0)".contains("base encoder mismatch"), "\($0)")
        }
        XCTAssertThrowsError(try Predictor.predict(p, features: Tensor(zeros: [1, 96]), ids: ["a"])) {
            XCTAssertTrue("\($0)".contains("predicts from images"), "\($0)")
        }
    }
}
