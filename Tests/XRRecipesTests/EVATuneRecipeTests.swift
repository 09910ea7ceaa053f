import XCTest
import Foundation
import XRTensor
import XRModels
import XRPipeline
@testable import XRRecipes
import TestSupport

/// `xrlab tune` on an EVA-X checkpoint (`fixtures/eva/eva_x_ti.pt`, as EVA-X saves it): LoRA on qkv
/// and the SwiGLU projections, written as merged weights under timm's `Eva` names (which load back
/// as an EVA-02 encoder) and as a PEFT folder that alone reproduces the test metrics.
final class EVATuneRecipeTests: XCTestCase {
    func testFinalTuneOfAnEVAXEncoder() throws {
        let dir = Fixtures.tempDir("xrlab-eva-final-tune")
        try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 30)
        let url = dir.appendingPathComponent("r.yaml")
        try """
        version: 1
        name: eva-tune
        model: {path: \(Fixtures.url("eva/eva_x_ti.pt").path), heads: 2}
        data: {manifest: demo/manifest.csv, label_column: labels, labels: [effusion], patient_column: patient_id, split_column: split}
        methods:
          - {name: lora, rank: 2, targets: [qkv, fc1, fc2], epochs: 2, batch_size: 4, validation: 2}
        shots: [2]
        seeds: 1
        bootstrap: 20
        output: run
        """.write(to: url, atomically: true, encoding: .utf8)
        let r = try RecipeLoader.load(url)
        var o = FinalTuneOptions(output: dir.appendingPathComponent("model"))
        o.method = "lora"
        o.epochs = 2
        o.quiet = true
        let res = try FinalTune.run(r, options: o)
        XCTAssertEqual(res.history.count, 2)
        XCTAssertNotNil(res.metrics["auroc"])
        let file = o.output.appendingPathComponent("model.safetensors")
        let weights = try SafeTensorsFile(contentsOf: file)
        for k in ["blocks.0.attn.qkv.weight", "blocks.0.attn.q_bias", "blocks.1.mlp.fc1.weight", "fc_norm.weight", "head.weight"] {
            XCTAssertTrue(weights.contains(k), k)
        }
        XCTAssertFalse(weights.names.contains { $0.contains("lora_") }, "LoRA is merged into the weights")
        let reloaded = try ViTLoader.load(file, heads: 2)
        XCTAssertEqual(reloaded.config.blockKind, .eva02)
        XCTAssertEqual(reloaded.config.eva, try ViTLoader.load(Fixtures.url("eva/eva_x_ti.pt"), heads: 2).config.eva)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: o.output.appendingPathComponent("adapter/adapter_config.json")))
        XCTAssertEqual((config as? [String: Any])?["target_modules"] as? [String], ["fc1", "fc2", "qkv"])
        var again = FinalTuneOptions(output: dir.appendingPathComponent("again"))
        again.method = "lora"
        again.epochs = 0
        again.fromPEFT = o.output.appendingPathComponent("adapter")
        again.quiet = true
        XCTAssertEqual(try FinalTune.run(r, options: again).metrics, res.metrics)
    }
}
