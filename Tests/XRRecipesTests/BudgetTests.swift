import Foundation
import XCTest
import XRRecipes
import XRProbe
import XRTensor
import XRData
import TestSupport

/// The label-budget planner on a real run of `recipes/synthetic-features.yaml`, and its bad input.
final class BudgetTests: XCTestCase {
    /// One run shared by the tests: 4 method settings × 2 tasks × 5 shot counts × 4 seeds.
    static let run: Result<URL, Error> = Result {
        let out = Fixtures.tempDir("budget-run").appendingPathComponent("run")
        var o = RunOptions(); o.quiet = true; o.commandLine = ["xrlab", "run"]
        let r = try RecipeLoader.load(
            Fixtures.repoRoot.appendingPathComponent("recipes/synthetic-features.yaml"),
            overrides: ["output=\(out.path)", "seeds=4", "bootstrap=0"])
        _ = try Runner.run(r, options: o)
        return out
    }

    func options(_ target: String, _ edit: (inout BudgetOptions) -> Void = { _ in }) throws -> BudgetOptions {
        var o = BudgetOptions(target: try BudgetTarget(parsing: target, field: "--target"))
        o.resamples = 200
        edit(&o)
        return o
    }

    func testPlansEveryMethodAndTaskConsistently() throws {
        let dir = try Self.run.get()
        for target in ["auroc=0.85", "auroc=0.7", "auroc=0.999", "ece=0.05"] {
            let o = try options(target)
            let r = try Budget.plan(dir, options: o, write: false)
            XCTAssertEqual(r.entries.count, 8, target)
            for e in r.entries {
                let name = "\(target) \(e.task) \(e.method)"
                XCTAssertFalse(e.model.isEmpty, name)
                XCTAssertEqual(e.measured.map(\.shots), [1, 2, 4, 8, 16], name)
                XCTAssertEqual(e.classes, 2, name)
                XCTAssertEqual(e.resamples, 200, name)
                let m: CurveModel =
                    e.model == "power_law"
                    ? .powerLaw(a: e.parameters["a"] ?? .nan, b: e.parameters["b"] ?? .nan, c: e.parameters["c"] ?? .nan)
                    : .logLinear(a: e.parameters["a"] ?? .nan, b: e.parameters["b"] ?? .nan)
                let sign = o.target.higherIsBetter ? 1.0 : -1.0
                switch e.status {
                case "reachable":
                    let l = try XCTUnwrap(e.labels_per_class, name)
                    XCTAssertGreaterThanOrEqual(sign * (m.value(at: l.estimate) - o.target.value), -1e-12, name)
                    if l.estimate > 1 { XCTAssertLessThan(sign * (m.value(at: l.estimate - 1) - o.target.value), 0, name) }
                    if let lo = l.low { XCTAssertLessThanOrEqual(lo, l.estimate, name) }
                    if let hi = l.high { XCTAssertGreaterThanOrEqual(hi, l.estimate, name) }
                    XCTAssertEqual(e.labels_total, Int(l.estimate) * 2, name)
                case "ceiling_below_target":
                    XCTAssertLessThanOrEqual(try XCTUnwrap(e.ceiling?.high), 1, "a fitted AUROC ceiling stays within [0, 1]: \(name)")
                    XCTAssertEqual(e.model, "power_law", name)
                    XCTAssertGreaterThanOrEqual(sign * (o.target.value - (e.ceiling?.estimate ?? .nan)), 0, name)
                    XCTAssertNil(e.labels_per_class, name)
                case "beyond_max_shots":
                    XCTAssertNil(e.labels_per_class, name)
                    XCTAssertGreaterThan(try XCTUnwrap(m.shots(reaching: o.target.value, higherIsBetter: o.target.higherIsBetter)), 1024, name)
                default:
                    XCTAssertEqual(e.status, "not_reached", name)
                }
            }
        }
        // A target every curve already passes at one shot needs one label per class.
        let easy = try Budget.plan(dir, options: try options("auroc=0.3"), write: false)
        XCTAssertTrue(easy.entries.contains { $0.labels_per_class?.estimate == 1 })
        // --method / --task narrow the plan.
        let one = try Budget.plan(
            dir,
            options: try options("auroc=0.8") {
                $0.method = "prototype"; $0.task = "nodule"
            }, write: false)
        XCTAssertEqual(one.entries.map { "\($0.task) \($0.method)" }, ["nodule prototype"])
    }

    func testWritesBudgetJSONAndPlotsDeterministically() throws {
        let dir = try Self.run.get()
        let o = try options("auroc=0.85")
        let r = try Budget.plan(dir, options: o)
        let json = try XCTUnwrap(r.json)
        let first = try Data(contentsOf: json)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: first) as? [String: Any])
        XCTAssertEqual(obj["format"] as? String, "xrlab-budget")
        XCTAssertEqual(obj["format_version"] as? Int, 1)
        XCTAssertEqual((obj["entries"] as? [Any])?.count, 8)
        XCTAssertEqual(r.plots.map(\.lastPathComponent), ["budget_effusion.png", "budget_nodule.png"])
        for p in r.plots {
            let img = try PNGCodec.read(p)
            XCTAssertEqual(img.width, 1020)
        }
        _ = try Budget.plan(dir, options: o)
        XCTAssertEqual(try Data(contentsOf: json), first, "same seed, same budget.json")
    }

    func testBacktestPredictsTheLargerShotCountsFromTheSmallerOnes() throws {
        let dir = try Self.run.get()
        let results = try Budget.results(in: dir)
        let o = try options("auroc=0.85")
        let rows = try Budget.backtest(results, fitMaxShots: 4, options: o, source: dir.path)
        XCTAssertEqual(rows.count, 16, "8 curves × shots 8 and 16")
        for r in rows {
            let name = "\(r.task) \(r.method) k=\(r.shots)"
            let values = results.filter { $0.status == "ok" && $0.cell.task == r.task && $0.cell.method == r.method && $0.cell.shots == r.shots }
                .compactMap { $0.metrics["auroc"] }
            XCTAssertEqual(r.measured, values.reduce(0, +) / Double(values.count), accuracy: 1e-12, name)
            XCTAssertLessThan(r.low, r.high, name)
            // The prediction comes from the points at k ≤ 4 only: refitting those gives the same value.
            let pts = results.filter { $0.status == "ok" && $0.cell.task == r.task && $0.cell.method == r.method && $0.cell.shots <= 4 }
                .compactMap { c in c.metrics["auroc"].map { CurvePoint(shots: Double(c.cell.shots), seed: c.cell.seed, value: $0) } }
            let m = try XCTUnwrap(LearningCurveFit.choose(pts, higherIsBetter: true, bound: 1)?.fit.model, name)
            XCTAssertEqual(r.predicted, m.value(at: Double(r.shots)), accuracy: 1e-12, name)
        }
        let text = Budget.describe(backtest: rows, fitMaxShots: 4, level: 0.8)
        XCTAssertTrue(text.contains("all: 16 predictions, mean |error| "), text)
        XCTAssertTrue(text.contains("80% interval covered \(rows.filter(\.covered).count)/16"), text)
        XCTAssertEqual(try Budget.backtest(results, fitMaxShots: 16, options: o, source: dir.path), [], "nothing above 16 to predict")
    }

    func testBadTargetsAreRefusedWithTheField() {
        func refuses(_ s: String, _ message: String, line: UInt = #line) {
            XCTAssertThrowsError(try BudgetTarget(parsing: s, field: "--target"), line: line) { e in
                let x = e as? XRError
                XCTAssertEqual(x?.field, "--target", line: line)
                XCTAssertTrue(x?.description.contains(message) == true, "\(x?.description ?? "\(e)")", line: line)
            }
        }
        refuses("auroc=1.5", "outside [0, 1]")
        refuses("auroc=-0.1", "outside [0, 1]")
        refuses("aurco=0.8", "unknown metric 'aurco' — did you mean 'auroc'?")
        refuses("sensitivity=0.8", "known metrics: auroc")
        refuses("auroc", "expected metric=value")
        refuses("auroc=high", "is not a number")
        refuses("log_loss=-1", "below 0")
        XCTAssertEqual(try BudgetTarget(parsing: "log_loss=1.5", field: "--target").value, 1.5)
        XCTAssertFalse(try BudgetTarget(parsing: "ece=0.05", field: "--target").higherIsBetter)
    }

    func testRunDirectoriesWithoutTheNeededResultsAreRefused() throws {
        let empty = Fixtures.tempDir("budget-empty")
        let o = try options("auroc=0.85")
        XCTAssertThrowsError(try Budget.plan(empty, options: o)) { e in
            XCTAssertTrue("\(e)".contains("has no results.jsonl") && "\(e)".contains("xrlab run"), "\(e)")
        }
        XCTAssertThrowsError(try Budget.plan(empty.appendingPathComponent("missing"), options: o)) { e in
            XCTAssertTrue("\(e)".contains("no such run directory"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: empty.appendingPathComponent("budget.json").path))
        let dir = try Self.run.get()
        func refuses(_ o: BudgetOptions, _ field: String, _ message: String, line: UInt = #line) {
            XCTAssertThrowsError(try Budget.plan(dir, options: o, write: false), line: line) { e in
                XCTAssertEqual((e as? XRError)?.field, field, line: line)
                XCTAssertTrue("\(e)".contains(message), "\(e)", line: line)
            }
        }
        refuses(try options("auroc=0.85") { $0.method = "logistc" }, "--method", "method 'logistc' is not in this run — did you mean 'logistic'?")
        refuses(try options("auroc=0.85") { $0.task = "cardiomegaly" }, "--task", "tasks in this run: effusion, nodule")
        refuses(try options("accuracy=0.85"), "--target", "the run did not compute accuracy")
    }
}

/// `budget.targets` in recipes: the "Labels needed" table of report.md, and bad targets.
final class BudgetRecipeTests: XCTestCase {
    /// synthetic-features.yaml with absolute fixture paths and `extra` appended.
    func recipe(_ extra: String) throws -> URL {
        let text = try String(contentsOf: Fixtures.repoRoot.appendingPathComponent("recipes/synthetic-features.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "../fixtures/", with: Fixtures.dir.path + "/")
        let u = Fixtures.tempDir("budget-recipe").appendingPathComponent("r.yaml")
        try (text + extra).write(to: u, atomically: true, encoding: .utf8)
        return u
    }

    func testBudgetTargetsAddALabelsNeededTable() throws {
        let dir = try BudgetTests.run.get()
        let r = try RecipeLoader.load(
            try recipe("budget: {targets: [auroc=0.85, ece=0.1]}\n"),
            overrides: ["output=\(dir.path)", "seeds=4", "bootstrap=0"])
        XCTAssertEqual(r.recipe.budget?.targets, ["auroc=0.85", "ece=0.1"])
        var o = RunOptions(); o.quiet = true; o.commandLine = ["xrlab", "run"]
        let s = try Runner.run(r, options: o)
        XCTAssertEqual(s.computed, 0, "budget.targets does not enter the fingerprint: every cell is reused")
        let md = try String(contentsOf: s.report, encoding: .utf8)
        XCTAssertTrue(md.contains("## Labels needed"), md)
        let rows = md.split(separator: "\n").filter { $0.hasPrefix("| auroc=0.8500 |") || $0.hasPrefix("| ece=0.1000 |") }
        XCTAssertEqual(rows.count, 16, md)
        // The table says what `xrlab budget` says.
        var bo = BudgetOptions(target: BudgetTarget(metric: "auroc", value: 0.85))
        bo.method = "logistic"; bo.task = "effusion"
        let e = try XCTUnwrap(try Budget.plan(dir, options: bo, write: false).entries.first)
        let row = try XCTUnwrap(rows.first { $0.hasPrefix("| auroc=0.8500 | effusion | logistic |") })
        if e.status == "reachable", let l = e.labels_per_class {
            XCTAssertTrue(row.contains("| \(Int(l.estimate)) ["), String(row))
        } else {
            XCTAssertTrue(row.contains("not reached") || row.contains("more than"), String(row))
        }
        // Without the key, no table.
        let plain = try Runner.run(try RecipeLoader.load(try recipe(""), overrides: ["output=\(dir.path)", "seeds=4", "bootstrap=0"]), options: o)
        XCTAssertFalse(try String(contentsOf: plain.report, encoding: .utf8).contains("Labels needed"))
    }

    func testBadBudgetTargetsAreRefusedWithTheLine() throws {
        func problems(_ extra: String) throws -> String {
            Planner.validate(try recipe(extra), overrides: [], checkFiles: false).map(\.description).joined(separator: "\n")
        }
        let outside = try problems("budget: {targets: [auroc=1.5]}\n")
        XCTAssertTrue(outside.contains("budget.targets") && outside.contains("outside [0, 1]"), outside)
        XCTAssertTrue(outside.contains("line 31:"), outside)
        let typo = try problems("budget: {targets: [aurco=0.8]}\n")
        XCTAssertTrue(typo.contains("did you mean 'auroc'?"), typo)
        let missing = try problems("budget: {targets: [accuracy=0.8]}\n")
        XCTAssertTrue(missing.contains("on a metric the recipe does not compute"), missing)
        let key = try problems("budget: {target: [auroc=0.8]}\n")
        XCTAssertTrue(key.contains("unknown key 'target'") && key.contains("did you mean 'targets'?"), key)
        XCTAssertEqual(try problems("budget: {targets: [auroc=0.8]}\n"), "")
    }
}
