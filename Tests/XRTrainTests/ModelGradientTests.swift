import XCTest
import XRTensor
import XRModels
@testable import XRTrain
import TestSupport

/// Whole-model gradients of every trainable set, against a central finite difference of the
/// loss along a random direction in the trainable parameters (float64 accumulation of the loss).
final class ModelGradientTests: XCTestCase {
    /// A 16-d, 2-block encoder at 16 px (4 patches), with `registers` register tokens and position
    /// embeddings on the first `posEmbedPrefix` prefix tokens.
    func encoder(layerScale: Bool, registers: Int, posEmbedPrefix: Int) -> ViTConfig {
        ViTConfig(
            imageSize: 16, patchSize: 8, dim: 16, depth: 2, heads: 2, mlpHidden: 32, layerScale: layerScale,
            numRegisters: registers, posEmbedPrefix: posEmbedPrefix)
    }

    /// `along`: the directional derivative only along the parameters named (all trainable ones when nil).
    func check(
        _ set: TrainableSet, layerScale: Bool = false, pooling: String = "token", headHidden: Int? = nil,
        registers: Int = 0, posEmbedPrefix: Int = 1, along: [String]? = nil,
        file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let c = TrainConfig(
            encoder: encoder(layerScale: layerScale, registers: registers, posEmbedPrefix: posEmbedPrefix), classes: 3,
            pooling: pooling, headHidden: headHidden)
        let m = try TrainableViT.random(c, seed: 3)
        // Give zero-initialised parts (LoRA B, adapter up, head) values so every path carries gradient.
        try m.setTrainable(set, seed: 5)
        m.training = true // LoRA dropout active, with one fixed mask for every evaluation
        m.dropoutSeed = 42
        var rng = XRRandom(seed: 9)
        for p in m.trainableParameters where p.name.contains("lora_B") || p.name.contains("adapter.up") || p.name.hasPrefix("head") {
            for i in 0..<p.count { p.value.p[i] = rng.nextGaussian() * 0.3 }
        }
        let B = 3
        let px = (0..<(B * 3 * 16 * 16)).map { _ in rng.nextGaussian() }
        let y = [0, 2, 1]
        func loss() throws -> Double {
            Loss.crossEntropy(logits: try m.forward(pixels: px, batch: B), labels: y, classes: 3, smoothing: 0.1).loss
        }
        m.zeroGrad()
        let (l0, d) = Loss.crossEntropy(logits: try m.forward(pixels: px, batch: B), labels: y, classes: 3, smoothing: 0.1)
        XCTAssertTrue(l0.isFinite)
        m.backward(dlogits: d)
        let params = m.trainableParameters.filter { p in along.map { $0.contains(p.name) } ?? true }
        XCTAssertFalse(params.isEmpty)
        var dirs = params.map { p in (0..<p.count).map { _ in rng.nextGaussian() } }
        let norm = Float(dirs.reduce(0.0) { $0 + $1.reduce(0.0) { $0 + Double($1 * $1) } }.squareRoot())
        dirs = dirs.map { $0.map { $0 / norm } }
        var analytic = 0.0
        for (p, v) in zip(params, dirs) { for i in 0..<p.count { analytic += Double(p.grad!.p[i]) * Double(v[i]) } }
        let h: Float = 3e-3
        func shift(_ s: Float) { for (p, v) in zip(params, dirs) { for i in 0..<p.count { p.value.p[i] += s * v[i] } } }
        shift(h); let lp = try loss()
        shift(-2 * h); let lm = try loss()
        shift(h)
        let numeric = (lp - lm) / Double(2 * h)
        XCTAssertEqual(
            analytic, numeric, accuracy: 2e-2 * max(abs(numeric), 1e-2),
            "\(set) registers \(registers) prefix \(posEmbedPrefix) along \(along ?? ["all"]): directional derivative", file: file, line: line)
    }

    /// Patch-token output (what a report decoder consumes): L = Σ w ⊙ tokens² for a fixed w, its
    /// gradient through `backwardPatchTokens` against the finite difference; the head takes no part.
    func checkTokens(
        _ set: TrainableSet, layerScale: Bool = false, registers: Int = 0, posEmbedPrefix: Int = 1, along: [String]? = nil,
        file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let c = TrainConfig(encoder: encoder(layerScale: layerScale, registers: registers, posEmbedPrefix: posEmbedPrefix), classes: 2)
        let m = try TrainableViT.random(c, seed: 4)
        try m.setTrainable(set, seed: 6)
        var rng = XRRandom(seed: 11)
        for p in m.trainableParameters where p.name.contains("lora_B") || p.name.contains("adapter.up") {
            for i in 0..<p.count { p.value.p[i] = rng.nextGaussian() * 0.3 }
        }
        let B = 2, N = 4
        let px = (0..<(B * 3 * 16 * 16)).map { _ in rng.nextGaussian() }
        let w = (0..<(B * N * 16)).map { _ in rng.nextGaussian() }
        func loss() throws -> Double {
            let t = try m.forwardPatchTokens(pixels: px, batch: B)
            return zip(t, w).reduce(0.0) { $0 + Double($1.0 * $1.0 * $1.1) }
        }
        m.zeroGrad()
        let t = try m.forwardPatchTokens(pixels: px, batch: B)
        XCTAssertEqual(t.count, B * N * 16)
        m.backwardPatchTokens(zip(t, w).map { 2 * $0 * $1 })
        let params = m.trainableParameters.filter { p in !p.name.hasPrefix("head") && (along.map { $0.contains(p.name) } ?? true) }
        XCTAssertFalse(params.isEmpty)
        for p in m.trainableParameters where p.name.hasPrefix("head") { XCTAssertTrue((0..<p.count).allSatisfy { p.grad!.p[$0] == 0 }, p.name) }
        var dirs = params.map { p in (0..<p.count).map { _ in rng.nextGaussian() } }
        let norm = Float(dirs.reduce(0.0) { $0 + $1.reduce(0.0) { $0 + Double($1 * $1) } }.squareRoot())
        dirs = dirs.map { $0.map { $0 / norm } }
        var analytic = 0.0
        for (p, v) in zip(params, dirs) { for i in 0..<p.count { analytic += Double(p.grad!.p[i]) * Double(v[i]) } }
        let h: Float = 3e-3
        func shift(_ s: Float) { for (p, v) in zip(params, dirs) { for i in 0..<p.count { p.value.p[i] += s * v[i] } } }
        shift(h); let lp = try loss()
        shift(-2 * h); let lm = try loss()
        shift(h)
        let numeric = (lp - lm) / Double(2 * h)
        XCTAssertEqual(
            analytic, numeric, accuracy: 2e-2 * max(abs(numeric), 1e-2),
            "\(set) registers \(registers) prefix \(posEmbedPrefix) along \(along ?? ["all"]): directional derivative of patch tokens",
            file: file, line: line)
        // The classification path still works after token mode (buffers are rebuilt).
        XCTAssertEqual(try m.forward(pixels: px, batch: B).count, B * 2)
    }

    func testPatchTokenGradients() throws {
        try checkTokens(.lora(rank: 2, alpha: 4, targets: ["qkv", "fc1"]))
        try checkTokens(.lastBlocks(1), layerScale: true)
        try checkTokens(.full)
        try checkTokens(.lastBlocks(0))
    }

    /// Register tokens, with position embeddings on no prefix token (timm), on the class token
    /// (DINOv2, Hugging Face) or on every prefix token: whole-model gradients, and the gradients
    /// of the registers and the position embeddings alone. The patch-token loss sums 128 squared
    /// outputs, so its finite difference carries about 1e-3 of float32 noise: it is checked along
    /// parameter groups whose derivative stands well above that.
    func testRegisters() throws {
        for prefix in [0, 1, 3] {
            try check(.full, registers: 2, posEmbedPrefix: prefix)
            try check(.full, registers: 2, posEmbedPrefix: prefix, along: ["reg_token"])
            try check(.full, registers: 2, posEmbedPrefix: prefix, along: ["pos_embed"])
            try check(.full, layerScale: true, pooling: "mean", registers: 2, posEmbedPrefix: prefix)
            try checkTokens(.full, registers: 2, posEmbedPrefix: prefix, along: ["reg_token"])
            try checkTokens(.full, registers: 2, posEmbedPrefix: prefix, along: ["pos_embed"])
        }
        try check(.full, registers: 2, posEmbedPrefix: 1, along: ["cls_token", "patch_embed.proj.weight"])
        try check(.lora(rank: 2, alpha: 4, targets: ["qkv", "fc2"]), registers: 1, posEmbedPrefix: 0)
        try checkTokens(.lastBlocks(1), layerScale: true, registers: 3, posEmbedPrefix: 1)
    }

    func testFull() throws { try check(.full) }
    func testFullWithLayerScaleAndMeanPooling() throws { try check(.full, layerScale: true, pooling: "mean") }
    func testLastBlock() throws { try check(.lastBlocks(1)) }
    func testBitFit() throws { try check(.bitFit, layerScale: true) }
    func testHeadOnly() throws { try check(.head) }
    func testLoRAOnEveryLinear() throws { try check(.lora(rank: 2, alpha: 4, targets: ["qkv", "proj", "fc1", "fc2"])) }
    func testMLPHead() throws {
        try check(.full, headHidden: 8)
        try check(.lora(rank: 2, alpha: 4, targets: ["qkv"]), pooling: "mean", headHidden: 5)
        try check(.head, headHidden: 6)
    }
    func testLoRAWithDropout() throws { try check(.lora(rank: 2, alpha: 4, targets: ["qkv", "fc2"], dropout: 0.3)) }
    func testSequentialAdapter() throws { try check(.adapter(dim: 4, parallel: false, scale: 1)) }
    func testParallelAdapter() throws { try check(.adapter(dim: 4, parallel: true, scale: 2), layerScale: true) }
}

/// LoRA dropout: active only in training mode, masks fixed by the seed, about p of the branch input dropped.
final class DropoutTests: XCTestCase {
    func testDropoutOnlyWhileTrainingAndSeeded() throws {
        let c = TrainConfig(dim: 16, depth: 1, heads: 2, patch: 8, imageSize: 16, mlpHidden: 32, classes: 2, layerScale: false)
        let m = try TrainableViT.random(c, seed: 1)
        try m.setTrainable(.lora(rank: 2, alpha: 4, targets: ["qkv"], dropout: 0.5), seed: 2)
        var rng = XRRandom(seed: 3)
        for p in m.trainableParameters where p.name.contains("lora_B") { for i in 0..<p.count { p.value.p[i] = rng.nextGaussian() } }
        let px = (0..<(2 * 3 * 16 * 16)).map { _ in rng.nextGaussian() }
        let eval1 = try m.forward(pixels: px, batch: 2), eval2 = try m.forward(pixels: px, batch: 2)
        XCTAssertEqual(eval1, eval2)
        m.training = true
        m.dropoutSeed = 7
        let a = try m.forward(pixels: px, batch: 2)
        let b = try m.forward(pixels: px, batch: 2)
        m.dropoutSeed = 8
        let c2 = try m.forward(pixels: px, batch: 2)
        XCTAssertEqual(a, b, "same seed, same masks")
        XCTAssertNotEqual(a, c2)
        XCTAssertNotEqual(a, eval1)
        XCTAssertThrowsError(try m.setTrainable(.lora(rank: 2, alpha: 4, targets: ["qkv"], dropout: 1)))
    }
}

/// Activation recomputation changes memory, not results.
final class RecomputeTests: XCTestCase {
    func testRecomputedGradientsAreIdentical() throws {
        let c = TrainConfig(dim: 16, depth: 3, heads: 2, patch: 8, imageSize: 16, mlpHidden: 32, classes: 3, layerScale: true)
        for set in [
            TrainableSet.full, .lastBlocks(2), .lora(rank: 2, alpha: 4, targets: ["qkv", "fc1"], dropout: 0.2), .adapter(dim: 4, parallel: false, scale: 1)
        ] {
            var grads: [[[Float]]] = []
            for recompute in [false, true] {
                let m = try TrainableViT.random(c, seed: 3)
                try m.setTrainable(set, seed: 5)
                m.recompute = recompute
                var rng = XRRandom(seed: 9)
                for p in m.trainableParameters where p.name.contains("lora_B") || p.name.contains("adapter.up") || p.name.hasPrefix("head") {
                    for i in 0..<p.count { p.value.p[i] = rng.nextGaussian() * 0.3 }
                }
                let px = (0..<(2 * 3 * 16 * 16)).map { _ in rng.nextGaussian() }
                m.training = true
                m.dropoutSeed = 11
                m.zeroGrad()
                let logits = try m.forward(pixels: px, batch: 2)
                m.training = false
                m.backward(dlogits: Loss.crossEntropy(logits: logits, labels: [0, 2], classes: 3).dlogits)
                grads.append(m.trainableParameters.map { $0.grad!.array })
            }
            XCTAssertEqual(grads[0], grads[1], "\(set)")
        }
    }
}

/// The class-token shortcut of the last block against the every-row computation.
final class ClassTokenShortcutTests: XCTestCase {
    /// Under class-token pooling the last block runs past its keys and values on the class-token
    /// rows only; logits and every trainable gradient equal the every-row computation.
    func testClassTokenLastBlockMatchesEveryRow() throws {
        let sets: [TrainableSet] = [
            .full, .lastBlocks(1), .lastBlocks(2), .bitFit, .head,
            .lora(rank: 2, alpha: 4, targets: ["qkv", "proj", "fc1", "fc2"]),
            .adapter(dim: 4, parallel: false, scale: 1), .adapter(dim: 3, parallel: true, scale: 0.5)
        ]
        for layerScale in [false, true] {
            let c = TrainConfig(
                dim: 16, depth: 3, heads: 2, patch: 8, imageSize: 16, mlpHidden: 32, classes: 3, layerScale: layerScale,
                headHidden: layerScale ? 6 : nil)
            for set in sets {
                for (recompute, B) in [(false, 3), (true, 3), (false, 1)] { // one image: single-row products
                    var logits: [[Float]] = [], grads: [[[Float]]] = []
                    for shortcut in [true, false] {
                        let m = try TrainableViT.random(c, seed: 3)
                        try m.setTrainable(set, seed: 5)
                        m.recompute = recompute
                        m.classTokenShortcut = shortcut
                        var rng = XRRandom(seed: 9)
                        for p in m.trainableParameters where p.name.contains("lora_B") || p.name.contains("adapter.up") || p.name.hasPrefix("head") {
                            for i in 0..<p.count { p.value.p[i] = rng.nextGaussian() * 0.3 }
                        }
                        let px = (0..<(B * 3 * 16 * 16)).map { _ in rng.nextGaussian() }
                        m.zeroGrad()
                        let l = try m.forward(pixels: px, batch: B)
                        m.backward(dlogits: Loss.crossEntropy(logits: l, labels: Array([0, 2, 1].prefix(B)), classes: 3).dlogits)
                        logits.append(l)
                        grads.append(m.trainableParameters.map { $0.grad!.array })
                    }
                    let what = "\(set) layerScale \(layerScale) recompute \(recompute) batch \(B)"
                    assertClose(logits[0], logits[1], rel: 1e-6, "logits, \(what)")
                    XCTAssertEqual(grads[0].count, grads[1].count)
                    for (k, (a, b)) in zip(grads[0], grads[1]).enumerated() {
                        assertClose(a, b, rel: 1e-5, "gradient \(k), \(what)")
                    }
                }
            }
        }
    }
}
