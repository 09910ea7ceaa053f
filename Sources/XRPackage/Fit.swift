// The model a package carries: for each task, the study's method fitted on the training rows
// (all of them, or k shots per class as in a study cell), a decision threshold chosen on
// held-out validation rows, and an evaluation on the test rows with bootstrap intervals,
// operating point, calibration and subgroups.
import Foundation
import XRTensor
import XRData
import XRProbe
import XRRecipes
import XRTrain

public struct FitOptions: Sendable {
    /// Method setting label (`logistic`, `knn-k20`, `prototype`); nil = the study's best at its
    /// largest shot count (or its only method).
    public var method: String?
    /// Examples per class, drawn as the study's cell (shots, seed) drew them; nil = all training rows.
    public var shots: Int?
    public var seed = 0
    /// Share of training patients held out for thresholds when training on all rows.
    public var validationFraction = 0.2
    /// Tuned methods: also keep the full tuned weights (LoRA merged) per task.
    public var merged = false
    public init() {}
}

/// A fitted, evaluated model ready to pack.
public struct FittedModel: Sendable {
    public var heads: [Head]
    public var evaluation: [TaskEvaluation]
    public var training: DataFingerprint
    public var method: MethodInfo
    public var dim: Int
    /// Tuned packages: the square input size the encoder was tuned at.
    public var inputSize: Int? = nil
    /// Per task, the full tuned weights (timm names, LoRA merged), when asked for.
    public var merged: [String: [String: Tensor]] = [:]
    /// What the package predicts, with its kind's manifest section.
    public var kind: PackageKind = .classification
    public var segmentation: SegmentationSpec? = nil
    public var retrieval: RetrievalSpec? = nil
    public var detection: DetectionSpec? = nil
    /// The manifest's labels when they are not the recipe's (segmentation classes, retrieval values).
    public var labels: [String]? = nil
    /// Further archive entries (retrieval: `gallery.<i>.csv`).
    public var entries: [ArchiveEntry] = []
}

public enum ModelFitter {
    /// Pick the method: the requested one, the only one, or the best mean primary metric over
    /// tasks and seeds at the largest shot count in the run's `results.jsonl`. Returns the cell
    /// label and, for probes, their spec (nil = a tuning method).
    static func chooseMethod(_ r: LoadedRecipe, runDirectory: URL, requested: String?) throws -> (String, ProbeSpec?) {
        let probes = Dictionary(uniqueKeysWithValues: methodVariants(r.recipe).map { ($0.label, $0.spec) })
        let labels = methodLabels(r.recipe)
        if let requested {
            guard labels.contains(requested) else {
                throw XRError("the run has no method '\(requested)' (it has \(labels.joined(separator: ", ")))", field: "--method")
            }
            return (requested, probes[requested])
        }
        if labels.count == 1 { return (labels[0], probes[labels[0]]) }
        let url = runDirectory.appendingPathComponent("results.jsonl")
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { return (labels[0], probes[labels[0]]) }
        let results = text.split(separator: "\n").compactMap { try? JSONDecoder().decode(CellResult.self, from: Data($0.utf8)) }
            .filter { $0.status == "ok" }
        guard let top = results.map(\.cell.shots).max() else { return (labels[0], probes[labels[0]]) }
        var best = labels[0], bestValue = -Double.infinity
        for v in labels {
            let vals = results.filter { $0.cell.method == v && $0.cell.shots == top }.compactMap { $0.metrics[r.recipe.primary_metric] }
            guard !vals.isEmpty else { continue }
            var mean = vals.reduce(0, +) / Double(vals.count)
            if ["ece", "log_loss"].contains(r.recipe.primary_metric) { mean = -mean }
            if mean > bestValue { bestValue = mean; best = v }
        }
        return (best, probes[best])
    }

    /// Per-row content hashes: image file bytes (encoder recipes) or feature rows.
    static func rowHashes(_ r: LoadedRecipe, data: StudyData) throws -> (String, [String]) {
        if r.recipe.model != nil {
            let inputs = try EncoderFeatureSource.images(r, rows: try StudyLoader.rows(r))
            return ("image files", try inputs.map { try SHA256.hexOfFile($0.url) })
        }
        let d = data.dim
        return (
            "feature rows",
            (0..<data.ids.count).map { i in
                data.features[(i * d)..<((i + 1) * d)].withUnsafeBytes { hexString(SHA256.hash(Array($0))) }
            }
        )
    }

    public static func fit(_ r: LoadedRecipe, data: StudyData, runDirectory: URL, options: FitOptions) throws -> FittedModel {
        let (label, probeSpec) = try chooseMethod(r, runDirectory: runDirectory, requested: options.method)
        let tuneSpec = probeSpec == nil ? tuneVariants(r.recipe)[label] : nil
        let tuneContext = tuneSpec == nil ? nil : try TuneContext(r, data: data)
        let d = data.dim, n = data.ids.count
        let key = data.patients ?? data.ids
        let testKeys = Set((0..<n).filter { data.isTest[$0] == true }.map { key[$0] })
        // Validation patients for all-rows training: a seeded share of the training patients.
        var validationKeys = Set<String>()
        if options.shots == nil {
            var trainKeys = Array(Set((0..<n).filter { data.isTest[$0] == false && !testKeys.contains(key[$0]) }.map { key[$0] })).sorted()
            var rng = XRRandom(seed: UInt64(options.seed), stream: [0x7A11])
            rng.shuffle(&trainKeys)
            validationKeys = Set(trainKeys.prefix(Int((Double(trainKeys.count) * options.validationFraction).rounded())))
        }
        var heads: [Head] = [], evaluation: [TaskEvaluation] = []
        var mergedWeights: [String: [String: Tensor]] = [:]
        var trainRows = Set<Int>(), validationRows = Set<Int>(), testRows = Set<Int>()
        var classCounts: [String: [[String: Int]]] = [:]
        let resamples = r.recipe.bootstrap
        // As in the run: logistic heads standardised on the training pool use every non-test row.
        let poolStandardizer = probeSpec.flatMap { Runner.poolStandardizer(data, specs: [$0]) }
        for (ti, task) in data.tasks.enumerated() {
            let K = task.classes.count
            let pool = (0..<n).filter { data.isTest[$0] == false && task.labels[$0] >= 0 && !testKeys.contains(key[$0]) }
            let test = (0..<n).filter { data.isTest[$0] == true && task.labels[$0] >= 0 }
            var train: [Int], validation: [Int]
            if let k = options.shots {
                let taskHash = SHA256.hash(Array(task.name.utf8)).prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                switch FewShotSampler.sample(
                    labels: task.labels, classes: K, pool: pool, test: test, patients: data.patients,
                    k: k, seed: UInt64(options.seed), stream: [taskHash, UInt64(k)])
                {
                case let .failure(e):
                    throw XRError(
                        "task '\(task.name)': class '\(task.classes[e.classIndex])' has \(e.available) eligible training examples; \(k) shots requested",
                        field: "--shots", hint: "choose fewer shots, or train on all rows (leave --shots out)")
                case let .success(s): train = s
                }
                let used = Set(train.map { key[$0] })
                validation = pool.filter { !used.contains(key[$0]) }
            } else {
                train = pool.filter { !validationKeys.contains(key[$0]) }
                validation = pool.filter { validationKeys.contains(key[$0]) }
            }
            for c in 0..<K where !train.contains(where: { task.labels[$0] == c }) {
                throw XRError("task '\(task.name)': no training row of class '\(task.classes[c])'", field: "data.labels")
            }
            guard Set(test.map { task.labels[$0] }).count == K else {
                throw XRError("task '\(task.name)': the test set does not contain every class, so the model cannot be evaluated", field: "data.split_column")
            }
            trainRows.formUnion(train); validationRows.formUnion(validation); testRows.formUnion(test)
            func counts(_ rows: [Int]) -> [String: Int] {
                var c: [String: Int] = [:]
                for i in rows { c[task.classes[task.labels[i]], default: 0] += 1 }
                return c
            }
            classCounts[task.name] = [counts(train), counts(validation), counts(test)]

            // Fit.
            let prefix = "heads.\(ti)."
            var info = HeadInfo(
                task: task.name, classes: task.classes, kind: "logistic", tensors: prefix, k: nil, temperature: nil,
                chosen_C: nil, threshold: nil, threshold_note: "most probable class", n_train: train.count, n_validation: validation.count)
            var head: Head
            let validationProbs: [[Double]], testProbs: [[Double]]
            if let spec = probeSpec {
                let xtr = train.flatMap { data.features[($0 * d)..<(($0 + 1) * d)] }, ytr = train.map { task.labels[$0] }
                var tensors: [String: Tensor] = [:]
                switch spec {
                case .logistic:
                    let (m, c) = Probe.fitLogistic(
                        spec, train: xtr, labels: ytr, d: d, classes: K,
                        pool: poolStandardizer)
                    info.chosen_C = c
                    tensors["weight"] = Tensor(shape: [m.bias.count, d], scalars: m.weights.map(Float.init))
                    tensors["bias"] = Tensor(shape: [m.bias.count], scalars: m.bias.map(Float.init))
                case let .knn(k, t):
                    info.kind = "knn"; info.k = k; info.temperature = t
                    tensors["support"] = Tensor(shape: [train.count, d], scalars: xtr)
                    tensors["support_labels"] = Tensor(shape: [train.count], scalars: ytr.map(Float.init))
                case let .prototype(t):
                    info.kind = "prototype"; info.temperature = t
                    tensors["support"] = Tensor(shape: [train.count, d], scalars: xtr)
                    tensors["support_labels"] = Tensor(shape: [train.count], scalars: ytr.map(Float.init))
                }
                head = Head(info: info, tensors: tensors)
                let xv = validation.flatMap { data.features[($0 * d)..<(($0 + 1) * d)] }
                validationProbs = head.probabilities(xv, n: validation.count, d: d)
                let xt = test.flatMap { data.features[($0 * d)..<(($0 + 1) * d)] }
                testProbs = head.probabilities(xt, n: test.count, d: d)
            } else if let spec = tuneSpec, let ctx = tuneContext {
                // Tune the encoder on the training rows (early stopping on the validation rows).
                info.kind = label
                let model = try ctx.model(classes: K, r, headHidden: spec.headHidden)
                try model.setTrainable(spec.set, seed: UInt64(options.seed))
                let taskHash = SHA256.hash(Array(task.name.utf8)).prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                let tuner = Tuner(model: model, options: spec.options, seed: UInt64(options.seed) &* 0x9E37_79B9 ^ taskHash, identity: ["use": "pack"])
                let tdata = ctx.data(task)
                _ = try tuner.run(train: train, validation: validation, data: tdata, checkpoint: nil)
                var tensors: [String: Tensor] = [:]
                for p in model.trainableParameters { tensors[p.name] = p.tensor }
                head = Head(info: info, tensors: tensors)
                validationProbs = try tuner.predict(validation, tdata)
                testProbs = try tuner.predict(test, tdata)
                if options.merged {
                    var merged = Dictionary(uniqueKeysWithValues: model.parameters.filter { !$0.name.contains("lora_") }.map { ($0.name, $0.tensor) })
                    for (k, v) in model.mergedWeights() { merged[k] = v }
                    mergedWeights[task.name] = merged
                }
            } else {
                throw XRError("method '\(label)' cannot be packaged", field: "--method")
            }

            // Threshold on validation (binary tasks): Youden's J.
            if K == 2 {
                let (t, note) = Thresholds.youden(validationProbs.map { $0[1] }, validation.map { task.labels[$0] == 1 })
                head.info.threshold = t
                head.info.threshold_note = note
            }
            heads.append(head)
            evaluation.append(
                evaluate(
                    probabilities: testProbs, threshold: head.info.threshold, task: task, rows: test, data: data,
                    recipe: r.recipe, resamples: resamples, seed: UInt64(options.seed)))
        }
        let (content, hashes) = try rowHashes(r, data: data)
        func split(_ rows: Set<Int>, _ which: Int) -> DataFingerprint.Split {
            let idx = rows.sorted()
            let joined = idx.map { hashes[$0] }.sorted().joined(separator: "\n")
            return DataFingerprint.Split(
                rows: idx.count, patients: data.patients.map { p in Set(idx.map { p[$0] }).count },
                classes: classCounts.mapValues { $0[which] },
                content_sha256: SHA256.hex(Data(joined.utf8)))
        }
        let fp = DataFingerprint(content: content, train: split(trainRows, 0), validation: split(validationRows, 1), test: split(testRows, 2))
        let method = MethodInfo(
            name: label, spec: probeSpec?.description ?? tuneSpec?.description ?? label, shots: options.shots, seed: options.seed,
            validation_fraction: options.shots == nil ? options.validationFraction : nil,
            threshold_rule: "Youden's J (sensitivity + specificity − 1) maximised on the validation rows")
        return FittedModel(
            heads: heads, evaluation: evaluation, training: fp, method: method, dim: d,
            inputSize: tuneContext?.size, merged: mergedWeights)
    }

    static func evaluate(
        probabilities p: [[Double]], threshold: Double?, task: StudyTask, rows test: [Int], data: StudyData, recipe: Recipe,
        resamples: Int, seed: UInt64
    ) -> TaskEvaluation {
        let K = task.classes.count
        let y = test.map { task.labels[$0] }
        let patients = data.patients.map { pp in test.map { pp[$0] } }
        func estimate(_ f: @escaping ([Int]) -> Double?) -> Estimate? {
            guard let v = f(Array(0..<test.count)), v.isFinite else { return nil }
            let ci = Bootstrap.interval(rows: test.count, groups: patients, resamples: resamples, seed: seed, metric: f)
            return Estimate(value: v, low: ci?.low, high: ci?.high)
        }
        var metrics: [String: Estimate] = [:]
        var names = recipe.metrics
        if !names.contains(recipe.primary_metric) { names.append(recipe.primary_metric) }
        for m in names {
            if let e = estimate({ idx in Metrics.named(m, probabilities: idx.map { p[$0] }, truth: idx.map { y[$0] }, classes: K) }) { metrics[m] = e }
        }
        var op: TaskEvaluation.OperatingPoint? = nil
        if K == 2, let t = threshold {
            let dec = p.map { $0[1] >= t ? 1 : 0 }
            func rate(_ num: @escaping (Int) -> Bool, _ den: @escaping (Int) -> Bool) -> Estimate? {
                estimate { idx in
                    let dn = idx.filter(den).count
                    return dn == 0 ? nil : Double(idx.filter { den($0) && num($0) }.count) / Double(dn)
                }
            }
            op = .init(
                threshold: t,
                sensitivity: rate({ dec[$0] == 1 }, { y[$0] == 1 }), specificity: rate({ dec[$0] == 0 }, { y[$0] == 0 }),
                ppv: rate({ y[$0] == 1 }, { dec[$0] == 1 }), npv: rate({ y[$0] == 0 }, { dec[$0] == 0 }))
        }
        var bins: [TaskEvaluation.CalibrationBin] = []
        for b in 0..<10 {
            let lo = Double(b) / 10, hi = Double(b + 1) / 10
            var conf: [Double] = [], hit: [Double] = []
            for (row, truth) in zip(p, y) {
                guard let top = row.indices.max(by: { row[$0] < row[$1] }) else { continue }
                let c = row[top]
                if (c > lo || (b == 0 && c >= lo)) && c <= hi { conf.append(c); hit.append(top == truth ? 1 : 0) }
            }
            bins.append(
                .init(
                    low: lo, high: hi, count: conf.count,
                    mean_confidence: conf.isEmpty ? nil : conf.reduce(0, +) / Double(conf.count),
                    accuracy: hit.isEmpty ? nil : hit.reduce(0, +) / Double(hit.count)))
        }
        var subgroups: [SubgroupResult] = []
        for (attr, g) in data.groups.sorted(by: { $0.key < $1.key }) {
            subgroups.append(
                SubgroupResult.analyse(attribute: attr, group: test.map { g[$0] }, patients: patients, resamples: resamples, seed: seed) { idx in
                    Metrics.named(recipe.primary_metric, probabilities: idx.map { p[$0] }, truth: idx.map { y[$0] }, classes: K)
                })
        }
        return TaskEvaluation(
            task: task.name, n_test: test.count, bootstrap_resamples: resamples, metrics: metrics,
            operating_point: op, calibration: bins, subgroups: subgroups)
    }
}

public enum Thresholds {
    /// The threshold t (decide positive when score ≥ t) maximising sensitivity + specificity − 1
    /// over the distinct scores; ties go to the higher threshold. Without both classes, 0.5.
    public static func youden(_ scores: [Double], _ positive: [Bool]) -> (Double, String) {
        let P = positive.filter { $0 }.count, N = positive.count - P
        guard P > 0, N > 0 else {
            return (0.5, "0.5 by default: the validation rows (\(positive.count)) do not contain both classes")
        }
        let order = scores.indices.sorted { scores[$0] > scores[$1] }
        var tp = 0, fp = 0, best = -Double.infinity, bestT = 0.5
        var i = 0
        while i < order.count {
            let s = scores[order[i]]
            while i < order.count && scores[order[i]] == s {
                if positive[order[i]] { tp += 1 } else { fp += 1 }
                i += 1
            }
            let j = Double(tp) / Double(P) - Double(fp) / Double(N)
            if j > best { best = j; bestT = s }
        }
        return (bestT, String(format: "Youden's J = %.3f on %d validation rows (%d positive)", best, positive.count, P))
    }
}
