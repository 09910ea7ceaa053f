import XCTest
import Foundation
import XRTensor
import XRPipeline
@testable import XRRecipes
import TestSupport

/// Tuning methods inside a study: same cells, tables and curves as the probes; resumable.
final class TuneRecipeTests: XCTestCase {
    func recipe(_ dir: URL, output: String) throws -> URL {
        let url = dir.appendingPathComponent("\(output).yaml")
        try """
        version: 1
        name: tune
        model: {path: demo/model, batch_size: 16}
        data:
          manifest: demo/manifest.csv
          label_column: labels
          labels: [effusion]
          patient_column: patient_id
          split_column: split
          subgroups: {sex: {column: sex}}
        methods:
          - {name: logistic, C: [1]}
          - {name: lora, rank: 2, epochs: 3, batch_size: 4, validation: 2}
          - {name: last_k, blocks: 1, epochs: 2, batch_size: 4, augment: false}
          - {name: adapter, adapter_dim: 4, placement: parallel, epochs: 2, batch_size: 4, validation: 0, head_hidden: 8}
        shots: [2]
        seeds: 2
        bootstrap: 20
        output: \(output)
        """.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    func testTuningCellsRunResumeAndReport() throws {
        let dir = Fixtures.tempDir("xrlab-tune-recipe")
        try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 30)
        var o = RunOptions()
        o.quiet = true
        let full = try Runner.run(try RecipeLoader.load(try recipe(dir, output: "a")), options: o)
        XCTAssertTrue(full.complete)
        let lines = try String(contentsOf: dir.appendingPathComponent("a/results.jsonl"), encoding: .utf8).split(separator: "\n")
        let results = try lines.map { try JSONDecoder().decode(CellResult.self, from: Data($0.utf8)) }
        XCTAssertEqual(Set(results.map(\.cell.method)), ["logistic", "lora", "last_k", "adapter"])
        for r in results where r.cell.method != "logistic" {
            XCTAssertEqual(r.status, "ok", "\(r.cell.id): \(r.reason ?? "")")
            let t = try XCTUnwrap(r.training, r.cell.id)
            XCTAssertGreaterThan(t.trainable_parameters, 0)
            XCTAssertEqual(t.train_loss.count, t.epochs)
            XCTAssertNotNil(r.metrics["auroc"])
            XCTAssertEqual(r.n_train, 4)
        }
        XCTAssertNil(results.first { $0.cell.method == "adapter" }?.training?.validation_loss, "validation: 0 → no early stopping")
        let summary = try String(contentsOf: dir.appendingPathComponent("a/summary.csv"), encoding: .utf8)
        XCTAssertTrue(summary.contains("\nlora,effusion,2,auroc,2,"), summary)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("a/curve_effusion.png").path))
        let report = try String(contentsOf: dir.appendingPathComponent("a/report.md"), encoding: .utf8)
        XCTAssertTrue(report.contains("LoRA r=2"), report)
        // No checkpoints left behind.
        XCTAssertFalse(
            try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("a/cells").path).contains { $0.hasSuffix(".ckpt.safetensors") })

        // Interrupted after 3 new cells, then resumed: byte-identical results.
        var partial = o
        partial.maxNewCells = 3
        let b = try recipe(dir, output: "b")
        XCTAssertFalse(try Runner.run(try RecipeLoader.load(b), options: partial).complete)
        let resumed = try Runner.run(try RecipeLoader.load(b), options: o)
        XCTAssertTrue(resumed.complete)
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("b/results.jsonl")), try Data(contentsOf: dir.appendingPathComponent("a/results.jsonl")))
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("b/summary.csv")), try Data(contentsOf: dir.appendingPathComponent("a/summary.csv")))
    }

    func testTuningNeedsImagesAndItsOwnKeys() throws {
        let dir = Fixtures.tempDir("xrlab-tune-recipe")
        let url = dir.appendingPathComponent("bad.yaml")
        try """
        version: 1
        name: bad
        features: {matrix: f.npy}
        data: {manifest: m.csv, label_column: labels, labels: [a]}
        methods:
          - {name: lora, rank: 0, blocks: 2}
          - {name: last_k, placement: diagonal, hflip: maybe}
        shots: [1]
        output: out
        """.write(to: url, atomically: true, encoding: .utf8)
        let (_, problems) = RecipeLoader.check(url)
        let text = problems.map(\.description).joined(separator: "\n")
        XCTAssertTrue(text.contains("method lora tunes the encoder, so it needs model"), text)
        XCTAssertTrue(text.contains("rank must be at least 1"), text)
        XCTAssertTrue(text.contains("'blocks' does not apply to method lora"), text)
        XCTAssertTrue(text.contains("'placement' does not apply to method last_k"), text)
        XCTAssertTrue(text.contains("expected true or false, found 'maybe'"), text)
    }

    func testFinalTuneWritesAModelThatReloads() throws {
        let dir = Fixtures.tempDir("xrlab-tune-recipe")
        try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 30)
        let r = try RecipeLoader.load(try recipe(dir, output: "c"))
        var o = FinalTuneOptions(output: dir.appendingPathComponent("model"))
        o.method = "lora"
        o.epochs = 2
        o.quiet = true
        let res = try FinalTune.run(r, options: o)
        XCTAssertEqual(res.history.count, 2)
        XCTAssertNotNil(res.metrics["auroc"])
        let names = Set(try FileManager.default.contentsOfDirectory(atPath: o.output.path))
        XCTAssertEqual(names, ["adapter", "model.safetensors", "history.csv", "metrics.json"], "no checkpoint left")
        let weights = try SafeTensorsFile(contentsOf: o.output.appendingPathComponent("model.safetensors"))
        XCTAssertTrue(weights.contains("blocks.0.attn.qkv.weight") && weights.contains("head.weight"))
        XCTAssertFalse(weights.names.contains { $0.contains("lora_") }, "LoRA is merged into the weights")
        // The PEFT folder alone reproduces the test metrics.
        var again = FinalTuneOptions(output: dir.appendingPathComponent("again"))
        again.method = "lora"
        again.epochs = 0
        again.fromPEFT = o.output.appendingPathComponent("adapter")
        again.quiet = true
        XCTAssertEqual(try FinalTune.run(r, options: again).metrics, res.metrics)
        // Asking for a method the recipe does not have.
        var bad = o
        bad.method = "bitfit"
        XCTAssertThrowsError(try FinalTune.run(r, options: bad)) { XCTAssertTrue("\($0)".contains("no tuning method 'bitfit'"), "\($0)") }
    }
}
