import XCTest
import XRTensor
@testable import XRTrain
import TestSupport

/// Gradients and 20-step training trajectories against PyTorch + PEFT
/// (`fixtures/make_train_fixtures.py`: timm ViT 32 px, patch 8, dim 48, depth 3, 3 heads).
final class TrainParityTests: XCTestCase {
    let f = TrainFixture()
    func load(_ n: String) throws -> [String: Tensor] { try f.load(n) }
    func model() throws -> TrainableViT { try f.model() }
    func data() throws -> TrainFixture.Data { try f.data() }
    func batch(_ d: TrainFixture.Data, _ i: [Int]) -> ([Float], [Int]) { f.batch(d, i) }
    func trajectory(_ m: TrainableViT, _ r: [String: Tensor], _ w: String) throws { try f.trajectory(m, r, w) }

    func testFullGradientsMatchAutograd() throws {
        let m = try model(), d = try data(), ref = try load("grads_full")
        try m.setTrainable(.full)
        let (px, y) = batch(d, d.batches[0])
        m.zeroGrad()
        let logits = try m.forward(pixels: px, batch: y.count)
        let (loss, dl) = Loss.crossEntropy(logits: logits, labels: y, classes: 3, smoothing: 0.1)
        XCTAssertEqual(loss, Double(ref["loss"]!.scalars[0]), accuracy: 1e-5 * loss)
        m.backward(dlogits: dl)
        var checked = 0, worst = 0.0
        for p in m.parameters {
            let want = try XCTUnwrap(ref["grad.\(p.name)"], p.name)
            let (rel, maxAbs, i) = relativeL2(p.grad!.array, want.scalars)
            XCTAssertLessThan(rel, 1e-4, "\(p.name): relative L2 \(rel), max |diff| \(maxAbs) at \(i)")
            worst = max(worst, rel)
            checked += 1
        }
        XCTAssertEqual(checked, ref.keys.filter { $0.hasPrefix("grad.") }.count)
        print("full fine-tuning: \(checked) parameter gradients, worst relative L2 \(worst)")
    }

    func testLoRATrajectoryMatchesPEFT() throws {
        let m = try model(), ref = try load("lora")
        var initA: [String: Tensor] = [:]
        for (k, v) in ref where k.hasPrefix("init.") { initA[String(k.dropFirst(5))] = v }
        try m.setTrainable(.lora(rank: 8, alpha: 16, targets: ["qkv"]), loraInit: initA)
        XCTAssertEqual(m.trainableParameters.count, 3 * 2 + 2)
        try trajectory(m, ref, "LoRA r=8 qkv")
        let merged = m.mergedWeights()
        for i in 0..<3 {
            let name = "blocks.\(i).attn.qkv.weight"
            assertClose(try XCTUnwrap(merged[name]).scalars, ref["merged.\(name)"]!.scalars, rel: 1e-5, "merged \(name)")
        }
    }

    func testLastTwoBlocksTrajectoryMatchesPyTorch() throws {
        let m = try model(), ref = try load("last2")
        try m.setTrainable(.lastBlocks(2))
        try trajectory(m, ref, "last-2 blocks")
    }

    func testLoRATargetThatMatchesNothing() throws {
        let m = try model()
        XCTAssertThrowsError(try m.setTrainable(.lora(rank: 4, alpha: 8, targets: ["query", "value"]))) { e in
            XCTAssertTrue("\(e)".contains("match no linear layer") && "\(e)".contains("targets"), "\(e)")
        }
        try m.setTrainable(.lora(rank: 4, alpha: 8, targets: ["mlp.*", "blocks.2.attn.proj"]))
        XCTAssertEqual(
            Set(m.trainableParameters.filter { $0.name.contains("lora_A") }.map(\.name)),
            [
                "blocks.0.mlp.fc1.lora_A.weight", "blocks.0.mlp.fc2.lora_A.weight", "blocks.1.mlp.fc1.lora_A.weight",
                "blocks.1.mlp.fc2.lora_A.weight", "blocks.2.mlp.fc1.lora_A.weight", "blocks.2.mlp.fc2.lora_A.weight",
                "blocks.2.attn.proj.lora_A.weight"
            ])
        // Frozen parameters have no gradient buffers.
        XCTAssertTrue(m.parameters.filter { !$0.trainable }.allSatisfy { $0.grad == nil })
    }

    func testNaNLossStopsWithoutUpdating() throws {
        let m = try model(), d = try data()
        try m.setTrainable(.lastBlocks(1))
        let before = m.trainableParameters.map { $0.value.array }
        var (px, y) = batch(d, d.batches[0])
        px[5] = .nan
        XCTAssertThrowsError(try trainStep(m, AdamW(), pixels: px, labels: y, lr: 1e-3)) { XCTAssertTrue("\($0)".contains("loss is nan"), "\($0)") }
        XCTAssertEqual(m.trainableParameters.map { $0.value.array }, before, "no update after a non-finite loss")
    }
}
