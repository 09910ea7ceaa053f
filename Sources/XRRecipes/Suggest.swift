// `xrlab suggest`: which training-pool rows of a recipe's manifest to label next.
import Foundation
import XRTensor
import XRData
import XRProbe

/// What to suggest.
public struct SuggestOptions: Sendable {
    public var strategy: SelectionStrategy
    public var budget: Int
    /// Only this task's probe (uncertainty / balanced); nil: every task of the recipe, jointly.
    public var task: String? = nil
    public var seed: UInt64 = 0
    public init(strategy: SelectionStrategy, budget: Int) { self.strategy = strategy; self.budget = budget }
}

/// One suggested row.
public struct SuggestedRow: Sendable, Equatable {
    public var rank: Int
    public var id: String
    public var patient: String?
    public var score: Double
    public var reason: String
}

/// The suggestion, with what it was chosen from.
public struct Suggestion: Sendable {
    public var rows: [SuggestedRow]
    public var strategy: SelectionStrategy
    /// Unlabelled training rows the rows were chosen from, and labelled rows.
    public var poolRows: Int
    public var labelledRows: Int
    /// The manifest's id (image) column, the header of the written CSV's id column.
    public var idColumn: String
}

public enum Suggest {
    /// A strategy by name; an unknown one is an error naming `field`, with the closest name.
    public static func strategy(_ name: String, field: String = "--strategy") throws -> SelectionStrategy {
        if let s = SelectionStrategy(rawValue: name) { return s }
        let names = SelectionStrategy.allCases.map(\.rawValue)
        throw XRError(
            "unknown strategy '\(name)'" + (closest(name, in: names).map { " — did you mean '\($0)'?" } ?? ""), field: field,
            hint: "strategies: \(names.joined(separator: ", "))")
    }

    /// Choose the next rows to label: candidates are the training rows (never a test row, nor a
    /// row of a patient with a test row) not listed in `labelled` (a CSV whose column named as the
    /// recipe's `data.image_column` lists the labelled rows; their labels come from the manifest).
    public static func run(_ r: LoadedRecipe, labelled: URL, options o: SuggestOptions, study: StudyData? = nil) throws -> Suggestion {
        let idColumn = r.recipe.data.image_column
        guard o.budget >= 1 else { throw XRError("--budget must be at least 1, found \(o.budget)", field: "--budget") }
        guard FileManager.default.fileExists(atPath: labelled.path) else {
            throw XRError(
                "labelled-rows file not found", file: labelled.path, field: "--labelled",
                hint: "a CSV with a '\(idColumn)' column listing the rows already labelled (a header alone when none are)")
        }
        let table = try CSVTable(contentsOf: labelled)
        let col = try table.column(idColumn)
        let s = try study ?? StudyLoader.load(r)
        var index: [String: Int] = [:]
        for (i, id) in s.ids.enumerated() where index[id] == nil { index[id] = i }
        var labelledRows: [Int] = [], seen = Set<Int>()
        for (k, row) in table.rows.enumerated() {
            let id = row[col].trimmingCharacters(in: .whitespaces)
            guard let i = index[id] else {
                throw XRError(
                    "'\(id)' is not a row of the recipe's manifest (after data.where)", file: labelled.path,
                    field: "row \(k + 2), column \(idColumn)", hint: "list rows by their \(idColumn) value as the manifest has it")
            }
            if s.isTest[i] == true {
                throw XRError(
                    "'\(id)' is a test row; labelled rows must come from the training pool", file: labelled.path,
                    field: "row \(k + 2), column \(idColumn)")
            }
            if seen.insert(i).inserted { labelledRows.append(i) }
        }
        // Candidates: training rows not labelled, of patients with no test row.
        var testPatients = Set<String>()
        if let p = s.patients { for i in s.ids.indices where s.isTest[i] == true { testPatients.insert(p[i]) } }
        let candidates = s.ids.indices.filter { i in
            s.isTest[i] == false && !seen.contains(i) && !(s.patients.map { testPatients.contains($0[i]) } ?? false)
        }
        guard !candidates.isEmpty else {
            throw XRError("no unlabelled training rows are left to suggest from", file: labelled.path, field: "--labelled")
        }
        guard o.budget <= candidates.count else {
            throw XRError(
                "--budget \(o.budget) is larger than the pool: \(candidates.count) unlabelled training rows", field: "--budget",
                hint: "ask for at most \(candidates.count)")
        }
        var tasks = s.tasks
        if let t = o.task {
            guard let one = s.tasks.first(where: { $0.name == t }) else {
                let names = s.tasks.map(\.name)
                throw XRError(
                    "task '\(t)' is not in the recipe" + (closest(t, in: names).map { " — did you mean '\($0)'?" } ?? ""),
                    file: r.file.path, field: "--task", hint: "tasks: \(names.joined(separator: ", "))")
            }
            tasks = [one]
        }
        let patientIndex = Suggest.patientIndices(s)
        var pool = SelectionPool(
            features: Probe.normalized(s.features, d: s.dim), dim: s.dim, candidates: candidates,
            labelled: labelledRows, patient: patientIndex)
        pool.taskNames = tasks.map(\.name)
        pool.classNames = tasks.map(\.classes)
        if o.strategy.needsProbe {
            let probes = currentProbes(
                s, tasks: tasks, spec: probeSpec(r.recipe), standardizer: poolStandardizer(s), labelled: labelledRows, candidates: candidates)
            if let (t, k) = probes.missing {
                throw XRError(
                    "\(o.strategy.rawValue) needs the current probe, which needs a labelled row of every class; task '\(t)' has none of class '\(k)'",
                    file: labelled.path, field: "--strategy", hint: "start with random, kcenter, typiclust or probcover, which need no labels")
            }
            pool.probabilities = probes.probabilities
            pool.labelledCounts = probes.counts
        }
        let chosen = ActiveSelection.select(pool, strategy: o.strategy, budget: o.budget, seed: o.seed)
        let rows = chosen.enumerated().map { k, c in
            SuggestedRow(rank: k + 1, id: s.ids[c.row], patient: s.patients?[c.row], score: c.score, reason: c.reason)
        }
        return Suggestion(rows: rows, strategy: o.strategy, poolRows: candidates.count, labelledRows: labelledRows.count, idColumn: idColumn)
    }

    /// Each row's patient as a small integer (rows of one patient share it), nil when the study
    /// has no patient column.
    static func patientIndices(_ s: StudyData) -> [Int]? {
        guard let p = s.patients else { return nil }
        var ids: [String: Int] = [:]
        return p.map { name in
            if let i = ids[name] { return i }
            ids[name] = ids.count
            return ids.count - 1
        }
    }

    /// The logistic probe of each task fitted on the labelled rows (the recipe's logistic settings,
    /// or the defaults), and its class probabilities on the candidates; `missing` names the first
    /// task × class without a labelled row (then nothing is fitted).
    static func currentProbes(
        _ s: StudyData, tasks: [StudyTask], spec: ProbeSpec, standardizer: Standardizer, labelled: [Int], candidates: [Int]
    ) -> (probabilities: [[[Double]]], counts: [[Int]], missing: (String, String)?) {
        var probabilities: [[[Double]]] = [], counts: [[Int]] = []
        for t in tasks {
            let rows = labelled.filter { t.labels[$0] >= 0 }
            let c = t.classes.indices.map { k in rows.filter { t.labels[$0] == k }.count }
            if let k = c.firstIndex(of: 0) { return ([], [], (t.name, t.classes[k])) }
            let model = fit(s, rows: rows, labels: rows.map { t.labels[$0] }, classes: t.classes.count, spec: spec, standardizer: standardizer)
            probabilities.append(predict(s, model, rows: candidates))
            counts.append(c)
        }
        return (probabilities, counts, nil)
    }

    /// The probe that scores candidates and simulation rounds: the recipe's `logistic` method,
    /// or the logistic defaults.
    static func probeSpec(_ recipe: Recipe) -> ProbeSpec {
        methodVariants(recipe).first { $0.label == "logistic" }?.spec
            ?? .logistic(grid: [0.01, 0.1, 1, 10], cvMinShots: 4, defaultC: 1, folds: 3, standardize: .pool)
    }

    /// Feature means and stds of the training pool (`standardize: pool`), fitted once per study.
    static func poolStandardizer(_ s: StudyData) -> Standardizer {
        Standardizer(fit: s.features, rows: s.ids.indices.filter { s.isTest[$0] == false }, d: s.dim)
    }

    /// A logistic probe on `rows` of the study.
    static func fit(_ s: StudyData, rows: [Int], labels: [Int], classes: Int, spec: ProbeSpec, standardizer: Standardizer) -> LogisticModel {
        var x: [Float] = []
        x.reserveCapacity(rows.count * s.dim)
        for i in rows { x += s.features[(i * s.dim)..<((i + 1) * s.dim)] }
        return Probe.fitLogistic(spec, train: x, labels: labels, d: s.dim, classes: classes, pool: standardizer).model
    }

    /// Class probabilities of `rows`, in chunks (the doubles of a large pool never exist at once).
    static func predict(_ s: StudyData, _ model: LogisticModel, rows: [Int]) -> [[Double]] {
        var out: [[Double]] = []
        out.reserveCapacity(rows.count)
        var start = 0
        while start < rows.count {
            let chunk = rows[start..<min(start + 4096, rows.count)]
            var xd: [Double] = []
            xd.reserveCapacity(chunk.count * s.dim)
            for i in chunk { for j in 0..<s.dim { xd.append(Double(s.features[i * s.dim + j])) } }
            out += model.probabilities(xd, n: chunk.count)
            start += chunk.count
        }
        return out
    }

    /// The suggestion as CSV (rank, id column, patient, strategy, score, reason), written atomically.
    public static func write(_ s: Suggestion, to url: URL) throws {
        let rows = s.rows.map { r in
            [String(r.rank), r.id, r.patient ?? "", s.strategy.rawValue, String(format: "%.6g", r.score), r.reason]
        }
        try CSVTable(header: ["rank", s.idColumn, "patient", "strategy", "score", "reason"], rows: rows).write(to: url)
    }
}
