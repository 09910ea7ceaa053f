import Foundation
import XCTest
@testable import XRRecipes
import XRTensor
import XRData
import XRPipeline
import TestSupport

/// Tuning methods on detection recipes: the encoder tuned with the box head's decoder as its head,
/// on the generated rectangles of `DetectionRecipeTests`; and `data.other_box_images`.
final class DetectionTuneTests: XCTestCase {
    func recipe(methods: String, output: String = "run", extra: String = "") -> String {
        """
        version: 1
        name: det-tune
        model: {path: demo/model, batch_size: 8}
        data:
          manifest: manifest.csv
          task: detection
          boxes: boxes.csv
          patient_column: patient
          split_column: split\(extra)
        methods:
          - {name: box_head, epochs: 40, lr: 0.05, batch_size: 4}
        \(methods)
        shots: [3]
        seeds: 1
        bootstrap: 0
        output: \(output)
        """
    }

    func write(_ text: String, in dir: URL, name: String = "r.yaml") throws -> URL {
        let u = dir.appendingPathComponent(name)
        try text.write(to: u, atomically: true, encoding: .utf8)
        return u
    }

    func quiet() -> RunOptions {
        var o = RunOptions()
        o.quiet = true
        o.skipCheck = true
        return o
    }

    func problems(_ text: String) throws -> [String] {
        Planner.validate(try write(text, in: Fixtures.tempDir("det-tune-schema")), checkFiles: false).map(\.description)
    }

    func testTuningMethodsAreAcceptedWithTheirKeysAndBadSpecsRefused() throws {
        let good = recipe(methods: "  - {name: lora, rank: 2, epochs: 2, validation: 2}\n  - {name: last_k, blocks: 1, epochs: 2}")
        XCTAssertEqual(try problems(good), [])
        let dir = Fixtures.tempDir("det-tune-plan")
        try DetectionRecipeTests.makeStudy(in: dir, count: 9, train: 6)
        let r = try RecipeLoader.load(try write(good, in: dir))
        XCTAssertEqual(r.recipe.methods.map(\.name), ["box_head", "lora", "last_k"])
        XCTAssertTrue(r.recipe.methods[1].isTuning)
        let plan = try Planner.plan(r)
        XCTAssertEqual(plan.cells.count, 3)
        XCTAssertTrue(plan.text.contains("LoRA r=2"), plan.text)
        XCTAssertTrue(plan.text.contains("tuned with the box head"), plan.text)
        // A key of another method, a bad value, an unknown method: each named.
        let keyOfTheHead = try problems(recipe(methods: "  - {name: lora, positive_weight: 2}"))
        XCTAssertTrue(keyOfTheHead.contains { $0.contains("'positive_weight' does not apply to method lora") }, "\(keyOfTheHead)")
        let badRank = try problems(recipe(methods: "  - {name: lora, rank: 0}"))
        XCTAssertTrue(badRank.contains { $0.contains("rank") }, "\(badRank)")
        let unknown = try problems(recipe(methods: "  - {name: lorra}"))
        XCTAssertTrue(unknown.contains { $0.contains("unknown method 'lorra' for a detection task") }, "\(unknown)")
        let features = try problems(
            recipe(methods: "  - {name: lora}").replacingOccurrences(of: "model: {path: demo/model, batch_size: 8}", with: "features: {matrix: f.npy}"))
        XCTAssertTrue(features.contains { $0.contains("method lora tunes the encoder, so it needs model") }, "\(features)")
    }

    /// LoRA with the box head on the generated rectangles: the cell trains, keeps its best
    /// validation epoch, finds the rectangles (AP well above the share of images with a box) and
    /// writes boxes and heatmaps like `box_head`; interrupted and resumed, the same results.
    func testTunedBoxHeadFindsTheRectanglesAndResumes() throws {
        let dir = Fixtures.tempDir("det-tune-run")
        try DetectionRecipeTests.makeStudy(in: dir, count: 30, train: 18)
        let methods = "  - {name: lora, rank: 4, alpha: 8, epochs: 3, lr: 0.002, batch_size: 3, validation: 2}"
        let s = try Runner.run(try RecipeLoader.load(try write(recipe(methods: methods, output: "a"), in: dir)), options: quiet())
        XCTAssertTrue(s.complete)
        let a = dir.appendingPathComponent("a")
        let results = try String(contentsOf: a.appendingPathComponent("results.jsonl"), encoding: .utf8).split(separator: "\n")
            .map { try JSONDecoder().decode(CellResult.self, from: Data($0.utf8)) }
        let byMethod = Dictionary(uniqueKeysWithValues: results.map { ($0.cell.method, $0) })
        let lora = try XCTUnwrap(byMethod["lora"])
        XCTAssertEqual(lora.status, "ok", lora.reason ?? "")
        XCTAssertEqual(lora.n_train, 6)
        XCTAssertEqual(lora.detection?.count, 12)
        let t = try XCTUnwrap(lora.training)
        XCTAssertEqual(t.n_validation, 4)
        XCTAssertEqual(t.train_loss.count, t.epochs)
        XCTAssertGreaterThan(t.trainable_parameters, 0)
        // 8 of the 12 test images have a rectangle: chance AP is about 0.67 at best by ranking.
        let ap = try XCTUnwrap(lora.metrics["ap_30"]), auroc = try XCTUnwrap(lora.metrics["auroc"])
        print("lora: ap_30 \(ap), auroc \(auroc) (box_head \(byMethod["box_head"]?.metrics ?? [:])), kept epoch \(t.best_epoch) of \(t.epochs)")
        XCTAssertGreaterThan(ap, 0.9)
        XCTAssertGreaterThan(auroc, 0.9)
        let boxes = try CSVTable(contentsOf: a.appendingPathComponent("boxes.csv"))
        XCTAssertTrue(boxes.rows.contains { $0[0] == "lora" })
        let heatmaps = try FileManager.default.contentsOfDirectory(atPath: a.appendingPathComponent("heatmaps/lora__k3__s0").path)
        XCTAssertEqual(heatmaps.filter { $0.hasSuffix(".png") }.count, 8)
        XCTAssertTrue(FileManager.default.fileExists(atPath: a.appendingPathComponent("heatmaps_boxes_lora.png").path))

        // Interrupted after the box head's cell, then resumed: the one-go run's results.
        let rb = try RecipeLoader.load(try write(recipe(methods: methods, output: "b"), in: dir, name: "b.yaml"))
        var o = quiet()
        o.maxNewCells = 1
        XCTAssertFalse(try Runner.run(rb, options: o).complete)
        let rest = try Runner.run(rb, options: quiet())
        XCTAssertTrue(rest.complete)
        XCTAssertEqual(rest.computed, 1)
        XCTAssertEqual(rest.reused, 1)
        for f in ["results.jsonl", "boxes.csv"] {
            XCTAssertEqual(
                try String(contentsOf: dir.appendingPathComponent("b/\(f)"), encoding: .utf8),
                try String(contentsOf: a.appendingPathComponent(f), encoding: .utf8), f)
        }
    }

    /// With `labels`, an image whose boxes are all of other labels is left out, or a negative with
    /// `other_box_images: negative`; the key needs labels, and only detection tasks take it.
    func testOtherBoxImages() throws {
        let dir = Fixtures.tempDir("det-other")
        try DetectionRecipeTests.makeStudy(in: dir, count: 9, train: 6)
        try ["path,x,y,width,height,finding", "images/0.png,10,10,20,20,square", "images/1.png,10,10,20,20,circle", "images/3.png,5,5,20,20,square"]
            .joined(separator: "\n").appending("\n").write(to: dir.appendingPathComponent("boxes.csv"), atomically: true, encoding: .utf8)
        let labels = "\n  box_label_column: finding\n  labels: [square]"
        func task(_ extra: String) throws -> [Int] {
            let r = try RecipeLoader.load(try write(recipe(methods: "", extra: labels + extra), in: dir))
            return try DetectionCells.task(r, rows: try StudyLoader.rows(r)).labels
        }
        XCTAssertEqual(try task(""), [1, -1, 0, 1, 0, 0, 0, 0, 0])
        XCTAssertEqual(try task("\n  other_box_images: left_out"), [1, -1, 0, 1, 0, 0, 0, 0, 0])
        XCTAssertEqual(try task("\n  other_box_images: negative"), [1, 0, 0, 1, 0, 0, 0, 0, 0])
        let noLabels = try problems(recipe(methods: "", extra: "\n  other_box_images: negative"))
        XCTAssertTrue(noLabels.contains { $0.contains("other_box_images applies when labels name the box labels kept") }, "\(noLabels)")
        let bad = try problems(recipe(methods: "", extra: labels + "\n  other_box_images: negatives"))
        XCTAssertTrue(bad.contains { $0.contains("unknown other_box_images 'negatives'") }, "\(bad)")
        let seg = try problems(
            recipe(methods: "", extra: "\n  other_box_images: negative").replacingOccurrences(of: "task: detection", with: "task: segmentation"))
        XCTAssertTrue(seg.contains { $0.contains("other_box_images applies to detection tasks only") }, "\(seg)")
        // The resolved recipe keeps it.
        let r = try RecipeLoader.load(try write(recipe(methods: "", extra: labels + "\n  other_box_images: negative"), in: dir))
        XCTAssertTrue(try r.resolvedYAML().contains("other_box_images: negative"))
    }
}
