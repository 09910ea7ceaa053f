import XCTest
import XRTensor
import XRModels
@testable import XRTrain
import TestSupport

/// Every tuning method on EVA-02 encoders (the `ti` and `b` training fixtures): whole-model
/// gradients against a central finite difference of the loss along a random direction in the
/// trainable parameters, through the pooled head and through the patch-token output; LoRA's
/// layer names; activation recomputation.
final class EVAModelGradientTests: XCTestCase {
    let f = EVATrainFixture()

    /// Every linear layer of an EVA block as LoRA names it.
    func everyLinear(_ tag: String) -> [String] {
        tag == "ti" ? ["qkv", "proj", "fc1", "fc2"] : ["q_proj", "k_proj", "v_proj", "proj", "fc1_g", "fc1_x", "fc2"]
    }

    /// `tokens`: L = Σ w ⊙ tokens² on the patch-token output instead of the head's cross entropy.
    func check(
        _ tag: String, _ set: TrainableSet, tokens: Bool = false, headHidden: Int? = nil, file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let m = try f.model(tag, headHidden: headHidden)
        try m.setTrainable(set, seed: 5)
        m.training = true // LoRA dropout active, with one fixed mask for every evaluation
        m.dropoutSeed = 42
        var rng = XRRandom(seed: 9)
        for p in m.trainableParameters where p.name.contains("lora_B") || p.name.contains("adapter.up") {
            for i in 0..<p.count { p.value.p[i] = rng.nextGaussian() * 0.3 }
        }
        let B = 2, S = 32, N = 16, C = 32
        let px = (0..<(B * 3 * S * S)).map { _ in rng.nextGaussian() }
        let w = (0..<(B * N * C)).map { _ in rng.nextGaussian() }
        let y = [0, 2]
        func loss() throws -> Double {
            if tokens { return zip(try m.forwardPatchTokens(pixels: px, batch: B), w).reduce(0.0) { $0 + Double($1.0 * $1.0 * $1.1) } }
            return Loss.crossEntropy(logits: try m.forward(pixels: px, batch: B), labels: y, classes: 3, smoothing: 0.1).loss
        }
        m.zeroGrad()
        if tokens {
            let t = try m.forwardPatchTokens(pixels: px, batch: B)
            XCTAssertEqual(t.count, B * N * C)
            m.backwardPatchTokens(zip(t, w).map { 2 * $0 * $1 })
        } else {
            m.backward(dlogits: Loss.crossEntropy(logits: try m.forward(pixels: px, batch: B), labels: y, classes: 3, smoothing: 0.1).dlogits)
        }
        // The patch tokens do not reach the head or fc_norm (on the pooled mean only).
        let params = m.trainableParameters.filter { !tokens || !($0.name.hasPrefix("head") || $0.name.hasPrefix("fc_norm")) }
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
            "\(tag) \(set)\(tokens ? " patch tokens" : ""): directional derivative", file: file, line: line)
    }

    func testEveryMethod() throws {
        for tag in ["ti", "b"] {
            try check(tag, .full)
            try check(tag, .lastBlocks(1))
            try check(tag, .bitFit)
            try check(tag, .head)
            try check(tag, .lora(rank: 2, alpha: 4, targets: everyLinear(tag)))
            try check(tag, .lora(rank: 2, alpha: 4, targets: everyLinear(tag), dropout: 0.3))
            try check(tag, .adapter(dim: 4, parallel: false, scale: 1))
            try check(tag, .adapter(dim: 4, parallel: true, scale: 2))
            try check(tag, .lastBlocks(1), headHidden: 6)
        }
    }

    func testPatchTokenGradients() throws {
        for tag in ["ti", "b"] {
            try check(tag, .full, tokens: true)
            try check(tag, .lastBlocks(1), tokens: true)
            try check(tag, .lora(rank: 2, alpha: 4, targets: everyLinear(tag)), tokens: true)
        }
    }

    /// LoRA targets are PEFT's `target_modules` on timm's `Eva`: the fused `qkv` or `q_proj` /
    /// `k_proj` / `v_proj`, and the SwiGLU projections `fc1` (EVA's w12) or `fc1_g` / `fc1_x` (w1 /
    /// w2) and `fc2` (w3); the adapter written for PEFT names them so.
    func testLoRALayerNamesAndExport() throws {
        let m = try f.model("b")
        try m.setTrainable(.lora(rank: 2, alpha: 4, targets: ["attn.*", "fc1_g"]))
        XCTAssertEqual(
            m.trainableParameters.filter { $0.name.contains("lora_A") && $0.name.hasPrefix("blocks.0.") }.map(\.name),
            ["q_proj", "k_proj", "v_proj", "proj"].map { "blocks.0.attn.\($0).lora_A.weight" } + ["blocks.0.mlp.fc1_g.lora_A.weight"])
        XCTAssertThrowsError(try m.setTrainable(.lora(rank: 2, alpha: 4, targets: ["w12"]))) { e in
            XCTAssertTrue("\(e)".contains("match no linear layer") && "\(e)".contains("fc1_g"), "\(e)")
        }
        let ti = try f.model("ti")
        try ti.setTrainable(.lora(rank: 2, alpha: 4, targets: ["qkv", "fc1", "fc2"]))
        let dir = Fixtures.tempDir("xrlab-eva-peft")
        try PEFTAdapter.export(ti, to: dir)
        let adapter = try PEFTAdapter.load(dir)
        XCTAssertEqual(adapter.targets, ["fc1", "fc2", "qkv"])
        let back = try f.model("ti")
        try back.apply(adapter, source: dir.path)
        XCTAssertEqual(back.loraLayers.map(\.name), ti.loraLayers.map(\.name))
    }

    /// Activation recomputation changes memory, not results.
    func testRecomputedGradientsAreIdentical() throws {
        for tag in ["ti", "b"] {
            for set in [
                TrainableSet.full, .lastBlocks(1), .lora(rank: 2, alpha: 4, targets: everyLinear(tag), dropout: 0.2),
                .adapter(dim: 4, parallel: false, scale: 1)
            ] {
                var grads: [[[Float]]] = []
                for recompute in [false, true] {
                    let m = try f.model(tag)
                    try m.setTrainable(set, seed: 5)
                    m.recompute = recompute
                    var rng = XRRandom(seed: 9)
                    for p in m.trainableParameters where p.name.contains("lora_B") || p.name.contains("adapter.up") {
                        for i in 0..<p.count { p.value.p[i] = rng.nextGaussian() * 0.3 }
                    }
                    let px = (0..<(2 * 3 * 32 * 32)).map { _ in rng.nextGaussian() }
                    m.training = true
                    m.dropoutSeed = 11
                    m.zeroGrad()
                    let logits = try m.forward(pixels: px, batch: 2)
                    m.training = false
                    m.backward(dlogits: Loss.crossEntropy(logits: logits, labels: [0, 2], classes: 3).dlogits)
                    grads.append(m.trainableParameters.map { $0.grad!.array })
                }
                XCTAssertEqual(grads[0], grads[1], "\(tag) \(set)")
            }
        }
    }
}
