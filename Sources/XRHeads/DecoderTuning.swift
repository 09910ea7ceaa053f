// Tuning an encoder with a linear decoder on its patch tokens (segmentation and detection with
// lora, last_k, adapters, bitfit, full): the decoder's per-pixel loss gives d(loss)/d(patch tokens), which the
// trainable ViT backpropagates from its final-norm patch tokens. Letters: B images per step,
// N = P patches, C token channels, S the square model input.
import Foundation
import XRTensor
import XRTrain

/// How the encoder and the decoder are tuned together: AdamW (decoupled weight decay on the
/// encoder's tuned parameters, none on the decoder, whose penalty is its L2 term) with a cosine
/// schedule, mini-batches of images in a seeded order; after every epoch the loss on the
/// validation images decides which state is kept (the decoder fitted on frozen tokens is the
/// state before the first epoch).
public struct DecoderTuneOptions: Sendable, Equatable {
    public var epochs: Int
    public var batchImages: Int
    /// Peak learning rate of the tuned encoder parameters and of the decoder.
    public var learningRate: Double
    /// Decoupled weight decay of the encoder's tuned parameters.
    public var weightDecay: Double
    /// The decoder's L2 penalty λ (as `DecoderTraining.l2`).
    public var l2: Double
    /// Weight of foreground pixels in a two-class decoder's binary loss (as
    /// `DecoderTraining.positiveWeight`; the box head's `positive_weight`).
    public var positiveWeight: Double
    /// Stop after this many epochs without a better validation loss (nil: run every epoch).
    public var patience: Int?
    public var seed: UInt64

    public init(
        epochs: Int = 10, batchImages: Int = 4, learningRate: Double = 1e-3, weightDecay: Double = 0.05, l2: Double = 1e-4,
        positiveWeight: Double = 1, patience: Int? = nil, seed: UInt64 = 0
    ) {
        self.epochs = epochs
        self.batchImages = batchImages
        self.learningRate = learningRate
        self.weightDecay = weightDecay
        self.l2 = l2
        self.positiveWeight = positiveWeight
        self.patience = patience
        self.seed = seed
    }
}

/// One annotated image for encoder tuning: the preprocessed pixels (3, S, S) and the target at
/// the model input (padding = `LinearDecoder.ignore`).
public struct PixelExample: Sendable {
    public var pixels: [Float]
    public var target: [UInt8]
    public init(pixels: [Float], target: [UInt8]) {
        self.pixels = pixels
        self.target = target
    }
}

/// A trainable ViT and a linear decoder on its patch tokens, tuned together.
public final class DecoderTuner {
    public let model: TrainableViT
    public private(set) var decoder: LinearDecoder
    /// Per epoch: mean training loss and validation loss (nil without validation images).
    public private(set) var history: [(train: Double, validation: Double?)] = []
    /// The epoch whose state was kept (0: the decoder on frozen tokens, no encoder change).
    public private(set) var bestEpoch = 0

    /// `model`'s trainable parameters are the ones the method tunes; `decoder` starts the joint
    /// training (typically fitted on the frozen tokens) and must read the model's patch grid.
    public init(model: TrainableViT, decoder: LinearDecoder) {
        precondition(
            decoder.grid.patches == model.config.grid * model.config.grid && decoder.channels == model.config.dim,
            "DecoderTuner: decoder does not read this model's tokens")
        self.model = model
        self.decoder = decoder
    }

    /// (B, N, C) patch tokens of images (B, 3, S, S) in inference mode.
    public func tokens(_ pixels: [Float], batch: Int) throws -> [Float] {
        model.training = false
        return try model.forwardPatchTokens(pixels: pixels, batch: batch)
    }

    /// Mean per-pixel loss (with the decoder's penalty) of `examples` in the current state.
    public func loss(_ examples: [PixelExample], l2: Double, positiveWeight: Double = 1, batchImages: Int) throws -> Double {
        guard !examples.isEmpty else { return 0 }
        var total = 0.0, pixels = 0
        let N = decoder.grid.patches * decoder.channels
        for s in stride(from: 0, to: examples.count, by: max(1, batchImages)) {
            let part = Array(examples[s..<min(s + max(1, batchImages), examples.count)])
            let t = try tokens(Array(part.map(\.pixels).joined()), batch: part.count)
            let patch = part.indices.map { PatchExample(tokens: Array(t[($0 * N)..<(($0 + 1) * N)]), target: part[$0].target) }
            let scored = part.reduce(0) { $0 + $1.target.count(where: { $0 != LinearDecoder.ignore }) }
            total += decoder.lossAndGradient(patch, batch: Array(patch.indices), l2: 0, positiveWeight: positiveWeight).loss * Double(scored)
            pixels += scored
        }
        var penalty = 0.0
        for w in decoder.weight { penalty += Double(w) * Double(w) }
        return total / Double(max(pixels, 1)) + 0.5 * l2 * penalty
    }

    /// Tune on `train`, keeping the state with the lowest loss on `validation` (the last state
    /// when there is none). Deterministic for a given seed.
    public func fit(_ train: [PixelExample], validation: [PixelExample], options o: DecoderTuneOptions) throws {
        guard !train.isEmpty, o.epochs > 0 else { return }
        let params = model.trainableParameters.filter { !$0.name.hasPrefix("head") }
        let w = Parameter("decoder.weight", [decoder.rows, decoder.channels], decoder.weight)
        let b = Parameter("decoder.bias", [decoder.rows], decoder.bias)
        w.trainable = true
        b.trainable = true
        let encoderOptimizer = AdamW(weightDecay: o.weightDecay), decoderOptimizer = AdamW(weightDecay: 0)
        let batch = max(1, o.batchImages), perEpoch = (train.count + batch - 1) / batch
        let schedule = Schedule(peak: o.learningRate, warmup: 0, total: perEpoch * o.epochs)
        var rng = XRRandom(seed: o.seed)
        let N = decoder.grid.patches * decoder.channels
        func snapshot() -> ([[Float]], LinearDecoder) { (params.map(\.value.array), decoder) }
        var best = snapshot()
        var bestLoss = validation.isEmpty ? Double.infinity : try loss(validation, l2: o.l2, positiveWeight: o.positiveWeight, batchImages: batch)
        var sinceBest = 0, step = 0
        for epoch in 1...o.epochs {
            var order = Array(train.indices)
            rng.shuffle(&order)
            var total = 0.0
            for s in stride(from: 0, to: order.count, by: batch) {
                let part = order[s..<min(s + batch, order.count)].map { train[$0] }
                model.training = true
                model.dropoutSeed = o.seed &+ UInt64(step)
                model.zeroGrad()
                let t = try model.forwardPatchTokens(pixels: Array(part.map(\.pixels).joined()), batch: part.count)
                let patch = part.indices.map { PatchExample(tokens: Array(t[($0 * N)..<(($0 + 1) * N)]), target: part[$0].target) }
                let g = decoder.lossAndGradients(patch, batch: Array(patch.indices), l2: o.l2, positiveWeight: o.positiveWeight, tokens: true)
                total += g.loss
                model.backwardPatchTokens(Array(g.tokens.joined()))
                w.grad?.p.update(from: g.weight, count: g.weight.count)
                b.grad?.p.update(from: g.bias, count: g.bias.count)
                let lr = schedule.lr(step)
                encoderOptimizer.update(params, lr: lr)
                decoderOptimizer.update([w, b], lr: lr)
                decoder.weight = w.value.array
                decoder.bias = b.value.array
                step += 1
            }
            let v = validation.isEmpty ? nil : try loss(validation, l2: o.l2, positiveWeight: o.positiveWeight, batchImages: batch)
            history.append((total / Double(perEpoch), v))
            if let v, v < bestLoss {
                bestLoss = v
                best = snapshot()
                bestEpoch = epoch
                sinceBest = 0
            } else if v == nil {
                best = snapshot()
                bestEpoch = epoch
            } else {
                sinceBest += 1
                if let p = o.patience, sinceBest >= p { break }
            }
        }
        for (p, values) in zip(params, best.0) { p.value.p.update(from: values, count: values.count) }
        decoder = best.1
        model.training = false
    }
}
