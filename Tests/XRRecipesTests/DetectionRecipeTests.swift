import Foundation
import XCTest
@testable import XRRecipes
import XRTensor
import XRData
import XRProbe
import XRPipeline
import TestSupport

/// Detection recipes on generated images: a bright rectangle (the finding, its box) on a dark,
/// noisy background in about two thirds of the images, none in the others, so frozen patch tokens
/// of even a random encoder separate the two.
final class DetectionRecipeTests: XCTestCase {
    static let width = 144, height = 160

    /// The demo encoder plus `count` images under `dir` (`SyntheticBoxes`), `boxes.csv` with one
    /// box per positive image (every third image is a negative). Patients own one image each; the
    /// first `train` are training rows.
    @discardableResult
    func makeStudy(in dir: URL, count: Int = 36, train: Int = 20) throws -> (manifest: URL, boxes: [String: Box]) {
        try Self.makeStudy(in: dir, count: count, train: train)
    }

    /// `makeStudy(in:count:train:)` for other test classes.
    @discardableResult
    static func makeStudy(in dir: URL, count: Int = 36, train: Int = 20) throws -> (manifest: URL, boxes: [String: Box]) {
        try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 2)
        let (manifest, boxes) = try SyntheticBoxes.write(in: dir, count: count, train: train)
        return (manifest, boxes.mapValues { Box(x: Double($0.x), y: Double($0.y), width: Double($0.width), height: Double($0.height)) })
    }

    func recipeText(output: String = "run", extra: String = "") -> String {
        """
        version: 1
        name: synthetic-detection
        model: {path: demo/model, batch_size: 8}
        data:
          manifest: manifest.csv
          task: detection
          boxes: boxes.csv
          patient_column: patient
          split_column: split
          subgroups: {sex: {column: sex}}\(extra)
        methods:
          - {name: box_head, epochs: 40, lr: 0.05, batch_size: 4}
          - {name: knn_patches, k: 5}
        shots: [2, 6]
        seeds: 2
        bootstrap: 30
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
        o.commandLine = ["xrlab", "run"]
        return o
    }

    func expectProblem(_ text: String, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let found = Planner.validate(try write(text, in: Fixtures.tempDir("det-schema")), checkFiles: false).map(\.description)
        XCTAssertTrue(
            found.contains { p in fragments.allSatisfy { p.contains($0) } }, "expected a problem with \(fragments), got \(found)", file: file, line: line)
    }

    // MARK: parsing

    func testDefaultsAndResolvedRecipe() throws {
        let text = recipeText().replacingOccurrences(of: "{name: box_head, epochs: 40, lr: 0.05, batch_size: 4}", with: "{name: box_head}")
        let r = try RecipeLoader.load(try write(text, in: Fixtures.tempDir("det-defaults")))
        XCTAssertTrue(r.recipe.isDetection)
        XCTAssertEqual(r.recipe.data.boxes, "boxes.csv")
        XCTAssertEqual(r.recipe.primary_metric, "ap_30")
        XCTAssertEqual(r.recipe.metrics, Recipe.detectionMetrics)
        XCTAssertEqual(r.recipe.methods, [.boxHead(BoxHeadSpec()), .knnPatches(KNNPatchesSpec(k: 5))])
        let yaml = try r.resolvedYAML()
        XCTAssertTrue(yaml.contains("positive_weight"), yaml)
        let again = try RecipeLoader.load(try write(yaml, in: Fixtures.tempDir("det-resolved")))
        XCTAssertEqual(again.recipe.methods, r.recipe.methods)
        XCTAssertEqual(again.recipe.data, r.recipe.data)
        // Box labels: labels with box_label_column name the boxes kept.
        let labelled = try RecipeLoader.load(
            try write(recipeText(extra: "\n  box_label_column: finding\n  labels: [square]"), in: Fixtures.tempDir("det-labels")))
        XCTAssertEqual(labelled.recipe.data.labels, ["square"])
        XCTAssertEqual(StudyLoader.taskNames(labelled.recipe), ["square"])
    }

    func testBadKeysAreNamed() throws {
        try expectProblem(recipeText().replacingOccurrences(of: "  boxes: boxes.csv\n", with: ""), ["needs boxes"])
        // A boxes file on a classification task.
        try expectProblem(
            recipeText().replacingOccurrences(of: "  task: detection\n", with: "  label_column: labels\n  labels: [a]\n"),
            ["boxes applies to detection tasks only"])
        try expectProblem(recipeText(extra: "\n  labels: [square]"), ["labels of a detection task name box labels"])
        try expectProblem(recipeText(extra: "\n  label_column: labels"), ["label_column does not apply to a detection task"])
        try expectProblem(recipeText(extra: "\n  mask_column: mask"), ["mask_column applies to segmentation tasks only"])
        try expectProblem(
            recipeText().replacingOccurrences(of: "{name: knn_patches, k: 5}", with: "{name: logistic}"), ["unknown method 'logistic' for a detection task"])
        try expectProblem(
            recipeText().replacingOccurrences(of: "{name: knn_patches, k: 5}", with: "{name: linear_decoder}"),
            ["unknown method 'linear_decoder' for a detection task"])
        try expectProblem(recipeText().replacingOccurrences(of: "epochs: 40", with: "epochs: 10000000"), ["epochs"])
        try expectProblem(recipeText().replacingOccurrences(of: "lr: 0.05", with: "lr: -1"), ["lr must be positive"])
        try expectProblem(recipeText().replacingOccurrences(of: "batch_size: 4}", with: "batch_size: 4, threshold: 100}"), ["threshold is a logit"])
        try expectProblem(recipeText().replacingOccurrences(of: "batch_size: 4}", with: "batch_size: 4, scoring: median}"), ["unknown scoring 'median'"])
        try expectProblem(
            recipeText().replacingOccurrences(of: "batch_size: 4}", with: "batch_size: 4, positive_weight: 0}"), ["positive_weight must be positive"])
        try expectProblem(
            recipeText().replacingOccurrences(of: "model: {path: demo/model, batch_size: 8}", with: "features: {matrix: f.npy}"), ["give model, not features"])
        try expectProblem(recipeText() + "\nmetrics: [dice]", ["unknown metric 'dice' for a detection task"])
        try expectProblem(recipeText() + "\nbudget: {targets: [auroc=0.8]}", ["budget.targets is not supported for detection tasks"])
    }

    // MARK: bad input files

    /// Replace `boxes.csv` under `dir` with `rows` (header `path,x,y,width,height,finding` unless given).
    func writeBoxes(_ rows: [String], in dir: URL, header: String = "path,x,y,width,height,finding") throws {
        try ([header] + rows).joined(separator: "\n").appending("\n").write(to: dir.appendingPathComponent("boxes.csv"), atomically: true, encoding: .utf8)
    }

    /// Running the recipe in `dir` fails with an error naming the boxes file and `field`, and
    /// writes no results.
    func expectRunError(in dir: URL, field: String, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try RecipeLoader.load(try write(recipeText(), in: dir))
        XCTAssertThrowsError(try Runner.run(r, options: quiet()), file: file, line: line) { e in
            let x = e as? XRError
            XCTAssertEqual(x?.file, dir.appendingPathComponent("boxes.csv").path, "\(e)", file: file, line: line)
            XCTAssertEqual(x?.field, field, "\(e)", file: file, line: line)
            XCTAssertTrue("\(e)".contains(fragment), "\(e)", file: file, line: line)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run/results.jsonl").path), file: file, line: line)
    }

    func testBadBoxesAreErrorsNamingFileAndField() throws {
        let dir = Fixtures.tempDir("det-bad")
        try makeStudy(in: dir, count: 9, train: 6)
        let good = "images/0.png,10,10,20,20,square"
        // A box reaching outside its 144×160 image.
        try writeBoxes([good, "images/1.png,130,10,20,20,square"], in: dir)
        try expectRunError(in: dir, field: "row 3", "outside the 144×160 image")
        try writeBoxes([good, "images/1.png,10,10,-5,20,square"], in: dir)
        try expectRunError(in: dir, field: "row 3, column width", "width -5.0 is not positive")
        try writeBoxes([good, "images/1.png,10,ten,20,20,square"], in: dir)
        try expectRunError(in: dir, field: "row 3, column y", "is not a number")
        // An image the manifest does not list.
        try writeBoxes([good, "images/99.png,10,10,20,20,square"], in: dir)
        try expectRunError(in: dir, field: "row 3, column path", "not in the manifest")
        // A missing column.
        try writeBoxes(["images/0.png,10,10,20"], in: dir, header: "path,x,y,width")
        try expectRunError(in: dir, field: "height", "no column 'height'")
        // The same problems are found by `xrlab validate` (no image decoded).
        let problems = Planner.validate(dir.appendingPathComponent("r.yaml")).map(\.description)
        XCTAssertTrue(problems.contains { $0.contains("boxes.csv") && $0.contains("no column 'height'") }, "\(problems)")
        // A missing boxes file.
        try FileManager.default.removeItem(at: dir.appendingPathComponent("boxes.csv"))
        let r = try RecipeLoader.load(try write(recipeText(), in: dir))
        XCTAssertThrowsError(try Runner.run(r, options: quiet())) { e in
            XCTAssertEqual((e as? XRError)?.field, "data.boxes")
            XCTAssertTrue("\(e)".contains("boxes file not found"), "\(e)")
        }
    }

    // MARK: end to end

    /// Every metric of a cell recomputed from boxes.csv and the true boxes alone.
    func recompute(_ boxesCSV: CSVTable, cell: Cell, truth: [String: Box], test: [String]) throws -> [String: Double] {
        let col = { (n: String) in try boxesCSV.column(n) }
        let (cm, ck, cs, ci) = (try col("method"), try col("shots"), try col("seed"), try col("image"))
        let (csc, cpx, cpy, cb) = (try col("image_score"), try col("peak_x"), try col("peak_y"), try col("box"))
        let (cx, cy, cw, ch, cbs) = (try col("x"), try col("y"), try col("width"), try col("height"), try col("score"))
        let rows = boxesCSV.rows.filter { $0[cm] == cell.method && $0[ck] == String(cell.shots) && $0[cs] == String(cell.seed) }
        let index = Dictionary(uniqueKeysWithValues: test.enumerated().map { ($1, $0) })
        var predictions: [ScoredBox] = []
        var scores = [Double](repeating: .nan, count: test.count), peaks = [(x: Double, y: Double)](repeating: (0, 0), count: test.count)
        for r in rows {
            let i = try XCTUnwrap(index[r[ci]])
            scores[i] = try XCTUnwrap(Double(r[csc]))
            peaks[i] = (try XCTUnwrap(Double(r[cpx])), try XCTUnwrap(Double(r[cpy])))
            if !r[cb].isEmpty {
                let v = try [cx, cy, cw, ch, cbs].map { try XCTUnwrap(Double(r[$0])) }
                predictions.append(ScoredBox(image: i, box: Box(x: v[0], y: v[1], width: v[2], height: v[3]), score: v[4]))
            }
        }
        XCTAssertFalse(scores.contains { $0.isNaN }, "every test image has a row")
        let t = test.map { truth[$0].map { [$0] } ?? [] }
        var out: [String: Double] = [:]
        for (name, iou) in [("ap_10", 0.1), ("ap_30", 0.3), ("ap_50", 0.5)] {
            out[name] = DetectionMetrics.averagePrecision(predictions, truth: t, threshold: iou)
        }
        let froc = try XCTUnwrap(DetectionMetrics.froc(predictions, truth: t, images: test.count, threshold: 0.3))
        for (name, rate) in [("froc_0.5", 0.5), ("froc_1", 1.0), ("froc_2", 2.0), ("froc_4", 4.0)] { out[name] = froc[rate] }
        out["pointing_game"] = DetectionMetrics.pointingGame(points: peaks, truth: t)
        out["auroc"] = Metrics.auroc(scores, t.map { !$0.isEmpty })
        return out
    }

    func testStudyLearnsTheBoxesWritesOutputsAndResumes() throws {
        let dir = Fixtures.tempDir("det-run")
        let (_, truth) = try makeStudy(in: dir)
        let r = try RecipeLoader.load(try write(recipeText(output: "a"), in: dir))
        let full = try Runner.run(r, options: quiet())
        XCTAssertTrue(full.complete)
        let a = dir.appendingPathComponent("a")
        let results = try String(contentsOf: a.appendingPathComponent("results.jsonl"), encoding: .utf8).split(separator: "\n")
            .map { try JSONDecoder().decode(CellResult.self, from: Data($0.utf8)) }
        XCTAssertEqual(results.count, 2 * 2 * 2)
        let test = (20..<36).map { "images/\($0).png" }
        let boxesCSV = try CSVTable(contentsOf: a.appendingPathComponent("boxes.csv"))
        for res in results {
            XCTAssertEqual(res.status, "ok", "\(res.cell.id): \(res.reason ?? "")")
            XCTAssertEqual(res.n_test, 16)
            // Shots with a box and as many without.
            XCTAssertEqual(res.n_train, 2 * res.cell.shots)
            XCTAssertEqual(res.train_ids.filter { truth[$0] != nil }.count, res.cell.shots)
            let found = try XCTUnwrap(res.detection)
            XCTAssertEqual(found.map(\.image), test)
            // Every metric and its interval, and the metrics recomputed from boxes.csv.
            let again = try recompute(boxesCSV, cell: res.cell, truth: truth, test: test)
            for m in Recipe.detectionMetrics {
                let v = try XCTUnwrap(res.metrics[m], "\(res.cell.id) \(m)")
                XCTAssertEqual(v, try XCTUnwrap(again[m]), accuracy: 1e-12, "\(res.cell.id) \(m)")
                let ci = try XCTUnwrap(res.metric_ci?[m], "\(res.cell.id) \(m)")
                XCTAssertLessThanOrEqual(ci.low, ci.high)
            }
            XCTAssertEqual(res.primary_ci, res.metric_ci?["ap_30"])
            XCTAssertEqual(res.subgroups.map(\.attribute), ["sex"])
        }
        // The bright rectangles are found: with 6 images with a box, high AP, AUROC and pointing game.
        for m in ["box_head", "knn_patches"] {
            let cells = results.filter { $0.cell.method == m && $0.cell.shots == 6 }
            func mean(_ k: String) -> Double { cells.compactMap { $0.metrics[k] }.reduce(0, +) / Double(cells.count) }
            XCTAssertGreaterThan(mean("ap_30"), 0.6, m)
            XCTAssertGreaterThan(mean("auroc"), 0.9, m)
            XCTAssertGreaterThan(mean("pointing_game"), 0.8, m)
        }
        // summary.csv has a bootstrap interval for every metric.
        let table = try CSVTable(contentsOf: a.appendingPathComponent("summary.csv"))
        let ap = try XCTUnwrap(table.rows.first { $0[0...3] == ["box_head", "boxes", "6", "ap_30"] })
        let froc = try XCTUnwrap(table.rows.first { $0[0...3] == ["box_head", "boxes", "6", "froc_1"] })
        XCTAssertFalse(froc[9].isEmpty)
        for name in ["curve_boxes.png", "heatmaps_boxes_box_head.png", "heatmaps_boxes_knn_patches.png"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: a.appendingPathComponent(name).path), name)
        }
        // Heatmaps of the sample (6 with a box, 2 without), at the original size.
        let folder = a.appendingPathComponent("heatmaps/box_head__k6__s0")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".png") }
        XCTAssertEqual(files.count, 8)
        let heat = try PNGCodec.read(folder.appendingPathComponent(files[0]))
        XCTAssertEqual([heat.width, heat.height], [Self.width, Self.height])
        let report = try String(contentsOf: a.appendingPathComponent("report.md"), encoding: .utf8)
        XCTAssertTrue(report.contains("## Detection"), report)
        XCTAssertTrue(report.contains("heatmaps_boxes_knn_patches.png"), report)
        XCTAssertTrue(report.contains("| boxes | box_head | 6 | \(ap[5]) ± \(ap[6]) [\(ap[9]), \(ap[10])]"), report)

        // resolved.yaml in the run directory holds the boxes file's absolute path: it runs from anywhere.
        let rerun = try RecipeLoader.load(a.appendingPathComponent("resolved.yaml"))
        XCTAssertTrue(rerun.recipe.data.boxes?.hasPrefix("/") ?? false)
        XCTAssertNoThrow(try DetectionCells.boxesTable(rerun))

        // Interrupted after 3 cells, then resumed: the same results as the one-go run.
        let rb = try RecipeLoader.load(try write(recipeText(output: "b"), in: dir, name: "b.yaml"))
        var o = quiet()
        o.maxNewCells = 3
        XCTAssertFalse(try Runner.run(rb, options: o).complete)
        let rest = try Runner.run(rb, options: quiet())
        XCTAssertTrue(rest.complete)
        XCTAssertEqual(rest.computed, 5)
        XCTAssertEqual(rest.reused, 3)
        XCTAssertEqual(
            try String(contentsOf: dir.appendingPathComponent("b/results.jsonl"), encoding: .utf8),
            try String(contentsOf: a.appendingPathComponent("results.jsonl"), encoding: .utf8))
        XCTAssertEqual(
            try String(contentsOf: dir.appendingPathComponent("b/boxes.csv"), encoding: .utf8),
            try String(contentsOf: a.appendingPathComponent("boxes.csv"), encoding: .utf8))
    }

    /// Shards computed apart and merged give the one-go run's results.
    func testShardsMergeToTheSameResults() throws {
        let dir = Fixtures.tempDir("det-shards")
        try makeStudy(in: dir, count: 24, train: 14)
        let text = recipeText(output: "s").replacingOccurrences(of: "shots: [2, 6]", with: "shots: [2]")
        let r = try RecipeLoader.load(try write(text, in: dir))
        for i in 1...2 {
            var o = quiet()
            o.shard = try Shard(index: i, count: 2)
            _ = try Runner.run(r, options: o)
        }
        var merge = quiet()
        merge.mergeOnly = true
        let merged = try Runner.run(r, options: merge)
        XCTAssertTrue(merged.complete)
        let one = try RecipeLoader.load(try write(text.replacingOccurrences(of: "output: s", with: "output: one"), in: dir, name: "one.yaml"))
        _ = try Runner.run(one, options: quiet())
        for f in ["results.jsonl", "boxes.csv", "summary.csv"] {
            XCTAssertEqual(
                try String(contentsOf: dir.appendingPathComponent("s/\(f)"), encoding: .utf8),
                try String(contentsOf: dir.appendingPathComponent("one/\(f)"), encoding: .utf8), f)
        }
    }

    /// `xrlab plan` describes the detection methods and counts their cells.
    func testPlanDescribesTheMethods() throws {
        let dir = Fixtures.tempDir("det-plan")
        try makeStudy(in: dir, count: 9, train: 6)
        let plan = try Planner.plan(try RecipeLoader.load(try write(recipeText(), in: dir)))
        XCTAssertEqual(plan.tasks, ["boxes"])
        XCTAssertEqual(plan.cells.count, 8)
        XCTAssertTrue(plan.text.contains("box head on patch tokens (40 epochs"), plan.text)
        XCTAssertTrue(plan.text.contains("box-share transfer from the 5 nearest labelled patches"), plan.text)
    }

    /// recipes/fracatlas-fracture-detection-shared.yaml on the shared FracAtlas boxes, one seed,
    /// one shot count, LoRA for two epochs.
    func testSharedFracAtlasRecipeRuns() throws {
        _ = try Fixtures.requireSharedData()
        let beside = Fixtures.repoRoot.deletingLastPathComponent().appendingPathComponent("shared/data/annotations/fracatlas_boxes.csv")
        guard FileManager.default.fileExists(atPath: beside.path) else { throw XCTSkip("the recipe needs ../shared/data beside the repository") }
        let dir = Fixtures.tempDir("det-fracatlas")
        let model = try DemoData.generate(in: dir, patients: 2).modelDir
        let r = try RecipeLoader.load(
            Fixtures.repoRoot.appendingPathComponent("recipes/fracatlas-fracture-detection-shared.yaml"),
            overrides: [
                "model.path=\(model.path)", "output=\(dir.appendingPathComponent("run").path)", "seeds=1", "shots=[4]", "bootstrap=0",
                "methods.2.epochs=2"
            ])
        let s = try Runner.run(r, options: quiet())
        XCTAssertTrue(s.complete)
        XCTAssertEqual(s.computed, 3)
        XCTAssertTrue(s.skipped.isEmpty, "\(s.skipped.map { $0.reason ?? "" })")
        let results = try String(contentsOf: dir.appendingPathComponent("run/results.jsonl"), encoding: .utf8).split(separator: "\n")
            .map { try JSONDecoder().decode(CellResult.self, from: Data($0.utf8)) }
        // Every FracAtlas test image, with and without a fracture, in every cell.
        XCTAssertEqual(results.map { $0.detection?.count }, [172, 172, 172])
        XCTAssertEqual(results.first { $0.cell.method == "lora" }?.training?.n_validation, 8)
    }

    /// recipes/nih-chest-findings-detection-shared.yaml on the shared NIH boxes: one seed, two shot
    /// counts, LoRA for two epochs; Cardiomegaly boxes against the images boxed for other findings.
    func testSharedNIHRecipeRuns() throws {
        _ = try Fixtures.requireSharedData()
        let beside = Fixtures.repoRoot.deletingLastPathComponent().appendingPathComponent("shared/data/annotations/nih_boxes.csv")
        guard FileManager.default.fileExists(atPath: beside.path) else { throw XCTSkip("the recipe needs ../shared/data beside the repository") }
        let dir = Fixtures.tempDir("det-nih")
        let model = try DemoData.generate(in: dir, patients: 2).modelDir
        let r = try RecipeLoader.load(
            Fixtures.repoRoot.appendingPathComponent("recipes/nih-chest-findings-detection-shared.yaml"),
            overrides: [
                "model.path=\(model.path)", "output=\(dir.appendingPathComponent("run").path)", "seeds=1", "shots=[2, 8]", "bootstrap=0",
                "methods.2.epochs=2"
            ])
        XCTAssertEqual(r.recipe.methods.map(\.name), ["box_head", "knn_patches", "lora"])
        let s = try Runner.run(r, options: quiet())
        XCTAssertTrue(s.complete)
        XCTAssertEqual(s.computed, 6)
        XCTAssertTrue(s.skipped.isEmpty, "\(s.skipped.map { $0.reason ?? "" })")
        let results = try String(contentsOf: dir.appendingPathComponent("run/results.jsonl"), encoding: .utf8).split(separator: "\n")
            .map { try JSONDecoder().decode(CellResult.self, from: Data($0.utf8)) }
        for res in results {
            // Every NIH test image: 20 with a Cardiomegaly box, 93 boxed for other findings only.
            let found = try XCTUnwrap(res.detection, res.cell.id)
            XCTAssertEqual(found.count, 113, res.cell.id)
            XCTAssertEqual(res.cell.task, "Cardiomegaly")
            XCTAssertEqual(res.n_train, 2 * res.cell.shots, res.cell.id)
            XCTAssertNotNil(res.metrics["auroc"] ?? nil, res.cell.id)
        }
        let tuned = try XCTUnwrap(results.first { $0.cell.method == "lora" && $0.cell.shots == 8 }?.training)
        XCTAssertEqual(tuned.n_validation, 8)
        XCTAssertEqual(tuned.train_loss.count, tuned.epochs)
    }
}
