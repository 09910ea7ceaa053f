// The models of segmentation, detection and retrieval packages: the run's linear decoder, box
// head, or gallery (and projection), fitted and evaluated by the study's own code
// (`TaskPackaging`), as head tensors, a manifest section and, for retrieval, the gallery's ids
// and labels.
import Foundation
import XRTensor
import XRData
import XRProbe
import XRHeads
import XRRecipes

/// A retrieval head's gallery list, `gallery.<i>.csv`: one row per `heads.<i>.gallery` row, in
/// order, with the image id and its label values (`|`-separated).
public struct GalleryList: Sendable, Equatable {
    public var ids: [String]
    public var labels: [[String]]

    /// The entry name of head `i`'s list.
    public static func entry(_ i: Int) -> String { "gallery.\(i).csv" }

    public init(ids: [String], labels: [[String]]) {
        self.ids = ids
        self.labels = labels
    }

    /// Parse a list written by `encoded()`; `rows` is the gallery's row count.
    public init(_ data: Data, rows: Int, file: String) throws {
        guard let text = String(data: data, encoding: .utf8) else { throw XRError("not UTF-8 text", file: file) }
        let t = try CSVTable(string: text, source: file)
        guard t.header == ["id", "labels"] else { throw XRError("columns are \(t.header), expected id, labels", file: file, field: "header") }
        guard t.rows.count == rows else { throw XRError("\(t.rows.count) rows for a gallery of \(rows)", file: file, field: "rows") }
        ids = t.rows.map { $0[0] }
        labels = t.rows.map { $0[1].split(separator: "|").map(String.init) }
    }

    public func encoded() -> Data {
        Data(CSVTable(header: ["id", "labels"], rows: zip(ids, labels).map { [$0, $1.joined(separator: "|")] }).encoded().utf8)
    }
}

extension ModelFitter {
    /// Training / test fingerprints of a package whose heads were fitted on `train` and tested on
    /// `test` (no validation rows), with per-task class counts.
    static func fingerprint(_ r: LoadedRecipe, data: StudyData, train: Set<Int>, test: Set<Int>, counts: [String: [[String: Int]]]) throws -> DataFingerprint {
        let (content, hashes) = try rowHashes(r, data: data)
        func split(_ rows: Set<Int>, _ which: Int) -> DataFingerprint.Split {
            let idx = rows.sorted()
            return DataFingerprint.Split(
                rows: idx.count, patients: data.patients.map { p in Set(idx.map { p[$0] }).count }, classes: counts.mapValues { $0[which] },
                content_sha256: SHA256.hex(Data(idx.map { hashes[$0] }.sorted().joined(separator: "\n").utf8)))
        }
        return DataFingerprint(content: content, train: split(train, 0), validation: split([], 1), test: split(test, 2))
    }

    /// The evaluation of one task from a cell's result: every metric's value, the primary
    /// metric's bootstrap interval (and the others' when `interval` computes them), subgroups.
    static func evaluation(
        _ result: CellResult, task: String, recipe: Recipe, interval: ((String) -> Interval?)? = nil
    ) -> TaskEvaluation {
        var metrics: [String: Estimate] = [:]
        for (name, v) in result.metrics where v.isFinite {
            let ci = name == recipe.primary_metric ? result.primary_ci : interval?(name)
            metrics[name] = Estimate(value: v, low: ci?.low, high: ci?.high)
        }
        return TaskEvaluation(
            task: task, n_test: result.n_test, bootstrap_resamples: recipe.bootstrap, metrics: metrics, operating_point: nil, calibration: [],
            subgroups: result.subgroups)
    }

    /// The recipe's settings of method `name` as compact JSON (the name when it has none).
    static func methodSpec(_ recipe: Recipe, _ name: String) -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let m = recipe.methods.first(where: { $0.name == name }), let data = try? e.encode(m) else { return name }
        return String(decoding: data, as: UTF8.self)
    }

    /// A segmentation package's model: the run's linear decoder (weights (R, C) and bias (R)),
    /// and for a tuning method the tuned encoder parameters beside them.
    static func fitSegmentation(_ r: LoadedRecipe, data: StudyData, options o: FitOptions) throws -> FittedModel {
        let fit = try TaskPackaging.segmentation(r, data: data, method: o.method, shots: o.shots, seed: o.seed)
        let dec = fit.decoder, task = data.tasks[0]
        let info = HeadInfo(
            task: task.name, classes: task.classes, kind: fit.method, tensors: "heads.0.", k: nil, temperature: nil, chosen_C: nil,
            threshold: nil, threshold_note: dec.rows == 1 ? "foreground where the logit is above 0" : "the class of the largest logit",
            n_train: fit.trainRows.count, n_validation: 0)
        var tensors = fit.encoder
        tensors["weight"] = Tensor(shape: [dec.rows, dec.channels], scalars: dec.weight)
        tensors["bias"] = Tensor(shape: [dec.rows], scalars: dec.bias)
        let head = Head(info: info, tensors: tensors)
        let scores = fit.result.segmentation ?? []
        let patients = data.patients.map { pt in fit.testRows.map { pt[$0] } }
        let evaluation = evaluation(fit.result, task: task.name, recipe: r.recipe) { name in
            r.recipe.bootstrap > 0
                ? Bootstrap.interval(rows: scores.count, groups: patients, resamples: r.recipe.bootstrap, seed: UInt64(o.seed)) {
                    TaskPackaging.segmentationMetric(name, scores, $0)
                } : nil
        }
        let counts = [task.name: [["annotated": fit.trainRows.count], [:], ["annotated": fit.testRows.count]]]
        let method = MethodInfo(
            name: fit.method, spec: methodSpec(r.recipe, fit.method), shots: o.shots, seed: o.seed, validation_fraction: nil,
            threshold_rule: "none: each pixel takes the class of the largest upsampled logit (two classes: foreground above 0)")
        var m = FittedModel(
            heads: [head], evaluation: [evaluation],
            training: try fingerprint(r, data: data, train: Set(fit.trainRows), test: Set(fit.testRows), counts: counts),
            method: method, dim: dec.channels)
        m.kind = .segmentation
        m.inputSize = fit.inputSize
        m.labels = task.classes
        m.segmentation = SegmentationSpec(
            input_height: dec.grid.inputHeight, input_width: dec.grid.inputWidth, grid_height: dec.grid.gridHeight, grid_width: dec.grid.gridWidth,
            mask_classes: r.recipe.data.mask_classes)
        return m
    }

    /// A detection package's model: the run's box head (its decoder's weights (1, C) and bias
    /// (1)), its threshold and component scoring, evaluated as the study cell is; for a tuning
    /// method the tuned encoder parameters beside them.
    static func fitDetection(_ r: LoadedRecipe, data: StudyData, options o: FitOptions) throws -> FittedModel {
        let fit = try TaskPackaging.detection(r, data: data, method: o.method, shots: o.shots, seed: o.seed)
        let dec = fit.head.decoder, task = fit.task
        let info = HeadInfo(
            task: task.name, classes: task.classes, kind: fit.method, tensors: "heads.0.", k: nil, temperature: nil, chosen_C: nil,
            threshold: nil, threshold_note: "boxes where the heatmap logit is above detection.threshold", n_train: fit.trainRows.count,
            n_validation: 0)
        var tensors = fit.encoder
        tensors["weight"] = Tensor(shape: [dec.rows, dec.channels], scalars: dec.weight)
        tensors["bias"] = Tensor(shape: [dec.rows], scalars: dec.bias)
        let head = Head(info: info, tensors: tensors)
        let evaluation = evaluation(fit.result, task: task.name, recipe: r.recipe) { fit.result.metric_ci?[$0] }
        func tally(_ rows: [Int]) -> [String: Int] {
            var c: [String: Int] = [:]
            for row in rows where task.labels[row] >= 0 { c[task.classes[task.labels[row]], default: 0] += 1 }
            return c
        }
        let counts = [task.name: [tally(fit.trainRows), [:], tally(fit.testRows)]]
        let method = MethodInfo(
            name: fit.method, spec: methodSpec(r.recipe, fit.method), shots: o.shots, seed: o.seed, validation_fraction: nil,
            threshold_rule:
                "none: boxes are the components of the heatmap above logit \(Double(fit.head.threshold)), scored by their \(fit.head.scoring.rawValue) logit")
        var m = FittedModel(
            heads: [head], evaluation: [evaluation],
            training: try fingerprint(r, data: data, train: Set(fit.trainRows), test: Set(fit.testRows), counts: counts),
            method: method, dim: dec.channels)
        m.kind = .detection
        m.inputSize = fit.inputSize
        m.labels = task.classes
        m.detection = DetectionSpec(
            input_height: dec.grid.inputHeight, input_width: dec.grid.inputWidth, grid_height: dec.grid.gridHeight, grid_width: dec.grid.gridWidth,
            threshold: Double(fit.head.threshold), scoring: fit.head.scoring, finding: task.name,
            box_labels: r.recipe.data.labels.isEmpty ? nil : r.recipe.data.labels)
        return m
    }

    /// A retrieval package's model: per task, the gallery's normalised features in the method's
    /// space, its ids and labels, and the projection when the method fits one.
    static func fitRetrieval(_ r: LoadedRecipe, data: StudyData, options o: FitOptions) throws -> FittedModel {
        let fits = try TaskPackaging.retrieval(r, data: data, method: o.method, shots: o.shots, seed: o.seed)
        let settings = r.recipe.retrieval ?? Recipe.RetrievalSettings()
        let d = data.dim
        var heads: [Head] = [], evaluation: [TaskEvaluation] = [], lists: [ArchiveEntry] = []
        var train = Set<Int>(), test = Set<Int>(), counts: [String: [[String: Int]]] = [:]
        for (i, f) in fits.enumerated() {
            let sets = f.task.valueSets ?? f.task.labels.map { [$0] }
            var tensors = ["gallery": Tensor(shape: [f.galleryRows.count, d], scalars: f.gallery)]
            if let w = f.projection {
                tensors["projection.mean"] = Tensor(shape: [d], scalars: w.mean.map(Float.init))
                if !w.factors.isEmpty {
                    tensors["projection.directions"] = Tensor(shape: [w.factors.count, d], scalars: w.directions.map(Float.init))
                    tensors["projection.factors"] = Tensor(shape: [w.factors.count], scalars: w.factors.map(Float.init))
                }
            }
            let info = HeadInfo(
                task: f.task.name, classes: f.task.classes, kind: f.method, tensors: "heads.\(i).", k: nil, temperature: nil, chosen_C: nil,
                threshold: nil, threshold_note: "none: gallery images ranked by cosine similarity", n_train: f.galleryRows.count, n_validation: 0)
            heads.append(Head(info: info, tensors: tensors))
            evaluation.append(Self.evaluation(f.result, task: f.task.name, recipe: r.recipe))
            lists.append(
                ArchiveEntry(
                    name: GalleryList.entry(i),
                    data: GalleryList(ids: f.galleryRows.map { data.ids[$0] }, labels: f.galleryRows.map { sets[$0].map { f.task.classes[$0] } }).encoded()))
            train.formUnion(f.galleryRows)
            train.formUnion(f.shotRows)
            test.formUnion(f.queryRows)
            func tally(_ rows: [Int]) -> [String: Int] {
                var c: [String: Int] = [:]
                for row in rows { for v in sets[row] { c[f.task.classes[v], default: 0] += 1 } }
                return c
            }
            counts[f.task.name] = [tally(f.galleryRows), [:], tally(f.queryRows)]
        }
        let name = fits[0].method
        let method = MethodInfo(
            name: name, spec: methodSpec(r.recipe, name), shots: o.shots, seed: o.seed,
            validation_fraction: nil, threshold_rule: "none: gallery images ranked by cosine similarity")
        var m = FittedModel(
            heads: heads, evaluation: evaluation, training: try fingerprint(r, data: data, train: train, test: test, counts: counts), method: method,
            dim: d)
        m.kind = .retrieval
        m.labels = Array(Set(fits.flatMap { $0.task.classes })).sorted()
        m.retrieval = RetrievalSpec(neighbours: settings.neighbours, relevance: settings.relevance.rawValue, gallery: settings.gallery.rawValue)
        m.entries = lists
        return m
    }
}
