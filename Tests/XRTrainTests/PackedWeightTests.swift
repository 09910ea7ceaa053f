import XCTest
import XRTensor
@testable import XRTrain
import TestSupport

/// Frozen linear weights are packed once for `packedGEMM`; these check the packed copies never
/// go stale: values assigned to a frozen weight, and a weight that was trained and then frozen,
/// give the same outputs and input gradients as a model built from those values.
final class PackedWeightTests: XCTestCase {
    let config = TrainConfig(dim: 16, depth: 2, heads: 2, patch: 8, imageSize: 16, mlpHidden: 32, classes: 3, layerScale: false)

    func outputs(_ m: TrainableViT, _ px: [Float]) throws -> (logits: [Float], lora: [Float]) {
        m.zeroGrad()
        let logits = try m.forward(pixels: px, batch: 2)
        m.backward(dlogits: logits.map { $0 * 0.5 })
        // LoRA A's gradient depends on the input gradient through every frozen layer above it.
        let grads = m.trainableParameters.filter { $0.name.contains("blocks.0.") }.flatMap { $0.grad!.array }
        return (logits, grads)
    }

    func tensors(_ m: TrainableViT) -> [String: Tensor] {
        var t: [String: Tensor] = [:]
        for (name, _) in TrainableViT.tensorShapes(config) { t[name] = m.parameter(name)!.tensor }
        return t
    }

    func testAssignedFrozenWeightsAreUsed() throws {
        let m = try TrainableViT.random(config, seed: 3)
        let lora = TrainableSet.lora(rank: 2, alpha: 4, targets: ["qkv"])
        try m.setTrainable(lora, seed: 5)
        var rng = XRRandom(seed: 8)
        for p in m.trainableParameters where p.name.contains("lora_B") { for i in 0..<p.count { p.value.p[i] = rng.nextGaussian() * 0.3 } }
        let px = (0..<(2 * 3 * 16 * 16)).map { _ in rng.nextGaussian() }
        let before = try outputs(m, px) // packs the frozen weights

        for name in ["blocks.0.mlp.fc1.weight", "blocks.1.attn.proj.weight", "blocks.1.mlp.fc2.weight"] {
            let p = m.parameter(name)!
            XCTAssertFalse(p.trainable)
            p.assign(p.value.array.map { $0 * -1.5 + 0.01 })
        }
        let after = try outputs(m, px)
        let fresh = try TrainableViT(config: config, tensors: tensors(m), source: "test")
        try fresh.setTrainable(lora, seed: 5)
        for p in fresh.trainableParameters { p.assign(m.parameter(p.name)!.value.array) }
        let want = try outputs(fresh, px)
        XCTAssertNotEqual(before.logits, after.logits)
        assertClose(after.logits, want.logits, rel: 1e-6, "logits after assigning frozen weights")
        assertClose(after.lora, want.lora, rel: 1e-6, "LoRA gradients after assigning frozen weights")
    }

    func testWeightTrainedThenFrozenIsRepacked() throws {
        let m = try TrainableViT.random(config, seed: 4)
        try m.setTrainable(.lastBlocks(1), seed: 1)
        var rng = XRRandom(seed: 9)
        let px = (0..<(2 * 3 * 16 * 16)).map { _ in rng.nextGaussian() }
        try m.setTrainable(.head, seed: 1)
        _ = try outputs(m, px) // block 1 frozen: packed
        try m.setTrainable(.lastBlocks(1), seed: 1) // trainable again: updated in place
        let w = m.parameter("blocks.1.mlp.fc1.weight")!
        XCTAssertTrue(w.trainable)
        for i in 0..<w.count { w.value.p[i] += 0.05 * rng.nextGaussian() } // as an optimiser step does
        try m.setTrainable(.head, seed: 1) // frozen again
        let got = try outputs(m, px)
        let fresh = try TrainableViT(config: config, tensors: tensors(m), source: "test")
        try fresh.setTrainable(.head, seed: 1)
        assertClose(got.logits, try outputs(fresh, px).logits, rel: 1e-6, "logits after training then freezing a block")
    }
}
