// Planning and running a recipe: cells (method × task × shots × seed), each written
// atomically, so an interrupted run resumes without losing finished work.
import Foundation
import XRTensor
import XRProbe
import XRKernels
import XRData

/// One unit of work: one method setting on one task with `shots` examples per class, drawn with `seed`.
public struct Cell: Sendable, Codable, Equatable {
    /// Method setting label: `logistic`, `knn-k20`, `prototype`.
    public var method: String
    /// Task name: the label (multilabel / binary) or `classA-vs-classB-…` (multiclass).
    public var task: String
    public var shots: Int
    public var seed: Int
    /// Stable file name stem from the parameters: `knn-k20__effusion__k4__s3`. The rest of the
    /// recipe is pinned by the run directory's fingerprint.
    public var id: String { "\(method)__\(safe(task))__k\(shots)__s\(seed)" }
}

func safe(_ s: String) -> String { String(s.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? $0 : "_" }) }

/// The result of one cell, as written to `cells/<id>.json` and `results.jsonl`.
public struct CellResult: Codable, Sendable, Equatable {
    public var cell: Cell
    /// ok, or skipped (with `reason`).
    public var status: String
    public var reason: String?
    /// Metric name → value on the whole test set (metrics undefined on it are left out).
    public var metrics: [String: Double]
    /// Bootstrap 95% interval of the primary metric over test images.
    public var primary_ci: Interval?
    /// The C picked by cross-validation (logistic only).
    public var chosen_C: Double?
    /// Training rows (shots × classes when not skipped) and test rows.
    public var n_train: Int
    public var n_test: Int
    /// Sampled training ids, in draw order.
    public var train_ids: [String]
    /// Primary metric per subgroup attribute (sorted by attribute name).
    public var subgroups: [SubgroupResult]
    /// Tuning methods: epochs run, the epoch kept, losses per epoch.
    public var training: TrainingSummary? = nil
    /// Retrieval cells: each query's top neighbours, in query (test row) order.
    public var retrieval: [RankedQuery]? = nil
    /// Segmentation cells: each test image's scores, in test row order.
    public var segmentation: [ImageMaskScore]? = nil
    /// Detection cells: each test image's boxes, score and heatmap peak, in test row order.
    public var detection: [ImageDetections]? = nil
    /// Bootstrap 95% interval of every metric (detection cells; others keep the primary's only).
    public var metric_ci: [String: Interval]? = nil
}

/// How a tuning cell trained.
public struct TrainingSummary: Codable, Sendable, Equatable {
    public var epochs: Int
    public var best_epoch: Int
    public var stopped_early: Bool
    public var n_validation: Int
    public var trainable_parameters: Int
    public var train_loss: [Double]
    public var validation_loss: [Double]?
}

/// Method variants: each k of a k-NN grid is its own curve; logistic regression searches its C
/// grid inside the shots.
public func methodVariants(_ recipe: Recipe) -> [(label: String, spec: ProbeSpec)] {
    var out: [(String, ProbeSpec)] = []
    for m in recipe.methods {
        switch m {
        case let .logistic(s):
            let spec: ProbeSpec = .logistic(grid: s.C, cvMinShots: s.cvMinShots, defaultC: s.defaultC, folds: s.folds, standardize: s.standardize)
            out.append(("logistic", spec))
        case let .knn(s):
            for k in s.k { out.append(("knn-k\(k)", .knn(k: k, temperature: s.temperature))) }
        case let .prototype(s):
            out.append(("prototype", .prototype(temperature: s.temperature)))
        default:
            break // tuning methods: `tuneVariants`
        }
    }
    return out
}

/// Every method setting's cell label, in recipe order: probes (`logistic`, `knn-k20`,
/// `prototype`) and tuning methods (`lora`, `adapter`, `last_k`, `bitfit`, `full`).
public func methodLabels(_ recipe: Recipe) -> [String] {
    recipe.methods.flatMap { m -> [String] in
        if case let .knn(s) = m { return s.k.map { "knn-k\($0)" } }
        return [m.name]
    }
}

/// How `Runner.run` runs (nothing here changes results, so none of it enters the fingerprint).
public struct RunOptions: Sendable {
    /// Recompute every cell, and take over a run directory written by another recipe.
    public var force = false
    /// Cells computed in parallel (each with single-threaded BLAS).
    public var threads = 2
    /// No progress output.
    public var quiet = false
    /// Skip the manifest leakage / hygiene check that runs before image manifests are encoded.
    public var skipCheck = false
    /// Stop after computing this many new cells (used to test resuming).
    public var maxNewCells: Int? = nil
    /// Recorded in `run.json`.
    public var commandLine: [String] = CommandLine.arguments
    /// Where features come from; nil = the recipe's own (`FeatureSources.default`).
    public var featureSource: FeatureSource? = nil
    /// Compute only this shard's cells and leave the outputs to `mergeOnly` (see `CellWork`).
    public var shard: Shard? = nil
    /// Compute nothing: write the outputs from the cells present.
    public var mergeOnly = false
    public init() {}
}

/// What a run did.
public struct RunSummary: Sendable {
    public var directory: URL
    /// Cells computed by this call, and finished cells found from earlier runs.
    public var computed: Int
    public var reused: Int
    /// Cells skipped (too few examples for the shots, a class missing from the test set), with reasons.
    public var skipped: [CellResult]
    /// False when `maxNewCells` stopped the run early.
    public var complete: Bool
    public var plots: [URL]
    public var report: URL
}

/// Runs recipes: features → per cell (sample shots, fit, predict, metrics, bootstrap, subgroups),
/// each cell written atomically to `cells/<id>.json`, then results, summary, curves and report.
public enum Runner {
    /// Whether a method setting trains nothing (retrieval's `cosine`): it has one cell per task,
    /// with shots 0 and seed 0.
    public static func untrained(_ method: String) -> Bool { method == Recipe.MethodName.cosine.rawValue }

    /// The shot counts of a method setting's cells: [0] when it trains nothing, else the recipe's.
    public static func shotCounts(_ recipe: Recipe, method: String) -> [Int] { untrained(method) ? [0] : recipe.shots }

    /// Cells in a fixed order: task, method setting, shots, seed.
    public static func cells(_ recipe: Recipe, tasks: [String]) -> [Cell] {
        var out: [Cell] = []
        for t in tasks {
            for m in methodLabels(recipe) {
                for k in shotCounts(recipe, method: m) {
                    for s in 0..<(untrained(m) ? 1 : recipe.seeds) {
                        out.append(Cell(method: m, task: t, shots: k, seed: s))
                    }
                }
            }
        }
        return out
    }

    /// The run directory (`output`, relative to the recipe's folder).
    public static func outputDirectory(_ r: LoadedRecipe) -> URL { r.resolve(r.recipe.output) }

    /// Run-directory format written to `run.json`.
    public static let runFormatVersion = 1

    /// Refuse a run directory made by a different recipe (fingerprint differs); say what differs.
    static func checkRunDirectory(_ dir: URL, _ r: LoadedRecipe, force: Bool) throws {
        let runFile = dir.appendingPathComponent("run.json")
        guard FileManager.default.fileExists(atPath: runFile.path) else {
            let cells = dir.appendingPathComponent("cells")
            if !force, let found = try? FileManager.default.contentsOfDirectory(atPath: cells.path), !found.isEmpty {
                throw XRError(
                    "the run directory holds cell results but no run.json, so which recipe made them is unknown",
                    file: dir.path, field: "output", hint: "choose another output directory, or pass --force to discard them")
            }
            return
        }
        guard let data = try? Data(contentsOf: runFile),
            let old = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else {
            if force { return }
            throw XRError("run.json is unreadable", file: runFile.path, hint: "pass --force to discard this run directory's results")
        }
        if let v = old["format_version"] as? Int, v > runFormatVersion, !force {
            throw XRError(
                "run directory format \(v) is newer than this xrlab writes (\(runFormatVersion))", file: runFile.path, field: "format_version",
                hint: "upgrade xrlab, or pass --force to recompute the run with this version")
        }
        if old["recipe_fingerprint"] as? String == r.fingerprint || force { return }
        var oldRecipe = old["recipe"] as? [String: Any] ?? [:]
        for k in Recipe.outputOnlyFields { oldRecipe.removeValue(forKey: k) }
        let diffs = differences(oldRecipe, r.fingerprinted, path: "")
        let shown = diffs.prefix(8).joined(separator: "; ") + (diffs.count > 8 ? "; … (\(diffs.count - 8) more)" : "")
        throw XRError(
            "the run directory holds results of a different recipe (\(diffs.isEmpty ? "the fingerprint differs" : shown))",
            file: dir.path, field: "output",
            hint: "choose another output directory, or pass --force to discard the old results")
    }

    /// Field-by-field differences between two JSON values: `seeds: 2 → 3`.
    public static func differences(_ a: Any?, _ b: Any?, path: String) -> [String] {
        if let x = a as? [String: Any], let y = b as? [String: Any] {
            return Set(x.keys).union(y.keys).sorted().flatMap { k in differences(x[k], y[k], path: path.isEmpty ? k : "\(path).\(k)") }
        }
        func show(_ v: Any?) -> String {
            guard let v, !(v is NSNull) else { return "(none)" }
            return LoadedRecipe.canonicalJSON(v).replacingOccurrences(of: "\"", with: "")
        }
        let sa = show(a), sb = show(b)
        return sa == sb ? [] : ["\(path): \(sa) → \(sb)"]
    }

    /// Run (or resume) a recipe.
    public static func run(_ r: LoadedRecipe, options: RunOptions = RunOptions()) throws -> RunSummary {
        if r.recipe.isReport { return try ReportSweep.run(r, options: options) }
        let dir = outputDirectory(r)
        try checkRunDirectory(dir, r, force: options.force)
        let cellsDir = dir.appendingPathComponent("cells")
        // Inputs are read and checked before anything of the run is written: a recipe whose data
        // is broken leaves no run.json behind.
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        if r.recipe.model != nil && !options.skipCheck { try checkManifest(r, dir: dir, quiet: options.quiet) }
        let data = try StudyLoader.load(r, source: options.featureSource, quiet: options.quiet)
        if options.force { try? FileManager.default.removeItem(at: cellsDir) }
        try FileManager.default.createDirectory(at: cellsDir, withIntermediateDirectories: true)
        try writeRunInfo(dir, r, options: options)
        if r.recipe.isRetrieval { return try RetrievalCells.run(r, data: data, directory: dir, options: options) }
        if r.recipe.isSegmentation { return try SegmentationCells.run(r, data: data, directory: dir, options: options) }
        if r.recipe.isDetection { return try DetectionCells.run(r, data: data, directory: dir, options: options) }
        let variants = Dictionary(uniqueKeysWithValues: methodVariants(r.recipe).map { ($0.label, $0.spec) })
        let all = cells(r.recipe, tasks: data.tasks.map(\.name))
        let runner = CellRunner(cellsDirectory: cellsDir, quiet: options.quiet)
        let allWork = try runner.todo(all, recipe: r, options: options)
        let work = allWork.filter { variants[$0.method] != nil }
        let tuneWork = allWork.filter { variants[$0.method] == nil }
        let tests = Dictionary(uniqueKeysWithValues: data.tasks.map { ($0.name, TestSet(task: $0, data: data)) })
        let pool = poolStandardizer(data, specs: work.compactMap { variants[$0.method] })
        // Cells are independent: run them on all cores, each with single-threaded BLAS (the
        // products per cell are small, and BLAS's own threads would only contend; and a cell's
        // numbers then never depend on how many cells a process has left).
        let workers = max(1, min(options.threads, work.count))
        return try BLAS.with(threads: 1) {
            try runner.run(work, workers: workers) { cell in
                guard let task = data.tasks.first(where: { $0.name == cell.task }), let spec = variants[cell.method],
                    let test = tests[cell.task]
                else { return nil }
                return runCell(cell, task: task, spec: spec, data: data, recipe: r.recipe, test: test, pool: pool)
            }
            if !tuneWork.isEmpty {
                try TuneCells.run(tuneWork, recipe: r, data: data, tests: tests, cellsDirectory: cellsDir, quiet: options.quiet)
            }
            // Active-labelling cells (`selection`), in this process unless it is one shard of many.
            if let sel = r.recipe.selection, options.shard == nil, !options.mergeOnly {
                let o = SelectionSimulation.options(sel, seeds: r.recipe.seeds)
                try SelectionSimulation.check(o, poolRows: data.isTest.filter { $0 == false }.count)
                _ = try SelectionSimulation.run(data, recipe: r.recipe, options: o, dir: dir, quiet: options.quiet)
            }
            return try runner.summary(all, computed: allWork.count, directory: dir, options: options) { results, complete in
                try Outputs.write(results, recipe: r, data: data, directory: dir, complete: complete)
            }
        }
    }

    /// Leakage and hygiene checks on the image manifest: errors stop the run, warnings are
    /// printed; all findings go to `checks.json`.
    static func checkManifest(_ r: LoadedRecipe, dir: URL, quiet: Bool) throws {
        let spec = r.recipe.data
        let (table, url) = try StudyLoader.table(r)
        var o = ManifestCheck.Options()
        o.pathColumn = spec.image_column
        o.patientColumn = spec.patient_column.flatMap { table.header.contains($0) ? $0 : nil }
        if spec.patient_column == nil { o.patientColumn = "__none__" }
        o.splitColumn = spec.split_column ?? "__none__"
        o.labelColumn = spec.label_column ?? "__none__"
        o.nearDuplicates = false
        if o.patientColumn == "__none__" { o.patientColumn = nil }
        var rows = table.rows
        for (column, values) in spec.where {
            if let c = table.header.firstIndex(of: column) { rows = rows.filter { values.contains($0[c]) } }
        }
        let findings = try ManifestCheck.run(
            table: CSVTable(header: table.header, rows: rows, source: url.path),
            base: url.deletingLastPathComponent(), options: o)
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        try AtomicFile.write(try e.encode(findings), to: dir.appendingPathComponent("checks.json"))
        if !quiet { for f in findings where f.severity == .warning { FileHandle.standardError.write(Data("\(f)\n".utf8)) } }
        let errors = findings.filter { $0.severity == .error }
        if !errors.isEmpty {
            throw XRError(
                "the manifest failed the leakage check:\n" + errors.map { "  \($0)" }.joined(separator: "\n"),
                file: url.path, hint: "fix the manifest (see `xrlab check`), or pass --skip-check to run anyway")
        }
    }

    static func writeRunInfo(_ dir: URL, _ r: LoadedRecipe, options: RunOptions) throws {
        let header =
            "# The recipe as run by xrlab \(XRLabVersion.string) (defaults filled in, paths absolute).\n"
            + "# Run it again with: xrlab run \(dir.appendingPathComponent("resolved.yaml").path)\n"
        try AtomicFile.write(header + (try r.resolvedYAML(absolutePaths: true)), to: dir.appendingPathComponent("resolved.yaml"))
        let recipeJSON = try JSONSerialization.jsonObject(with: JSONEncoder().encode(r.absolute))
        let info: [String: Any] = [
            "format": "xrlab-run", "format_version": runFormatVersion, "xrlab_version": XRLabVersion.string,
            "recipe_file": r.file.path, "recipe_fingerprint": r.fingerprint, "recipe": recipeJSON,
            "overrides": r.overrides, "command_line": options.commandLine
        ]
        try AtomicFile.write(
            try JSONSerialization.data(withJSONObject: info, options: [.sortedKeys, .prettyPrinted]),
            to: dir.appendingPathComponent("run.json"))
    }

    /// The training pool's feature statistics (every non-test row, labelled or not), when a probe
    /// standardises on the pool; computed once per run.
    public static func poolStandardizer(_ data: StudyData, specs: [ProbeSpec]) -> Standardizer? {
        let needed = specs.contains { if case .logistic(_, _, _, _, .pool) = $0 { return true } else { return false } }
        guard needed else { return nil }
        return Standardizer(fit: data.features, rows: data.ids.indices.filter { data.isTest[$0] == false }, d: data.dim)
    }

    /// The random-stream key of a task (the first 8 bytes of SHA-256 of its name), so a cell's
    /// draws depend on its task's name, not on the task's position in the recipe.
    public static func streamKey(_ task: String) -> UInt64 {
        SHA256.hash(Array(task.utf8)).prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }

    /// Why a cell is skipped.
    struct Skip: Error { var reason: String }

    /// A cell's training rows: `shots` per class drawn with its seed from the task's pool (one per
    /// patient, none sharing a patient with the test set); or why the cell is skipped (too few
    /// eligible examples of a class, or a class missing from the test set).
    static func drawShots(_ cell: Cell, task: StudyTask, test: TestSet, data: StudyData) -> Result<[Int], Skip> {
        let K = task.classes.count
        let sampled = FewShotSampler.sample(
            labels: task.labels, classes: K, pool: test.pool, test: test.rows, patients: data.patients,
            k: cell.shots, seed: UInt64(cell.seed), stream: [streamKey(task.name), UInt64(cell.shots)])
        switch sampled {
        case let .failure(e):
            return .failure(
                Skip(
                    reason:
                        "class '\(task.classes[e.classIndex])' has \(e.available) eligible training examples (one per patient, none sharing a patient with the test set); \(e.requested) shots requested"
                ))
        case let .success(shots):
            guard Set(test.rows.map { task.labels[$0] }).count == K else {
                return .failure(Skip(reason: "the test set does not contain every class of task '\(task.name)'"))
            }
            return .success(shots)
        }
    }

    /// One cell: sample shots, fit, predict, score.
    static func runCell(
        _ cell: Cell, task: StudyTask, spec: ProbeSpec, data: StudyData, recipe: Recipe, test testSet: TestSet,
        pool poolScaler: Standardizer?
    ) -> CellResult {
        let d = data.dim, K = task.classes.count
        let test = testSet.rows
        var result = CellResult(
            cell: cell, status: "ok", reason: nil, metrics: [:], primary_ci: nil, chosen_C: nil,
            n_train: 0, n_test: test.count, train_ids: [], subgroups: [])
        let shots: [Int]
        switch drawShots(cell, task: task, test: testSet, data: data) {
        case let .failure(skip):
            result.status = "skipped"
            result.reason = skip.reason
            return result
        case let .success(s): shots = s
        }
        let train = shots.flatMap { data.features[($0 * d)..<(($0 + 1) * d)] }
        let testX = testSet.features
        let ytr = shots.map { task.labels[$0] }, yte = test.map { task.labels[$0] }
        let probe = Probe.run(spec, train: train, labels: ytr, test: testX, d: d, classes: K, pool: poolScaler)
        result.chosen_C = probe.chosenC
        result.n_train = shots.count
        result.train_ids = shots.map { data.ids[$0] }
        score(&result, probabilities: probe.probabilities, truth: yte, test: test, classes: K, data: data, recipe: recipe, seed: cell.seed)
        return result
    }

    /// Metrics, the primary metric's bootstrap interval and subgroups of a cell's test predictions.
    static func score(
        _ result: inout CellResult, probabilities probs: [[Double]], truth yte: [Int], test: [Int], classes K: Int,
        data: StudyData, recipe: Recipe, seed: Int
    ) {
        func metric(_ name: String, _ idx: [Int]) -> Double? {
            Metrics.named(name, probabilities: idx.map { probs[$0] }, truth: idx.map { yte[$0] }, classes: K)
        }
        let everything = Array(0..<test.count)
        for m in recipe.metrics { if let v = metric(m, everything) { result.metrics[m] = v } }
        let testPatients = data.patients.map { p in test.map { p[$0] } }
        if recipe.bootstrap > 0 {
            result.primary_ci = Bootstrap.interval(
                rows: test.count, groups: testPatients, resamples: recipe.bootstrap,
                seed: UInt64(seed)
            ) { metric(recipe.primary_metric, $0) }
        }
        for (attr, g) in data.groups.sorted(by: { $0.key < $1.key }) {
            result.subgroups.append(
                SubgroupResult.analyse(
                    attribute: attr, group: test.map { g[$0] }, patients: testPatients,
                    resamples: recipe.bootstrap, seed: UInt64(seed)
                ) {
                    metric(recipe.primary_metric, $0)
                })
        }
    }
}

/// A task's test rows and features, built once per run.
struct TestSet: Sendable {
    var rows: [Int]
    var pool: [Int]
    var features: [Float]

    init(task: StudyTask, data: StudyData) {
        let d = data.dim
        rows = (0..<data.ids.count).filter { data.isTest[$0] == true && task.labels[$0] >= 0 }
        pool = (0..<data.ids.count).filter { data.isTest[$0] == false && task.labels[$0] >= 0 }
        features = rows.flatMap { data.features[($0 * d)..<(($0 + 1) * d)] }
    }
}
