import Foundation
import XCTest
@testable import XRRecipes
import XRTensor
import TestSupport

/// Hostile recipes: nesting that overflowed the YAML composer's stack, alias bombs, and counts
/// that made `plan` run without end. Each is refused at validation, naming the file, key and limit.
final class RecipeLimitsTests: XCTestCase {
    func write(_ text: String, name: String = "r.yaml") throws -> URL {
        let u = Fixtures.tempDir("xrlab-limits").appendingPathComponent(name)
        try text.write(to: u, atomically: true, encoding: .utf8)
        return u
    }

    func problems(_ text: String, overrides: [String] = []) throws -> (URL, [XRError]) {
        let u = try write(text)
        return (u, RecipeLoader.check(u, overrides: overrides).1)
    }

    /// `x: [[[[…]]]]` 5,000 and 100,000 deep (the composer recursed once per level and crashed
    /// with SIGSEGV), in flow and block style and through `--set`.
    func testDeepNestingIsRefusedBeforeComposing() throws {
        for depth in [5_000, 100_000] {
            let (u, p) = try problems(studyRecipe + "\nx: " + String(repeating: "[", count: depth) + String(repeating: "]", count: depth) + "\n")
            XCTAssertEqual(p.count, 1, "\(p)")
            XCTAssertEqual(p.first?.file, u.path)
            XCTAssertTrue(p.first?.message.contains("nested deeper than the limit of \(Limits.yamlDepth) levels") == true, "\(p)")
            // The root mapping is the first level, so the 64th bracket is the one over the limit.
            XCTAssertEqual(p.first?.field, "line 22:\(Limits.yamlDepth + 3)", "the position of the first level over the limit")
        }
        // Block style: each line one level deeper.
        let block = (1...200).map { String(repeating: " ", count: $0) + "k:" }.joined(separator: "\n")
        let (_, p) = try problems(studyRecipe + "\nx:\n" + block + "\n")
        XCTAssertTrue(p.first?.message.contains("nested deeper than the limit") == true, "\(p)")
        let (_, o) = try problems(studyRecipe, overrides: ["seeds=" + String(repeating: "[", count: 5_000)])
        XCTAssertEqual(o.first?.field, "--set seeds=" + String(repeating: "[", count: 5_000), "\(o)")
        XCTAssertTrue(o.first?.message.contains("nested deeper") == true, "\(o)")
        // At the limit itself it is parsed (and then refused for being an unknown key, not for its depth).
        let deep = Limits.yamlDepth - 1
        let (_, ok) = try problems(studyRecipe + "\nx: " + String(repeating: "[", count: deep) + String(repeating: "]", count: deep) + "\n")
        XCTAssertEqual(ok.map(\.message), ["unknown key 'x'"])
    }

    /// Aliases count as the nodes they repeat: ten levels of ten-fold repetition is 10^10 nodes.
    func testAliasBombIsRefused() throws {
        var text = studyRecipe + "\nx:\n  l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n"
        for i in 1..<10 { text += "  l\(i): &l\(i) [" + Array(repeating: "*l\(i - 1)", count: 10).joined(separator: ", ") + "]\n" }
        let (u, p) = try problems(text)
        XCTAssertEqual(p.first?.file, u.path)
        XCTAssertTrue(p.first?.message.contains("more than the limit of \(Limits.yamlNodes) values") == true, "\(p)")
        XCTAssertEqual(p.first?.field, "line 28:17", "the alias that passes the limit")
        // A few aliases are fine.
        let (_, ok) = try problems(
            studyRecipe.replacingOccurrences(of: "labels: [alpha, beta]", with: "labels: &l [alpha, beta]")
                .replacingOccurrences(of: "  subgroups:", with: "  where: {labels: *l}\n  subgroups:"))
        XCTAssertEqual(ok.map(\.description), [])
    }

    /// `seeds: 1000000000` validated and then `plan` ran without end; so did 100,000-long lists.
    func testCountsOverTheirLimitsAreRefusedNamingKeyAndLimit() throws {
        let long = "[" + (1...100_000).map(String.init).joined(separator: ", ") + "]"
        let cases: [(String, String, String)] = [
            (
                studyRecipe.replacingOccurrences(of: "seeds: 2", with: "seeds: 1000000000"), "seeds",
                "seeds is 1000000000, over the limit of \(Limits.Recipe.seeds) seeds"
            ),
            (
                studyRecipe.replacingOccurrences(of: "shots: [1, 4, 8]", with: "shots: \(long)"), "shots",
                "shots lists 100000 shot counts, over the limit of \(Limits.Recipe.shotCounts)"
            ),
            (
                studyRecipe.replacingOccurrences(of: "{name: knn, k: [3]}", with: "{name: knn, k: \(long)}"), "methods[1].k",
                "methods[1].k lists 100000 grid values, over the limit of \(Limits.Recipe.gridValues)"
            ),
            (studyRecipe.replacingOccurrences(of: "C: [0.1, 1]", with: "C: \(long)"), "methods[0].C", "over the limit of \(Limits.Recipe.gridValues)"),
            (
                studyRecipe.replacingOccurrences(of: "bootstrap: 50", with: "bootstrap: {resamples: 1000000000}"), "bootstrap",
                "over the limit of \(Limits.Recipe.bootstrap) bootstrap resamples"
            ),
            (
                studyRecipe.replacingOccurrences(of: "shots: [1, 4, 8]", with: "shots: [1, 4, 1000000000]"), "shots",
                "over the limit of \(Limits.Recipe.shotValue)"
            ),
            (
                studyRecipe.replacingOccurrences(of: "{name: knn, k: [3]}", with: "{name: knn, k: [3000000]}"), "methods[1].k",
                "over the limit of \(Limits.Recipe.knnK) neighbours"
            )
        ]
        for (text, key, message) in cases {
            let (u, p) = try problems(text)
            XCTAssertEqual(p.count, 1, "\(key): \(p)")
            XCTAssertEqual(p.first?.file, u.path)
            XCTAssertTrue(p.first?.message.contains(message) == true, "\(p) should say \(message)")
            XCTAssertTrue(p.first?.field?.contains("(\(key))") == true && p.first?.field?.hasPrefix("line ") == true, "\(p)")
        }
        // Each factor within its limit, their product (the plan) over it.
        let grid = "[" + (1...100).map(String.init).joined(separator: ", ") + "]"
        let many = studyRecipe.replacingOccurrences(of: "seeds: 2", with: "seeds: 1000").replacingOccurrences(of: "shots: [1, 4, 8]", with: "shots: \(grid)")
            .replacingOccurrences(of: "{name: knn, k: [3]}", with: "{name: knn, k: \(grid)}")
        let (_, p) = try problems(many)
        XCTAssertEqual(
            p.map(\.message),
            ["the plan has 20400000 cells (102 method settings × 2 tasks × 100 shot counts × 1000 seeds), over the limit of \(Limits.Recipe.planCells) cells"])
        // The same through --set, named by the override.
        let (_, s) = try problems(studyRecipe, overrides: ["seeds=1000000000"])
        XCTAssertEqual(s.first?.field, "--set seeds=1000000000 (seeds)", "\(s)")
        // A training key of a tuning method.
        let tuned = studyRecipe.replacingOccurrences(of: "features:\n  matrix: feats.npy", with: "model:\n  path: model")
            .replacingOccurrences(of: "  - {name: prototype}", with: "  - {name: lora, epochs: 100000000}")
        let (_, t) = try problems(tuned)
        XCTAssertEqual(t.map(\.message), ["methods[2].epochs is 100000000, over the limit of \(Limits.Recipe.epochs) epochs"])
    }
}
