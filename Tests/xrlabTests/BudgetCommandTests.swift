import Foundation
import XCTest
import TestSupport

/// `xrlab budget` on a real small run, and its bad input, as a user runs it.
extension RecipeCommandTests {
    func testBudgetOnASyntheticRun() throws {
        let out = Fixtures.tempDir("cli-budget").appendingPathComponent("run")
        let recipe = Fixtures.repoRoot.appendingPathComponent("recipes/synthetic-features.yaml").path
        let run = try xrlab(["run", recipe, "--quiet", "--set", "output=\(out.path)", "--set", "seeds=3", "--set", "bootstrap=0"])
        XCTAssertEqual(run.status, 0, run.err)

        let b = try xrlab(["budget", out.path, "--target", "auroc=0.85", "--resamples", "200"])
        XCTAssertEqual(b.status, 0, b.err)
        XCTAssertTrue(b.out.contains("target auroc=0.8500; 80% intervals from 200 bootstrap resamples of the seeds"), b.out)
        let lines = b.out.split(separator: "\n").filter { $0.hasPrefix("effusion  ") || $0.hasPrefix("nodule  ") }
        XCTAssertEqual(lines.count, 8, b.out)
        for l in lines {
            XCTAssertTrue(l.contains("labels per class") || l.contains("does not reach") || l.contains("does not move"), String(l))
        }
        XCTAssertTrue(b.out.contains("budget: \(out.appendingPathComponent("budget.json").path)"), b.out)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("budget_effusion.png").path))

        let narrowed = try xrlab(["budget", out.path, "--target", "auroc=0.85", "--method", "prototype", "--task", "nodule"])
        XCTAssertEqual(narrowed.status, 0, narrowed.err)
        XCTAssertTrue(narrowed.out.contains("nodule  prototype  ("), narrowed.out)
        XCTAssertFalse(narrowed.out.contains("effusion  "), narrowed.out)

        let json = try Data(contentsOf: out.appendingPathComponent("budget.json"))
        // Bad input: a clear error naming the flag, exit status 1, budget.json left as it was.
        for (args, message) in [
            (["--target", "auroc=1.2"], "--target: target 1.2 for auroc is outside [0, 1]"),
            (["--target", "aurco=0.85"], "did you mean 'auroc'?"),
            (["--target", "auroc=0.85", "--method", "lora"], "--method: method 'lora' is not in this run"),
            (["--target", "auroc=0.85", "--task", "efusion"], "did you mean 'effusion'?"),
            (["--target", "auroc=0.85", "--level", "1.5"], "--level must be in (0, 1)"),
            (["--target", "auroc=0.85", "--resamples", "0"], "--resamples must be at least 10"),
            (["--target", "auroc=0.85", "--backtest", "16"], "nothing to backtest")
        ] {
            let r = try xrlab(["budget", out.path] + args)
            XCTAssertEqual(r.status, 1, "\(args): \(r.out)")
            XCTAssertTrue(r.err.contains(message), "\(args): \(r.err)")
        }
        XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("budget.json")), json)
        let backtest = try xrlab(["budget", out.path, "--target", "auroc=0.85", "--backtest", "4", "--resamples", "100"])
        XCTAssertEqual(backtest.status, 0, backtest.err)
        XCTAssertTrue(backtest.out.contains("backtest: fitted on shots <= 4, 80% intervals"), backtest.out)
        XCTAssertTrue(backtest.out.contains("all: 16 predictions"), backtest.out)
        let empty = Fixtures.tempDir("cli-budget-empty")
        let none = try xrlab(["budget", empty.path, "--target", "auroc=0.85"])
        XCTAssertEqual(none.status, 1)
        XCTAssertTrue(none.err.contains("the run directory has no results.jsonl"), none.err)
        XCTAssertTrue(none.err.contains("HINT: run the recipe first"), none.err)
    }
}
