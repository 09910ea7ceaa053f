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
/// packaged evaluation; and the tuning methods, whose LoRA package predicts likewise.
final class EVAPackageTests: XCTestCase {
    func study(_ dir: URL, methods: String, shots: Int = 4) throws -> (URL, DemoData.Summary) {
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
        shots: [\(shots)]
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

    /// Every tuning method runs on an EVA-X checkpoint (`.pt` as EVA-X saves it); the LoRA
    /// package (on qkv and the SwiGLU projections, with merged weights) predicts what it recorded.
    func testTuningMethodsRunPackAndPredict() throws {
        let dir = Fixtures.tempDir("xrlab-eva-tune")
        let (recipe, demo) = try study(
            dir,
            methods: """
                    - {name: lora, rank: 2, targets: [qkv, fc1, fc2], epochs: 2, batch_size: 4}
                    - {name: adapter, adapter_dim: 4, epochs: 1, batch_size: 4}
                    - {name: last_k, blocks: 1, epochs: 1, batch_size: 4}
                    - {name: bitfit, epochs: 1, batch_size: 4}
                    - {name: full, epochs: 1, batch_size: 4}
                """, shots: 2)
        var ro = RunOptions()
        ro.quiet = true
        let s = try Runner.run(try RecipeLoader.load(recipe), options: ro)
        XCTAssertTrue(s.complete)
        let lines = try String(contentsOf: s.directory.appendingPathComponent("results.jsonl"), encoding: .utf8).split(separator: "\n")
        let results = try lines.map { try JSONDecoder().decode(CellResult.self, from: Data($0.utf8)) }
        XCTAssertEqual(Set(results.map(\.cell.method)), ["lora", "adapter", "last_k", "bitfit", "full"])
        for r in results {
            XCTAssertEqual(r.status, "ok", "\(r.cell.id): \(r.reason ?? "")")
            XCTAssertGreaterThan(try XCTUnwrap(r.training, r.cell.id).trainable_parameters, 0)
            XCTAssertNotNil(r.metrics["auroc"], r.cell.id)
        }
        var o = PackOptions(name: "eva-lora", registry: dir.appendingPathComponent("reg"))
        o.version = "1.0.0"
        o.fit.method = "lora"
        o.merged = true
        o.quiet = true
        let p = try PackageReader.open(try Packer.pack(runDirectory: s.directory, options: o).archive)
        XCTAssertEqual(p.manifest.base_encoder.config?.blockKind, .eva02)
        for k in ["blocks.0.attn.qkv.lora_A.weight", "blocks.1.mlp.fc1.lora_B.weight", "blocks.1.mlp.fc2.lora_A.weight", "head.weight"] {
            XCTAssertTrue(p.heads[0].tensors.keys.contains(k), k)
        }
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
    }
}
