// Cells of tuning methods (lora, adapter, last_k, bitfit, full): the same shot draws, test set,
// metrics, bootstrap and subgroups as the probes, but the encoder itself is tuned on the shots'
// images. Cells run one after another, each using every core; each keeps a checkpoint per epoch
// (`cells/<id>.ckpt.safetensors`) that a rerun resumes from, removed when the cell is written.
import Foundation
import XRTensor
import XRKernels
import XRData
import XRModels
import XRProbe
import XRPipeline
import XRTrain

/// A tuning method setting, resolved from the recipe.
public struct TuneSpec: Sendable {
    public var set: TrainableSet
    public var options: TuneOptions
    public var validationPerClass: Int
    /// MLP head hidden width (nil = linear head).
    public var headHidden: Int?

    /// A tuning method's setting (a probe method gives the head alone, with the default training).
    public init(_ m: Recipe.Method) {
        let (set, d) = m.tuning ?? (.head, TrainingSpec())
        self.set = set
        var o = TuneOptions()
        o.epochs = d.epochs; o.lr = d.lr; o.batchSize = d.batchSize; o.accumulate = d.accumulate
        o.weightDecay = d.weightDecay; o.warmup = d.warmup; o.labelSmoothing = d.labelSmoothing; o.clip = d.clip
        o.layerDecay = d.layerDecay; o.balanced = d.balanced; o.patience = d.patience; o.recompute = d.recompute
        if d.augment {
            var a = Augmentation()
            a.horizontalFlip = d.hflip
            o.augment = a
        } else {
            o.augment = nil
        }
        options = o
        validationPerClass = d.validation
        headHidden = d.headHidden
    }
}

extension TuneSpec: CustomStringConvertible {
    /// What the method tunes in the encoder.
    var tunedPart: String {
        let what: String
        switch set {
        case let .lora(r, a, t, d): what = "LoRA r=\(r), alpha=\(fmtNumber(a))\(d > 0 ? ", dropout \(fmtNumber(d))" : "") on \(t.joined(separator: ", "))"
        case let .adapter(d, p, sc): what = "\(p ? "parallel" : "sequential") bottleneck adapters, width \(d)\(p ? ", scale \(fmtNumber(sc))" : "")"
        case let .lastBlocks(k): what = "last \(k) blocks"
        case .bitFit: what = "BitFit (biases)"
        case .full: what = "all parameters"
        case .head: what = "head only"
        }
        return what
    }

    /// The method tuning the encoder with a task's linear decoder as its head (segmentation:
    /// `head` "the linear decoder", detection: "the box head"), validation images `validation`.
    func decoderHeaded(_ head: String, validation: String) -> String {
        let o = options
        return "\(tunedPart) tuned with \(head) (first fitted on frozen tokens); \(o.epochs) epochs, AdamW lr \(fmtNumber(o.lr)), batch \(o.batchSize), "
            + "wd \(fmtNumber(o.weightDecay)), the epoch kept by the loss on \(validation)"
    }

    public var description: String {
        let what = tunedPart
        let o = options
        return
            "\(what) + \(headHidden.map { "MLP head (\($0))" } ?? "head"); \(o.epochs) epochs, AdamW lr \(fmtNumber(o.lr)), batch \(o.batchSize)\(o.accumulate > 1 ? "×\(o.accumulate)" : ""), "
            + "wd \(fmtNumber(o.weightDecay))\(o.layerDecay != 1 ? ", layer decay \(fmtNumber(o.layerDecay))" : ""), "
            + "\(o.augment == nil ? "no augmentation" : (o.augment!.horizontalFlip ? "augmentation with flips" : "augmentation")), "
            + "early stopping on \(validationPerClass)/class validation"
    }
}

func fmtNumber(_ x: Double) -> String { x == x.rounded() && abs(x) < 1e9 ? String(Int(x)) : String(x) }

/// Every method setting of a recipe with a description, in recipe order (cell labels).
public func methodSettings(_ recipe: Recipe) -> [(label: String, description: String)] {
    if recipe.isReport { return recipe.methods.map { ($0.name, ReportSweep.encoderSpec($0).description) } }
    if recipe.isRetrieval {
        return recipe.methods.map { m in
            switch m {
            case let .linearProjection(s):
                return (m.name, "cosine after within-class whitening fitted on the shots (shrinkage \(s.shrinkage.map { fmtNumber($0) } ?? "Ledoit–Wolf"))")
            default: return (m.name, "cosine similarity on the representation (no training)")
            }
        }
    }
    if recipe.isSegmentation {
        return recipe.methods.map { m in
            switch m {
            case let .linearDecoder(s):
                return (
                    m.name,
                    "linear decoder on patch tokens (\(s.epochs) epochs, lr \(fmtNumber(s.lr)), weight decay \(fmtNumber(s.weightDecay)), batch \(s.batchSize))"
                )
            case let .knnPatches(s): return (m.name, "label transfer from the \(s.k) nearest labelled patches (T \(fmtNumber(s.temperature)))")
            case _ where m.isTuning:
                let t = TuneSpec(m)
                return (m.name, t.decoderHeaded("the linear decoder", validation: "\(t.validationPerClass) held-out annotated images"))
            default: return (m.name, m.name)
            }
        }
    }
    if recipe.isDetection {
        return recipe.methods.map { m in
            switch m {
            case let .boxHead(s):
                return (
                    m.name,
                    "box head on patch tokens (\(s.epochs) epochs, lr \(fmtNumber(s.lr)), weight decay \(fmtNumber(s.weightDecay)), batch \(s.batchSize), "
                        + "positive weight \(fmtNumber(s.positiveWeight))); boxes where the logit > \(fmtNumber(s.threshold)), scored by their \(s.scoring.rawValue)"
                )
            case let .knnPatches(s):
                return (m.name, "box-share transfer from the \(s.k) nearest labelled patches (T \(fmtNumber(s.temperature))); boxes where the share > 0.5")
            case _ where m.isTuning:
                let t = TuneSpec(m)
                return (
                    m.name,
                    t.decoderHeaded("the box head", validation: "\(t.validationPerClass) held-out images with a box and as many without")
                        + "; boxes as box_head reads them"
                )
            default: return (m.name, m.name)
            }
        }
    }
    let probes = Dictionary(uniqueKeysWithValues: methodVariants(recipe).map { ($0.label, $0.spec.description) })
    let tunes = tuneVariants(recipe)
    return methodLabels(recipe).map { ($0, probes[$0] ?? tunes[$0]?.description ?? $0) }
}

/// Tuning method settings of a recipe by cell label.
public func tuneVariants(_ recipe: Recipe) -> [String: TuneSpec] {
    Dictionary(uniqueKeysWithValues: recipe.methods.filter(\.isTuning).map { ($0.name, TuneSpec($0)) })
}

/// Preprocessed images by manifest row, decoded once per run.
final class PixelCache: @unchecked Sendable {
    let urls: [URL]
    let preprocessing: Preprocessing
    private var store: [Int: [Float]] = [:]
    private let lock = NSLock()
    init(urls: [URL], preprocessing: Preprocessing) { self.urls = urls; self.preprocessing = preprocessing }
    func pixels(_ i: Int) throws -> [Float] {
        lock.lock()
        if let p = store[i] { lock.unlock(); return p }
        lock.unlock()
        let p = try preprocessing.apply(contentsOf: urls[i])
        lock.lock(); store[i] = p; lock.unlock()
        return p
    }
}

/// What every tuning run of a recipe shares: the loaded encoder, the preprocessing's square
/// size, and the preprocessed images by manifest row.
public struct TuneContext {
    public let encoder: Encoder
    public let size: Int
    let cache: PixelCache

    public init(_ r: LoadedRecipe, data: StudyData) throws {
        // Tuning starts from the fp32 weights, whatever `model.precision` says for frozen features.
        encoder = try EncoderFeatureSource().encoder(r, precision: .fp32)
        let pre = encoder.preprocessing
        guard let S = pre.cropHeight ?? pre.resizeHeight, (pre.cropWidth ?? pre.resizeWidth) == S else {
            throw XRError(
                "tuning needs a fixed square input size, but the preprocessing (\(pre)) gives images of varying shape",
                file: r.file.path, field: "model.preprocessing", hint: "set model.preprocessing.crop (e.g. the model's native size)")
        }
        size = S
        let images = try EncoderFeatureSource.images(r, rows: try StudyLoader.rows(r))
        guard images.map(\.id) == data.ids else { throw XRError("image list and study rows disagree", file: r.file.path, field: "data.manifest") }
        cache = PixelCache(urls: images.map(\.url), preprocessing: pre)
    }

    public func model(classes K: Int, _ r: LoadedRecipe, headHidden: Int? = nil) throws -> TrainableViT {
        try TrainableViT(from: encoder.loaded, size: size, classes: K, headHidden: headHidden, source: r.recipe.model?.path ?? "model")
    }

    public func data(_ task: StudyTask) -> TuneData {
        let cache = self.cache
        return TuneData(
            labels: task.labels.map { max($0, 0) }, classes: task.classes.count, size: size,
            mean: encoder.preprocessing.mean, std: encoder.preprocessing.std
        ) { i in try cache.pixels(i) }
    }

    /// Up to `perClass` validation rows per class from `pool`, patients disjoint from `used` and the test set.
    static func validation(pool: [Int], task: StudyTask, keys: [String], used: Set<String>, testKeys: Set<String>, perClass: Int, rng: inout XRRandom) -> [Int]
    {
        var rest = pool.filter { !used.contains(keys[$0]) && !testKeys.contains(keys[$0]) }
        rng.shuffle(&rest)
        var out: [Int] = [], count = [Int](repeating: 0, count: task.classes.count), seen = Set<String>()
        for i in rest where count[task.labels[i]] < perClass && !seen.contains(keys[i]) {
            out.append(i); count[task.labels[i]] += 1; seen.insert(keys[i])
        }
        return out
    }
}

enum TuneCells {
    static func run(_ cells: [Cell], recipe r: LoadedRecipe, data: StudyData, tests: [String: TestSet], cellsDirectory: URL, quiet: Bool) throws {
        let specs = tuneVariants(r.recipe)
        let ctx = try TuneContext(r, data: data)
        let encoderJSON = ctx.encoder.weightsHash
        // A cell's epoch checkpoint goes once its result is written.
        let dropCheckpoint = { (cell: Cell, _: CellResult) -> Void in
            try? FileManager.default.removeItem(at: cellsDirectory.appendingPathComponent(cell.id + ".ckpt.safetensors"))
        }
        try CellRunner(cellsDirectory: cellsDirectory, quiet: quiet).run(cells, label: "tune", written: dropCheckpoint) { cell in
            guard let spec = specs[cell.method], let task = data.tasks.first(where: { $0.name == cell.task }), let test = tests[cell.task] else { return nil }
            let K = task.classes.count
            var result = CellResult(
                cell: cell, status: "ok", reason: nil, metrics: [:], primary_ci: nil, chosen_C: nil,
                n_train: 0, n_test: test.rows.count, train_ids: [], subgroups: [])
            let taskHash = Runner.streamKey(task.name)
            switch Runner.drawShots(cell, task: task, test: test, data: data) {
            case let .failure(skip):
                result.status = "skipped"
                result.reason = skip.reason
                return result
            case let .success(shots):
                let key = data.patients ?? data.ids
                var vr = XRRandom(seed: UInt64(cell.seed), stream: [taskHash, UInt64(cell.shots), 0x7A11])
                let validation = TuneContext.validation(
                    pool: test.pool, task: task, keys: key, used: Set(shots.map { key[$0] }),
                    testKeys: Set(test.rows.map { key[$0] }), perClass: spec.validationPerClass, rng: &vr)
                let model = try ctx.model(classes: K, r, headHidden: spec.headHidden)
                try model.setTrainable(spec.set, seed: UInt64(cell.seed))
                let identity = [
                    "recipe": String(r.fingerprint.prefix(16)), "encoder": String(encoderJSON.prefix(16)), "cell": cell.id, "method": spec.description,
                    "training rows": "\(shots.count) (\(SHA256.hex(Data("\(shots)".utf8)).prefix(12)))",
                    "validation rows": "\(validation.count) (\(SHA256.hex(Data("\(validation)".utf8)).prefix(12)))"
                ]
                let tuner = Tuner(model: model, options: spec.options, seed: UInt64(cell.seed) &* 0x9E37_79B9 ^ taskHash, identity: identity)
                if !quiet {
                    tuner.progress = { rec in
                        let v = rec.validationLoss.map { String(format: ", validation %.4f", $0) } ?? ""
                        FileHandle.standardError.write(
                            Data("  \(cell.id): epoch \(rec.epoch)/\(spec.options.epochs), loss \(String(format: "%.4f", rec.trainLoss))\(v)\n".utf8))
                    }
                }
                let tdata = ctx.data(task)
                let ckpt = cellsDirectory.appendingPathComponent(cell.id + ".ckpt.safetensors")
                let trained = try tuner.run(train: shots, validation: validation, data: tdata, checkpoint: ckpt)
                let probs = try tuner.predict(test.rows, tdata)
                result.n_train = shots.count
                result.train_ids = shots.map { data.ids[$0] }
                result.training = TrainingSummary(
                    epochs: trained.history.count, best_epoch: trained.bestEpoch, stopped_early: trained.stoppedEarly,
                    n_validation: validation.count, trainable_parameters: model.trainableCount,
                    train_loss: trained.history.map(\.trainLoss),
                    validation_loss: validation.isEmpty ? nil : trained.history.compactMap(\.validationLoss))
                Runner.score(
                    &result, probabilities: probs, truth: test.rows.map { task.labels[$0] }, test: test.rows, classes: K,
                    data: data, recipe: r.recipe, seed: cell.seed)
                return result
            }
        }
    }
}
