import Foundation
import XCTest
@testable import XRRecipes
import XRTensor
import XRData
import XRPipeline
import TestSupport

/// Segmentation recipes on generated images: a bright rectangle on a dark, noisy background, its
/// mask the rectangle, so frozen patch tokens of even a random encoder separate the two.
final class SegmentationRecipeTests: XCTestCase {
    /// The demo encoder plus `count` images with masks (`masks/<i>.png`) under `dir`
    /// (`SyntheticRectangles`); one unannotated row (empty mask column). Patients own one image
    /// each; the first `train` are training rows.
    @discardableResult
    func makeStudy(in dir: URL, count: Int = 24, train: Int = 14) throws -> URL {
        try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 2)
        return try SyntheticRectangles.write(in: dir, count: count, train: train)
    }

    func recipeText(output: String = "run", extra: String = "") -> String {
        """
        version: 1
        name: synthetic-segmentation
        model: {path: demo/model, batch_size: 8}
        data:
          manifest: manifest.csv
          task: segmentation
          mask_column: mask
          patient_column: patient
          split_column: split
          subgroups: {sex: {column: sex}}\(extra)
        methods:
          - {name: linear_decoder, epochs: 40, lr: 0.05, batch_size: 4}
          - {name: knn_patches, k: 5}
        shots: [2, 8]
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

    func problems(_ text: String) throws -> [String] {
        Planner.validate(try write(text, in: Fixtures.tempDir("seg-schema")), checkFiles: false).map(\.description)
    }

    func expectProblem(_ text: String, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let found = try problems(text)
        XCTAssertTrue(
            found.contains { p in fragments.allSatisfy { p.contains($0) } }, "expected a problem with \(fragments), got \(found)", file: file, line: line)
    }

    // MARK: parsing

    func testDefaultsAndResolvedRecipe() throws {
        let text = recipeText().replacingOccurrences(of: "{name: linear_decoder, epochs: 40, lr: 0.05, batch_size: 4}", with: "{name: linear_decoder}")
        let r = try RecipeLoader.load(try write(text, in: Fixtures.tempDir("seg-defaults")))
        XCTAssertTrue(r.recipe.isSegmentation)
        XCTAssertEqual(r.recipe.data.mask_column, "mask")
        XCTAssertEqual(r.recipe.primary_metric, "dice")
        XCTAssertEqual(r.recipe.metrics, Recipe.segmentationMetrics)
        XCTAssertEqual(r.recipe.methods, [.linearDecoder(LinearDecoderSpec()), .knnPatches(KNNPatchesSpec(k: 5))])
        let yaml = try r.resolvedYAML()
        XCTAssertTrue(yaml.contains("weight_decay"), yaml)
        let again = try RecipeLoader.load(try write(yaml, in: Fixtures.tempDir("seg-resolved")))
        XCTAssertEqual(again.recipe.methods, r.recipe.methods)
        XCTAssertEqual(again.recipe.data, r.recipe.data)
    }

    func testBadKeysAreNamed() throws {
        try expectProblem(recipeText().replacingOccurrences(of: "  mask_column: mask\n", with: ""), ["needs mask_column"])
        try expectProblem(
            recipeText().replacingOccurrences(of: "  task: segmentation\n", with: "  label_column: labels\n  labels: [a]\n"),
            ["mask_column applies to segmentation tasks only"])
        try expectProblem(recipeText(extra: "\n  labels: [a]"), ["labels does not apply to a segmentation task"])
        try expectProblem(recipeText(extra: "\n  mask_classes: [0]"), ["mask_classes", "2 to 255 values"])
        try expectProblem(recipeText(extra: "\n  mask_classes: [0, 1, 1]"), ["listed twice"])
        try expectProblem(
            recipeText().replacingOccurrences(of: "{name: knn_patches, k: 5}", with: "{name: logistic}"), ["unknown method 'logistic' for a segmentation task"])
        try expectProblem(recipeText().replacingOccurrences(of: "{name: knn_patches, k: 5}", with: "{name: knn_patches, k: 0}"), ["k must be at least 1"])
        try expectProblem(recipeText().replacingOccurrences(of: "epochs: 40", with: "epochs: 10000000"), ["epochs"])
        try expectProblem(recipeText().replacingOccurrences(of: "lr: 0.05", with: "lr: -1"), ["lr must be positive"])
        try expectProblem(
            recipeText().replacingOccurrences(of: "model: {path: demo/model, batch_size: 8}", with: "features: {matrix: f.npy}"), ["give model, not features"])
        try expectProblem(recipeText() + "\nmetrics: [auroc]", ["unknown metric 'auroc' for a segmentation task"])
    }

    // MARK: bad input files

    func testMaskOfAnotherSizeIsAnErrorNamingTheMask() throws {
        let dir = Fixtures.tempDir("seg-size")
        try makeStudy(in: dir, count: 8, train: 5)
        try PNGCodec.write(
            try PNGCodec.encodeGray8(width: 10, height: 12, pixels: [UInt8](repeating: 0, count: 120)), to: dir.appendingPathComponent("masks/3.png"))
        let r = try RecipeLoader.load(try write(recipeText(), in: dir))
        XCTAssertThrowsError(try Runner.run(r, options: quiet())) { e in
            let x = e as? XRError
            XCTAssertEqual(x?.file, dir.appendingPathComponent("masks/3.png").path)
            XCTAssertTrue("\(e)".contains("10×12"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run/results.jsonl").path))
    }

    func testModelInputOffThePatchGridIsAnErrorNamingTheSize() throws {
        // The 72-pixel input is refused as soon as the recipe's encoder is loaded, before any image
        // is read or cell runs, naming the recipe file and the preprocessing key that sets it, with
        // the sizes that would fit; nothing is written.
        let dir = Fixtures.tempDir("seg-grid")
        try makeStudy(in: dir, count: 8, train: 5)
        for (pre, field) in [
            ("{size: 80, crop: 72, mean: 0.5, std: 0.25}", "model.preprocessing.crop"), ("{size: 72, mean: 0.5, std: 0.25}", "model.preprocessing.size")
        ] {
            let text = recipeText(output: "run-\(field)").replacingOccurrences(
                of: "model: {path: demo/model, batch_size: 8}", with: "model: {path: demo/model, batch_size: 8, preprocessing: \(pre)}")
            let url = try write(text, in: dir, name: "\(field).yaml")
            XCTAssertThrowsError(try Runner.run(try RecipeLoader.load(url), options: quiet())) { e in
                let x = e as? XRError
                XCTAssertNotNil(x, "\(e)")
                XCTAssertTrue("\(e)".contains("72×72 is not a positive multiple of the patch size 16"), "\(e)")
                XCTAssertEqual(x?.file, url.path, "\(e)")
                XCTAssertEqual(x?.field, field, "\(e)")
                XCTAssertEqual(x?.hint, "make the crop a multiple of 16, e.g. 64 or 80", "\(e)")
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run-\(field)/results.jsonl").path))
        }
    }

    func testMissingMaskAndBadClassValueAreErrors() throws {
        let dir = Fixtures.tempDir("seg-missing")
        try makeStudy(in: dir, count: 8, train: 5)
        try FileManager.default.removeItem(at: dir.appendingPathComponent("masks/4.png"))
        let r = try RecipeLoader.load(try write(recipeText(), in: dir))
        XCTAssertThrowsError(try Runner.run(r, options: quiet())) { e in
            XCTAssertTrue("\(e)".contains("mask not found"), "\(e)")
            XCTAssertEqual((e as? XRError)?.field, "row 6, column mask")
        }
        // Masks hold 0 / 255; classes [0, 1] do not list 255.
        let dir2 = Fixtures.tempDir("seg-classes")
        try makeStudy(in: dir2, count: 8, train: 5)
        let r2 = try RecipeLoader.load(try write(recipeText(extra: "\n  mask_classes: [0, 1]"), in: dir2))
        XCTAssertThrowsError(try Runner.run(r2, options: quiet())) { e in
            XCTAssertTrue((e as? XRError)?.file?.hasPrefix(dir2.appendingPathComponent("masks").path) ?? false, "\(e)")
        }
    }

    // MARK: end to end

    /// recipes/fracatlas-fracture-segmentation-shared.yaml on the shared FracAtlas masks (its
    /// manifest lists paths into ../shared/data beside the repository), one seed, one shot count.
    func testSharedFracAtlasRecipeRuns() throws {
        _ = try Fixtures.requireSharedData()
        let beside = Fixtures.repoRoot.deletingLastPathComponent().appendingPathComponent("shared/data/masks/fracatlas")
        guard FileManager.default.fileExists(atPath: beside.path) else { throw XCTSkip("the recipe's manifest needs ../shared/data beside the repository") }
        let dir = Fixtures.tempDir("seg-fracatlas")
        let model = try DemoData.generate(in: dir, patients: 2).modelDir
        let r = try RecipeLoader.load(
            Fixtures.repoRoot.appendingPathComponent("recipes/fracatlas-fracture-segmentation-shared.yaml"),
            overrides: ["model.path=\(model.path)", "output=\(dir.appendingPathComponent("run").path)", "seeds=1", "shots=[4]", "bootstrap=0"])
        let s = try Runner.run(r, options: quiet())
        XCTAssertTrue(s.complete)
        XCTAssertEqual(s.computed, 2)
        XCTAssertTrue(s.skipped.isEmpty, "\(s.skipped.map { $0.reason ?? "" })")
        let perImage = try CSVTable(contentsOf: dir.appendingPathComponent("run/per_image.csv"))
        XCTAssertEqual(perImage.rows.count, 2 * 63)
        // Every test image of FracAtlas' fractured set has a fracture: the truth is never empty.
        let truth = try perImage.column("truth_pixels")
        XCTAssertFalse(perImage.rows.contains { $0[truth] == "0" })
    }

    func testStudyLearnsTheMasksWritesOutputsAndResumes() throws {
        let dir = Fixtures.tempDir("seg-run")
        try makeStudy(in: dir)
        let r = try RecipeLoader.load(try write(recipeText(output: "a"), in: dir))
        let full = try Runner.run(r, options: quiet())
        XCTAssertTrue(full.complete)
        let a = dir.appendingPathComponent("a")
        let results = try String(contentsOf: a.appendingPathComponent("results.jsonl"), encoding: .utf8).split(separator: "\n")
            .map { try JSONDecoder().decode(CellResult.self, from: Data($0.utf8)) }
        XCTAssertEqual(results.count, 2 * 2 * 2)
        for res in results {
            XCTAssertEqual(res.status, "ok", "\(res.cell.id): \(res.reason ?? "")")
            XCTAssertEqual(res.n_test, 10)
            XCTAssertEqual(res.n_train, res.cell.shots)
            XCTAssertFalse(res.train_ids.contains("images/1.png"), "unannotated rows are never shots")
            let scores = try XCTUnwrap(res.segmentation)
            XCTAssertEqual(scores.count, 10)
            // The pooled Dice is recomputed from the per-image counts.
            let t = scores.reduce(0) { $0 + $1.truth }, p = scores.reduce(0) { $0 + $1.predicted }, o = scores.reduce(0) { $0 + $1.overlap }
            XCTAssertEqual(res.metrics["dice_pooled"] ?? -1, 2 * Double(o) / Double(t + p), accuracy: 1e-12)
            XCTAssertNotNil(res.primary_ci)
            XCTAssertEqual(res.subgroups.map(\.attribute), ["sex"])
        }
        // The bright rectangles are learnt: high Dice with 8 annotated images.
        for m in ["linear_decoder", "knn_patches"] {
            let dice = results.filter { $0.cell.method == m && $0.cell.shots == 8 }.compactMap { $0.metrics["dice"] }
            XCTAssertEqual(dice.count, 2)
            XCTAssertGreaterThan(dice.reduce(0, +) / 2, 0.7, m)
        }
        let summary = try String(contentsOf: a.appendingPathComponent("summary.csv"), encoding: .utf8)
        XCTAssertTrue(summary.contains("\nlinear_decoder,mask,8,dice,2,"), summary)
        let perImage = try CSVTable(contentsOf: a.appendingPathComponent("per_image.csv"))
        XCTAssertEqual(perImage.rows.count, 8 * 10)
        for name in ["curve_mask.png", "overlays_mask_linear_decoder.png", "overlays_mask_knn_patches.png"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: a.appendingPathComponent(name).path), name)
        }
        // Predicted masks of the sample, at the original size.
        let folder = a.appendingPathComponent("masks/linear_decoder__k8__s0")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".png") }
        XCTAssertEqual(files.count, 8)
        let mask = try LabelMask.read(folder.appendingPathComponent(files[0]), width: SyntheticRectangles.width, height: SyntheticRectangles.height)
        XCTAssertTrue(mask.labels.contains(1))
        let report = try String(contentsOf: a.appendingPathComponent("report.md"), encoding: .utf8)
        XCTAssertTrue(report.contains("## Segmentation"), report)
        XCTAssertTrue(report.contains("overlays_mask_knn_patches.png"), report)
        // The table row of linear_decoder at 8 images starts with the summary's mean ± std of Dice.
        let table = try CSVTable(contentsOf: a.appendingPathComponent("summary.csv"))
        let row = try XCTUnwrap(table.rows.first { $0[0...3] == ["linear_decoder", "mask", "8", "dice"] })
        XCTAssertTrue(report.contains("| mask | linear_decoder | 8 | \(row[5]) ± \(row[6])"), report)

        // Interrupted after 3 cells, then resumed: the same results as the one-go run.
        let rb = try RecipeLoader.load(try write(recipeText(output: "b"), in: dir, name: "b.yaml"))
        var o = quiet()
        o.maxNewCells = 3
        let part = try Runner.run(rb, options: o)
        XCTAssertFalse(part.complete)
        let rest = try Runner.run(rb, options: quiet())
        XCTAssertTrue(rest.complete)
        XCTAssertEqual(rest.computed, 5)
        XCTAssertEqual(rest.reused, 3)
        XCTAssertEqual(
            try String(contentsOf: dir.appendingPathComponent("b/results.jsonl"), encoding: .utf8),
            try String(contentsOf: a.appendingPathComponent("results.jsonl"), encoding: .utf8))
    }
}
