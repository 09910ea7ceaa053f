// The label-budget planner: learning curves fitted to a finished run, extrapolated to the shots
// per class a target needs (`xrlab budget`, and the "labels needed" table of report.md).
import Foundation
import XRTensor
import XRData
import XRProbe

/// A metric and the value to reach, written `auroc=0.85`.
public struct BudgetTarget: Sendable, Equatable, Codable {
    public var metric: String
    public var value: Double

    public init(metric: String, value: Double) { self.metric = metric; self.value = value }

    /// Metrics where lower is better: their target is a value to get below.
    public static let lowerIsBetter: Set<String> = ["ece", "log_loss"]
    public var higherIsBetter: Bool { !Self.lowerIsBetter.contains(metric) }
    /// The best value the metric can take, which bounds a fitted ceiling: 1 for the metrics
    /// where higher is better, 0 for ECE and log loss.
    public var bound: Double { higherIsBetter ? 1 : 0 }

    /// Parse `metric=value`; an unknown metric gets a "did you mean", a value outside [0, 1]
    /// (log loss: below 0) is refused. `field` names the flag or key in errors.
    public init(parsing s: String, field: String, file: String? = nil) throws {
        let parts = s.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count == 2, !parts[0].isEmpty else {
            throw XRError("expected metric=value (e.g. auroc=0.85), found '\(s)'", file: file, field: field)
        }
        guard Recipe.knownMetrics.contains(parts[0]) || Recipe.isRetrievalMetric(parts[0]) else {
            throw XRError(
                "unknown metric '\(parts[0])'" + (closest(parts[0], in: Recipe.knownMetrics).map { " — did you mean '\($0)'?" } ?? ""),
                file: file, field: field,
                hint: "known metrics: " + Recipe.knownMetrics.joined(separator: ", ") + "; retrieval: map_at_r, mrr, precision_at_<k>, recall_at_<k>")
        }
        guard let v = Double(parts[1]), v.isFinite else {
            throw XRError("target '\(parts[1])' is not a number", file: file, field: field)
        }
        if parts[0] == "log_loss" ? v < 0 : !(0...1).contains(v) {
            throw XRError(
                "target \(parts[1]) for \(parts[0]) is outside [0, 1]" + (parts[0] == "log_loss" ? " (log loss: below 0)" : ""),
                file: file, field: field, hint: "give the metric value to reach, e.g. auroc=0.85")
        }
        self.init(metric: parts[0], value: v)
    }

    public var description: String { "\(metric)=\(Outputs.f(value))" }
}

/// How `Budget.plan` fits and extrapolates.
public struct BudgetOptions: Sendable {
    public var target: BudgetTarget
    /// Only this method setting / task (nil: all in the run).
    public var method: String? = nil
    public var task: String? = nil
    /// Shots per class beyond which a need is reported as "more than" instead of a number.
    public var maxShots = 1024
    /// Bootstrap resamples of the seeds, and the interval's coverage.
    public var resamples = 1000
    public var level = 0.8
    public var seed: UInt64 = 0
    public init(target: BudgetTarget) { self.target = target }
}

/// One method × task: the fitted curve and the labels its target needs.
public struct BudgetEntry: Sendable, Codable, Equatable {
    public struct Range: Sendable, Codable, Equatable {
        public var estimate: Double
        public var low: Double?
        public var high: Double?
    }
    public struct Measured: Sendable, Codable, Equatable {
        public var shots: Int
        public var mean: Double
        public var ci95_low: Double
        public var ci95_high: Double
        public var n_seeds: Int
    }
    public var task: String
    public var method: String
    /// `reachable`, `beyond_max_shots`, `ceiling_below_target` or `not_reached` (a curve that does
    /// not move toward the target).
    public var status: String
    /// `power_law` or `log_linear`, why, and its parameters (a, b, c; c absent for log-linear).
    public var model: String
    public var model_reason: String
    public var parameters: [String: Double]
    public var held_out_shots: [Int]
    public var held_out_mse: [String: Double]?
    /// Shots per class needed (rounded up; interval bounds nil when beyond `max_shots` or never
    /// reached in that share of resamples).
    public var labels_per_class: Range?
    /// Classes of the task (training rows ÷ shots) and the total labels: per class × classes.
    public var classes: Int
    public var labels_total: Int?
    /// The power law's ceiling (floor for a falling metric) with its interval.
    public var ceiling: Range?
    /// Share of bootstrap resamples whose curve reaches the target within `max_shots`.
    public var reached_fraction: Double?
    /// The curve's extrapolation error per doubling of shots beyond the largest measured count
    /// (from backtests inside the measured range); nil with fewer than 4 shot counts. The band
    /// and the interval of `labels_per_class` beyond the measured range include it.
    public var extrapolation_error_per_doubling: Double?
    public var resamples: Int
    public var measured: [Measured]
}

/// The result of planning: entries, and where budget.json and the plots went.
public struct BudgetReport: Sendable {
    public var entries: [BudgetEntry]
    public var json: URL?
    public var plots: [URL]
}

public enum Budget {
    public static let formatVersion = 1

    /// Finished cells of a run directory's `results.jsonl`.
    public static func results(in dir: URL) throws -> [CellResult] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir), isDir.boolValue else {
            throw XRError("no such run directory", file: dir.path, hint: "give the `output` folder of a recipe run with `xrlab run`")
        }
        let u = dir.appendingPathComponent("results.jsonl")
        guard let text = try? String(contentsOf: u, encoding: .utf8) else {
            throw XRError(
                "the run directory has no results.jsonl", file: dir.path, field: "results.jsonl",
                hint: "run the recipe first (`xrlab run RECIPE`); it writes results.jsonl when its cells finish")
        }
        var out: [CellResult] = []
        for (i, line) in text.split(separator: "\n").enumerated() where !line.isEmpty {
            do { out.append(try JSONDecoder().decode(CellResult.self, from: Data(line.utf8))) } catch {
                throw XRError("unreadable result line", file: u.path, field: "line \(i + 1)", hint: "run the recipe again to rewrite results.jsonl")
            }
        }
        return out
    }

    /// Fit every method × task of `results` (filtered by the options) and work out the labels
    /// needed for the target. Errors name a metric, method or task the run lacks.
    public static func entries(_ results: [CellResult], options o: BudgetOptions, source: String) throws -> [BudgetEntry] {
        try planned(results, options: o, source: source).map(\.entry)
    }

    /// An entry with its fitted curve and bootstrap curves (for plots).
    struct Planned { var entry: BudgetEntry; var model: CurveModel?; var boot: [BandCurve] }

    static func planned(_ results: [CellResult], options o: BudgetOptions, source: String) throws -> [Planned] {
        // An untrained method (retrieval's cosine: one cell, shots 0) has no curve over labels.
        let ok = results.filter { $0.status == "ok" && !Runner.untrained($0.cell.method) }
        let metric = o.target.metric
        let withMetric = ok.filter { $0.metrics[metric] != nil }
        guard !withMetric.isEmpty else {
            let have = Set(ok.flatMap(\.metrics.keys)).sorted()
            throw XRError(
                ok.isEmpty ? "the run has no finished cells" : "the run did not compute \(metric)", file: source, field: "--target",
                hint: ok.isEmpty ? "run the recipe to completion first" : "metrics in this run: \(have.joined(separator: ", "))")
        }
        func check(_ wanted: String?, _ have: [String], _ what: String) throws {
            guard let wanted, !have.contains(wanted) else { return }
            throw XRError(
                "\(what) '\(wanted)' is not in this run" + (closest(wanted, in: have).map { " — did you mean '\($0)'?" } ?? ""),
                file: source, field: "--\(what)", hint: "\(what)s in this run: \(have.joined(separator: ", "))")
        }
        let methods = ordered(withMetric.map(\.cell.method)), tasks = ordered(withMetric.map(\.cell.task))
        try check(o.method, methods, "method")
        try check(o.task, tasks, "task")
        var out: [Planned] = []
        for task in tasks where o.task == nil || o.task == task {
            for method in methods where o.method == nil || o.method == method {
                let cells = withMetric.filter { $0.cell.task == task && $0.cell.method == method }
                guard !cells.isEmpty else { continue }
                out.append(entry(cells, task: task, method: method, options: o))
            }
        }
        return out
    }

    /// Distinct values in first-seen order.
    static func ordered(_ xs: [String]) -> [String] {
        var seen = Set<String>()
        return xs.filter { seen.insert($0).inserted }
    }

    /// Percentile of values where +∞ stands for "never reached / beyond the cap" (nil when the
    /// percentile falls there).
    static func percentile(_ sorted: [Double], _ q: Double) -> Double? {
        guard !sorted.isEmpty else { return nil }
        let pos = q / 100 * Double(sorted.count - 1)
        let lo = Int(pos.rounded(.down)), hi = min(lo + 1, sorted.count - 1), f = pos - Double(lo)
        if !sorted[lo].isFinite || (f > 0 && !sorted[hi].isFinite) { return nil }
        return f > 0 ? sorted[lo] + (sorted[hi] - sorted[lo]) * f : sorted[lo]
    }

    static func entry(_ cells: [CellResult], task: String, method: String, options o: BudgetOptions) -> Planned {
        let metric = o.target.metric, hib = o.target.higherIsBetter
        let pts = cells.compactMap { c in c.metrics[metric].map { CurvePoint(shots: Double(c.cell.shots), seed: c.cell.seed, value: $0) } }
        let shots = Array(Set(cells.map(\.cell.shots))).sorted()
        let measured = shots.map { k -> BudgetEntry.Measured in
            let s = SeedSummary(pts.filter { $0.shots == Double(k) }.map(\.value))
            return BudgetEntry.Measured(shots: k, mean: s.mean, ci95_low: s.low, ci95_high: s.high, n_seeds: s.n)
        }
        let classes = cells.first { $0.cell.shots > 0 && $0.n_train > 0 }.map { $0.n_train / $0.cell.shots } ?? 0
        var e = BudgetEntry(
            task: task, method: method, status: "not_reached", model: "", model_reason: "", parameters: [:],
            held_out_shots: [], held_out_mse: nil, labels_per_class: nil, classes: classes, labels_total: nil,
            ceiling: nil, reached_fraction: nil, extrapolation_error_per_doubling: nil, resamples: 0, measured: measured)
        guard let choice = LearningCurveFit.choose(pts, higherIsBetter: hib, bound: o.target.bound) else {
            e.model_reason = "fewer than 2 shot counts with results: no curve can be fitted"
            return Planned(entry: e, model: nil, boot: [])
        }
        let model = choice.fit.model
        e.model = model.name
        e.model_reason = choice.reason
        switch model {
        case let .powerLaw(a, b, c): e.parameters = ["a": a, "b": b, "c": c]
        case let .logLinear(a, b): e.parameters = ["a": a, "b": b]
        }
        e.held_out_shots = choice.heldOut.map { Int($0) }
        e.held_out_mse = choice.heldOutError.map { ["power_law": $0.powerLaw, "log_linear": $0.logLinear] }
        let stream = SHA256.hash(Array("\(task)\u{0}\(method)".utf8)).prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let refits = LearningCurveFit.bootstrap(
            pts, kind: model.name, higherIsBetter: hib, bound: o.target.bound, resamples: o.resamples, seed: o.seed, stream: [stream])
        // The band beyond the largest measured count also carries the curve's own extrapolation
        // error (backtests inside the measured range), not only how the fit moves with the seeds.
        let perDoubling = LearningCurveFit.extrapolationError(pts, kind: model.name, higherIsBetter: hib, bound: o.target.bound)
        e.extrapolation_error_per_doubling = perDoubling
        let boot = LearningCurveFit.band(refits, errorPerDoubling: perDoubling, lastFitted: Double(shots.last ?? 1), seed: o.seed, stream: [stream])
        e.resamples = boot.count
        let qLow = 50 * (1 - o.level), qHigh = 50 * (1 + o.level)
        let cap = Double(o.maxShots)
        func need(_ m: BandCurve) -> Double {
            guard let n = m.shots(reaching: o.target.value, higherIsBetter: hib, cap: cap) else { return .infinity }
            return max(1, n.rounded(.up))
        }
        let needs = boot.map(need).sorted()
        if !boot.isEmpty { e.reached_fraction = Double(needs.filter(\.isFinite).count) / Double(boot.count) }
        if let a = model.ceiling {
            let as_ = refits.compactMap(\.ceiling).sorted()
            e.ceiling = BudgetEntry.Range(estimate: a, low: percentile(as_, qLow), high: percentile(as_, qHigh))
        }
        if let n = model.shots(reaching: o.target.value, higherIsBetter: hib) {
            let rounded = max(1, n.rounded(.up))
            if rounded <= cap {
                e.status = "reachable"
                e.labels_per_class = BudgetEntry.Range(
                    estimate: rounded, low: boot.isEmpty ? nil : percentile(needs, qLow),
                    high: boot.isEmpty ? nil : percentile(needs, qHigh))
                if classes > 0 { e.labels_total = Int(rounded) * classes }
            } else {
                e.status = "beyond_max_shots"
            }
        } else if let a = model.ceiling, hib ? a <= o.target.value : a >= o.target.value {
            e.status = "ceiling_below_target"
        }
        return Planned(entry: e, model: model, boot: boot)
    }

    /// One line per entry, as `xrlab budget` prints it.
    public static func describe(_ e: BudgetEntry, target: BudgetTarget, maxShots: Int, level: Double) -> String {
        func n(_ x: Double?) -> String { x.map { String(Int(min($0, Double(maxShots)))) } ?? ">\(maxShots)" }
        let pct = "\(Int((level * 100).rounded()))%"
        let ceiling = e.ceiling.map { c in "ceiling \(Outputs.f(c.estimate)) [\(c.low.map(Outputs.f) ?? "?"), \(c.high.map(Outputs.f) ?? "?")]" }
        let model = e.model.isEmpty ? "no fit" : e.model.replacingOccurrences(of: "_", with: " ")
        var s = "\(e.task)  \(e.method)  (\(model)): "
        switch e.status {
        case "reachable":
            let l = e.labels_per_class
            s +=
                "\(n(l?.estimate)) labels per class "
                + (e.resamples == 0 ? "(no interval: fewer than 2 seeds or no resamples)" : "[\(pct): \(n(l?.low)), \(n(l?.high))]")
            if let t = e.labels_total { s += ", \(t) in total" }
        case "beyond_max_shots":
            s += "more than \(maxShots) labels per class"
            if let f = e.reached_fraction { s += " (reached within \(maxShots) in \(Int((f * 100).rounded()))% of resamples)" }
        case "ceiling_below_target":
            s +=
                "the fitted \(target.higherIsBetter ? "ceiling" : "floor") \(ceiling.map { String($0.dropFirst(8)) } ?? "") does not reach \(target.description)"
            if let f = e.reached_fraction { s += " (reached within \(maxShots) shots in \(Int((f * 100).rounded()))% of resamples)" }
            return s
        default:
            s += e.model.isEmpty ? e.model_reason : "the fitted curve does not move toward \(target.description)"
            return s
        }
        if let ceiling { s += "; \(ceiling)" }
        return s
    }

    /// Plan from a run directory: entries, then `budget.json` (atomically) and one plot per task
    /// (`budget_<task>.png`) written into `dir` unless `write` is false.
    public static func plan(_ dir: URL, options o: BudgetOptions, write: Bool = true) throws -> BudgetReport {
        let ps = try planned(try results(in: dir), options: o, source: dir.path)
        let es = ps.map(\.entry)
        guard write else { return BudgetReport(entries: es, json: nil, plots: []) }
        let json = dir.appendingPathComponent("budget.json")
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .prettyPrinted]
        struct File: Encodable {
            var format = "xrlab-budget", format_version = Budget.formatVersion, xrlab_version = XRLabVersion.string
            var target: BudgetTarget, level: Double, resamples: Int, seed: UInt64, max_shots: Int
            var entries: [BudgetEntry]
        }
        try AtomicFile.write(
            try enc.encode(
                File(
                    target: o.target, level: o.level, resamples: o.resamples, seed: o.seed,
                    max_shots: o.maxShots, entries: es)), to: json)
        var plots: [URL] = []
        for task in ordered(es.map(\.task)) {
            let u = dir.appendingPathComponent("budget_\(safe(task)).png")
            try PNGCodec.write(try plot(ps.filter { $0.entry.task == task }, task: task, options: o), to: u)
            plots.append(u)
        }
        return BudgetReport(entries: es, json: json, plots: plots)
    }

    /// Measured means with their 95% intervals over seeds, each fitted curve with its bootstrap
    /// band (dashed beyond the largest measured shot count), and the target as a dashed line.
    static func plot(_ ps: [Planned], task: String, options o: BudgetOptions) throws -> Data {
        let measuredMax = Double(ps.flatMap { $0.entry.measured.map(\.shots) }.max() ?? 1)
        let measuredMin = Double(ps.flatMap { $0.entry.measured.map(\.shots) }.min() ?? 1)
        // Extend the x axis to the largest estimate that is within the cap (at least 4× the
        // measured range), rounded up to a power of two.
        let needs = ps.compactMap { $0.entry.status == "reachable" ? $0.entry.labels_per_class?.estimate : nil }
        var xMax = max(measuredMax * 4, (needs.max() ?? 0) * 1.25)
        xMax = min(pow(2, log2(xMax).rounded(.up)), max(Double(o.maxShots), measuredMax))
        let bounded = o.target.metric != "log_loss"
        func clip(_ v: Double) -> Double { bounded ? min(max(v, 0), 1) : v }
        let qLow = 50 * (1 - o.level), qHigh = 50 * (1 + o.level)
        var series: [Series] = []
        for (i, p) in ps.enumerated() {
            let e = p.entry
            series.append(
                Series(
                    name: e.method, points: e.measured.map { (x: Double($0.shots), y: $0.mean, low: clip($0.ci95_low), high: clip($0.ci95_high)) },
                    style: .points, color: i))
            guard let m = p.model else { continue }
            let steps = 80
            let xs = ((0...steps).map { measuredMin * pow(xMax / measuredMin, Double($0) / Double(steps)) } + [measuredMax]).sorted()
            let pts = xs.map { x -> (x: Double, y: Double, low: Double, high: Double) in
                let vs = p.boot.map { $0.value(at: x) }.filter(\.isFinite).sorted()
                let lo = vs.isEmpty ? Double.nan : Bootstrap.percentile(vs, qLow), hi = vs.isEmpty ? Double.nan : Bootstrap.percentile(vs, qHigh)
                return (x: x, y: clip(m.value(at: x)), low: clip(lo), high: clip(hi))
            }
            series.append(Series(name: "", points: pts, style: .fit(solidUntil: measuredMax), color: i))
        }
        var ticks: [Double] = []
        var t = 1.0
        while t <= xMax { if t >= measuredMin { ticks.append(t) }; t *= 2 }
        let title =
            "\(task): labels per class for \(Outputs.metricTitle(o.target.metric)) \(o.target.higherIsBetter ? ">=" : "<=") \(Outputs.f(o.target.value))"
        let note =
            "Points: mean over seeds, 95% t-interval. Lines: fitted curve, band = \(Int((o.level * 100).rounded()))% bootstrap over seeds, widened beyond the measured shots by the curve's own extrapolation error; "
            + "dashed beyond \(Int(measuredMax)) shots = extrapolation. xrlab \(XRLabVersion.string)"
        return try LearningCurvePlot.render(
            title: title, yLabel: Outputs.metricTitle(o.target.metric), series: series, note: note, ticks: ticks,
            reference: [(y: o.target.value, label: "target \(o.target.description)")])
    }

    /// The "Labels needed" section of report.md for a recipe's `budget.targets`: one row per
    /// target × task × method, with the default options of `xrlab budget`.
    static func reportSection(_ results: [CellResult], targets: [String]) -> String {
        let level = BudgetOptions(target: BudgetTarget(metric: "auroc", value: 0.5)).level
        let pct = "\(Int((level * 100).rounded()))%"
        var s = "\n## Labels needed\n\nShots per class to reach each target of `budget.targets`, from learning curves fitted to the "
        s += "per-seed values (inverse power law a − b·n^(−c), log-linear fallback chosen on held-out shot counts; \(pct) intervals by "
        s += "bootstrap over seeds, widened beyond the measured range by the curve's extrapolation error in backtests on its own "
        s += "smaller shot counts). Beyond the largest shot count measured these are extrapolations. `xrlab budget` draws them "
        s += "and writes `budget.json`.\n\n"
        s += "| target | task | method | model | labels per class [\(pct)] | labels in total | ceiling [\(pct)] |\n|---|---|---|---|---|---|---|\n"
        for t in targets {
            do {
                let o = BudgetOptions(target: try BudgetTarget(parsing: t, field: "budget.targets"))
                for e in try entries(results, options: o, source: "results") {
                    func n(_ x: Double?) -> String { x.map { String(Int(min($0, Double(o.maxShots)))) } ?? ">\(o.maxShots)" }
                    let need: String
                    switch e.status {
                    case "reachable":
                        need =
                            "\(n(e.labels_per_class?.estimate))"
                            + (e.resamples == 0 ? " (no interval)" : " [\(n(e.labels_per_class?.low)), \(n(e.labels_per_class?.high))]")
                    case "beyond_max_shots": need = "more than \(o.maxShots)"
                    case "ceiling_below_target": need = "not reached: ceiling below target"
                    default: need = "not reached"
                    }
                    let ceiling =
                        e.ceiling.map { "\(Outputs.f($0.estimate)) [\($0.low.map(Outputs.f) ?? "?"), \($0.high.map(Outputs.f) ?? "?")]" } ?? "none (log-linear)"
                    s += "| \(o.target.description) | \(e.task) | \(e.method) | \(e.model.replacingOccurrences(of: "_", with: " ")) | \(need) | "
                    s += "\(e.labels_total.map(String.init) ?? "") | \(e.model.isEmpty ? "" : ceiling) |\n"
                }
            } catch {
                s += "| \(t) | | | | \((error as? XRError)?.message ?? "\(error)") | | |\n"
            }
        }
        return s
    }
}
