import Foundation
import XCTest
import XRRecipes
import XRTensor
import XRData
import TestSupport

/// A small study on synthetic precomputed features: 120 patients, 2 labels, sex and age.
func makeStudy(in dir: URL, rows: Int = 120, nanRow: Int? = nil) throws {
    var rng = XRRandom(seed: 77)
    let d = 16
    var feats: [Float] = [], table: [[String]] = []
    for i in 0..<rows {
        let a = rng.nextDouble() < 0.4, b = rng.nextDouble() < 0.3
        for j in 0..<d {
            var v = rng.nextGaussian()
            if a && j < 4 { v += 1.5 }
            if b && j >= 4 && j < 8 { v += 1.0 }
            feats.append(i == nanRow && j == 3 ? .nan : v)
        }
        let labels = [a ? "alpha" : nil, b ? "beta" : nil].compactMap { $0 }.joined(separator: "|")
        table.append(["img\(i).png", "P\(i)", i % 3 == 0 ? "test" : "train", labels, i % 2 == 0 ? "M" : "F", String(20 + i % 60)])
    }
    try NPY.write(Tensor(shape: [rows, d], scalars: feats), to: dir.appendingPathComponent("feats.npy"))
    try CSVTable(header: ["path", "patient", "split", "labels", "sex", "age"], rows: table).write(to: dir.appendingPathComponent("table.csv"))
}

let studyRecipe = """
    version: 1
    name: synthetic
    features:
      matrix: feats.npy
    data:
      manifest: table.csv
      label_column: labels
      labels: [alpha, beta]
      patient_column: patient
      split_column: split
      subgroups:
        sex: {column: sex}
        age: {column: age, bins: [0, 50, 100]}
    methods:
      - {name: logistic, C: [0.1, 1], cv_min_shots: 4}
      - {name: knn, k: [3]}
      - {name: prototype}
    shots: [1, 4, 8]
    seeds: 2
    bootstrap: 50
    output: run
    """

final class RecipeTests: XCTestCase {
    func writeRecipe(_ text: String, in dir: URL, name: String = "r.yaml") throws -> URL {
        let u = dir.appendingPathComponent(name)
        try text.write(to: u, atomically: true, encoding: .utf8)
        return u
    }

    func expectError(_ text: String, field: String, contains: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = Fixtures.tempDir()
        let u = try writeRecipe(text, in: dir)
        XCTAssertThrowsError(try RecipeLoader.load(u), file: file, line: line) { e in
            guard let x = e as? XRError else { return XCTFail("\(e)", file: file, line: line) }
            XCTAssertEqual(x.file, u.path, file: file, line: line)
            XCTAssertTrue((x.field ?? "").contains(field), "field \(x.field ?? "nil") should contain \(field)", file: file, line: line)
            for c in contains { XCTAssertTrue(x.description.contains(c), "\(x) should mention \(c)", file: file, line: line) }
        }
    }

    // MARK: recipes in the repository

    func testResolvedDemoRecipeSnapshot() throws {
        try checkResolvedSnapshot("demo")
    }

    /// Every recipe in recipes/ (probes, tuning methods, report encoders) resolves to its snapshot.
    func testResolvedRecipeSnapshotsOfEveryShippedRecipe() throws {
        for name in [
            "demo-tuning", "demo-reports", "synthetic-features", "nih-cxr14-shared", "demo-retrieval", "fracatlas-nih-retrieval-shared",
            "fracatlas-nih-retrieval-view-shared"
        ] { try checkResolvedSnapshot(name) }
    }

    private func checkResolvedSnapshot(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try RecipeLoader.load(Fixtures.repoRoot.appendingPathComponent("recipes/\(name).yaml"))
        let yaml = try r.resolvedYAML()
        let snap = Fixtures.repoRoot.appendingPathComponent("Tests/XRRecipesTests/Snapshots/\(name).resolved.yaml")
        if ProcessInfo.processInfo.environment["XRLAB_RECORD_SNAPSHOTS"] == "1" {
            try yaml.write(to: snap, atomically: true, encoding: .utf8)
        }
        let want = try String(contentsOf: snap, encoding: .utf8)
        XCTAssertEqual(yaml, want, "resolved recipe \(name) changed; re-record with XRLAB_RECORD_SNAPSHOTS=1 if intended", file: file, line: line)
    }

    // MARK: bad recipes

    func testTypoedKeyNamesLineColumnAndSuggests() throws {
        try expectError(
            studyRecipe.replacingOccurrences(of: "seeds: 2", with: "sedes: 2"), field: "line 19:1",
            contains: ["unknown key 'sedes'", "did you mean 'seeds'"])
    }

    func testWrongType() throws {
        try expectError(
            studyRecipe.replacingOccurrences(of: "shots: [1, 4, 8]", with: "shots: [1, many]"), field: "line 18:12",
            contains: ["expected a whole number", "'many'"])
    }

    func testBadValues() throws {
        try expectError(studyRecipe.replacingOccurrences(of: "shots: [1, 4, 8]", with: "shots: [0]"), field: "shots", contains: ["at least 1"])
        try expectError(
            studyRecipe.replacingOccurrences(of: "name: prototype", with: "name: protoype"), field: "methods",
            contains: ["unknown method", "did you mean 'prototype'"])
        try expectError(studyRecipe.replacingOccurrences(of: "labels: [alpha, beta]", with: "labels: []"), field: "labels", contains: ["at least one"])
    }

    func testBadStandardizeNamesTheKeyAndSuggests() throws {
        try expectError(
            studyRecipe.replacingOccurrences(of: "cv_min_shots: 4}", with: "cv_min_shots: 4, standardize: shot}"),
            field: "line 15:", contains: ["unknown standardize 'shot'", "did you mean 'shots'", "pool, shots, none"])
        try expectError(
            studyRecipe.replacingOccurrences(of: "{name: knn, k: [3]}", with: "{name: knn, k: [3], standardize: pool}"),
            field: "line 16:", contains: ["'standardize' does not apply to method knn"])
        // Resolved recipes write the default out; an explicit value survives resolution.
        let dir = Fixtures.tempDir()
        let d = try RecipeLoader.load(try writeRecipe(studyRecipe, in: dir))
        guard case let .logistic(dl) = d.recipe.methods[0] else { return XCTFail("\(d.recipe.methods[0])") }
        XCTAssertEqual(dl.standardize, .pool)
        let s = try RecipeLoader.load(try writeRecipe(studyRecipe, in: dir), overrides: ["methods.0.standardize=none"])
        guard case let .logistic(sl) = s.recipe.methods[0] else { return XCTFail("\(s.recipe.methods[0])") }
        XCTAssertEqual(sl.standardize, .none)
    }

    func testOverrides() throws {
        let dir = Fixtures.tempDir()
        let u = try writeRecipe(studyRecipe, in: dir)
        let r = try RecipeLoader.load(u, overrides: ["seeds=7", "shots=[2, 3]", "data.test_fraction=0.2"])
        XCTAssertEqual(r.recipe.seeds, 7)
        XCTAssertEqual(r.recipe.shots, [2, 3])
        XCTAssertThrowsError(try RecipeLoader.load(u, overrides: ["seeds"])) { e in XCTAssertEqual((e as? XRError)?.field, "--set seeds") }
        XCTAssertThrowsError(try RecipeLoader.load(u, overrides: ["seeds=-1"]))
    }

    // MARK: bad data

    func testMissingManifest() throws {
        let dir = Fixtures.tempDir()
        let u = try writeRecipe(studyRecipe, in: dir)
        let problems = Planner.validate(u)
        XCTAssertTrue(problems.contains { $0.field == "data.manifest" }, "\(problems)")
        XCTAssertThrowsError(try Runner.run(try RecipeLoader.load(u), options: quiet())) { e in
            XCTAssertEqual((e as? XRError)?.field, "data.manifest")
        }
    }

    func testLabelColumnAbsent() throws {
        let dir = Fixtures.tempDir()
        try makeStudy(in: dir)
        let u = try writeRecipe(studyRecipe.replacingOccurrences(of: "label_column: labels", with: "label_column: findings"), in: dir)
        XCTAssertFalse(Planner.validate(u).isEmpty)
        XCTAssertThrowsError(try Runner.run(try RecipeLoader.load(u), options: quiet())) { e in
            XCTAssertTrue("\(e)".contains("no column 'findings'"), "\(e)")
            XCTAssertEqual((e as? XRError)?.field, "data.label_column")
        }
    }

    func testNaNFeaturesNameTheRow() throws {
        let dir = Fixtures.tempDir()
        try makeStudy(in: dir, nanRow: 17)
        let u = try writeRecipe(studyRecipe, in: dir)
        XCTAssertThrowsError(try Runner.run(try RecipeLoader.load(u), options: quiet())) { e in
            XCTAssertEqual((e as? XRError)?.field, "row 19")
            XCTAssertTrue("\(e)".contains("img17.png"), "\(e)")
        }
    }

    func testManifestRowPointingToMissingImage() throws {
        let dir = Fixtures.tempDir()
        try makeStudy(in: dir)
        try FileManager.default.copyItem(at: Fixtures.url("vit/hf_dinov2"), to: dir.appendingPathComponent("model"))
        let text = studyRecipe.replacingOccurrences(of: "features:\n  matrix: feats.npy\n", with: "model:\n  path: model\n")
        let u = try writeRecipe(text, in: dir)
        XCTAssertThrowsError(try Runner.run(try RecipeLoader.load(u), options: quiet())) { e in
            XCTAssertEqual((e as? XRError)?.field, "row 2, column path")
            XCTAssertTrue("\(e)".contains("image not found"), "\(e)")
        }
    }

    func testTooFewExamplesIsAReportedSkip() throws {
        let dir = Fixtures.tempDir()
        try makeStudy(in: dir)
        let u = try writeRecipe(studyRecipe.replacingOccurrences(of: "shots: [1, 4, 8]", with: "shots: [1, 40]"), in: dir)
        let s = try Runner.run(try RecipeLoader.load(u), options: quiet())
        XCTAssertFalse(s.skipped.isEmpty)
        XCTAssertTrue(s.skipped.allSatisfy { $0.cell.shots == 40 && ($0.reason ?? "").contains("40 shots requested") })
        let report = try String(contentsOf: s.report, encoding: .utf8)
        XCTAssertTrue(report.contains("Skipped cells"), report)
    }

    // MARK: running

    func quiet() -> RunOptions { var o = RunOptions(); o.quiet = true; o.commandLine = ["xrlab", "run"]; return o }

    func testRunWritesResultsSummaryCurvesAndReport() throws {
        let dir = Fixtures.tempDir()
        try makeStudy(in: dir)
        let s = try Runner.run(try RecipeLoader.load(try writeRecipe(studyRecipe, in: dir)), options: quiet())
        XCTAssertTrue(s.complete)
        XCTAssertEqual(s.computed, 2 * 3 * 3 * 2)
        let run = dir.appendingPathComponent("run")
        let lines = try String(contentsOf: run.appendingPathComponent("results.jsonl"), encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 36)
        let summary = try CSVTable(contentsOf: run.appendingPathComponent("summary.csv"))
        let auroc = try summary.column("mean"), metric = try summary.column("metric"), shots = try summary.column("shots")
        let task = try summary.column("task"), method = try summary.column("method")
        let best = summary.rows.first { $0[metric] == "auroc" && $0[shots] == "8" && $0[task] == "alpha" && $0[method] == "logistic" }
        XCTAssertGreaterThan(Double(best?[auroc] ?? "") ?? 0, 0.75, "alpha is learnable from its shifted features")
        for p in s.plots {
            let img = try PNGCodec.read(p)
            XCTAssertEqual(img.width, 1020)
            XCTAssertEqual(img.height, 620)
            XCTAssertEqual(img.channels, 3)
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: run.appendingPathComponent("resolved.yaml").path))
        let info = try JSONSerialization.jsonObject(with: Data(contentsOf: run.appendingPathComponent("run.json"))) as? [String: Any]
        XCTAssertEqual(info?["xrlab_version"] as? String, XRLabVersion.string)
        XCTAssertNotNil(info?["command_line"])
        let first = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any]
        XCTAssertNotNil(first?["train_ids"])
        XCTAssertEqual((first?["subgroups"] as? [Any])?.count, 2)
    }

    func testInterruptedRunResumesToIdenticalResults() throws {
        let a = Fixtures.tempDir(), b = Fixtures.tempDir()
        try makeStudy(in: a); try makeStudy(in: b)
        let ra = try RecipeLoader.load(try writeRecipe(studyRecipe, in: a))
        let rb = try RecipeLoader.load(try writeRecipe(studyRecipe, in: b))
        _ = try Runner.run(ra, options: quiet())
        var partial = quiet()
        partial.maxNewCells = 10
        let first = try Runner.run(rb, options: partial)
        XCTAssertEqual(first.computed, 10)
        XCTAssertFalse(first.complete)
        let second = try Runner.run(rb, options: quiet())
        XCTAssertEqual(second.computed, 26, "only the remaining cells are computed")
        XCTAssertEqual(second.reused, 10)
        for f in ["results.jsonl", "summary.csv"] {
            XCTAssertEqual(try Data(contentsOf: a.appendingPathComponent("run/\(f)")), try Data(contentsOf: b.appendingPathComponent("run/\(f)")), f)
        }
        var force = quiet()
        force.force = true
        XCTAssertEqual(try Runner.run(rb, options: force).computed, 36, "--force recomputes everything")
    }

    func testRunDirectoryOfAnotherRecipeIsRefused() throws {
        let dir = Fixtures.tempDir()
        try makeStudy(in: dir)
        _ = try Runner.run(try RecipeLoader.load(try writeRecipe(studyRecipe, in: dir)), options: quiet())
        let other = try RecipeLoader.load(try writeRecipe(studyRecipe.replacingOccurrences(of: "seeds: 2", with: "seeds: 3"), in: dir, name: "other.yaml"))
        XCTAssertThrowsError(try Runner.run(other, options: quiet())) { e in
            XCTAssertTrue("\(e)".contains("different recipe") && "\(e)".contains("seeds"), "\(e)")
        }
        var force = quiet()
        force.force = true
        XCTAssertNoThrow(try Runner.run(other, options: force))
    }

    func testPlanCountsFinishedCells() throws {
        let dir = Fixtures.tempDir()
        try makeStudy(in: dir)
        let r = try RecipeLoader.load(try writeRecipe(studyRecipe, in: dir))
        XCTAssertEqual(try Planner.plan(r).finished.count, 0)
        var partial = quiet()
        partial.maxNewCells = 4
        _ = try Runner.run(r, options: partial)
        let p = try Planner.plan(r)
        XCTAssertEqual(p.cells.count, 36)
        XCTAssertEqual(p.finished.count, 4)
        XCTAssertTrue(p.text.contains("32 to run"), p.text)
    }
}
