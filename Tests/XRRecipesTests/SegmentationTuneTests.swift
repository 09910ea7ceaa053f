import Foundation
import XCTest
@testable import XRRecipes
import XRTensor
import XRData
import XRPipeline
import TestSupport

/// Tuning methods on segmentation recipes: the encoder tuned with the linear decoder as its head,
/// on generated images (`SyntheticRectangles`), against the decoder on frozen tokens.
final class SegmentationTuneTests: XCTestCase {
    func recipe(methods: String) -> String {
        """
        version: 1
        name: seg-tune
        model: {path: demo/model, batch_size: 8}
        data:
          manifest: manifest.csv
          task: segmentation
          mask_column: mask
          patient_column: patient
          split_column: split
        methods:
          - {name: linear_decoder, epochs: 40, lr: 0.05, batch_size: 4}
        \(methods)
        shots: [6]
        seeds: 1
        bootstrap: 0
        output: run
        """
    }

    func testTuningMethodsAreAcceptedWithTheDecoderHead() throws {
        let dir = Fixtures.tempDir("seg-tune-schema")
        let url = dir.appendingPathComponent("r.yaml")
        try recipe(methods: "  - {name: lora, rank: 2, epochs: 2}\n  - {name: last_k, blocks: 1, epochs: 2}").write(to: url, atomically: true, encoding: .utf8)
        let problems = Planner.validate(url, checkFiles: false).map(\.description)
        XCTAssertTrue(problems.isEmpty, "\(problems)")
        let r = try RecipeLoader.load(url)
        XCTAssertEqual(r.recipe.methods.map(\.name), ["linear_decoder", "lora", "last_k"])
        XCTAssertTrue(r.recipe.methods[1].isTuning)
        // Retrieval still refuses them.
        try """
        version: 1
        name: r
        features: {matrix: f.npy}
        data: {manifest: m.csv, task: retrieval, label_column: l}
        methods: [{name: lora}]
        output: run
        """.write(to: url, atomically: true, encoding: .utf8)
        XCTAssertTrue(Planner.validate(url, checkFiles: false).map(\.description).contains { $0.contains("unknown method 'lora' for a retrieval task") })
    }

    /// LoRA and last-k tuning with the decoder head on the generated rectangles: each cell trains,
    /// keeps the best validation epoch, and its test Dice matches or beats the frozen decoder's.
    func testTuningMatchesOrBeatsTheFrozenDecoder() throws {
        let dir = Fixtures.tempDir("seg-tune-run")
        try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 2)
        try SyntheticRectangles.write(in: dir, count: 24, train: 14)
        let url = dir.appendingPathComponent("r.yaml")
        try recipe(
            methods:
                "  - {name: lora, rank: 4, alpha: 8, epochs: 4, lr: 0.002, batch_size: 3, validation: 3}\n  - {name: last_k, blocks: 1, epochs: 4, lr: 0.0005, batch_size: 3, validation: 3}"
        )
        .write(to: url, atomically: true, encoding: .utf8)
        var o = RunOptions()
        o.quiet = true
        let s = try Runner.run(try RecipeLoader.load(url), options: o)
        XCTAssertTrue(s.complete)
        let results = try String(contentsOf: s.directory.appendingPathComponent("results.jsonl"), encoding: .utf8).split(separator: "\n")
            .map { try JSONDecoder().decode(CellResult.self, from: Data($0.utf8)) }
        let byMethod = Dictionary(uniqueKeysWithValues: results.map { ($0.cell.method, $0) })
        let frozen = try XCTUnwrap(byMethod["linear_decoder"]?.metrics["dice"])
        for m in ["lora", "last_k"] {
            let r = try XCTUnwrap(byMethod[m], m)
            XCTAssertEqual(r.status, "ok", "\(m): \(r.reason ?? "")")
            XCTAssertEqual(r.n_train, 6)
            XCTAssertEqual(r.segmentation?.count, 10)
            let t = try XCTUnwrap(r.training, m)
            XCTAssertEqual(t.n_validation, 3)
            XCTAssertEqual(t.train_loss.count, t.epochs)
            XCTAssertGreaterThan(t.trainable_parameters, 0)
            let dice = try XCTUnwrap(r.metrics["dice"], m)
            print("\(m): dice \(dice) (frozen decoder \(frozen)), kept epoch \(t.best_epoch) of \(t.epochs), validation \(t.validation_loss ?? [])")
            XCTAssertGreaterThanOrEqual(dice, frozen, "\(m) matches or beats the frozen decoder")
        }
        // Sample masks of the tuned cells are written like every seed-0 cell's.
        let masks = s.directory.appendingPathComponent("masks/lora__k6__s0")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: masks.path).filter { $0.hasSuffix(".png") }.count, 8)
    }
}
