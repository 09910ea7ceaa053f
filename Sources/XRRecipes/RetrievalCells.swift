// Retrieval recipes (`data.task: retrieval`): test rows query the gallery, relevance is sharing a
// value of `data.label_column`. Each cell is a closure on the one cell runner: `cosine` once per
// task, `linear_projection` per shots × seed (a projection fitted on `shots` labelled gallery
// images per value). Letters: Q queries, G gallery rows, D feature dimensions.
import Foundation
import XRTensor
import XRProbe
import XRKernels

/// One query's ranking as a cell keeps it: the first `retrieval.neighbours` gallery rows.
public struct RankedQuery: Codable, Sendable, Equatable {
    /// The query's row id.
    public var query: String
    /// Relevant gallery rows (R; the query itself never counts).
    public var relevant: Int
    /// Gallery row ids, best first (ties by gallery row order).
    public var neighbours: [String]
    /// Cosine similarity of each neighbour (in the method's space).
    public var similarity: [Float]
    /// Whether each neighbour is relevant.
    public var hits: [Bool]
}

enum RetrievalCells {
    /// What every cell of a task shares: query and gallery rows, their value sets and patients.
    struct Prepared: Sendable {
        var task: StudyTask
        /// Test rows with a value, in row order.
        var queries: [Int]
        /// Training rows with a value (`gallery: train`), or every row with a value (`all`).
        var gallery: [Int]
        /// Per query, its own position in the gallery (`gallery: all`), else nil.
        var exclude: [Int?]?
        /// Training rows with a value: where shots are drawn from.
        var pool: [Int]
        /// (D) the mean feature of every training row (no labels used): the projection's centre.
        var poolMean: [Double]

        init(task: StudyTask, data: StudyData, settings: Recipe.RetrievalSettings) {
            self.task = task
            let labelled = data.ids.indices.filter { task.labels[$0] >= 0 }
            queries = labelled.filter { data.isTest[$0] == true }
            pool = labelled.filter { data.isTest[$0] == false }
            poolMean = Standardizer(fit: data.features, rows: data.ids.indices.filter { data.isTest[$0] == false }, d: data.dim).mean
            if settings.gallery == .all {
                gallery = labelled
                let position = Dictionary(uniqueKeysWithValues: labelled.enumerated().map { ($1, $0) })
                exclude = queries.map { position[$0] }
            } else {
                gallery = pool
                exclude = nil
            }
        }
    }

    /// Compute the unfinished cells of a retrieval recipe and write the run's outputs.
    static func run(_ r: LoadedRecipe, data: StudyData, directory dir: URL, options: RunOptions) throws -> RunSummary {
        let recipe = r.recipe
        let settings = recipe.retrieval ?? Recipe.RetrievalSettings()
        let runner = CellRunner(cellsDirectory: dir.appendingPathComponent("cells"), quiet: options.quiet)
        let all = Runner.cells(recipe, tasks: data.tasks.map(\.name))
        let work = try runner.todo(all, recipe: r, options: options)
        let prepared = Dictionary(uniqueKeysWithValues: data.tasks.map { ($0.name, Prepared(task: $0, data: data, settings: settings)) })
        for p in prepared.values where p.queries.isEmpty || p.gallery.isEmpty {
            throw XRError(
                "retrieval by '\(p.task.name)' has \(p.queries.count) queries (test rows with a value) and \(p.gallery.count) gallery rows",
                file: r.file.path, field: "data.label_column", hint: "both need rows: check data.split_column / data.test_fraction and data.where")
        }
        let projections = Dictionary(
            uniqueKeysWithValues: recipe.methods.compactMap { m -> (String, LinearProjectionSpec)? in
                if case let .linearProjection(s) = m { return (m.name, s) } else { return nil }
            })
        let workers = max(1, min(options.threads, work.count))
        try BLAS.with(threads: 1) {
            try runner.run(work, label: "retrieval", workers: workers) { cell in
                guard let p = prepared[cell.task] else { return nil }
                return runCell(cell, prepared: p, projection: projections[cell.method], data: data, recipe: recipe, settings: settings)
            }
        }
        return try runner.summary(all, computed: work.count, directory: dir, options: options) { results, complete in
            try Outputs.write(results, recipe: r, data: data, directory: dir, complete: complete)
        }
    }

    /// The rows of `x` (N, D) listed in `rows`, as (rows.count, D).
    static func gather(_ x: [Float], rows: [Int], d: Int) -> [Float] { rows.flatMap { x[($0 * d)..<(($0 + 1) * d)] } }

    /// One cell: the method's features (projected when it is fitted on shots), exact ranking of the
    /// gallery for every query, per-query metrics, their mean, bootstrap interval and subgroups.
    static func runCell(
        _ cell: Cell, prepared p: Prepared, projection: LinearProjectionSpec?, data: StudyData, recipe: Recipe,
        settings: Recipe.RetrievalSettings
    ) -> CellResult {
        guard let projection else { return evaluate(cell, prepared: p, projection: nil, shots: [], data: data, recipe: recipe, settings: settings) }
        switch drawShots(cell, prepared: p, data: data) {
        case let .failure(skip):
            return CellResult(
                cell: cell, status: "skipped", reason: skip.reason, metrics: [:], primary_ci: nil, chosen_C: nil,
                n_train: 0, n_test: p.queries.count, train_ids: [], subgroups: [])
        case let .success(shots):
            let map = WithinClassWhitening(
                fit: gather(data.features, rows: shots.map(\.row), d: data.dim), labels: shots.map(\.value), d: data.dim,
                shrinkage: projection.shrinkage, center: p.poolMean)
            return evaluate(cell, prepared: p, projection: map, shots: shots.map(\.row), data: data, recipe: recipe, settings: settings)
        }
    }

    /// Rank the gallery for every query in the method's space (`projection` applied to both
    /// when given; `shots` are the rows it was fitted on) and score the rankings.
    static func evaluate(
        _ cell: Cell, prepared p: Prepared, projection: WithinClassWhitening?, shots: [Int], data: StudyData, recipe: Recipe,
        settings: Recipe.RetrievalSettings
    ) -> CellResult {
        let d = data.dim
        var result = CellResult(
            cell: cell, status: "ok", reason: nil, metrics: [:], primary_ci: nil, chosen_C: nil,
            n_train: 0, n_test: p.queries.count, train_ids: [], subgroups: [])
        var queryX = gather(data.features, rows: p.queries, d: d)
        var galleryX = gather(data.features, rows: p.gallery, d: d)
        if let projection {
            queryX = projection.apply(queryX, d: d)
            galleryX = projection.apply(galleryX, d: d)
            result.n_train = shots.count
            result.train_ids = shots.map { data.ids[$0] }
        }
        let sets = (p.task.valueSets ?? p.task.labels.map { [$0] }).map(Set.init)
        let ranked = Retrieval.evaluate(
            queries: queryX, gallery: galleryX, dim: d,
            relevant: { q, g in settings.relevance.matches(sets[p.queries[q]], sets[p.gallery[g]]) },
            exclude: p.exclude, ks: settings.k, keep: settings.neighbours)
        let qn = Probe.normalized(queryX, d: d), gn = Probe.normalized(galleryX, d: d)
        result.retrieval = ranked.enumerated().map { q, r in
            RankedQuery(
                query: data.ids[p.queries[q]], relevant: r.relevant, neighbours: r.top.map { data.ids[p.gallery[$0]] },
                similarity: r.top.map { g in (0..<d).reduce(Float(0)) { $0 + qn[q * d + $1] * gn[g * d + $1] } },
                hits: r.top.map { settings.relevance.matches(sets[p.queries[q]], sets[p.gallery[$0]]) })
        }
        // Queries without a relevant gallery row have no defined mAP@R, recall or rank: left out.
        let scored = ranked.indices.filter { ranked[$0].relevant > 0 }
        result.n_test = scored.count
        guard !scored.isEmpty else {
            result.status = "skipped"
            result.reason = "no query has a relevant gallery row"
            return result
        }
        var perQuery: [String: [Double]] = [:]
        for name in recipe.metrics { perQuery[name] = scored.map { value(name, ranked[$0]) } }
        func mean(_ name: String, _ idx: [Int]) -> Double? {
            guard let v = perQuery[name], !idx.isEmpty else { return nil }
            return idx.reduce(0.0) { $0 + v[$1] } / Double(idx.count)
        }
        let everything = Array(scored.indices)
        for name in recipe.metrics { result.metrics[name] = mean(name, everything) }
        let patients = data.patients.map { pt in scored.map { pt[p.queries[$0]] } }
        if recipe.bootstrap > 0 {
            result.primary_ci = Bootstrap.interval(rows: scored.count, groups: patients, resamples: recipe.bootstrap, seed: UInt64(cell.seed)) {
                mean(recipe.primary_metric, $0)
            }
        }
        for (attr, g) in data.groups.sorted(by: { $0.key < $1.key }) {
            result.subgroups.append(
                SubgroupResult.analyse(
                    attribute: attr, group: scored.map { g[p.queries[$0]] }, patients: patients, resamples: recipe.bootstrap,
                    seed: UInt64(cell.seed)
                ) { mean(recipe.primary_metric, $0) })
        }
        return result
    }

    /// A retrieval metric of one query: map_at_r, mrr, precision_at_<k>, recall_at_<k>.
    static func value(_ name: String, _ q: RetrievalQuery) -> Double {
        switch name {
        case "map_at_r": return q.mapAtR
        case "mrr": return q.reciprocalRank
        default:
            if name.hasPrefix("precision_at_"), let k = Int(name.dropFirst("precision_at_".count)) { return q.precision[k] ?? .nan }
            if name.hasPrefix("recall_at_"), let k = Int(name.dropFirst("recall_at_".count)) { return q.recall[k] ?? .nan }
            return .nan
        }
    }

    /// A cell's labelled gallery images: `shots` per value of the label, drawn with the cell's
    /// seed from the training rows holding that value (one per patient, none sharing a patient
    /// with the queries); a row drawn for two values counts for both. Or why the cell is skipped.
    static func drawShots(_ cell: Cell, prepared p: Prepared, data: StudyData) -> Result<[(row: Int, value: Int)], Runner.Skip> {
        var out: [(row: Int, value: Int)] = []
        let sets = p.task.valueSets ?? p.task.labels.map { [$0] }
        for (c, name) in p.task.classes.enumerated() {
            let holds = sets.map { $0.contains(c) ? 0 : -1 }
            let drawn = FewShotSampler.sample(
                labels: holds, classes: 1, pool: p.pool, test: p.queries, patients: data.patients, k: cell.shots, seed: UInt64(cell.seed),
                stream: [Runner.streamKey(p.task.name), UInt64(cell.shots), UInt64(c)])
            switch drawn {
            case let .failure(e):
                return .failure(
                    Runner.Skip(
                        reason:
                            "value '\(name)' has \(e.available) eligible training images (one per patient, none sharing a patient with the queries); \(e.requested) shots requested"
                    ))
            case let .success(rows): out += rows.map { (row: $0, value: c) }
            }
        }
        return .success(out)
    }
}
