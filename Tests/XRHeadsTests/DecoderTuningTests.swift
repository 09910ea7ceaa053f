import Foundation
import TestSupport
import XCTest
import XRModels
import XRTensor
import XRTrain

@testable import XRHeads

/// Tuning an encoder through the linear decoder: d(loss)/d(patch tokens) and, through a tiny
/// trainable ViT, d(loss)/d(tuned parameters), each against central finite differences; and the
/// joint training keeping the best validation state.
final class DecoderTuningTests: XCTestCase {
    /// d(loss)/d(tokens) of `lossAndGradients` against central differences on every token value.
    func checkTokenGradient(classes: Int) {
        var rng = XRRandom(seed: UInt64(40 + classes))
        let grid = PatchGrid(gridHeight: 3, gridWidth: 4, inputHeight: 7, inputWidth: 10)
        var d = LinearDecoder(grid: grid, channels: 5, classes: classes)
        d.weight = d.weight.map { _ in 0.5 * rng.nextGaussian() }
        d.bias = d.bias.map { _ in 0.3 * rng.nextGaussian() }
        var examples = (0..<3).map { _ in
            PatchExample(
                tokens: (0..<(12 * 5)).map { _ in rng.nextGaussian() },
                target: (0..<70).map { _ in rng.nextInt(below: 6) == 0 ? LinearDecoder.ignore : UInt8(rng.nextInt(below: classes)) })
        }
        let batch = [2, 0], l2 = 0.3
        let g = d.lossAndGradients(examples, batch: batch, l2: l2, tokens: true)
        XCTAssertEqual(g.tokens.count, 2)
        let plain = d.lossAndGradient(examples, batch: batch, l2: l2)
        XCTAssertEqual(g.loss, plain.loss)
        XCTAssertEqual(g.weight, plain.weight)
        let eps: Float = 1e-2
        var worst = 0.0
        for (bi, i) in batch.enumerated() {
            for j in examples[i].tokens.indices {
                let keep = examples[i].tokens[j]
                examples[i].tokens[j] = keep + eps
                let lp = d.lossAndGradient(examples, batch: batch, l2: l2).loss
                examples[i].tokens[j] = keep - eps
                let lm = d.lossAndGradient(examples, batch: batch, l2: l2).loss
                examples[i].tokens[j] = keep
                let numeric = (lp - lm) / Double(2 * eps)
                worst = max(worst, abs(numeric - Double(g.tokens[bi][j])) / max(abs(numeric), 1e-3))
            }
        }
        XCTAssertLessThan(worst, 2e-2, "classes \(classes): largest relative error of d(loss)/d(tokens)")
    }

    func testTokenGradientBinary() { checkTokenGradient(classes: 2) }
    func testTokenGradientMulticlass() { checkTokenGradient(classes: 3) }

    /// A 16-d, 2-block encoder at 16 px (2 × 2 patches of 8 px) with a decoder on its tokens.
    func tinyModel(_ set: TrainableSet) throws -> (TrainableViT, LinearDecoder) {
        let config = ViTConfig(imageSize: 16, patchSize: 8, dim: 16, depth: 2, heads: 2, mlpHidden: 32)
        let m = try TrainableViT.random(TrainConfig(encoder: config, classes: 2), seed: 3)
        try m.setTrainable(set, seed: 5)
        var rng = XRRandom(seed: 9)
        // LoRA B starts at zero: give it values so every path carries gradient.
        for p in m.trainableParameters where p.name.contains("lora_B") { for i in 0..<p.count { p.value.p[i] = 0.3 * rng.nextGaussian() } }
        var d = LinearDecoder(grid: PatchGrid(gridHeight: 2, gridWidth: 2, inputHeight: 16, inputWidth: 16), channels: 16, classes: 2)
        d.weight = d.weight.map { _ in 0.5 * rng.nextGaussian() }
        return (m, d)
    }

    /// The decoder loss through the encoder: d(loss)/d(parameters) via `backwardPatchTokens`
    /// against the central difference along a random direction of the tuned parameters.
    func checkEncoderGradient(_ set: TrainableSet) throws {
        let (m, d) = try tinyModel(set)
        var rng = XRRandom(seed: 21)
        let B = 2, N = 4 * 16
        let px = (0..<(B * 3 * 16 * 16)).map { _ in rng.nextGaussian() }
        let targets = (0..<B).map { _ in (0..<256).map { _ in rng.nextInt(below: 7) == 0 ? LinearDecoder.ignore : UInt8(rng.nextInt(below: 2)) } }
        func examples(_ t: [Float]) -> [PatchExample] { (0..<B).map { PatchExample(tokens: Array(t[($0 * N)..<(($0 + 1) * N)]), target: targets[$0]) } }
        func loss() throws -> Double { d.lossAndGradient(examples(try m.forwardPatchTokens(pixels: px, batch: B)), batch: [0, 1], l2: 0).loss }
        m.zeroGrad()
        let g = d.lossAndGradients(examples(try m.forwardPatchTokens(pixels: px, batch: B)), batch: [0, 1], l2: 0, tokens: true)
        m.backwardPatchTokens(Array(g.tokens.joined()))
        let params = m.trainableParameters.filter { !$0.name.hasPrefix("head") }
        XCTAssertFalse(params.isEmpty)
        var dirs = params.map { p in (0..<p.count).map { _ in rng.nextGaussian() } }
        let norm = Float(dirs.reduce(0.0) { $0 + $1.reduce(0.0) { $0 + Double($1 * $1) } }.squareRoot())
        dirs = dirs.map { $0.map { $0 / norm } }
        var analytic = 0.0
        for (p, v) in zip(params, dirs) { for i in 0..<p.count { analytic += Double(p.grad?.p[i] ?? .nan) * Double(v[i]) } }
        let h: Float = 3e-3
        func shift(_ s: Float) { for (p, v) in zip(params, dirs) { for i in 0..<p.count { p.value.p[i] += s * v[i] } } }
        shift(h)
        let lp = try loss()
        shift(-2 * h)
        let lm = try loss()
        shift(h)
        let numeric = (lp - lm) / Double(2 * h)
        XCTAssertEqual(analytic, numeric, accuracy: 2e-2 * max(abs(numeric), 1e-3), "\(set): directional derivative of the decoder loss")
        XCTAssertGreaterThan(abs(numeric), 1e-6, "the direction carries gradient")
    }

    func testEncoderGradientLoRA() throws { try checkEncoderGradient(.lora(rank: 2, alpha: 4, targets: ["qkv", "proj"], dropout: 0)) }
    func testEncoderGradientLastBlock() throws { try checkEncoderGradient(.lastBlocks(1)) }
    func testEncoderGradientFull() throws { try checkEncoderGradient(.full) }

    /// Joint training lowers the training loss on a learnable problem, and the kept state is the
    /// one with the lowest validation loss (the starting decoder counts as epoch 0).
    func testTuningKeepsTheBestValidationState() throws {
        let (m, d0) = try tinyModel(.lastBlocks(1))
        var rng = XRRandom(seed: 33)
        // Target: the left half of the image is foreground where the image is bright.
        func image() -> PixelExample {
            let bright = rng.nextInt(below: 2) == 1
            let px = (0..<(3 * 256)).map { i in (bright && (i % 16) < 8 ? 1.5 : -0.5) + 0.1 * rng.nextGaussian() }
            return PixelExample(pixels: px, target: (0..<256).map { bright && ($0 % 16) < 8 ? 1 : 0 })
        }
        let train = (0..<6).map { _ in image() }, validation = (0..<3).map { _ in image() }
        let tuner = DecoderTuner(model: m, decoder: d0)
        let before = try tuner.loss(validation, l2: 1e-4, batchImages: 2)
        try tuner.fit(train, validation: validation, options: DecoderTuneOptions(epochs: 8, batchImages: 2, learningRate: 1e-2, weightDecay: 0, seed: 1))
        XCTAssertEqual(tuner.history.count, 8)
        let kept = try tuner.loss(validation, l2: 1e-4, batchImages: 2)
        let best = tuner.history.compactMap(\.validation).min() ?? .infinity
        XCTAssertLessThan(kept, before, "tuning improved the validation loss")
        XCTAssertEqual(kept, min(before, best), accuracy: 1e-9, "the kept state is the best one")
        XCTAssertLessThan(tuner.history.last?.train ?? .infinity, tuner.history.first?.train ?? 0)
    }
}
