import Foundation
import XCTest
import XRRecipes
import XRProbe
import XRTensor
import XRData
import XRPipeline
import TestSupport

/// A retrieval recipe on the synthetic study of `makeStudy` (values alpha / beta, several per row).
let retrievalRecipe = """
    version: 1
    name: synthetic-retrieval
    features:
      matrix: feats.npy
    data:
      manifest: table.csv
      label_column: labels
      task: retrieval
      patient_column: patient
      split_column: split
      subgroups:
        sex: {column: sex}
    retrieval:
      relevance: any
      k: [1, 3, 10]
      neighbours: 200
      sheet_queries: 2
    methods:
      - {name: cosine}
      - {name: linear_projection}
    shots: [1, 4]
    seeds: 2
    bootstrap: 40
    output: run
    """

final class RetrievalRecipeTests: XCTestCase {
    func write(_ text: String, in dir: URL) throws -> URL {
        let u = dir.appendingPathComponent("r.yaml")
        try text.write(to: u, atomically: true, encoding: .utf8)
        return u
    }

    func quiet() -> RunOptions { var o = RunOptions(); o.quiet = true; o.commandLine = ["xrlab", "run"]; return o }

    /// The problems `xrlab validate` reports for a recipe text (schema only).
    func problems(_ text: String) throws -> [String] {
        let dir = Fixtures.tempDir("retrieval-schema")
        return Planner.validate(try write(text, in: dir), checkFiles: false).map(\.description)
    }

    func expectProblem(_ text: String, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let found = try problems(text)
        XCTAssertTrue(
            found.contains { p in fragments.allSatisfy { p.contains($0) } }, "expected a problem with \(fragments), got \(found)", file: file, line: line)
    }

    // MARK: parsing

    func testDefaultsAreFilledInOnce() throws {
        let text = retrievalRecipe.replacingOccurrences(
            of: "retrieval:\n  relevance: any\n  k: [1, 3, 10]\n  neighbours: 200\n  sheet_queries: 2\n", with: "")
        let r = try RecipeLoader.load(try write(text, in: Fixtures.tempDir("retrieval-defaults")))
        XCTAssertEqual(r.recipe.data.task, .retrieval)
        XCTAssertTrue(r.recipe.isRetrieval)
        let s = try XCTUnwrap(r.recipe.retrieval)
        XCTAssertEqual(s.gallery, .train)
        XCTAssertEqual(s.relevance, .any)
        XCTAssertEqual(s.k, [1, 5, 10])
        XCTAssertEqual(s.neighbours, 10)
        XCTAssertEqual(r.recipe.primary_metric, "map_at_r")
        XCTAssertEqual(
            r.recipe.metrics, ["map_at_r", "mrr", "precision_at_1", "precision_at_5", "precision_at_10", "recall_at_1", "recall_at_5", "recall_at_10"])
        XCTAssertEqual(r.recipe.methods, [.cosine(CosineSpec()), .linearProjection(LinearProjectionSpec(shrinkage: nil))])
        // Resolved recipes carry every default and read back to the same recipe.
        let yaml = try r.resolvedYAML()
        XCTAssertTrue(yaml.contains("shrinkage: auto"), yaml)
        let again = try RecipeLoader.load(try write(yaml, in: Fixtures.tempDir("retrieval-resolved")))
        XCTAssertEqual(again.recipe.retrieval, r.recipe.retrieval)
        XCTAssertEqual(again.recipe.methods, r.recipe.methods)
        // A cosine-only recipe needs no shots; the plan has one cell per task for it.
        let cosineOnly = text.replacingOccurrences(of: "  - {name: linear_projection}\n", with: "").replacingOccurrences(of: "shots: [1, 4]\n", with: "")
        let c = try RecipeLoader.load(try write(cosineOnly, in: Fixtures.tempDir("retrieval-cosine")))
        XCTAssertEqual(Runner.cells(c.recipe, tasks: ["labels"]).map(\.id), ["cosine__labels__k0__s0"])
    }

    func testBadRetrievalInputsNameTheKey() throws {
        try expectProblem(
            retrievalRecipe.replacingOccurrences(of: "  relevance: any", with: "  relevance: some"), ["retrieval.relevance", "unknown relevance 'some'"])
        try expectProblem(
            retrievalRecipe.replacingOccurrences(of: "  relevance: any", with: "  gallery: both"), ["retrieval.gallery", "unknown gallery 'both'"])
        try expectProblem(retrievalRecipe.replacingOccurrences(of: "k: [1, 3, 10]", with: "k: [0, 3]"), ["retrieval.k", "k must be at least 1"])
        try expectProblem(retrievalRecipe.replacingOccurrences(of: "k: [1, 3, 10]", with: "k: []"), ["retrieval.k", "list at least one cut-off k"])
        try expectProblem(retrievalRecipe.replacingOccurrences(of: "k: [1, 3, 10]", with: "k: [1, 200000]"), ["retrieval.k", "over the limit of 100000"])
        try expectProblem(retrievalRecipe.replacingOccurrences(of: "neighbours: 200", with: "neighbours: 0"), ["retrieval.neighbours", "at least 1"])
        try expectProblem(retrievalRecipe.replacingOccurrences(of: "  sheet_queries: 2", with: "  sheet_querys: 2"), ["sheet_querys"])
        try expectProblem(
            retrievalRecipe.replacingOccurrences(of: "{name: linear_projection}", with: "{name: linear_projection, shrinkage: 2}"),
            ["shrinkage must be between 0 and 1"])
        try expectProblem(
            retrievalRecipe.replacingOccurrences(of: "{name: cosine}", with: "{name: logistic}"), ["unknown method 'logistic' for a retrieval task"])
        try expectProblem(retrievalRecipe.replacingOccurrences(of: "{name: cosine}", with: "{name: cosine, k: 3}"), ["methods[0].k", "unknown key 'k'"])
        try expectProblem(retrievalRecipe.replacingOccurrences(of: "  label_column: labels\n", with: ""), ["a retrieval task needs label_column"])
        try expectProblem(
            retrievalRecipe.replacingOccurrences(of: "  label_column: labels\n", with: "  label_column: labels\n  label_columns: {alpha: a}\n"),
            ["data.label_columns", "does not apply to a retrieval task"])
        try expectProblem(
            retrievalRecipe.replacingOccurrences(of: "  label_column: labels\n", with: "  label_column: labels\n  labels: [alpha]\n"),
            ["data.labels", "one label value only"])
        try expectProblem(retrievalRecipe.replacingOccurrences(of: "shots: [1, 4]\n", with: ""), ["missing required key 'shots'"])
        try expectProblem(retrievalRecipe + "\nmetrics: [auroc]\n", ["unknown metric 'auroc' for a retrieval task"])
        try expectProblem(retrievalRecipe + "\nselection: {strategies: [random], start: 4, rounds: [8]}\n", ["selection is not supported for retrieval tasks"])
        // The retrieval section and its methods belong to retrieval tasks only.
        let classification = studyRecipe + "\nretrieval: {k: [1]}\n"
        try expectProblem(classification, ["retrieval", "applies to retrieval tasks only"])
        try expectProblem(studyRecipe.replacingOccurrences(of: "{name: prototype}", with: "{name: cosine}"), ["unknown method 'cosine'"])
    }

    /// A label column with one value among the rows is refused by name at load time.
    func testOneValueOnlyColumnIsRefused() throws {
        let dir = Fixtures.tempDir("retrieval-one-value")
        try makeStudy(in: dir)
        let text = retrievalRecipe.replacingOccurrences(of: "  label_column: labels\n", with: "  label_column: sex\n  where: {sex: [M]}\n")
        let r = try RecipeLoader.load(try write(text, in: dir))
        XCTAssertThrowsError(try StudyLoader.load(r)) { e in
            let x = e as? XRError
            XCTAssertEqual(x?.field, "data.label_column")
            XCTAssertTrue(x?.message.contains("one value only ('M')") ?? false, "\(e)")
        }
    }

    // MARK: running

    /// A run interrupted after 3 cells and resumed gives the same results.jsonl and neighbours.csv
    /// as an uninterrupted run; every metric of every cell is recomputed from neighbours.csv.
    func testRunResumesAndMetricsFollowFromNeighbours() throws {
        let dir = Fixtures.tempDir("retrieval-run")
        try makeStudy(in: dir)
        let u = try write(retrievalRecipe, in: dir)
        let r = try RecipeLoader.load(u)
        var partial = quiet()
        partial.maxNewCells = 3
        let first = try Runner.run(r, options: partial)
        XCTAssertFalse(first.complete)
        let plan = try Planner.plan(r)
        XCTAssertEqual(plan.cells.count, 1 + 2 * 2)
        XCTAssertEqual(plan.finished.count, 3)
        XCTAssertTrue(plan.text.contains("none"), plan.text)
        let resumed = try Runner.run(r, options: quiet())
        XCTAssertTrue(resumed.complete)
        XCTAssertEqual(resumed.computed, 2)
        XCTAssertEqual(resumed.reused, 3)

        let fresh = dir.appendingPathComponent("fresh")
        let r2 = try RecipeLoader.load(u, overrides: ["output=\(fresh.path)"])
        let whole = try Runner.run(r2, options: quiet())
        let run = resumed.directory
        for f in ["results.jsonl", "neighbours.csv", "summary.csv"] {
            XCTAssertEqual(
                try String(contentsOf: run.appendingPathComponent(f), encoding: .utf8),
                try String(contentsOf: whole.directory.appendingPathComponent(f), encoding: .utf8), f)
        }

        let results = try String(contentsOf: run.appendingPathComponent("results.jsonl"), encoding: .utf8).split(separator: "\n").map {
            try JSONDecoder().decode(CellResult.self, from: Data($0.utf8))
        }
        XCTAssertEqual(results.count, 5)
        let table = try CSVTable(contentsOf: run.appendingPathComponent("neighbours.csv"))
        let col = Dictionary(uniqueKeysWithValues: table.header.enumerated().map { ($1, $0) })
        func c(_ row: [String], _ name: String) -> String { row[col[name] ?? 0] }
        var byCell: [String: [String: [[String]]]] = [:]
        for row in table.rows { byCell["\(c(row, "method"))/\(c(row, "shots"))/\(c(row, "seed"))", default: [:]][c(row, "query"), default: []].append(row) }
        let manifest = try CSVTable(contentsOf: dir.appendingPathComponent("table.csv"))
        let split = try manifest.column("split"), labels = try manifest.column("labels")
        let gallerySize = manifest.rows.filter { $0[split] == "train" && !$0[labels].isEmpty }.count
        for res in results {
            XCTAssertEqual(res.status, "ok", res.reason ?? "")
            let queries = try XCTUnwrap(byCell["\(res.cell.method)/\(res.cell.shots)/\(res.cell.seed)"])
            var sums: [String: Double] = [:]
            var scored = 0
            for (_, rows) in queries {
                let ranked = rows.sorted { Int(c($0, "rank")) ?? 0 < Int(c($1, "rank")) ?? 0 }
                XCTAssertEqual(ranked.count, gallerySize, "neighbours: 200 covers the whole gallery")
                let rel = ranked.map { c($0, "relevant") == "1" }
                let total = Int(c(ranked[0], "relevant_total")) ?? -1
                XCTAssertEqual(total, rel.filter { $0 }.count)
                // Similarities are non-increasing down the ranking.
                let sims = ranked.compactMap { Double(c($0, "similarity")) }
                XCTAssertTrue(zip(sims, sims.dropFirst()).allSatisfy { $0 >= $1 - 1e-6 })
                guard total > 0 else { continue }
                scored += 1
                var hits = 0, ap = 0.0
                for i in 0..<total where rel[i] { hits += 1; ap += Double(hits) / Double(i + 1) }
                sums["map_at_r", default: 0] += ap / Double(total)
                sums["mrr", default: 0] += rel.firstIndex(of: true).map { 1 / Double($0 + 1) } ?? 0
                for k in [1, 3, 10] {
                    let h = Double(rel.prefix(k).filter { $0 }.count)
                    sums["precision_at_\(k)", default: 0] += h / Double(k)
                    sums["recall_at_\(k)", default: 0] += h / Double(total)
                }
            }
            XCTAssertEqual(res.n_test, scored)
            for (name, sum) in sums {
                XCTAssertEqual(res.metrics[name] ?? .nan, sum / Double(scored), accuracy: 1e-9, "\(res.cell.id) \(name)")
            }
            let ci = try XCTUnwrap(res.primary_ci)
            let m = try XCTUnwrap(res.metrics["map_at_r"])
            XCTAssertLessThanOrEqual(ci.low, m)
            XCTAssertGreaterThanOrEqual(ci.high, m)
            XCTAssertEqual(res.subgroups.map(\.attribute), ["sex"])
            XCTAssertEqual(res.n_train, res.cell.method == "cosine" ? 0 : 2 * res.cell.shots)
        }
        // Planted structure: the first feature block marks alpha, so retrieval beats chance.
        let cosine = try XCTUnwrap(results.first { $0.cell.method == "cosine" })
        XCTAssertGreaterThan(cosine.metrics["precision_at_1"] ?? 0, 0.6)

        let report = try String(contentsOf: resumed.report, encoding: .utf8)
        XCTAssertTrue(report.contains("## Retrieval"), report)
        XCTAssertTrue(report.contains("| labels | cosine | – |"), report)
        XCTAssertTrue(report.contains("contact_labels_linear_projection.png"), report)
        for name in ["curve_labels.png", "contact_labels_cosine.png", "contact_labels_linear_projection.png"] {
            let png = try PNGCodec.read(run.appendingPathComponent(name))
            XCTAssertGreaterThan(png.width, 100, name)
        }
        let summary = try CSVTable(contentsOf: run.appendingPathComponent("summary.csv"))
        XCTAssertEqual(Set(summary.rows.map { $0[0] + "/" + $0[2] }), ["cosine/0", "linear_projection/1", "linear_projection/4"])
    }

    /// Two shards and a merge write the same outputs as one process; `xrlab budget` fits
    /// linear_projection's mAP@R curve and leaves the untrained cosine method out.
    func testShardsMergeToTheSameOutputsAndBudgetFitsTheTrainedMethod() throws {
        let dir = Fixtures.tempDir("retrieval-shards")
        try makeStudy(in: dir)
        let u = try write(retrievalRecipe, in: dir)
        let overrides = ["shots=[1, 2, 4, 8]", "seeds=3"]
        let whole = try Runner.run(try RecipeLoader.load(u, overrides: overrides + ["output=\(dir.appendingPathComponent("whole").path)"]), options: quiet())
        let sharded = try RecipeLoader.load(u, overrides: overrides + ["output=\(dir.appendingPathComponent("sharded").path)"])
        for i in 1...2 {
            var o = quiet()
            o.shard = try Shard(index: i, count: 2)
            let s = try Runner.run(sharded, options: o)
            XCTAssertLessThan(s.computed, 13)
        }
        var merge = quiet()
        merge.mergeOnly = true
        let merged = try Runner.run(sharded, options: merge)
        XCTAssertTrue(merged.complete)
        for f in ["results.jsonl", "neighbours.csv", "summary.csv", "subgroups.csv"] {
            XCTAssertEqual(
                try Data(contentsOf: merged.directory.appendingPathComponent(f)), try Data(contentsOf: whole.directory.appendingPathComponent(f)), f)
        }
        var bo = BudgetOptions(target: try BudgetTarget(parsing: "map_at_r=0.9", field: "--target"))
        bo.resamples = 50
        let b = try Budget.plan(whole.directory, options: bo, write: false)
        XCTAssertEqual(b.entries.map(\.method), ["linear_projection"])
        XCTAssertEqual(b.entries.first?.measured.map(\.shots), [1, 2, 4, 8])
        XCTAssertThrowsError(try BudgetTarget(parsing: "precision_at_0=0.5", field: "--target"))
    }

    /// gallery: all ranks every image with a value but the query itself.
    func testGalleryAllLeavesTheQueryOut() throws {
        let dir = Fixtures.tempDir("retrieval-all")
        try makeStudy(in: dir)
        let text = retrievalRecipe.replacingOccurrences(of: "  relevance: any", with: "  gallery: all\n  relevance: all")
        let r = try RecipeLoader.load(try write(text, in: dir), overrides: ["shots=[2]", "seeds=1", "bootstrap=0"])
        let s = try Runner.run(r, options: quiet())
        let table = try CSVTable(contentsOf: s.directory.appendingPathComponent("neighbours.csv"))
        let q = try table.column("query"), n = try table.column("neighbour")
        XCTAssertFalse(table.rows.contains { $0[q] == $0[n] })
        let manifest = try CSVTable(contentsOf: dir.appendingPathComponent("table.csv"))
        let labels = try manifest.column("labels")
        let withValue = manifest.rows.filter { !$0[labels].isEmpty }.count
        let firstQuery = try XCTUnwrap(table.rows.first?[q])
        XCTAssertEqual(table.rows.filter { $0[q] == firstQuery && $0[0] == "cosine" }.count, withValue - 1)
    }
}

/// Contact sheets draw real images: the demo images with the demo encoder.
final class RetrievalImageTests: XCTestCase {
    func testDemoRetrievalRecipeDrawsContactSheets() throws {
        let dir = Fixtures.tempDir("retrieval-demo")
        let demo = try DemoData.generate(in: dir, patients: 16)
        let r = try RecipeLoader.load(
            Fixtures.repoRoot.appendingPathComponent("recipes/demo-retrieval.yaml"),
            overrides: [
                "model.path=\(demo.modelDir.path)", "data.manifest=\(dir.appendingPathComponent("manifest.csv").path)",
                "output=\(dir.appendingPathComponent("run").path)", "seeds=1", "shots=[1]", "bootstrap=0"
            ])
        var o = RunOptions()
        o.quiet = true
        let s = try Runner.run(r, options: o)
        XCTAssertTrue(s.complete)
        let sheet = try PNGCodec.read(s.directory.appendingPathComponent("contact_labels_cosine.png"))
        // Tiles hold image content: many distinct grey levels, not only frames and background.
        let levels = Set(stride(from: 0, to: sheet.pixels.count, by: 3).map { sheet.pixels[$0] })
        XCTAssertGreaterThan(levels.count, 50)
    }
}

/// The shared-data recipes: retrieval by anatomy and by view on FracAtlas + NIH (skipped without the data).
final class SharedDataRetrievalTests: XCTestCase {
    func testRetrievalRecipesRunOnTheSharedData() throws {
        let shared = try Fixtures.requireSharedData()
        let dir = Fixtures.tempDir("shared-retrieval")
        let model = try DemoData.generate(in: dir, patients: 2).modelDir
        for (name, column) in [("fracatlas-nih-retrieval-shared", "anatomy"), ("fracatlas-nih-retrieval-view-shared", "view")] {
            let r = try RecipeLoader.load(
                Fixtures.repoRoot.appendingPathComponent("recipes/\(name).yaml"),
                overrides: [
                    "model.path=\(model.path)", "data.manifest=\(shared.appendingPathComponent("manifest.csv").path)",
                    "output=\(dir.appendingPathComponent(name).path)", "seeds=1", "shots=[2]", "bootstrap=0"
                ])
            var o = RunOptions()
            o.quiet = true
            // FracAtlas holds one image twice, under two ids, once in each split (manifest lines
            // 362 and 431): the leakage check refuses the manifest, as it should; the recipes say so.
            o.skipCheck = true
            let s = try Runner.run(r, options: o)
            XCTAssertTrue(s.complete, name)
            let results = try String(contentsOf: s.directory.appendingPathComponent("results.jsonl"), encoding: .utf8).split(separator: "\n")
            XCTAssertEqual(results.count, 2, name)
            let report = try String(contentsOf: s.report, encoding: .utf8)
            XCTAssertTrue(report.contains("Task `\(column)`: 295 queries"), report)
        }
    }
}
