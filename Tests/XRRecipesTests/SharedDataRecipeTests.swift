import Foundation
import XCTest
import XRRecipes
import XRPipeline
import XRTensor
import XRData
import TestSupport

/// The repository's real-data recipe on the shared NIH chest X-rays (skipped without them).
final class SharedDataRecipeTests: XCTestCase {
    func testNIHRecipeRunsOnRealXRays() throws {
        let shared = try Fixtures.requireSharedData()
        let dir = Fixtures.tempDir("nih")
        let model = try DemoData.generate(in: dir, patients: 2).modelDir
        let recipe = Fixtures.repoRoot.appendingPathComponent("recipes/nih-cxr14-shared.yaml")
        let r = try RecipeLoader.load(
            recipe,
            overrides: [
                "model.path=\(model.path)", "data.manifest=\(shared.appendingPathComponent("manifest.csv").path)",
                "output=\(dir.appendingPathComponent("run").path)", "seeds=1", "shots=[1, 4]", "bootstrap=0"
            ])
        var o = RunOptions()
        o.quiet = true
        let s = try Runner.run(r, options: o)
        XCTAssertTrue(s.complete)
        XCTAssertEqual(s.computed, 4 * 3 * 2)
        let report = try String(contentsOf: s.report, encoding: .utf8)
        let manifest = try CSVTable(contentsOf: shared.appendingPathComponent("manifest.csv"))
        let anatomy = try manifest.column("anatomy")
        let chest = manifest.rows.filter { $0[anatomy] == "chest" }.count
        XCTAssertLessThan(chest, manifest.rows.count)
        XCTAssertTrue(report.contains("Rows: \(chest) "), "only the chest rows (data.where anatomy: chest): \(report)")
        XCTAssertEqual(s.plots.count, 4)
    }

    /// `xrlab budget`'s planner on the shared NIH study: every method × task gets a curve and a
    /// stated outcome, budget.json and one plot per finding.
    func testBudgetOnTheNIHStudy() throws {
        let shared = try Fixtures.requireSharedData()
        let dir = Fixtures.tempDir("nih-budget")
        let model = try DemoData.generate(in: dir, patients: 2).modelDir
        let r = try RecipeLoader.load(
            Fixtures.repoRoot.appendingPathComponent("recipes/nih-cxr14-shared.yaml"),
            overrides: [
                "model.path=\(model.path)", "data.manifest=\(shared.appendingPathComponent("manifest.csv").path)",
                "output=\(dir.appendingPathComponent("run").path)", "seeds=3", "shots=[1, 2, 4, 8]", "bootstrap=0"
            ])
        var o = RunOptions()
        o.quiet = true
        let s = try Runner.run(r, options: o)
        var bo = BudgetOptions(target: try BudgetTarget(parsing: "auroc=0.7", field: "--target"))
        bo.resamples = 200
        let b = try Budget.plan(s.directory, options: bo)
        XCTAssertEqual(b.entries.count, 4 * 3)
        XCTAssertEqual(b.plots.count, 4)
        for e in b.entries {
            XCTAssertFalse(e.model.isEmpty, "\(e.task) \(e.method): \(e.model_reason)")
            XCTAssertTrue(["reachable", "beyond_max_shots", "ceiling_below_target", "not_reached"].contains(e.status), e.status)
            XCTAssertEqual(e.measured.map(\.shots), [1, 2, 4, 8])
        }
        XCTAssertNotNil(b.json.flatMap { try? Data(contentsOf: $0) })
    }

    /// `xrlab suggest` on the shared NIH study: a cold start by TypiClust, then uncertainty once
    /// both classes of every finding are labelled, and a short simulation.
    func testSuggestOnTheNIHStudy() throws {
        let shared = try Fixtures.requireSharedData()
        let dir = Fixtures.tempDir("nih-suggest")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try DemoData.generate(in: dir, patients: 2).modelDir
        let r = try RecipeLoader.load(
            Fixtures.repoRoot.appendingPathComponent("recipes/nih-cxr14-shared.yaml"),
            overrides: [
                "model.path=\(model.path)", "data.manifest=\(shared.appendingPathComponent("manifest.csv").path)",
                "output=\(dir.appendingPathComponent("run").path)"
            ])
        let study = try StudyLoader.load(r)
        let none = dir.appendingPathComponent("none.csv")
        try CSVTable(header: ["path"], rows: []).write(to: none)
        let cold = try Suggest.run(r, labelled: none, options: SuggestOptions(strategy: .typiclust, budget: 12), study: study)
        XCTAssertEqual(cold.rows.count, 12)
        XCTAssertTrue(cold.rows.allSatisfy { id in study.ids.firstIndex(of: id.id).map { study.isTest[$0] == false } ?? false }, "a test row was suggested")
        // Label every training row of a few of each class per finding, then ask for uncertainty.
        var labelled = Set<Int>()
        for t in study.tasks {
            for k in 0..<2 {
                labelled.formUnion(study.ids.indices.filter { study.isTest[$0] == false && t.labels[$0] == k }.prefix(3))
            }
        }
        let file = dir.appendingPathComponent("labelled.csv")
        try CSVTable(header: ["path"], rows: labelled.sorted().map { [study.ids[$0]] }).write(to: file)
        let next = try Suggest.run(r, labelled: file, options: SuggestOptions(strategy: .uncertainty, budget: 10), study: study)
        XCTAssertEqual(next.rows.count, 10)
        XCTAssertTrue(next.rows.allSatisfy { !labelled.contains(study.ids.firstIndex(of: $0.id) ?? -1) })
        let sim = try SelectionSimulation.run(
            study, recipe: r.recipe,
            options: SimulationOptions(strategies: [.random, .kcenter], start: 20, rounds: [40], seeds: 2),
            dir: dir.appendingPathComponent("sim"))
        XCTAssertEqual(sim.count, 4)
        XCTAssertTrue(sim.allSatisfy { $0.points.count == 2 && $0.points.allSatisfy { $0.auroc.map { $0 > 0 && $0 < 1 } ?? true } })
    }
}
