// The training loop: epochs of (class-balanced) batches with augmentation, gradient
// accumulation, warmup + cosine, layer-wise learning-rate decay, clipping, validation with
// early stopping, and a checkpoint after every epoch that a rerun resumes from to the same
// result. Everything random derives from (seed, epoch, position), so resuming changes nothing.
import Foundation
import XRTensor
import XRKernels

public struct TuneOptions: Codable, Sendable, Equatable {
    public var epochs = 30
    public var lr = 1e-3
    public var batchSize = 8
    /// Micro-batches per optimiser step.
    public var accumulate = 1
    public var weightDecay = 0.05
    /// Share of all steps spent in linear warmup.
    public var warmup = 0.1
    public var labelSmoothing = 0.1
    public var clip: Double? = 1.0
    /// Layer-wise learning-rate decay (1 = none): block i gets decay^(depth − i), the embedding decay^(depth + 1).
    public var layerDecay = 1.0
    /// Draw batches class-balanced (each class equally likely) instead of a plain shuffle.
    public var balanced = true
    public var augment: Augmentation? = Augmentation()
    /// Epochs without a validation-loss improvement before stopping (nil = never stop early).
    public var patience: Int? = 10
    /// Recompute activations in the backward instead of keeping them (less memory, more time).
    public var recompute = false
    public init() {}
}

/// One epoch's record.
public struct EpochRecord: Codable, Sendable, Equatable {
    public var epoch: Int
    public var trainLoss: Double
    public var validationLoss: Double?
    public var lr: Double
    public init(epoch: Int, trainLoss: Double, validationLoss: Double?, lr: Double) {
        self.epoch = epoch; self.trainLoss = trainLoss; self.validationLoss = validationLoss; self.lr = lr
    }
}

public struct TuneResult: Sendable {
    public var history: [EpochRecord]
    /// Epoch whose weights were kept (lowest validation loss; the last without validation).
    public var bestEpoch: Int
    public var stoppedEarly: Bool
    public var resumedFrom: Int?
}

/// Examples by index: preprocessed pixels (3, S, S) and a class.
public struct TuneData: Sendable {
    public var labels: [Int]
    public var classes: Int
    public var size: Int
    public var mean: [Float], std: [Float]
    public var pixels: @Sendable (Int) throws -> [Float]
    public init(labels: [Int], classes: Int, size: Int, mean: [Float], std: [Float], pixels: @escaping @Sendable (Int) throws -> [Float]) {
        self.labels = labels; self.classes = classes; self.size = size; self.mean = mean; self.std = std; self.pixels = pixels
    }
}

public final class Tuner {
    public let model: TrainableViT
    public let options: TuneOptions
    public let seed: UInt64
    /// What identifies the run for checkpoints (the caller's fields — recipe, data, method — plus
    /// every training option and the seed): a checkpoint written under other values is refused,
    /// naming each difference.
    public let identity: [String: String]
    public var fingerprint: String { SHA256.hex(Data(identity.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "\n").utf8)) }
    public var progress: ((EpochRecord) -> Void)? = nil

    public init(model: TrainableViT, options: TuneOptions, seed: UInt64, identity: [String: String]) {
        self.model = model
        self.options = options
        self.seed = seed
        model.recompute = options.recompute
        var id = identity
        if let data = try? JSONEncoder().encode(options), let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            for (k, v) in obj {
                let text =
                    (try? JSONSerialization.data(withJSONObject: v, options: [.sortedKeys, .fragmentsAllowed])).map { String(decoding: $0, as: UTF8.self) }
                    ?? "\(v)"
                id["training." + k] = text
            }
        }
        id["seed"] = String(seed)
        id["trainable"] = "\(model.trainableParameters.count) tensors, \(model.trainableCount) parameters"
        self.identity = id
    }

    /// Batches of an epoch: class-balanced draws (or a shuffle) of the training examples.
    func order(_ train: [Int], _ data: TuneData, epoch: Int) -> [Int] {
        var rng = XRRandom(seed: seed, stream: [0x0DE7, UInt64(epoch)])
        if !options.balanced {
            var o = train
            rng.shuffle(&o)
            return o
        }
        let byClass = (0..<data.classes).map { c in train.filter { data.labels[$0] == c } }.filter { !$0.isEmpty }
        return (0..<train.count).map { _ in
            let members = byClass[rng.nextInt(below: byClass.count)]
            return members[rng.nextInt(below: members.count)]
        }
    }

    func lrScales() -> [String: Double] {
        guard options.layerDecay != 1 else { return [:] }
        let depth = model.config.depth
        var s: [String: Double] = [:]
        let embedding = Set(model.embeddingParameters.map(\.name)) // class token, registers, position and patch embeddings
        for p in model.parameters {
            if p.name.hasPrefix("blocks.") {
                let i = Int(p.name.split(separator: ".")[1]) ?? depth
                s[p.name] = pow(options.layerDecay, Double(depth - i))
            } else if embedding.contains(p.name) {
                s[p.name] = pow(options.layerDecay, Double(depth + 1))
            }
        }
        return s
    }

    /// Mean loss over `rows` without updating (eval batches of `batchSize`).
    public func evaluate(_ rows: [Int], _ data: TuneData) throws -> Double {
        var total = 0.0
        for start in stride(from: 0, to: rows.count, by: options.batchSize) {
            let idx = Array(rows[start..<min(rows.count, start + options.batchSize)])
            let px = try idx.flatMap { try data.pixels($0) }
            let logits = try model.forward(pixels: px, batch: idx.count)
            total += Loss.crossEntropy(logits: logits, labels: idx.map { data.labels[$0] }, classes: data.classes).loss * Double(idx.count)
        }
        return total / Double(max(rows.count, 1))
    }

    /// Class probabilities (n, K) for `rows`.
    public func predict(_ rows: [Int], _ data: TuneData) throws -> [[Double]] {
        var out: [[Double]] = []
        let K = model.config.classes
        for start in stride(from: 0, to: rows.count, by: options.batchSize) {
            let idx = Array(rows[start..<min(rows.count, start + options.batchSize)])
            let logits = try model.forward(pixels: try idx.flatMap { try data.pixels($0) }, batch: idx.count)
            for b in 0..<idx.count {
                let z = (0..<K).map { Double(logits[b * K + $0]) }, m = z.max()!
                let e = z.map { exp($0 - m) }, s = e.reduce(0, +)
                out.append(e.map { $0 / s })
            }
        }
        return out
    }

    /// Train (or resume from `checkpoint`). `stopAfter` ends the call after that many epochs
    /// have finished in this call (an interruption, for tests).
    public func run(train: [Int], validation: [Int], data: TuneData, checkpoint: URL?, stopAfter: Int? = nil) throws -> TuneResult {
        guard !train.isEmpty else { throw XRError("no training examples", field: "shots") }
        let o = options
        let perEpoch = (train.count + o.batchSize * o.accumulate - 1) / (o.batchSize * o.accumulate)
        let schedule = Schedule(peak: o.lr, warmup: Int((Double(perEpoch * o.epochs) * o.warmup).rounded()), total: perEpoch * o.epochs)
        let opt = AdamW(weightDecay: o.weightDecay)
        opt.lrScale = lrScales()
        var history: [EpochRecord] = []
        var best: (epoch: Int, loss: Double, values: [String: [Float]])? = nil
        var startEpoch = 0, resumed: Int? = nil, stoppedEarly = false
        if let checkpoint, FileManager.default.fileExists(atPath: checkpoint.path) {
            let s = try TuneCheckpoint.load(checkpoint, identity: identity, model: model, optimizer: opt)
            history = s.history
            best = s.best
            startEpoch = s.epoch
            resumed = s.epoch
            stoppedEarly = s.stopped
        }
        var epoch = startEpoch
        while epoch < o.epochs && !stoppedEarly && epoch - startEpoch < (stopAfter ?? .max) {
            let order = self.order(train, data, epoch: epoch)
            var lossSum = 0.0, seen = 0
            var step = epoch * perEpoch
            var pos = 0
            while pos < order.count {
                model.zeroGrad()
                let groupSize = min(o.batchSize * o.accumulate, order.count - pos)
                var micro = 0
                while micro < o.accumulate && pos < order.count {
                    let idx = Array(order[pos..<min(order.count, pos + o.batchSize)])
                    var px: [Float] = []
                    px.reserveCapacity(idx.count * 3 * data.size * data.size)
                    for (j, i) in idx.enumerated() {
                        let x = try data.pixels(i)
                        if let aug = o.augment {
                            var rng = XRRandom(seed: seed, stream: [0xA06, UInt64(epoch), UInt64(pos + j)])
                            px += aug.apply(x, size: data.size, mean: data.mean, std: data.std, rng: &rng)
                        } else {
                            px += x
                        }
                    }
                    model.training = true
                    model.dropoutSeed = seed &* 0x2545_F491_4F6C_DD1D &+ UInt64(step) << 8 &+ UInt64(micro)
                    let logits = try model.forward(pixels: px, batch: idx.count)
                    model.training = false
                    var (loss, d) = Loss.crossEntropy(logits: logits, labels: idx.map { data.labels[$0] }, classes: data.classes, smoothing: o.labelSmoothing)
                    guard loss.isFinite else {
                        throw XRError(
                            "the loss became \(loss) in epoch \(epoch + 1), step \(step + 1) (learning rate \(schedule.lr(step)))", field: "lr",
                            hint: "lower lr (or raise warmup); the checkpoint of the last finished epoch is kept")
                    }
                    // The step's loss is the mean over all its examples: weight each micro-batch by its share.
                    if groupSize != idx.count { let w = Float(idx.count) / Float(groupSize); d = d.map { $0 * w } }
                    model.backward(dlogits: d)
                    lossSum += loss * Double(idx.count)
                    seen += idx.count
                    pos += idx.count
                    micro += 1
                }
                let norm = clipGradNorm(model.trainableParameters, maxNorm: o.clip ?? .infinity)
                guard norm.isFinite else {
                    throw XRError(
                        "the gradient norm became \(norm) in epoch \(epoch + 1), step \(step + 1)", field: "lr",
                        hint: "lower lr; the checkpoint of the last finished epoch is kept")
                }
                opt.update(model.trainableParameters, lr: schedule.lr(step))
                step += 1
            }
            let val = validation.isEmpty ? nil : try evaluate(validation, data)
            let record = EpochRecord(epoch: epoch + 1, trainLoss: lossSum / Double(max(seen, 1)), validationLoss: val, lr: schedule.lr(max(step - 1, 0)))
            history.append(record)
            if let val {
                if best == nil || val < best!.loss {
                    best = (epoch + 1, val, Dictionary(uniqueKeysWithValues: model.trainableParameters.map { ($0.name, $0.value.array) }))
                } else if let p = o.patience, epoch + 1 - best!.epoch >= p {
                    stoppedEarly = true
                }
            }
            epoch += 1
            progress?(record)
            if let checkpoint {
                try TuneCheckpoint.save(
                    checkpoint, identity: identity, epoch: epoch, history: history, best: best, stopped: stoppedEarly,
                    model: model, optimizer: opt)
            }
        }
        if let best {
            for p in model.trainableParameters { if let v = best.values[p.name] { p.assign(v) } }
        }
        return TuneResult(history: history, bestEpoch: best?.epoch ?? history.count, stoppedEarly: stoppedEarly, resumedFrom: resumed)
    }
}

/// One file per run: trainable values, best values, AdamW moments (safetensors) with the loop
/// state in its metadata; written atomically.
public enum TuneCheckpoint {
    struct State: Codable {
        var format = "xrlab-tune-checkpoint"
        var version = 1
        var identity: [String: String]
        var epoch: Int
        var step: Int
        var history: [EpochRecord]
        var bestEpoch: Int?
        var bestLoss: Double?
        var stopped: Bool
    }

    static func save(
        _ url: URL, identity: [String: String], epoch: Int, history: [EpochRecord], best: (epoch: Int, loss: Double, values: [String: [Float]])?,
        stopped: Bool, model: TrainableViT, optimizer: AdamW
    ) throws {
        try save(
            url, identity: identity, epoch: epoch, history: history, best: best, stopped: stopped, parameters: model.trainableParameters, optimizer: optimizer)
    }

    /// Save `parameters` (names unique), their best values and AdamW moments with the loop state.
    public static func save(
        _ url: URL, identity: [String: String], epoch: Int, history: [EpochRecord], best: (epoch: Int, loss: Double, values: [String: [Float]])?,
        stopped: Bool, parameters: [Parameter], optimizer: AdamW
    ) throws {
        var t: [(String, Tensor)] = []
        let st = optimizer.state
        for p in parameters {
            t.append(("param." + p.name, p.tensor))
            if let b = best?.values[p.name] { t.append(("best." + p.name, Tensor(shape: p.shape, scalars: b))) }
            if let m = st.m[p.name], let v = st.v[p.name] {
                t.append(("adam_m." + p.name, Tensor(shape: p.shape, scalars: m)))
                t.append(("adam_v." + p.name, Tensor(shape: p.shape, scalars: v)))
            }
        }
        let state = State(identity: identity, epoch: epoch, step: st.step, history: history, bestEpoch: best?.epoch, bestLoss: best?.loss, stopped: stopped)
        let json = String(decoding: try JSONEncoder().encode(state), as: UTF8.self)
        try SafeTensors.write(t, metadata: ["state": json], to: url)
    }

    static func load(_ url: URL, identity: [String: String], model: TrainableViT, optimizer: AdamW) throws
        -> (epoch: Int, history: [EpochRecord], best: (epoch: Int, loss: Double, values: [String: [Float]])?, stopped: Bool)
    {
        try load(url, identity: identity, parameters: model.trainableParameters, optimizer: optimizer)
    }

    /// Restore `parameters` and the optimiser from a checkpoint written under the same identity
    /// (a different one is refused, naming each differing field).
    public static func load(_ url: URL, identity: [String: String], parameters: [Parameter], optimizer: AdamW) throws
        -> (epoch: Int, history: [EpochRecord], best: (epoch: Int, loss: Double, values: [String: [Float]])?, stopped: Bool)
    {
        let f = try SafeTensorsFile(contentsOf: url)
        guard let json = f.metadata["state"], let state = try? JSONDecoder().decode(State.self, from: Data(json.utf8)) else {
            throw XRError("not a training checkpoint (no readable state)", file: url.path, field: "state", hint: "delete it to train this cell from the start")
        }
        guard state.identity == identity else {
            let keys = Set(state.identity.keys).union(identity.keys).sorted()
            let diffs = keys.filter { state.identity[$0] != identity[$0] }.map { "\($0): \(state.identity[$0] ?? "(none)") → \(identity[$0] ?? "(none)")" }
            throw XRError(
                "the checkpoint belongs to a different training configuration (\(diffs.prefix(6).joined(separator: "; "))\(diffs.count > 6 ? "; …" : ""))",
                file: url.path, field: "identity",
                hint: "the recipe, data or method changed since it was written; delete it (or run with --force) to train from the start")
        }
        var m: [String: [Float]] = [:], v: [String: [Float]] = [:], best: [String: [Float]] = [:]
        for p in parameters {
            guard f.contains("param." + p.name) else { throw XRError("missing tensor", file: url.path, field: "param." + p.name) }
            let t = try f.tensor("param." + p.name)
            guard t.count == p.count, t.scalars.allSatisfy(\.isFinite) else {
                throw XRError("wrong size or non-finite values", file: url.path, field: "param." + p.name)
            }
            p.assign(t.scalars)
            if f.contains("adam_m." + p.name) { m[p.name] = try f.tensor("adam_m." + p.name).scalars; v[p.name] = try f.tensor("adam_v." + p.name).scalars }
            if f.contains("best." + p.name) { best[p.name] = try f.tensor("best." + p.name).scalars }
        }
        optimizer.restore(step: state.step, m: m, v: v)
        let b = state.bestEpoch.map { ($0, state.bestLoss ?? .infinity, best) }
        return (state.epoch, state.history, b, state.stopped)
    }
}
