import Foundation
import XCTest
import TestSupport

/// `xrlab suggest` as a user runs it: a suggestion file, a simulation folder, and bad input.
extension RecipeCommandTests {
    func testSuggestAndSimulateOnTheSyntheticRecipe() throws {
        let dir = Fixtures.tempDir("cli-suggest")
        defer { try? FileManager.default.removeItem(at: dir) }
        let recipe = Fixtures.repoRoot.appendingPathComponent("recipes/synthetic-features.yaml").path
        let none = dir.appendingPathComponent("none.csv")
        try "path\n".write(to: none, atomically: true, encoding: .utf8)
        let next = dir.appendingPathComponent("next.csv")
        let s = try xrlab(["suggest", recipe, "--labelled", none.path, "--budget", "6", "--strategy", "kcenter", "--out", next.path])
        XCTAssertEqual(s.status, 0, s.err)
        XCTAssertTrue(s.out.contains("6 rows by kcenter"), s.out)
        let lines = try String(contentsOf: next, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.first, "rank,path,patient,strategy,score,reason")
        XCTAssertEqual(lines.count, 7)

        let sim = dir.appendingPathComponent("sim")
        let r = try xrlab([
            "suggest", recipe, "--simulate", "--strategies", "random,typiclust", "--start", "6", "--rounds", "12,24",
            "--seeds", "2", "--out", sim.path
        ])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("typiclust"), r.out)
        for f in ["selection.csv", "selection_summary.csv", "selection.json", "selection.png"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: sim.appendingPathComponent(f).path), f)
        }

        for (args, message) in [
            (["--labelled", none.path, "--budget", "3", "--strategy", "typiclus"], "did you mean 'typiclust'?"),
            (["--labelled", none.path, "--budget", "100000"], "is larger than the pool"),
            (["--budget", "3"], "--labelled is required"),
            (["--labelled", none.path, "--budget", "3", "--strategy", "uncertainty"], "needs the current probe"),
            (["--simulate", "--rounds", "12,8", "--start", "10"], "--rounds must increase"),
            (["--simulate", "--rounds", "12,x"], "--rounds takes label counts")
        ] {
            let out = try xrlab(["suggest", recipe] + args + ["--out", dir.appendingPathComponent("bad").path])
            XCTAssertEqual(out.status, 1, "\(args): \(out.out)")
            XCTAssertTrue(out.err.contains(message), "\(args): \(out.err)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("bad").path), "a refused run wrote its output")
    }
}
