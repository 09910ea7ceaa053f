import Foundation
import XCTest
import XRRecipes
import XRProbe
import XRTensor
import XRData
import TestSupport

/// `xrlab suggest` on a recipe: the pool it draws from, its refusals, and the simulation's
/// cells (resume, recompute on other settings).
final class SuggestTests: XCTestCase {
    /// 400 rows, two per patient; a quarter of the patients are test. Rows come from six
    /// clusters of unequal size in 16-d; `finding` is positive in clusters 1, 4 and 5.
    func makeStudy(in dir: URL) throws -> LoadedRecipe {
        var rng = XRRandom(seed: 7)
        let d = 16, rows = 400
        let centres = (0..<6).map { _ in (0..<d).map { _ in 3 * rng.nextGaussian() } }
        let cumulative = [0.40, 0.60, 0.75, 0.85, 0.95, 1.0]
        var feats: [Float] = [], table: [[String]] = []
        for i in 0..<rows {
            let u = rng.nextDouble()
            let c = cumulative.firstIndex { u < $0 } ?? 5
            for j in 0..<d { feats.append(centres[c][j] + rng.nextGaussian()) }
            let patient = i / 2
            table.append(["img\(i).png", "P\(patient)", patient % 4 == 0 ? "test" : "train", [1, 4, 5].contains(c) ? "finding" : ""])
        }
        try NPY.write(Tensor(shape: [rows, d], scalars: feats), to: dir.appendingPathComponent("feats.npy"))
        try CSVTable(header: ["path", "patient", "split", "labels"], rows: table).write(to: dir.appendingPathComponent("table.csv"))
        let url = dir.appendingPathComponent("r.yaml")
        try """
        version: 1
        name: clusters
        features: {matrix: feats.npy}
        data:
          manifest: table.csv
          label_column: labels
          labels: [finding]
          patient_column: patient
          split_column: split
        methods:
          - {name: logistic, C: [0.1, 1], cv_min_shots: 4}
        shots: [4]
        seeds: 1
        output: run
        """.write(to: url, atomically: true, encoding: .utf8)
        return try RecipeLoader.load(url)
    }

    func labelledFile(_ dir: URL, _ ids: [String]) throws -> URL {
        let url = dir.appendingPathComponent("labelled.csv")
        try CSVTable(header: ["path"], rows: ids.map { [$0] }).write(to: url)
        return url
    }

    func testEveryStrategyDrawsOnlyUnlabelledTrainingRowsOnePerPatient() throws {
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try makeStudy(in: dir)
        let study = try StudyLoader.load(r)
        // Labelled: the first 30 training rows (both classes among them).
        let train = study.ids.indices.filter { study.isTest[$0] == false }
        let labelled = Array(train.prefix(30))
        XCTAssertEqual(Set(labelled.map { study.tasks[0].labels[$0] }), [0, 1])
        let file = try labelledFile(dir, labelled.map { study.ids[$0] })
        let testPatients = Set(study.ids.indices.filter { study.isTest[$0] == true }.compactMap { study.patients?[$0] })
        for s in SelectionStrategy.allCases {
            var o = SuggestOptions(strategy: s, budget: 40)
            o.seed = 2
            let out = try Suggest.run(r, labelled: file, options: o, study: study)
            XCTAssertEqual(out.rows.count, 40, "\(s)")
            XCTAssertEqual(out.poolRows, train.count - 30)
            XCTAssertEqual(Set(out.rows.compactMap { $0.patient }).count, 40, "\(s): two rows of one patient")
            XCTAssertTrue(out.rows.allSatisfy { !testPatients.contains($0.patient ?? "") }, "\(s) chose a test patient")
            let ids = Set(labelled.map { study.ids[$0] })
            XCTAssertTrue(out.rows.allSatisfy { !ids.contains($0.id) }, "\(s) chose a labelled row")
            XCTAssertEqual(out.rows.map { $0.rank }, Array(1...40))
            XCTAssertTrue(out.rows.allSatisfy { !$0.reason.isEmpty })
        }
        // The CSV reads back with the manifest's id column.
        let out = try Suggest.run(r, labelled: file, options: SuggestOptions(strategy: .kcenter, budget: 5), study: study)
        let csv = dir.appendingPathComponent("next.csv")
        try Suggest.write(out, to: csv)
        let t = try CSVTable(contentsOf: csv)
        XCTAssertEqual(t.header, ["rank", "path", "patient", "strategy", "score", "reason"])
        XCTAssertEqual(try t.values("path"), out.rows.map { $0.id })
    }

    func testRefusalsNameTheFlagOrTheRow() throws {
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try makeStudy(in: dir)
        let study = try StudyLoader.load(r)
        let train = study.ids.indices.filter { study.isTest[$0] == false }
        let test = study.ids.indices.filter { study.isTest[$0] == true }
        func refusal(_ ids: [String], _ o: SuggestOptions, _ expect: String, file: StaticString = #filePath, line: UInt = #line) throws {
            let f = try labelledFile(dir, ids)
            XCTAssertThrowsError(try Suggest.run(r, labelled: f, options: o, study: study), file: file, line: line) { e in
                XCTAssertTrue("\(e)".contains(expect), "\(e)", file: file, line: line)
            }
        }
        let some = train.prefix(10).map { study.ids[$0] }
        try refusal(some, SuggestOptions(strategy: .random, budget: 10_000), "larger than the pool")
        try refusal(some, SuggestOptions(strategy: .random, budget: 0), "--budget must be at least 1")
        try refusal(some + ["nope.png"], SuggestOptions(strategy: .random, budget: 3), "row 12, column path: 'nope.png' is not a row")
        try refusal([study.ids[test[0]]], SuggestOptions(strategy: .random, budget: 3), "is a test row")
        let negatives = train.filter { study.tasks[0].labels[$0] == 0 }.prefix(5).map { study.ids[$0] }
        try refusal(negatives, SuggestOptions(strategy: .uncertainty, budget: 3), "has none of class 'finding'")
        var o = SuggestOptions(strategy: .uncertainty, budget: 3)
        o.task = "findng"
        try refusal(some, o, "did you mean 'finding'")
        XCTAssertThrowsError(try Suggest.strategy("typiclus")) { XCTAssertTrue("\($0)".contains("did you mean 'typiclust'"), "\($0)") }
        XCTAssertThrowsError(
            try Suggest.run(r, labelled: dir.appendingPathComponent("missing.csv"), options: SuggestOptions(strategy: .random, budget: 1), study: study)
        ) {
            XCTAssertTrue("\($0)".contains("--labelled"), "\($0)")
        }
    }

    func testSimulationKeepsEachTrajectoryAsACellResumesAndRecomputesOtherSettings() throws {
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try makeStudy(in: dir)
        let study = try StudyLoader.load(r)
        var o = SimulationOptions(strategies: [.random, .typiclust, .uncertainty], start: 8, rounds: [16, 32], seeds: 3)
        XCTAssertThrowsError(try SelectionSimulation.check(SimulationOptions(strategies: [.random], start: 8, rounds: [16, 12], seeds: 1), poolRows: 300))
        XCTAssertThrowsError(try SelectionSimulation.check(SimulationOptions(strategies: [.random], start: 8, rounds: [400], seeds: 1), poolRows: 300))
        try SelectionSimulation.check(o, poolRows: 300)
        let out = dir.appendingPathComponent("sim")
        let first = try SelectionSimulation.run(study, recipe: r.recipe, options: o, dir: out)
        XCTAssertEqual(first.count, 9)
        XCTAssertTrue(first.allSatisfy { $0.points.map { $0.labels } == [8, 16, 32] })
        XCTAssertTrue(first.allSatisfy { $0.points.last?.auroc != nil })
        // Every strategy of a seed starts from the same rows, so their first scores agree.
        for seed in 0..<3 {
            XCTAssertEqual(Set(first.filter { $0.seed == seed }.map { $0.points[0].auroc }).count, 1)
        }
        // Resume: a finished cell is read back, not recomputed (a marked copy survives).
        let cell = out.appendingPathComponent("cells/typiclust__all__k8__s1.json")
        var marked = try JSONDecoder().decode(SimulationTrajectory.self, from: Data(contentsOf: cell))
        marked.points[2].auroc = 0.123
        try JSONEncoder().encode(marked).write(to: cell)
        let again = try SelectionSimulation.run(study, recipe: r.recipe, options: o, dir: out)
        XCTAssertEqual(again.first { $0.strategy == "typiclust" && $0.seed == 1 }?.points[2].auroc, 0.123)
        // Other rounds: every cell is recomputed.
        o.rounds = [16, 24]
        let other = try SelectionSimulation.run(study, recipe: r.recipe, options: o, dir: out)
        XCTAssertTrue(other.allSatisfy { $0.points.map { $0.labels } == [8, 16, 24] })
        // The summary pairs each strategy with random on the same seeds.
        let rows = SelectionSimulation.summarize(first)
        XCTAssertEqual(rows.count, 9)
        XCTAssertTrue(rows.filter { $0.strategy == "random" }.allSatisfy { $0.gain_vs_random?.mean == 0 })
        let files = try SelectionSimulation.write(first, options: o, title: "t", to: out)
        XCTAssertTrue(files.allSatisfy { FileManager.default.fileExists(atPath: $0.path) })
    }

    func testARecipesSelectionRunsAsCellsOfTheRunAndReportsTheStrategies() throws {
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try makeStudy(in: dir)
        let url = dir.appendingPathComponent("r.yaml")
        var o = RunOptions()
        o.quiet = true
        let sel = ["selection={strategies: [random, typiclust], start: 8, rounds: [16, 32]}", "seeds=2"]
        let summary = try Runner.run(try RecipeLoader.load(url, overrides: sel), options: o)
        XCTAssertTrue(summary.complete)
        let run = dir.appendingPathComponent("run")
        for st in ["random", "typiclust"] {
            for seed in 0..<2 {
                XCTAssertTrue(FileManager.default.fileExists(atPath: run.appendingPathComponent("cells/\(st)__all__k8__s\(seed).json").path))
            }
        }
        let report = try String(contentsOf: run.appendingPathComponent("report.md"), encoding: .utf8)
        XCTAssertTrue(report.contains("## Active labelling"), report)
        XCTAssertTrue(report.contains("| typiclust | 32 |"), report)
        XCTAssertTrue(summary.plots.contains { $0.lastPathComponent == "selection.png" })
        let rows = try CSVTable(contentsOf: run.appendingPathComponent("selection_summary.csv"))
        XCTAssertEqual(rows.rows.count, 6)
        // Adding a strategy reuses the finished trajectories (the run's fingerprint ignores `selection`).
        let before = try Data(contentsOf: run.appendingPathComponent("cells/typiclust__all__k8__s1.json"))
        _ = try Runner.run(
            try RecipeLoader.load(url, overrides: ["selection={strategies: [random, typiclust, kcenter], start: 8, rounds: [16, 32]}", "seeds=2"]), options: o)
        XCTAssertEqual(try Data(contentsOf: run.appendingPathComponent("cells/typiclust__all__k8__s1.json")), before)
        XCTAssertTrue(FileManager.default.fileExists(atPath: run.appendingPathComponent("cells/kcenter__all__k8__s0.json").path))
    }

    func testSelectionKeysAreCheckedWithTheirLineAndASuggestion() throws {
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try makeStudy(in: dir)
        let url = dir.appendingPathComponent("r.yaml")
        func problems(_ value: String) -> String {
            RecipeLoader.check(url, overrides: ["selection=\(value)"]).1.map(\.description).joined(separator: "\n")
        }
        XCTAssertTrue(problems("{strategies: [typiclus], start: 8, rounds: [16]}").contains("did you mean 'typiclust'"))
        XCTAssertTrue(problems("{strategies: [random], start: 8, rounds: [16, 12]}").contains("must increase"))
        XCTAssertTrue(problems("{strategies: [random], start: 1, rounds: [16]}").contains("at least 2"))
        XCTAssertTrue(problems("{strategies: [random], start: 8, rounds: [16], task: findng}").contains("did you mean 'finding'"))
        XCTAssertTrue(problems("{strategies: [random], start: 8, rounds: [16], budget: 3}").contains("budget"))
        XCTAssertTrue(problems("{start: 8, rounds: [16]}").contains("needs strategies"))
        XCTAssertEqual(problems("{strategies: [random, probcover], start: 8, rounds: [16, 32]}"), "")
    }
}
