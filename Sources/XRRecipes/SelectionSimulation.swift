// Active labelling simulated on a labelled study: labels are revealed only for the rows a
// strategy chooses, round by round, and the probe trained on them is scored on the test rows.
import Foundation
import XRTensor
import XRProbe
import XRData

/// What to simulate.
public struct SimulationOptions: Sendable {
    public var strategies: [SelectionStrategy]
    /// Labelled rows at the start: a seeded random draw (one row per patient) shared by every
    /// strategy of a seed, so strategies are compared on the same start.
    public var start: Int
    /// Labelled rows after each round (increasing, each above `start`).
    public var rounds: [Int]
    public var seeds: Int
    /// Only this task (probe, selection and score); nil: every task jointly, scored by the mean AUROC.
    public var task: String? = nil
    public init(strategies: [SelectionStrategy], start: Int, rounds: [Int], seeds: Int) {
        self.strategies = strategies; self.start = start; self.rounds = rounds; self.seeds = seeds
    }
}

/// One point of a trajectory: labels used and the test AUROC (mean over tasks) of the probe on them.
public struct SimulationPoint: Sendable, Codable, Equatable {
    public var labels: Int
    public var auroc: Double?
    /// Rounds where the strategy needed a probe that could not be fitted yet (a class without
    /// labels) take a random draw instead; this says so.
    public var fallback: Bool
}

/// One strategy × seed: a cell of the simulation.
public struct SimulationTrajectory: Sendable, Codable, Equatable {
    /// Recipe, features and options it was computed for (SHA-256): a cell of other settings is recomputed.
    public var fingerprint: String = ""
    public var strategy: String
    public var seed: Int
    public var points: [SimulationPoint]
}

public enum SelectionSimulation {
    /// Check the options against the study; errors name the flag.
    public static func check(_ o: SimulationOptions, poolRows: Int) throws {
        guard !o.strategies.isEmpty else { throw XRError("name at least one strategy", field: "--strategies") }
        guard o.seeds >= 1 && o.seeds <= 1000 else { throw XRError("--seeds must be in 1…1000, found \(o.seeds)", field: "--seeds") }
        guard o.start >= 2 else { throw XRError("--start must be at least 2 labelled rows, found \(o.start)", field: "--start") }
        guard !o.rounds.isEmpty, o.rounds.count <= 100 else { throw XRError("--rounds needs 1…100 label counts, found \(o.rounds.count)", field: "--rounds") }
        var last = o.start
        for r in o.rounds {
            guard r > last else { throw XRError("--rounds must increase from --start (\(o.start)): \(r) follows \(last)", field: "--rounds") }
            last = r
        }
        guard last <= poolRows else {
            throw XRError(
                "the last round asks for \(last) labelled rows; the training pool has \(poolRows)", field: "--rounds", hint: "ask for at most \(poolRows)")
        }
    }

    /// What every trajectory of a study shares, computed once: the split, patients, unit-norm
    /// features, the probe and the pool's standardisation.
    struct Prepared {
        var train: [Int], test: [Int], patient: [Int]?, unit: [Float]
        var spec: ProbeSpec, standardizer: Standardizer
        init(_ s: StudyData, recipe: Recipe) {
            train = s.ids.indices.filter { s.isTest[$0] == false }
            test = s.ids.indices.filter { s.isTest[$0] == true }
            patient = Suggest.patientIndices(s)
            unit = Probe.normalized(s.features, d: s.dim)
            spec = Suggest.probeSpec(recipe)
            standardizer = Suggest.poolStandardizer(s)
        }
    }

    /// One trajectory: start set, then each round's picks, scoring after each.
    static func trajectory(
        _ s: StudyData, _ p: Prepared, tasks: [StudyTask], strategy: SelectionStrategy, seed: Int, options o: SimulationOptions
    ) -> SimulationTrajectory {
        let (train, test, spec, standardizer) = (p.train, p.test, p.spec, p.standardizer)
        // The start set: the random strategy's first pick from the whole pool, for this seed.
        var pool = SelectionPool(features: p.unit, dim: s.dim, candidates: train, labelled: [], patient: p.patient)
        pool.taskNames = tasks.map(\.name)
        pool.classNames = tasks.map(\.classes)
        var labelled = ActiveSelection.select(pool, strategy: .random, budget: o.start, seed: UInt64(seed)).map(\.row)
        func score() -> Double? {
            var values: [Double] = []
            for t in tasks {
                let rows = labelled.filter { t.labels[$0] >= 0 }
                let k = t.classes.count
                guard (0..<k).allSatisfy({ c in rows.contains { t.labels[$0] == c } }) else { return nil }
                let model = Suggest.fit(s, rows: rows, labels: rows.map { t.labels[$0] }, classes: k, spec: spec, standardizer: standardizer)
                let scored = test.filter { t.labels[$0] >= 0 }
                let p = Suggest.predict(s, model, rows: scored)
                if k == 2 {
                    guard let a = Metrics.auroc(p.map { $0[1] }, scored.map { t.labels[$0] == 1 }) else { return nil }
                    values.append(a)
                } else {
                    // Multiclass: mean one-vs-rest AUROC.
                    let per = (0..<k).compactMap { c in Metrics.auroc(p.map { $0[c] }, scored.map { t.labels[$0] == c }) }
                    guard per.count == k else { return nil }
                    values.append(per.reduce(0, +) / Double(k))
                }
            }
            return values.reduce(0, +) / Double(values.count)
        }
        var points = [SimulationPoint(labels: labelled.count, auroc: score(), fallback: false)]
        for (i, total) in o.rounds.enumerated() {
            let taken = Set(labelled)
            pool.candidates = train.filter { !taken.contains($0) }
            pool.labelled = labelled
            var use = strategy
            if strategy.needsProbe {
                let probes = Suggest.currentProbes(
                    s, tasks: tasks, spec: spec, standardizer: standardizer, labelled: labelled, candidates: pool.candidates)
                if probes.missing == nil {
                    pool.probabilities = probes.probabilities
                    pool.labelledCounts = probes.counts
                } else {
                    use = .random
                }
            }
            let picks = ActiveSelection.select(pool, strategy: use, budget: total - labelled.count, seed: UInt64(seed) &* 1000 &+ UInt64(i + 1))
            labelled += picks.map(\.row)
            points.append(SimulationPoint(labels: labelled.count, auroc: score(), fallback: use != strategy))
        }
        return SimulationTrajectory(strategy: strategy.rawValue, seed: seed, points: points)
    }

    /// The simulation a recipe's `selection` asks for, over the recipe's seeds.
    public static func options(_ sel: Recipe.SelectionSettings, seeds: Int) -> SimulationOptions {
        var o = SimulationOptions(strategies: sel.strategies, start: sel.start, rounds: sel.rounds, seeds: seeds)
        o.task = sel.task
        return o
    }

    /// The cell of a strategy × seed: `<strategy>__<task or all>__k<start>__s<seed>`.
    public static func cell(_ strategy: SelectionStrategy, seed: Int, options o: SimulationOptions) -> Cell {
        Cell(method: strategy.rawValue, task: o.task ?? "all", shots: o.start, seed: seed)
    }

    /// Every strategy × seed, each a cell of the one cell runner (`dir/cells/<cell id>.json`,
    /// written atomically; an interrupted simulation resumes), in order. A cell file computed for
    /// another recipe, features or settings (its fingerprint differs) is recomputed.
    public static func run(_ s: StudyData, recipe: Recipe, options o: SimulationOptions, dir: URL, quiet: Bool = true) throws -> [SimulationTrajectory] {
        var tasks = s.tasks
        if let t = o.task { tasks = s.tasks.filter { $0.name == t } }
        let runner = CellRunner(cellsDirectory: dir.appendingPathComponent("cells"), quiet: quiet)
        try FileManager.default.createDirectory(at: runner.cellsDirectory, withIntermediateDirectories: true)
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        var pinned = recipe
        pinned.selection = nil // which strategies run does not change a trajectory
        // The features enter by their own hash, read in place (a large pool is not copied).
        let featureHash = s.features.withUnsafeBufferPointer { b in
            b.baseAddress.map { SHA256.hex(Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: $0), count: b.count * 4, deallocator: .none)) } ?? ""
        }
        var key = Data((try? enc.encode(pinned)) ?? Data())
        key += Data("\(o.start) \(o.rounds) \(o.task ?? "") \(s.ids.count) \(s.dim) \(featureHash)".utf8)
        let fingerprint = SHA256.hex(key)
        let plan = o.strategies.flatMap { st in (0..<o.seeds).map { cell(st, seed: $0, options: o) } }
        for c in plan {
            let f = runner.file(c)
            guard let data = try? Data(contentsOf: f) else { continue }
            if (try? JSONDecoder().decode(SimulationTrajectory.self, from: data))?.fingerprint != fingerprint { try FileManager.default.removeItem(at: f) }
        }
        let todo = runner.unfinished(plan)
        let prepared = todo.isEmpty ? nil : Prepared(s, recipe: recipe)
        try runner.run(todo, producing: SimulationTrajectory.self, label: "simulate") { c in
            guard let prepared else { return nil }
            guard let strategy = SelectionStrategy(rawValue: c.method) else { return nil }
            var t = trajectory(s, prepared, tasks: tasks, strategy: strategy, seed: c.seed, options: o)
            t.fingerprint = fingerprint
            return t
        }
        return try runner.results(plan, as: SimulationTrajectory.self)
    }
}

/// Mean AUROC of a strategy at a label count over seeds, and its paired gain over `random`.
public struct SimulationSummaryRow: Sendable, Codable, Equatable {
    public var strategy: String
    public var labels: Int
    public var auroc: SeedSummary
    /// Per seed, this strategy's AUROC minus random's on the same start (nil without a random arm).
    public var gain_vs_random: SeedSummary?
    /// Seeds in which a probe-based strategy fell back to a random draw for this round.
    public var fallbacks: Int
}

extension SelectionSimulation {
    /// Rows per strategy × label count, in the order of the options.
    public static func summarize(_ ts: [SimulationTrajectory]) -> [SimulationSummaryRow] {
        var strategies: [String] = []
        for t in ts where !strategies.contains(t.strategy) { strategies.append(t.strategy) }
        let random = Dictionary(ts.filter { $0.strategy == "random" }.map { ($0.seed, $0) }, uniquingKeysWith: { a, _ in a })
        var out: [SimulationSummaryRow] = []
        for st in strategies {
            let mine = ts.filter { $0.strategy == st }
            guard let first = mine.first else { continue }
            for (i, p) in first.points.enumerated() {
                let values = mine.compactMap { $0.points.indices.contains(i) ? $0.points[i].auroc : nil }
                let gains =
                    random.isEmpty
                    ? nil
                    : mine.compactMap { t -> Double? in
                        guard let a = t.points.indices.contains(i) ? t.points[i].auroc : nil,
                            let r = random[t.seed], r.points.indices.contains(i), let b = r.points[i].auroc
                        else { return nil }
                        return a - b
                    }
                out.append(
                    SimulationSummaryRow(
                        strategy: st, labels: p.labels, auroc: SeedSummary(values), gain_vs_random: gains.map(SeedSummary.init),
                        fallbacks: mine.filter { $0.points.indices.contains(i) && $0.points[i].fallback }.count))
            }
        }
        return out
    }

    /// `selection.csv` (one row per strategy × seed × round), `selection_summary.csv`,
    /// `selection.json` and `selection.png` (AUROC against labels used, one curve per strategy,
    /// 95% t-intervals over seeds), each written atomically. Returns the files.
    public static func write(_ ts: [SimulationTrajectory], options o: SimulationOptions, title: String, to dir: URL) throws -> [URL] {
        func f(_ x: Double?) -> String { x.map { String(format: "%.6f", $0) } ?? "" }
        let rows = ts.flatMap { t in t.points.map { p in [t.strategy, String(t.seed), String(p.labels), f(p.auroc), p.fallback ? "1" : "0"] } }
        let raw = dir.appendingPathComponent("selection.csv")
        try CSVTable(header: ["strategy", "seed", "labels", "auroc", "random_fallback"], rows: rows).write(to: raw)
        let summary = summarize(ts)
        let sum = dir.appendingPathComponent("selection_summary.csv")
        try CSVTable(
            header: [
                "strategy", "labels", "seeds", "auroc_mean", "auroc_ci95_low", "auroc_ci95_high", "gain_vs_random", "gain_ci95_low", "gain_ci95_high",
                "random_fallbacks"
            ],
            rows: summary.map { r in
                [
                    r.strategy, String(r.labels), String(r.auroc.n), f(r.auroc.mean), f(r.auroc.low), f(r.auroc.high),
                    f(r.gain_vs_random?.mean), f(r.gain_vs_random?.low), f(r.gain_vs_random?.high), String(r.fallbacks)
                ]
            }
        ).write(to: sum)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        struct Doc: Encodable {
            var strategies: [String]; var start: Int; var rounds: [Int]; var seeds: Int; var task: String?; var summary: [SimulationSummaryRow]
        }
        let json = dir.appendingPathComponent("selection.json")
        try AtomicFile.write(
            try enc.encode(
                Doc(
                    strategies: o.strategies.map(\.rawValue), start: o.start, rounds: o.rounds, seeds: o.seeds,
                    task: o.task, summary: summary)), to: json)
        var series: [Series] = []
        var names: [String] = []
        for r in summary where !names.contains(r.strategy) { names.append(r.strategy) }
        for (i, name) in names.enumerated() {
            let pts = summary.filter { $0.strategy == name && $0.auroc.n > 0 }.map {
                (x: Double($0.labels), y: $0.auroc.mean, low: $0.auroc.low, high: $0.auroc.high)
            }
            series.append(Series(name: name, points: pts, color: i))
        }
        let ticks = ([o.start] + o.rounds).map(Double.init)
        let png = try LearningCurvePlot.render(
            title: title, yLabel: "AUROC (test rows)", series: series,
            note:
                "Mean over \(o.seeds) seeds, 95% t-interval; every strategy starts from the same \(o.start) random rows per seed. xrlab \(XRLabVersion.string)",
            ticks: ticks, xLabel: "Labelled rows (log2 scale)")
        let plot = dir.appendingPathComponent("selection.png")
        try AtomicFile.write(png, to: plot)
        return [raw, sum, json, plot]
    }
}

extension SelectionSimulation {
    /// The "Active labelling" section of report.md for a recipe's `selection`, from the finished
    /// cells in `dir` (with the selection files written beside report.md); empty when none are finished.
    static func reportSection(_ recipe: Recipe, directory dir: URL) throws -> (text: String, plot: URL?) {
        guard let sel = recipe.selection else { return ("", nil) }
        let o = options(sel, seeds: recipe.seeds)
        let runner = CellRunner(cellsDirectory: dir.appendingPathComponent("cells"), quiet: true)
        let plan = o.strategies.flatMap { st in (0..<o.seeds).map { cell(st, seed: $0, options: o) } }
        let ts = try runner.results(plan, as: SimulationTrajectory.self)
        guard !ts.isEmpty else { return ("", nil) }
        let files = try write(ts, options: o, title: "\(recipe.name): active labelling\(sel.task.map { " (\($0))" } ?? "")", to: dir)
        var s = "\n## Active labelling\n\n"
        s += "Strategies simulated on the labelled training pool: per seed each starts from the same \(o.start) random rows and picks up to "
        s += "\(o.rounds.map(String.init).joined(separator: ", ")) rows; only the picked rows' labels are revealed, and the logistic probe "
        s += "fitted on them is scored on the test rows (AUROC\(sel.task.map { " of \($0)" } ?? ", mean over tasks")). Mean over seeds "
        s += "[95% interval], and the paired gain over random on the same seeds. `selection_summary.csv` has every value.\n\n"
        s += "| strategy | labelled rows | AUROC | gain vs random |\n|---|---|---|---|\n"
        for r in summarize(ts) {
            let g = r.gain_vs_random.map { String(format: "%+.4f [%+.4f, %+.4f]", $0.mean, $0.low, $0.high) } ?? ""
            s += "| \(r.strategy) | \(r.labels) | \(Outputs.f(r.auroc.mean)) [\(Outputs.f(r.auroc.low)), \(Outputs.f(r.auroc.high))] | \(g) |\n"
        }
        let plot = files.first { $0.pathExtension == "png" }
        if let plot { s += "\n![\(plot.lastPathComponent)](\(plot.lastPathComponent))\n" }
        return (s, plot)
    }
}
