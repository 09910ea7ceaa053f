import XCTest
import Foundation
import XRPipeline
import XRText
import XRData
import XRTensor
@testable import XRRecipes
import TestSupport

/// Report-generation studies: one cell per encoder setting × number of paired training reports × seed,
/// scored with the caption metrics, resumable, with the same tables and curves as the probes.
final class ReportRecipeTests: XCTestCase {
    func recipe(_ dir: URL, output: String) throws -> URL {
        let url = dir.appendingPathComponent("\(output).yaml")
        try """
        version: 1
        name: reports
        model: {path: demo/model, batch_size: 16}
        data:
          manifest: demo/reports.csv
          task: report
          split_column: split
        report: {target: findings, vocab_size: 300, dim: 16, layers: 1, heads: 2, max_tokens: 24, epochs: 2, batch_size: 8, beams: 1, max_new_tokens: 12}
        methods:
          - {name: frozen}
          - {name: lora, rank: 2}
        shots: [all, 6]
        seeds: 1
        bootstrap: 20
        output: \(output)
        """.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// The recipe with the frozen encoder only and other shot counts, edited further by `edit`;
    /// written over `<output>.yaml`.
    func frozenRecipe(_ dir: URL, output: String, shots: String, _ edit: (String) -> String = { $0 }) throws -> (url: URL, text: String) {
        let url = try recipe(dir, output: output)
        let text = edit(
            try String(contentsOf: url, encoding: .utf8)
                .replacingOccurrences(of: "shots: [all, 6]", with: "shots: \(shots)")
                .replacingOccurrences(of: "  - {name: lora, rank: 2}\n", with: ""))
        try text.write(to: url, atomically: true, encoding: .utf8)
        return (url, text)
    }

    func quiet() -> RunOptions { var o = RunOptions(); o.quiet = true; o.commandLine = ["xrlab", "run"]; return o }

    func testReportCellsRunResumeAndReport() throws {
        let dir = Fixtures.tempDir("xrlab-report-recipe")
        try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 30)
        let r = try RecipeLoader.load(try recipe(dir, output: "a"))
        XCTAssertEqual(r.recipe.shots, [6, 0], "all is stored as 0 and sorted last")
        XCTAssertEqual(r.recipe.metrics, ["bleu_4", "rouge_l", "cider_d", "ce_f1"])
        XCTAssertEqual(r.recipe.primary_metric, "cider_d")
        let full = try Runner.run(r, options: quiet())
        XCTAssertTrue(full.complete)
        XCTAssertEqual(full.computed, 4)
        let a = dir.appendingPathComponent("a")
        let lines = try String(contentsOf: a.appendingPathComponent("results.jsonl"), encoding: .utf8).split(separator: "\n")
        let results = try lines.map { try JSONDecoder().decode(CellResult.self, from: Data($0.utf8)) }
        XCTAssertEqual(results.count, 4)
        for res in results {
            XCTAssertEqual(res.status, "ok", "\(res.cell.id): \(res.reason ?? "")")
            for m in ["bleu_4", "rouge_l", "cider_d", "ce_f1"] {
                let v = try XCTUnwrap(res.metrics[m], "\(res.cell.id) \(m)")
                XCTAssertTrue(v.isFinite && v >= 0, "\(res.cell.id) \(m) = \(v)")
            }
            let ci = try XCTUnwrap(res.primary_ci, res.cell.id)
            XCTAssertLessThanOrEqual(ci.low, ci.high)
            let t = try XCTUnwrap(res.training, res.cell.id)
            XCTAssertEqual(t.train_loss.count, 2)
            XCTAssertEqual(t.trainable_parameters > 0, res.cell.method == "lora", "only the tuned encoder counts encoder parameters")
            XCTAssertEqual(Set(res.train_ids).count, res.n_train)
            if res.cell.shots == 6 { XCTAssertEqual(res.n_train, 6) }
            // Drafts beside the references; weights removed (keep_models is off), settings kept.
            let cell = a.appendingPathComponent("cells/\(res.cell.id)")
            let generated = try String(contentsOf: cell.appendingPathComponent("generated.csv"), encoding: .utf8)
            XCTAssertEqual(generated.split(separator: "\n").count - 1, res.n_test, res.cell.id)
            XCTAssertTrue(FileManager.default.fileExists(atPath: cell.appendingPathComponent("model.json").path))
            XCTAssertFalse(FileManager.default.fileExists(atPath: cell.appendingPathComponent("decoder.safetensors").path))
        }
        // Different shot counts train on different reports; the larger set holds every training report.
        let all = try XCTUnwrap(results.first { $0.cell.method == "frozen" && $0.cell.shots == 0 })
        let six = try XCTUnwrap(results.first { $0.cell.method == "frozen" && $0.cell.shots == 6 })
        XCTAssertTrue(Set(six.train_ids).isSubset(of: Set(all.train_ids)))
        XCTAssertGreaterThan(all.n_train, 6)

        let summary = try String(contentsOf: a.appendingPathComponent("summary.csv"), encoding: .utf8)
        XCTAssertTrue(summary.contains("\nlora,findings,all,cider_d,1,"), summary)
        XCTAssertTrue(summary.contains("\nfrozen,findings,6,ce_f1,1,"), summary)
        let png = try Data(contentsOf: a.appendingPathComponent("curve_findings.png"))
        XCTAssertEqual(Array(png.prefix(4)), [0x89, 0x50, 0x4E, 0x47])
        let report = try String(contentsOf: a.appendingPathComponent("report.md"), encoding: .utf8)
        XCTAssertTrue(report.contains("encoder LoRA r=2"), report)
        XCTAssertTrue(report.contains("| frozen | all |"), report)

        // Interrupted after one new cell, then resumed: byte-identical results.
        var partial = quiet()
        partial.maxNewCells = 1
        let b = try recipe(dir, output: "b")
        let first = try Runner.run(try RecipeLoader.load(b), options: partial)
        XCTAssertFalse(first.complete)
        XCTAssertTrue(try String(contentsOf: dir.appendingPathComponent("b/report.md"), encoding: .utf8).contains("Incomplete run"))
        let resumed = try Runner.run(try RecipeLoader.load(b), options: quiet())
        XCTAssertTrue(resumed.complete)
        XCTAssertEqual(resumed.computed, 3)
        XCTAssertEqual(resumed.reused, 1)
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("b/results.jsonl")), try Data(contentsOf: a.appendingPathComponent("results.jsonl")))
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("b/summary.csv")), try Data(contentsOf: a.appendingPathComponent("summary.csv")))

        // The visual-prefix decoder through the same engine.
        var one = quiet()
        one.maxNewCells = 1
        let pr = try RecipeLoader.load(try recipe(dir, output: "p"), overrides: ["report.visual_input=prefix"])
        XCTAssertEqual(pr.recipe.report?.visual_input, "prefix")
        XCTAssertNotEqual(pr.fingerprint, r.fingerprint)
        _ = try Runner.run(pr, options: one)
        let cell = dir.appendingPathComponent("p/cells/frozen__findings__k6__s0/model.json")
        let info = try JSONSerialization.jsonObject(with: Data(contentsOf: cell)) as! [String: Any]
        XCTAssertEqual(info["visual_input"] as? String, "prefix")
        XCTAssertTrue(try String(contentsOf: dir.appendingPathComponent("p/report.md"), encoding: .utf8).contains("a visual prefix of the patch grid"))
    }

    /// METEOR as a sweep metric: per-item statistics summed over the test reports (and over each
    /// bootstrap resample), equal to scoring the cell's drafts afterwards with the whole resource set.
    func testMeteorIsASweepMetric() throws {
        let dir = Fixtures.tempDir("xrlab-report-recipe")
        try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 16)
        let (url, text) = try frozenRecipe(dir, output: "m", shots: "[6]") {
            $0.replacingOccurrences(of: "epochs: 2,", with: "epochs: 1, meteor_data: \(Fixtures.url("text/meteor").path),")
                + "\nmetrics: [meteor, bleu_4]\nprimary_metric: meteor\n"
        }
        let r = try RecipeLoader.load(url)
        XCTAssertEqual(r.recipe.metrics, ["meteor", "bleu_4"])
        let s = try Runner.run(r, options: quiet())
        XCTAssertTrue(s.complete)
        let res = try JSONDecoder().decode(CellResult.self, from: Data(contentsOf: dir.appendingPathComponent("m/cells/frozen__findings__k6__s0.json")))
        XCTAssertEqual(res.status, "ok", res.reason ?? "")
        let meteor = try XCTUnwrap(res.metrics["meteor"])
        let ci = try XCTUnwrap(res.primary_ci)
        XCTAssertLessThanOrEqual(ci.low, ci.high)
        let drafts = try CSVTable(contentsOf: dir.appendingPathComponent("m/cells/frozen__findings__k6__s0/generated.csv"))
        let g = try drafts.column("generated"), ref = try drafts.column("reference")
        let scorer = try Meteor.load(from: Fixtures.url("text/meteor").path)
        let expected = scorer.score(
            candidates: drafts.rows.map { PTBTokenizer.tokenize($0[g]) }, references: drafts.rows.map { [PTBTokenizer.tokenize($0[ref])] })
        XCTAssertEqual(meteor, expected.corpus, accuracy: 1e-12)
        XCTAssertTrue(try String(contentsOf: dir.appendingPathComponent("m/summary.csv"), encoding: .utf8).contains("\nfrozen,findings,6,meteor,1,"))

        // METEOR resources that are not there: an error naming the path before any cell is run.
        let bad = dir.appendingPathComponent("bad.yaml")
        try text.replacingOccurrences(of: Fixtures.url("text/meteor").path, with: dir.appendingPathComponent("no-meteor").path)
            .replacingOccurrences(of: "output: m", with: "output: bad").write(to: bad, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Runner.run(try RecipeLoader.load(bad), options: quiet())) { e in
            XCTAssertEqual((e as? XRError)?.file, dir.appendingPathComponent("no-meteor").path, "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("bad/cells").path), "no cell started")
    }

    func testMoreReportsThanTheManifestHoldsIsAReportedSkip() throws {
        let dir = Fixtures.tempDir("xrlab-report-recipe")
        try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 12)
        let url = try frozenRecipe(dir, output: "c", shots: "[500]").url
        let s = try Runner.run(try RecipeLoader.load(url), options: quiet())
        XCTAssertTrue(s.complete)
        XCTAssertEqual(s.skipped.count, 1)
        XCTAssertTrue(s.skipped[0].reason?.contains("500 requested") ?? false, "\(s.skipped)")
    }

    func testReportRecipeProblemsAreNamed() throws {
        let dir = Fixtures.tempDir("xrlab-report-recipe")
        let url = dir.appendingPathComponent("bad.yaml")
        try """
        version: 1
        name: bad
        features: {matrix: f.npy}
        data:
          manifest: m.csv
          task: report
          labels: [effusion]
          subgroups: {sex: {column: sex}}
        report: {target: summary, dim: 30, heads: 4, lr: 3, visual_input: side}
        methods:
          - {name: logistic}
          - {name: lora, rank: 0}
        shots: [all, 0]
        metrics: [auroc, meteor]
        output: out
        """.write(to: url, atomically: true, encoding: .utf8)
        let (_, problems) = RecipeLoader.check(url)
        let text = problems.map(\.description).joined(separator: "\n")
        for expected in [
            "a report task trains on images: give model, not features",
            "a report task has no labels",
            "a report task needs split_column",
            "subgroups are not supported for report tasks",
            "target must be findings, impression or both, got 'summary'",
            "visual_input must be cross_attention or prefix, got 'side'",
            "dim 30 is not divisible by heads 4",
            "lr must be between",
            "unknown method 'logistic' for a report task",
            "rank must be at least 1",
            "the number of training reports must be at least 1 (or all), got 0",
            "unknown metric 'auroc' for a report task",
            "the meteor metric needs report.meteor_data"
        ] {
            XCTAssertTrue(text.contains(expected), "missing «\(expected)» in:\n\(text)")
        }

        // A report section in a classification recipe is refused, and `all` needs a report task.
        let cls = dir.appendingPathComponent("cls.yaml")
        try """
        version: 1
        name: cls
        features: {matrix: f.npy}
        data: {manifest: m.csv, label_column: labels, labels: [a]}
        report: {dim: 16}
        methods: [{name: logistic}]
        shots: [all]
        output: out
        """.write(to: cls, atomically: true, encoding: .utf8)
        let clsText = RecipeLoader.check(cls).1.map(\.description).joined(separator: "\n")
        XCTAssertTrue(clsText.contains("the report section applies to report tasks only"), clsText)
        XCTAssertTrue(clsText.contains("all"), clsText)
    }
}
