// Run outputs: results.jsonl, summary.csv, learning curves (PNG) and report.md.
import Foundation
import XRTensor
import XRData
import XRProbe

enum Outputs {
    struct Written { var plots: [URL]; var report: URL }

    static func write(
        _ results: [CellResult], recipe r: LoadedRecipe, data: StudyData, directory dir: URL,
        complete: Bool
    ) throws -> Written {
        let recipe = r.recipe
        try writeResults(results, directory: dir)

        // summary.csv: one row per method × task × shots × metric, aggregated over seeds.
        var rows: [[String]] = []
        let methods = methodLabels(recipe)
        var curves: [String: [Series]] = [:]
        for task in data.tasks.map(\.name) {
            for m in methods {
                var points: [(Double, Double, Double, Double)] = []
                for k in Runner.shotCounts(recipe, method: m) {
                    let cellResults = results.filter { $0.cell.task == task && $0.cell.method == m && $0.cell.shots == k }
                    for (metric, s, row) in summaryRows(cellResults, method: m, task: task, shots: String(k), recipe: recipe) {
                        rows.append(row)
                        if metric == recipe.primary_metric && s.n > 0 && Runner.untrained(m) {
                            // One cell, no shots: a flat line over the shot counts, its band the
                            // bootstrap interval over queries.
                            let ci = cellResults.first?.primary_ci
                            let xs = recipe.shots.isEmpty ? [1] : recipe.shots
                            points += xs.map { (Double($0), s.mean, ci.map { max($0.low, 0) } ?? s.mean, ci.map { min($0.high, 1) } ?? s.mean) }
                        } else if metric == recipe.primary_metric && s.n > 0 {
                            // Bands of metrics bounded to [0, 1] are drawn clipped to it (the t-interval
                            // over few seeds can pass 1); summary.csv keeps the interval as computed.
                            let bounded = metric != "log_loss"
                            points.append((Double(k), s.mean, bounded ? max(s.low, 0) : s.low, bounded ? min(s.high, 1) : s.high))
                        }
                    }
                }
                if !points.isEmpty {
                    curves[task, default: []].append(Series(name: m, points: points.map { (x: $0.0, y: $0.1, low: $0.2, high: $0.3) }))
                }
            }
        }
        try CSVTable(header: summaryHeader, rows: rows).write(to: dir.appendingPathComponent("summary.csv"))

        let gaps = subgroupGaps(results, recipe: recipe)
        if !gaps.isEmpty {
            try CSVTable(
                header: [
                    "method", "task", "shots", "attribute", "group", "mean_\(recipe.primary_metric)", "gap", "seeds", "seeds_flagged",
                    "p_value", "q_value", "flagged", "interpretable"
                ],
                rows: gaps.flatMap { g in
                    g.groupMeans.map {
                        [
                            g.method, g.task, String(g.shots), g.attribute, $0.key, f($0.value), f(g.gap),
                            String(g.seeds), String(g.flaggedSeeds), g.p.map(pf) ?? "", g.q.map(pf) ?? "",
                            g.flagged ? "yes" : "no", g.interpretable.map { $0 ? "yes" : "no" } ?? ""
                        ]
                    }
                }
            )
            .write(to: dir.appendingPathComponent("subgroups.csv"))
        }
        var plots: [URL] = []
        for task in data.tasks.map(\.name) {
            let u = dir.appendingPathComponent("curve_\(safe(task)).png")
            let png = try LearningCurvePlot.render(
                title: "\(task): \(metricTitle(recipe.primary_metric)) vs \(recipe.usesPatchTokens ? "annotated images" : "shots per class")",
                yLabel: metricTitle(recipe.primary_metric),
                series: curves[task] ?? [],
                note: "Mean over \(recipe.seeds) seeds; band = 95% t-interval over seeds"
                    + (recipe.methods.contains { Runner.untrained($0.name) } ? " (untrained methods: flat, band = bootstrap interval over queries)" : "")
                    + ". Recipe \(recipe.name), xrlab \(XRLabVersion.string)"
                    + skippedNote(results, task: task, recipe: recipe),
                ticks: (recipe.shots.isEmpty ? [1] : recipe.shots).map(Double.init))
            try PNGCodec.write(png, to: u)
            plots.append(u)
        }
        let report = dir.appendingPathComponent("report.md")
        var selection = try SelectionSimulation.reportSection(recipe, directory: dir)
        var extra: [URL] = selection.plot.map { [$0] } ?? []
        if recipe.isRetrieval {
            let written = try RetrievalOutputs.write(results, recipe: r, data: data, rows: rows, directory: dir)
            selection.text += written.text
            extra += written.sheets
        }
        if recipe.isSegmentation {
            let written = try SegmentationOutputs.write(results, recipe: r, data: data, rows: rows, directory: dir)
            selection.text += written.text
            extra += written.grids
        }
        if recipe.isDetection {
            let written = try DetectionOutputs.write(results, recipe: r, data: data, rows: rows, directory: dir)
            selection.text += written.text
            extra += written.grids
        }
        try AtomicFile.write(markdown(results, r: r, data: data, rows: rows, plots: plots, complete: complete, selection: selection.text), to: report)
        return Written(plots: plots + extra, report: report)
    }

    /// results.jsonl: one line per finished cell, in plan order, as its cell file.
    static func writeResults(_ results: [CellResult], directory dir: URL) throws {
        let enc = CellRunner.encoder()
        var lines = ""
        for res in results { lines += String(decoding: try enc.encode(res), as: UTF8.self) + "\n" }
        try AtomicFile.write(lines, to: dir.appendingPathComponent("results.jsonl"))
    }

    /// The columns of summary.csv.
    static let summaryHeader = [
        "method", "task", "shots", "metric", "n_seeds", "mean", "std", "ci95_low", "ci95_high",
        "bootstrap_low_mean", "bootstrap_high_mean", "skipped_seeds"
    ]

    /// summary.csv's rows of one method × task × shots setting, one per recipe metric, over the
    /// setting's cells (one per seed): mean, std and 95% t-interval over the seeds that finished,
    /// the mean of their bootstrap intervals (the primary metric's, or every metric's when the cells
    /// keep them) and the count of skipped seeds.
    static func summaryRows(
        _ cells: [CellResult], method: String, task: String, shots: String,
        recipe: Recipe
    ) -> [(metric: String, seeds: SeedSummary, row: [String])] {
        let ok = cells.filter { $0.status == "ok" }
        return recipe.metrics.map { metric in
            let s = SeedSummary(ok.compactMap { $0.metrics[metric] })
            var bootLow = "", bootHigh = ""
            // The primary metric's intervals; every metric's where cells keep them (detection).
            let cis = metric == recipe.primary_metric ? ok.compactMap(\.primary_ci) : ok.compactMap { $0.metric_ci?[metric] }
            if let ci = meanInterval(cis) {
                bootLow = f(ci.low)
                bootHigh = f(ci.high)
            }
            return (
                metric, s,
                [
                    method, task, shots, metric, String(s.n), f(s.mean), f(s.std), f(s.low), f(s.high),
                    bootLow, bootHigh, String(cells.count - ok.count)
                ]
            )
        }
    }

    /// The mean over seeds of the cells' bootstrap intervals (nil without any).
    static func meanInterval(_ cis: [Interval]) -> (low: Double, high: Double)? {
        guard !cis.isEmpty else { return nil }
        return (cis.map(\.low).reduce(0, +) / Double(cis.count), cis.map(\.high).reduce(0, +) / Double(cis.count))
    }

    /// Subgroup results of one method × task × shots × attribute, over its seeds.
    struct SubgroupGap {
        var method: String, task: String, shots: Int, attribute: String
        /// Group → mean of the primary metric over the seeds where it was computed (sorted by group).
        var groupMeans: [(key: String, value: Double)]
        var gap: Double
        var seeds: Int
        /// Seeds whose gap interval excludes 0 (each at the 5% level, uncorrected).
        var flaggedSeeds: Int
        /// The setting's p-value: twice the lower median of its seeds' p-values (valid under the
        /// seeds' dependence, `MultipleTesting.twiceMedian`).
        var p: Double?
        /// Benjamini–Hochberg q-value over every setting of the study with a p-value.
        var q: Double? = nil
        /// q ≤ the recipe's `subgroups.fdr`.
        var flagged = false
        /// False when the method's AUROC interval reaches 0.5 (not better than chance, so a gap
        /// says little); nil without AUROC.
        var interpretable: Bool?
    }

    /// Every setting's gap, with q-values over the whole study and flags at q ≤ `subgroups.fdr`.
    static func subgroupGaps(_ results: [CellResult], recipe: Recipe) -> [SubgroupGap] {
        var out: [SubgroupGap] = []
        for task in StudyLoader.taskNames(recipe) {
            for m in methodLabels(recipe) {
                for k in Runner.shotCounts(recipe, method: m) {
                    let cells = results.filter { $0.status == "ok" && $0.cell.task == task && $0.cell.method == m && $0.cell.shots == k }
                    let attributes = Set(cells.flatMap { $0.subgroups.map(\.attribute) }).sorted()
                    let chance = aurocAboveChance(cells, recipe: recipe)
                    for a in attributes {
                        let rs = cells.compactMap { $0.subgroups.first { $0.attribute == a } }
                        var sums: [String: (Double, Int)] = [:]
                        for r in rs { for (g, v) in r.values where v.isFinite { sums[g, default: (0, 0)].0 += v; sums[g, default: (0, 0)].1 += 1 } }
                        let means = sums.map { (key: $0.key, value: $0.value.0 / Double($0.value.1)) }.sorted { $0.key < $1.key }
                        let gap = (means.map(\.value).max() ?? .nan) - (means.map(\.value).min() ?? .nan)
                        out.append(
                            SubgroupGap(
                                method: m, task: task, shots: k, attribute: a, groupMeans: means, gap: gap,
                                seeds: rs.count, flaggedSeeds: rs.filter(\.flagged).count,
                                p: MultipleTesting.twiceMedian(rs.compactMap(\.pValue)), interpretable: chance))
                    }
                }
            }
        }
        let q = MultipleTesting.benjaminiHochberg(out.map { $0.p ?? .nan })
        for i in out.indices where q[i].isFinite {
            out[i].q = q[i]
            out[i].flagged = q[i] <= (recipe.subgroups?.fdr ?? 0.05)
        }
        return out
    }

    /// Whether a setting's AUROC interval lies above 0.5: the mean over seeds of the cells'
    /// bootstrap 95% interval when AUROC is the primary metric and was bootstrapped, else the
    /// 95% t-interval over seeds. Nil without AUROC values.
    static func aurocAboveChance(_ cells: [CellResult], recipe: Recipe) -> Bool? {
        if recipe.primary_metric == "auroc", let ci = meanInterval(cells.compactMap(\.primary_ci)) { return ci.low > 0.5 }
        let s = SeedSummary(cells.compactMap { $0.metrics["auroc"] })
        return s.n > 0 ? s.low > 0.5 : nil
    }

    /// "; no points at k=16 (cells skipped, see report)" when whole shot counts have no finished cell.
    static func skippedNote(_ results: [CellResult], task: String, recipe: Recipe) -> String {
        let empty = recipe.shots.filter { k in !results.contains { $0.cell.task == task && $0.cell.shots == k && $0.status == "ok" } }
        return empty.isEmpty ? "" : "; no points at k=\(empty.map(String.init).joined(separator: ", ")) (skipped or not run, see report)"
    }

    /// Display name of a metric for plots.
    /// report.md's table of every metric per task, method and shot count, from summary rows
    /// (method, task, shots, metric, …, mean, std, …, low, high): "mean ± std", and the primary
    /// metric's mean bootstrap interval. Methods that train nothing (`untrained`) show no spread and
    /// "–" for shots. Rows with no value are left out.
    static func metricTable(
        recipe: Recipe, tasks: [String], summary: [[String]], shots: (String) -> [Int], untrained: (String) -> Bool = { _ in false }
    ) -> String {
        let metrics = recipe.metrics
        var s = "| task | method | shots | " + metrics.map(metricTitle).joined(separator: " | ") + " |\n"
        s += "|---|---|---|" + String(repeating: "---|", count: metrics.count) + "\n"
        var byKey: [String: [String]] = [:]
        for row in summary { byKey[row[0...3].joined(separator: "\u{1}")] = row }
        for task in tasks {
            for m in methodLabels(recipe) {
                for k in shots(m) {
                    let cells = metrics.map { metric -> String in
                        guard let row = byKey[[m, task, String(k), metric].joined(separator: "\u{1}")], !row[5].isEmpty else { return "" }
                        let spread = untrained(m) ? "" : " ± \(row[6])"
                        let interval = !row[9].isEmpty ? " [\(row[9]), \(row[10])]" : ""
                        return row[5] + spread + interval
                    }
                    if cells.allSatisfy(\.isEmpty) { continue }
                    s += "| \(task) | \(m) | \(untrained(m) ? "–" : String(k)) | " + cells.joined(separator: " | ") + " |\n"
                }
            }
        }
        return s
    }

    static func metricTitle(_ m: String) -> String {
        [
            "auroc": "AUROC", "auprc": "AUPRC", "accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy",
            "f1_macro": "Macro F1", "ece": "ECE", "log_loss": "Log loss", "map_at_r": "mAP@R", "mrr": "MRR", "dice": "Dice", "iou": "IoU", "hd95": "HD95 (px)",
            "dice_pooled": "Pooled Dice", "iou_pooled": "Pooled IoU", "ap_10": "AP@0.1", "ap_30": "AP@0.3", "ap_50": "AP@0.5",
            "froc_0.5": "Sens@0.5 FP/img", "froc_1": "Sens@1 FP/img", "froc_2": "Sens@2 FP/img", "froc_4": "Sens@4 FP/img",
            "pointing_game": "Pointing game"
        ][m] ?? (m.hasPrefix("precision_at_") ? "P@" + m.dropFirst(13) : m.hasPrefix("recall_at_") ? "R@" + m.dropFirst(10) : m)
    }

    static func f(_ x: Double) -> String { x.isFinite ? String(format: "%.4f", x) : "" }
    /// p- and q-values keep their small magnitudes: 4 significant digits.
    static func pf(_ x: Double) -> String { x.isFinite ? String(format: "%.4g", x) : "" }

    static func markdown(
        _ results: [CellResult], r: LoadedRecipe, data: StudyData, rows: [[String]], plots: [URL], complete: Bool,
        selection: String = ""
    ) -> String {
        let recipe = r.recipe
        var s = "# \(recipe.name)\n\n"
        if !complete { s += "> **Incomplete run**: \(results.count) cells finished. Run the recipe again to finish the rest.\n\n" }
        let nTest = data.isTest.filter { $0 == true }.count, nPool = data.isTest.filter { $0 == false }.count
        s += "- Recipe: `\(r.file.path)`; xrlab \(XRLabVersion.string); fingerprint `\(r.fingerprint.prefix(12))`\n"
        s += "- Features: \(data.featureSource); \(data.dim) dimensions; representation \(recipe.representation.joined(separator: " + "))\n"
        s += "- Rows: \(data.ids.count) (training pool \(nPool), test \(nTest))\(data.patients != nil ? ", grouped by patient" : "")\n"
        s += "- Methods: \(methodSettings(recipe).map { "\($0.label) — \($0.description)" }.joined(separator: "; "))\n"
        s += "- Shots per class: \(recipe.shots.map(String.init).joined(separator: ", ")); seeds: \(recipe.seeds); "
        s += "bootstrap resamples: \(recipe.bootstrap)\n\n"
        s += "## Learning curves (\(recipe.primary_metric))\n\n"
        for p in plots { s += "![\(p.lastPathComponent)](\(p.lastPathComponent))\n\n" }
        s += "## Best method per task and shot count (\(recipe.primary_metric), mean ± std over seeds [95% interval])\n\n"
        s += "| task | shots | best method | \(recipe.primary_metric) |\n|---|---|---|---|\n"
        let primary = rows.filter { $0[3] == recipe.primary_metric && !$0[5].isEmpty }
        let lowerIsBetter = ["ece", "log_loss"].contains(recipe.primary_metric)
        for task in data.tasks.map(\.name) {
            for k in recipe.shots {
                // An untrained method (shots 0) competes at every shot count.
                let cands = primary.filter { $0[1] == task && ($0[2] == String(k) || Runner.untrained($0[0])) }
                guard let best = cands.max(by: { (Double($0[5]) ?? 0) * (lowerIsBetter ? -1 : 1) < (Double($1[5]) ?? 0) * (lowerIsBetter ? -1 : 1) }) else {
                    continue
                }
                // One cell has no spread over seeds: its bootstrap interval instead.
                let value =
                    Runner.untrained(best[0])
                    ? "\(best[5]) [\(best[9]), \(best[10])] (one cell, bootstrap)" : "\(best[5]) ± \(best[6]) [\(best[7]), \(best[8])]"
                s += "| \(task) | \(k) | \(best[0]) | \(value) |\n"
            }
        }
        if let targets = recipe.budget?.targets, !targets.isEmpty { s += Budget.reportSection(results, targets: targets) }
        s += selection
        let skipped = results.filter { $0.status != "ok" }
        if !skipped.isEmpty {
            s += "\n## Skipped cells (\(skipped.count))\n\n"
            var reasons: [String: Int] = [:]
            for c in skipped { reasons["\(c.cell.task), \(c.cell.shots) shots: \(c.reason ?? "")", default: 0] += 1 }
            for (reason, n) in reasons.sorted(by: { $0.key < $1.key }) { s += "- \(reason) (\(n) cells)\n" }
        }
        if !data.groups.isEmpty {
            let gaps = subgroupGaps(results, recipe: recipe)
            let flagged = gaps.filter(\.flagged)
            let tested = gaps.filter { $0.q != nil }.count
            s += "\n## Subgroups\n\n\(recipe.primary_metric) per group of the test set, averaged over seeds; gap = best − worst group. "
            s += "Each cell's gap gets a two-sided p-value from its bootstrap over test patients (normal approximation); a setting's "
            s += "p-value is twice the lower median over its seeds (valid however the seeds depend on each other), and "
            s += "Benjamini–Hochberg q-values are taken over all \(tested) settings of the study. A setting is **flagged** at "
            s += "q ≤ \(recipe.subgroups?.fdr ?? 0.05) (`subgroups.fdr`); a gap of a method whose AUROC interval reaches 0.5 is marked "
            s += "*not interpretable* (the method is not better than chance there). "
            s += "\(flagged.count) of \(gaps.count) method × task × shots × attribute settings flagged"
            s += flagged.contains { $0.interpretable == false } ? " (\(flagged.filter { $0.interpretable == false }.count) of them not interpretable)" : ""
            s += "; all in `subgroups.csv`.\n\n"
            s +=
                "| method | task | shots | attribute | groups (mean \(recipe.primary_metric)) | gap | q | seeds with interval excluding 0 |\n|---|---|---|---|---|---|---|---|\n"
            // Flagged settings first, then the largest gaps, at most 40 rows.
            let shown = (flagged.sorted { ($0.q ?? 1) < ($1.q ?? 1) } + gaps.filter { !$0.flagged }.sorted { $0.gap > $1.gap }).prefix(40)
            for g in shown {
                let groups = g.groupMeans.map { "\($0.key) \(f($0.value))" }.joined(separator: ", ")
                let mark = (g.flagged ? " **flagged**" : "") + (g.interpretable == false ? " *not interpretable*" : "")
                s +=
                    "| \(g.method) | \(g.task) | \(g.shots) | \(g.attribute) | \(groups) | \(f(g.gap))\(mark) | \(g.q.map(pf) ?? "") | \(g.flaggedSeeds)/\(g.seeds) |\n"
            }
        }
        s += "\n## Files\n\n- `results.jsonl`: one line per cell (metrics, bootstrap interval, sampled training ids, subgroups)\n"
        s += "- `summary.csv`: every metric aggregated over seeds\n"
        if !data.groups.isEmpty { s += "- `subgroups.csv`: subgroup means, gaps, p- and q-values, flags per method, task, shots and attribute\n" }
        s += "- `cells/`: one JSON file per cell (a rerun computes only missing cells)\n"
        s += "- `resolved.yaml`, `run.json`: the recipe as run (defaults filled in), xrlab version, command line, fingerprint\n"
        return s
    }
}
