import Foundation
import XCTest
import XRRecipes
import XRTensor
import XRData
import TestSupport

/// Schema, validation and override behaviour beyond the single-error cases in RecipeTests.
final class RecipeSchemaTests: XCTestCase {
    func write(_ text: String, in dir: URL, name: String = "r.yaml") throws -> URL {
        let u = dir.appendingPathComponent(name)
        try text.write(to: u, atomically: true, encoding: .utf8)
        return u
    }

    func quiet() -> RunOptions { var o = RunOptions(); o.quiet = true; o.commandLine = ["xrlab", "run"]; return o }

    // MARK: the recipes in recipes/

    /// What each repository recipe needs besides itself. A new recipe must be listed here.
    enum Needs { case nothing, demo, sharedData }
    static let repositoryRecipes: [String: Needs] = [
        "synthetic-features.yaml": .nothing, // committed fixtures only
        "demo.yaml": .demo, // model, images, manifest written by `xrlab demo`
        "demo-reports.yaml": .demo, // report generation on the demo images and reports.csv (ReportRecipeTests runs a smaller copy)
        "demo-tuning.yaml": .demo, // the same, with tuning methods (TuneRecipeTests runs a smaller copy)
        "nih-cxr14-shared.yaml": .sharedData, // ../shared/data beside the repository (+ the demo model)
        "demo-retrieval.yaml": .demo, // retrieval on the demo images (RetrievalImageTests runs a smaller copy)
        "fracatlas-nih-retrieval-shared.yaml": .sharedData, // retrieval by anatomy (SharedDataRetrievalTests)
        "fracatlas-nih-retrieval-view-shared.yaml": .sharedData, // retrieval by view (SharedDataRetrievalTests)
        "fracatlas-fracture-segmentation-shared.yaml": .sharedData, // fracture masks (SegmentationRecipeTests.testSharedFracAtlasRecipeRuns)
        "fracatlas-fracture-detection-shared.yaml": .sharedData, // fracture boxes (DetectionRecipeTests.testSharedFracAtlasRecipeRuns)
        "nih-chest-findings-detection-shared.yaml": .sharedData // chest-finding boxes (DetectionRecipeTests.testSharedNIHRecipeRuns)
    ]

    func testEveryRepositoryRecipeIsListedAndValidates() throws {
        let dir = Fixtures.repoRoot.appendingPathComponent("recipes")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted()
        XCTAssertEqual(files, Self.repositoryRecipes.keys.sorted(), "list every recipe in repositoryRecipes with what it needs")
        for f in files {
            let url = dir.appendingPathComponent(f)
            // Schema and values: always.
            XCTAssertEqual(Planner.validate(url, checkFiles: false).map(\.description), [], f)
            switch Self.repositoryRecipes[f] {
            case .nothing?:
                // Self-contained: its files are in the repository, so the full check must pass.
                XCTAssertEqual(Planner.validate(url).map(\.description), [], f)
            case .demo?, .sharedData?, nil:
                // Files appear only after `xrlab demo` / with the shared data: schema only here;
                // the end-to-end tests run them (xrlabTests RecipeCommandTests / CLITests.testDemoRunsOnGeneratedData
                // after `xrlab demo`; SharedDataRecipeTests with ../shared/data).
                break
            }
        }
    }

    func testSelfContainedRecipeRuns() throws {
        let out = Fixtures.tempDir("synthetic-run")
        let r = try RecipeLoader.load(
            Fixtures.repoRoot.appendingPathComponent("recipes/synthetic-features.yaml"),
            overrides: ["output=\(out.path)", "seeds=2", "shots=[1, 8]", "bootstrap=20"])
        XCTAssertEqual(r.recipe.representation, ["cls", "patch_mean"])
        let s = try Runner.run(r, options: quiet())
        XCTAssertTrue(s.complete)
        XCTAssertEqual(s.computed, 2 * 4 * 2 * 2)
        let summary = try CSVTable(contentsOf: out.appendingPathComponent("summary.csv"))
        let (m, t, k, metric, mean) = (
            try summary.column("method"), try summary.column("task"), try summary.column("shots"),
            try summary.column("metric"), try summary.column("mean")
        )
        let row = summary.rows.first { $0[m] == "logistic" && $0[t] == "effusion" && $0[k] == "8" && $0[metric] == "auroc" }
        XCTAssertGreaterThan(Double(row?[mean] ?? "") ?? 0, 0.7, "effusion shifts the cls features")
        let report = try String(contentsOf: s.report, encoding: .utf8)
        XCTAssertTrue(report.contains("48 dimensions"), "cls + patch_mean concatenated: \(report.prefix(600))")
    }

    /// The same labels given as a pipe-separated column or as a 0/1 column give identical cells;
    /// `data.where` keeps precomputed features aligned with the kept rows.
    func testLabelColumnsWhereAndMulticlass() throws {
        let recipe = Fixtures.repoRoot.appendingPathComponent("recipes/synthetic-features.yaml")
        let common = ["seeds=2", "shots=[2, 4]", "bootstrap=10", "data.labels=[effusion]", "data.subgroups={}"]
        let a = Fixtures.tempDir("labels-pipe"), b = Fixtures.tempDir("labels-01")
        let sa = try Runner.run(try RecipeLoader.load(recipe, overrides: common + ["output=\(a.path)"]), options: quiet())
        let sb = try Runner.run(
            try RecipeLoader.load(
                recipe,
                overrides: common + [
                    "output=\(b.path)", "data.label_column=null",
                    "data.label_columns={effusion: effusion}"
                ]), options: quiet())
        XCTAssertEqual(sa.computed, 4 * 2 * 2)
        XCTAssertEqual(try Data(contentsOf: a.appendingPathComponent("results.jsonl")), try Data(contentsOf: b.appendingPathComponent("results.jsonl")))

        let manifest = try CSVTable(contentsOf: Fixtures.url("recipes/manifest.csv"))
        let sex = try manifest.column("sex")
        let women = manifest.rows.filter { $0[sex] == "F" }.count
        let c = Fixtures.tempDir("where")
        let sc = try Runner.run(try RecipeLoader.load(recipe, overrides: common + ["output=\(c.path)", "data.where.sex=F"]), options: quiet())
        XCTAssertTrue(try String(contentsOf: sc.report, encoding: .utf8).contains("- Rows: \(women) "))

        // Multiclass: one task over the listed classes (sex, as a stand-in for a class column).
        let d = Fixtures.tempDir("multiclass")
        let sd = try Runner.run(
            try RecipeLoader.load(
                recipe,
                overrides: [
                    "output=\(d.path)", "seeds=1", "shots=[2]", "bootstrap=0",
                    "data.task=multiclass", "data.label_column=sex", "data.labels=[F, M]",
                    "data.subgroups={}"
                ]), options: quiet())
        XCTAssertEqual(sd.plots.map(\.lastPathComponent), ["curve_F-vs-M.png"])
        XCTAssertEqual(sd.computed, 4)
    }

    // MARK: every problem at once

    func testValidateReportsEveryProblemWithPositions() throws {
        let dir = Fixtures.tempDir()
        let text =
            studyRecipe
            .replacingOccurrences(of: "seeds: 2", with: "sedes: 2")
            .replacingOccurrences(of: "shots: [1, 4, 8]", with: "shots: [0, 4, 8]")
            .replacingOccurrences(of: "{name: knn, k: [3]}", with: "{name: knn, k: [3], C: [1]}")
            + "\nmetrics: [auroc, aucroc]\n"
        let u = try write(text, in: dir)
        let problems = Planner.validate(u, checkFiles: false)
        let text2 = problems.map(\.description).joined(separator: "\n")
        XCTAssertEqual(problems.count, 4, text2)
        XCTAssertTrue(text2.contains("unknown key 'sedes'") && text2.contains("did you mean 'seeds'"), text2)
        XCTAssertTrue(text2.contains("shots must be at least 1, got 0"), text2)
        XCTAssertTrue(text2.contains("'C' does not apply to method knn"), text2)
        XCTAssertTrue(text2.contains("unknown metric 'aucroc'") && text2.contains("did you mean 'auroc'"), text2)
        for p in problems {
            XCTAssertEqual(p.file, u.path)
            XCTAssertTrue((p.field ?? "").hasPrefix("line "), "\(p)")
        }
        // The loader throws the first of them.
        XCTAssertThrowsError(try RecipeLoader.load(u))
    }

    func testWrongTypesAndMissingKeys() throws {
        let dir = Fixtures.tempDir()
        let cases: [(String, String, String)] = [
            (studyRecipe.replacingOccurrences(of: "seeds: 2", with: "seeds: many"), "expected a whole number, found 'many'", "seeds"),
            (studyRecipe.replacingOccurrences(of: "labels: [alpha, beta]", with: "labels: {alpha: 1}"), "expected a list", "data.labels"),
            (studyRecipe.replacingOccurrences(of: "  manifest: table.csv\n", with: ""), "missing required key 'manifest'", "data"),
            (studyRecipe.replacingOccurrences(of: "shots: [1, 4, 8]", with: "shots: {k: 1}"), "expected a list, found a mapping", "shots"),
            (
                studyRecipe.replacingOccurrences(of: "label_column: labels", with: "label_column: labels\n  task: multiclas"),
                "did you mean 'multiclass'", "data.task"
            )
        ]
        for (text, message, path) in cases {
            let u = try write(text, in: dir)
            XCTAssertThrowsError(try RecipeLoader.load(u), message) { e in
                guard let x = e as? XRError else { return XCTFail("\(e)") }
                XCTAssertTrue(x.message.contains(message), "\(x) should say \(message)")
                XCTAssertTrue((x.field ?? "").contains("(\(path))") && (x.field ?? "").hasPrefix("line "), "\(x)")
            }
        }
    }

    // MARK: overrides

    func testOverrideErrorsNameTheOverride() throws {
        let dir = Fixtures.tempDir()
        let u = try write(studyRecipe, in: dir)
        XCTAssertThrowsError(try RecipeLoader.load(u, overrides: ["seeds=-1"])) { e in
            XCTAssertEqual((e as? XRError)?.field, "--set seeds=-1 (seeds)")
        }
        XCTAssertThrowsError(try RecipeLoader.load(u, overrides: ["sedes=3"])) { e in
            XCTAssertEqual((e as? XRError)?.field, "--set sedes=3 (sedes)")
            XCTAssertTrue("\(e)".contains("did you mean 'seeds'"), "\(e)")
        }
        XCTAssertThrowsError(try RecipeLoader.load(u, overrides: ["methods.7.k=3"])) { e in
            XCTAssertEqual((e as? XRError)?.field, "--set methods.7.k=3")
            XCTAssertTrue("\(e)".contains("has 3 items"), "\(e)")
        }
        XCTAssertThrowsError(try RecipeLoader.load(u, overrides: ["data.label_column=null"])) { e in
            XCTAssertTrue("\(e)".contains("give label_column (pipe-separated labels) or label_columns"), "\(e)")
        }
        // Values from the file keep their line:column even when other keys are overridden.
        let bad = try write(studyRecipe.replacingOccurrences(of: "seeds: 2", with: "seeds: 0"), in: dir, name: "bad.yaml")
        XCTAssertThrowsError(try RecipeLoader.load(bad, overrides: ["bootstrap=10"])) { e in
            XCTAssertEqual((e as? XRError)?.field, "line 19:8 (seeds)")
        }
    }

    func testOverridesReachListItemsAndNewKeys() throws {
        let dir = Fixtures.tempDir()
        let u = try write(studyRecipe, in: dir)
        let r = try RecipeLoader.load(u, overrides: ["methods.1.k=[5, 7]", "data.where.sex=F", "bootstrap={resamples: 25}"])
        XCTAssertEqual(r.recipe.methods[1], .knn(KNNSpec(k: [5, 7])))
        XCTAssertEqual(r.recipe.data.where, ["sex": ["F"]])
        XCTAssertEqual(r.recipe.bootstrap, 25)
        XCTAssertEqual(r.overrides.count, 3)
    }

    // MARK: schema features

    func testDefaultsAreResolvedAndTheResolvedRecipeRoundTrips() throws {
        let dir = Fixtures.tempDir()
        let u = try write(studyRecipe, in: dir)
        let r = try RecipeLoader.load(u)
        guard case let .logistic(logistic) = r.recipe.methods[0] else { return XCTFail("\(r.recipe.methods[0])") }
        XCTAssertEqual(logistic.defaultC, 1.0)
        XCTAssertEqual(logistic.folds, 3)
        XCTAssertEqual(r.recipe.methods[1], .knn(KNNSpec(k: [3], temperature: 0.07)))
        XCTAssertEqual(r.recipe.methods[2], .prototype(PrototypeSpec()))
        XCTAssertEqual(PrototypeSpec().temperature, 0.07)
        // resolved.yaml (absolute paths) read from another folder is the same recipe, same fingerprint.
        let elsewhere = Fixtures.tempDir("elsewhere")
        let again = try RecipeLoader.load(try write(try r.resolvedYAML(absolutePaths: true), in: elsewhere, name: "resolved.yaml"))
        XCTAssertEqual(again.recipe, r.absolute)
        XCTAssertEqual(again.fingerprint, r.fingerprint)
        XCTAssertTrue(r.absolute.data.manifest.hasPrefix("/"))
    }

    func testLabelsThatWouldShareResultFilesAreRefused() throws {
        let dir = Fixtures.tempDir()
        let u = try write(studyRecipe.replacingOccurrences(of: "labels: [alpha, beta]", with: "labels: [pleural effusion, pleural_effusion]"), in: dir)
        XCTAssertThrowsError(try RecipeLoader.load(u)) { e in
            XCTAssertTrue("\(e)".contains("would share result files"), "\(e)")
            XCTAssertEqual((e as? XRError)?.field, "line 8:11 (data.labels)")
        }
    }

    func testBinaryTaskAndBootstrapMapping() throws {
        let dir = Fixtures.tempDir()
        try makeStudy(in: dir)
        let text = studyRecipe.replacingOccurrences(of: "labels: [alpha, beta]", with: "labels: [alpha]\n  task: binary")
            .replacingOccurrences(of: "bootstrap: 50", with: "bootstrap: {resamples: 30}")
            .replacingOccurrences(of: "shots: [1, 4, 8]", with: "shots: [2]")
        let r = try RecipeLoader.load(try write(text, in: dir))
        XCTAssertEqual(r.recipe.bootstrap, 30)
        XCTAssertEqual(r.recipe.data.task, .binary)
        let s = try Runner.run(r, options: quiet())
        XCTAssertEqual(s.computed, 3 * 1 * 1 * 2, "one task")
        XCTAssertThrowsError(try RecipeLoader.load(try write(text.replacingOccurrences(of: "labels: [alpha]", with: "labels: [alpha, beta]"), in: dir))) { e in
            XCTAssertTrue("\(e)".contains("a binary task has one label"), "\(e)")
        }
    }

    func testModelPreprocessingAndModelWithFeaturesRefused() throws {
        let dir = Fixtures.tempDir()
        let withModel = studyRecipe.replacingOccurrences(
            of: "features:\n  matrix: feats.npy\n",
            with: """
                model:
                  path: model
                  preset: vitTiny16
                  preprocessing: {size: 224, mean: 0.5, std: [0.2, 0.2, 0.2]}

                """)
        let r = try RecipeLoader.load(try write(withModel, in: dir))
        XCTAssertEqual(r.recipe.model?.preprocessing?.mean, [0.5, 0.5, 0.5])
        XCTAssertEqual(r.recipe.model?.preprocessing?.interpolation, "bicubic")
        XCTAssertThrowsError(try RecipeLoader.load(try write(withModel.replacingOccurrences(of: "vitTiny16", with: "vitTiny61"), in: dir))) { e in
            XCTAssertTrue("\(e)".contains("unknown preset 'vitTiny61'"), "\(e)")
        }
        let both = withModel.replacingOccurrences(of: "data:", with: "features: {matrix: feats.npy}\ndata:")
        XCTAssertThrowsError(try RecipeLoader.load(try write(both, in: dir))) { e in
            XCTAssertTrue("\(e)".contains("either model or features, not both"), "\(e)")
        }
    }

    // MARK: run directory

    func testRunDirectoryRefusalSaysWhatDiffers() throws {
        let dir = Fixtures.tempDir()
        try makeStudy(in: dir)
        _ = try Runner.run(
            try RecipeLoader.load(try write(studyRecipe.replacingOccurrences(of: "shots: [1, 4, 8]", with: "shots: [2]"), in: dir)), options: quiet())
        let other = try RecipeLoader.load(
            try write(studyRecipe.replacingOccurrences(of: "shots: [1, 4, 8]", with: "shots: [2]"), in: dir, name: "o.yaml"),
            overrides: ["seeds=3", "methods.1.k=4"])
        XCTAssertThrowsError(try Runner.run(other, options: quiet())) { e in
            let s = "\(e)"
            XCTAssertTrue(s.contains("seeds: 2 → 3"), s)
            XCTAssertTrue(s.contains("methods: "), s)
            XCTAssertEqual((e as? XRError)?.field, "output")
        }
        // Only the output moved: same fingerprint.
        let moved = try RecipeLoader.load(
            try write(
                studyRecipe.replacingOccurrences(of: "shots: [1, 4, 8]", with: "shots: [2]")
                    .replacingOccurrences(of: "output: run", with: "output: run2"), in: dir, name: "m.yaml"))
        XCTAssertEqual(moved.fingerprint, try RecipeLoader.load(dir.appendingPathComponent("r.yaml")).fingerprint)
    }

    func testNewerFormatsAreRefusedWithAHint() throws {
        let dir = Fixtures.tempDir()
        try makeStudy(in: dir)
        XCTAssertThrowsError(try RecipeLoader.load(try write(studyRecipe.replacingOccurrences(of: "version: 1", with: "version: 2"), in: dir, name: "v2.yaml")))
        { e in
            XCTAssertEqual((e as? XRError)?.field, "line 1:10 (version)")
            XCTAssertNotNil((e as? XRError)?.hint)
        }
        let r = try RecipeLoader.load(try write(studyRecipe.replacingOccurrences(of: "shots: [1, 4, 8]", with: "shots: [2]"), in: dir))
        _ = try Runner.run(r, options: quiet())
        let runJSON = dir.appendingPathComponent("run/run.json")
        let text = try String(contentsOf: runJSON, encoding: .utf8).replacingOccurrences(of: "\"format_version\" : 1", with: "\"format_version\" : 9")
        try text.write(to: runJSON, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Runner.run(r, options: quiet())) { e in
            XCTAssertEqual((e as? XRError)?.field, "format_version")
            XCTAssertTrue((e as? XRError)?.hint?.contains("upgrade xrlab") == true, "\(e)")
        }
    }

    func testBrokenDataLeavesNoRunBehind() throws {
        let dir = Fixtures.tempDir()
        try makeStudy(in: dir, nanRow: 3)
        let r = try RecipeLoader.load(try write(studyRecipe, in: dir))
        XCTAssertThrowsError(try Runner.run(r, options: quiet()))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run/run.json").path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run/results.jsonl").path))
    }

    func testDeletedCellsAreRecomputedToIdenticalResults() throws {
        let dir = Fixtures.tempDir()
        try makeStudy(in: dir)
        let r = try RecipeLoader.load(try write(studyRecipe, in: dir))
        _ = try Runner.run(r, options: quiet())
        let run = dir.appendingPathComponent("run")
        let before = try ["results.jsonl", "summary.csv", "subgroups.csv", "report.md"].map { try Data(contentsOf: run.appendingPathComponent($0)) }
        let cells = try FileManager.default.contentsOfDirectory(atPath: run.appendingPathComponent("cells").path).sorted()
        XCTAssertEqual(cells.count, 36)
        for c in [cells[0], cells[17], cells[35]] { try FileManager.default.removeItem(at: run.appendingPathComponent("cells/\(c)")) }
        let again = try Runner.run(r, options: quiet())
        XCTAssertEqual(again.computed, 3)
        XCTAssertEqual(again.reused, 33)
        let after = try ["results.jsonl", "summary.csv", "subgroups.csv", "report.md"].map { try Data(contentsOf: run.appendingPathComponent($0)) }
        XCTAssertEqual(before, after, "recomputed cells give byte-identical outputs")
    }

    // MARK: plots

    func testLearningCurvePNGShowsEachMethod() throws {
        let dir = Fixtures.tempDir()
        try makeStudy(in: dir)
        let s = try Runner.run(try RecipeLoader.load(try write(studyRecipe, in: dir)), options: quiet())
        XCTAssertEqual(s.plots.map(\.lastPathComponent), ["curve_alpha.png", "curve_beta.png"])
        let img = try PNGCodec.read(s.plots[0])
        XCTAssertEqual([img.width, img.height, img.channels], [1020, 620, 3])
        // Each of the three methods is drawn in its own palette colour (line, markers, legend).
        // Decoded pixels are planar (C, H, W) in [0, 1].
        let plane = img.width * img.height
        let palette: [(Float, Float, Float)] = [(31, 119, 180), (214, 39, 40), (44, 160, 44)]
        for (i, c) in palette.enumerated() {
            var n = 0
            for p in 0..<plane {
                let r = img.pixels[p] * 255, g = img.pixels[plane + p] * 255, b = img.pixels[2 * plane + p] * 255
                if abs(r - c.0) < 2 && abs(g - c.1) < 2 && abs(b - c.2) < 2 { n += 1 }
            }
            XCTAssertGreaterThan(n, 200, "method \(i) colour pixels")
        }
        // Text is dark ink on white: the title row has dark pixels.
        var dark = 0
        for y in 20..<40 { for x in 120..<400 where img.pixels[y * img.width + x] < 0.3 { dark += 1 } }
        XCTAssertGreaterThan(dark, 50, "title text")
    }
}
