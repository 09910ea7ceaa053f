import XCTest
import XRTensor
import XRModels
@testable import XRTrain
import TestSupport

/// The EVA-02 training fixtures (`fixtures/make_eva_train_fixtures.py`: timm `Eva` as EVA-X builds
/// it, 32 px, patch 8, dim 32, depth 2, 2 heads, 3 classes; `ti` fused qkv + packed SwiGLU, `b`
/// separate q/k/v + SwiGLU halves + both sub-LayerNorms; references in float64).
struct EVATrainFixture {
    func load(_ name: String) throws -> [String: Tensor] {
        let f = try SafeTensorsFile(contentsOf: Fixtures.url("eva_train/\(name).safetensors"))
        var out: [String: Tensor] = [:]
        for n in f.names { out[n] = try f.tensor(n) }
        return out
    }

    /// The fixture's model, its architecture read by the encoder's loader, with its head.
    func model(_ tag: String, headHidden: Int? = nil) throws -> TrainableViT {
        let encoder = try ViTLoader.load(Fixtures.url("eva_train/\(tag)_model.safetensors"), heads: 2).config
        XCTAssertEqual(encoder.blockKind, .eva02)
        return try TrainableViT(
            config: TrainConfig(encoder: encoder, classes: 3, headHidden: headHidden), tensors: load("\(tag)_model"), source: "\(tag)_model.safetensors")
    }

    func data() throws -> TrainFixture.Data {
        let d = try load("data")
        let b = try XCTUnwrap(d["batches"])
        return TrainFixture.Data(
            pixels: try XCTUnwrap(d["pixels"]).scalars, labels: try XCTUnwrap(d["labels"]).scalars.map { Int($0) },
            batches: (0..<b.shape[0]).map { i in (0..<b.shape[1]).map { Int(b.scalars[i * b.shape[1] + $0]) } })
    }
}

/// EVA-02 gradients and a 20-step PEFT LoRA trajectory against PyTorch autograd (float64).
final class EVATrainParityTests: XCTestCase {
    let f = EVATrainFixture()
    let tags = ["ti", "b"]

    /// Cross entropy (label smoothing 0.1) on batch 0; returns the model's loss.
    func step0(_ m: TrainableViT) throws -> Double {
        let d = try f.data()
        let (px, y) = TrainFixture().batch(d, d.batches[0])
        m.zeroGrad()
        let (loss, dl) = Loss.crossEntropy(logits: try m.forward(pixels: px, batch: y.count), labels: y, classes: 3, smoothing: 0.1)
        m.backward(dlogits: dl)
        return loss
    }

    /// Full fine-tuning: the loss and the gradient of every parameter (embeddings, norms and
    /// sub-norms, q / v biases, every projection, fc_norm, head) within 1e-5 relative L2.
    func testFullGradientsMatchAutograd() throws {
        for tag in tags {
            let m = try f.model(tag), ref = try f.load("\(tag)_grads")
            try m.setTrainable(.full)
            let loss = try step0(m)
            XCTAssertEqual(loss, Double(try XCTUnwrap(ref["loss"]).scalars[0]), accuracy: 1e-5 * loss, tag)
            var worst = 0.0
            for p in m.parameters {
                let want = try XCTUnwrap(ref["grad.\(p.name)"], "\(tag): no reference gradient for \(p.name)")
                let (rel, maxAbs, i) = relativeL2(try XCTUnwrap(p.grad).array, want.scalars)
                XCTAssertLessThanOrEqual(rel, 1e-5, "\(tag) \(p.name): relative L2 \(rel), max |diff| \(maxAbs) at \(i)")
                worst = max(worst, rel)
            }
            XCTAssertEqual(m.parameters.count, ref.keys.filter { $0.hasPrefix("grad.") }.count, tag)
            print("EVA \(tag) full fine-tuning: \(m.parameters.count) parameter gradients, worst relative L2 \(worst)")
        }
    }

    /// Last-k, BitFit and head-only: the trainable parameters get the full run's gradients (the
    /// frozen blocks below run without saved activations), frozen ones get no buffer.
    func testPartialSetsMatchAutograd() throws {
        for tag in tags {
            let ref = try f.load("\(tag)_grads")
            for set in [TrainableSet.lastBlocks(1), .lastBlocks(0), .bitFit, .head] {
                let m = try f.model(tag)
                try m.setTrainable(set)
                _ = try step0(m)
                XCTAssertFalse(m.trainableParameters.isEmpty)
                for p in m.trainableParameters {
                    let (rel, maxAbs, i) = relativeL2(try XCTUnwrap(p.grad).array, try XCTUnwrap(ref["grad.\(p.name)"]).scalars)
                    XCTAssertLessThanOrEqual(rel, 1e-5, "\(tag) \(set) \(p.name): relative L2 \(rel), max |diff| \(maxAbs) at \(i)")
                }
                XCTAssertTrue(m.parameters.filter { !$0.trainable }.allSatisfy { $0.grad == nil })
                if set == .bitFit {
                    let names = Set(m.trainableParameters.map(\.name))
                    let biases = tag == "ti" ? ["blocks.0.attn.q_bias", "blocks.0.attn.v_bias"] : ["blocks.0.attn.q_proj.bias", "blocks.0.attn.v_proj.bias"]
                    for b in biases + ["blocks.1.mlp.fc2.bias", "fc_norm.bias"] { XCTAssertTrue(names.contains(b), "\(tag) BitFit trains \(b)") }
                }
            }
        }
    }

    /// PEFT LoRA (r 4, alpha 8) on the attention input projections and the SwiGLU projections,
    /// head trained too: step-0 gradients, 20 AdamW steps (warmup + cosine, clipping, label
    /// smoothing) and the final LoRA and head weights against PEFT run in float64: gradients within
    /// 1e-5, each step's loss within 2e-5 and the final weights within 5e-5 relative L2.
    func testLoRATrajectoryMatchesPEFT() throws {
        for tag in tags {
            let m = try f.model(tag), ref = try f.load("\(tag)_lora"), d = try f.data()
            var initA: [String: Tensor] = [:]
            for (k, v) in ref where k.hasPrefix("init.") { initA[String(k.dropFirst(5))] = v }
            let targets = tag == "ti" ? ["qkv", "fc1", "fc2"] : ["q_proj", "k_proj", "v_proj", "fc1_g", "fc1_x", "fc2"]
            try m.setTrainable(.lora(rank: 4, alpha: 8, targets: targets), loraInit: initA)
            XCTAssertEqual(m.trainableParameters.count, 2 * targets.count * 2 + 2, tag)
            let opt = AdamW(weightDecay: 0.05)
            let schedule = Schedule(peak: 3e-3, warmup: 3, total: 20)
            let losses = try XCTUnwrap(ref["losses"]).scalars
            var worstLoss = 0.0, worstGrad = 0.0, worstFinal = 0.0
            for step in 0..<20 {
                let (px, y) = TrainFixture().batch(d, d.batches[step])
                m.zeroGrad()
                let (loss, dl) = Loss.crossEntropy(logits: try m.forward(pixels: px, batch: y.count), labels: y, classes: 3, smoothing: 0.1)
                m.backward(dlogits: dl)
                if step == 0 {
                    XCTAssertEqual(Set(m.trainableParameters.map { "grad." + $0.name }), Set(ref.keys.filter { $0.hasPrefix("grad.") }), tag)
                    for p in m.trainableParameters {
                        let (rel, maxAbs, i) = relativeL2(try XCTUnwrap(p.grad).array, try XCTUnwrap(ref["grad.\(p.name)"]).scalars)
                        XCTAssertLessThanOrEqual(rel, 1e-5, "\(tag) step-0 gradient \(p.name): relative L2 \(rel), max |diff| \(maxAbs) at \(i)")
                        worstGrad = max(worstGrad, rel)
                    }
                }
                clipGradNorm(m.trainableParameters, maxNorm: 1.0)
                opt.update(m.trainableParameters, lr: schedule.lr(step))
                let rel = abs(loss - Double(losses[step])) / Double(losses[step])
                worstLoss = max(worstLoss, rel)
                XCTAssertLessThanOrEqual(rel, 2e-5, "\(tag) step \(step): loss \(loss) vs PEFT \(losses[step])")
            }
            for p in m.trainableParameters {
                let (rel, maxAbs, i) = relativeL2(p.value.array, try XCTUnwrap(ref["final.\(p.name)"], p.name).scalars)
                XCTAssertLessThanOrEqual(rel, 5e-5, "\(tag) final \(p.name): relative L2 \(rel), max |diff| \(maxAbs) at \(i)")
                worstFinal = max(worstFinal, rel)
            }
            print("EVA \(tag) LoRA \(targets): step-0 gradients worst \(worstGrad), 20 losses worst \(worstLoss), final weights worst \(worstFinal)")
        }
    }

    /// The trainable encoder's features are the inference encoder's: `pooled` (fc_norm of the
    /// patch mean) and the patch tokens; and one built from the loaded encoder (weights exported
    /// under canonical names, split back into q / v biases, q / k / v, SwiGLU halves) is the same model.
    func testForwardMatchesInferenceEncoder() throws {
        let d = try f.data()
        let px = Array(d.pixels[0..<(2 * 3 * 32 * 32)])
        for tag in tags {
            let loaded = try ViTLoader.load(Fixtures.url("eva_train/\(tag)_model.safetensors"), heads: 2)
            let out = try loaded.model.forward(pixels: px, batch: 2, height: 32, width: 32)
            let m = try f.model(tag)
            _ = try m.forward(pixels: px, batch: 2)
            assertClose(m.lastPooled, out.pooled.scalars, rel: 1e-5, "\(tag) pooled")
            assertClose(try m.forwardPatchTokens(pixels: px, batch: 2), out.patchTokens.scalars, rel: 1e-5, "\(tag) patch tokens")
            let exported = try TrainableViT(from: loaded, size: 32, classes: 3)
            XCTAssertEqual(exported.parameters.map(\.name), m.parameters.map(\.name).filter { !$0.hasPrefix("head") } + ["head.weight", "head.bias"])
            for p in exported.parameters where !p.name.hasPrefix("head") {
                XCTAssertEqual(p.value.array, try XCTUnwrap(m.parameter(p.name)).value.array, "\(tag) exported \(p.name)")
            }
        }
    }

    /// An EVA-X checkpoint as EVA-X saves it (`.pt`, fp16, original names) becomes a trainable
    /// encoder whose pooled features are timm's (fixtures/eva references).
    func testEVAXCheckpointTrains() throws {
        for name in ["eva_x_ti", "eva_x_b"] {
            let loaded = try ViTLoader.load(Fixtures.url("eva/\(name).pt"), heads: 2)
            let ref = try SafeTensorsFile(contentsOf: Fixtures.url("eva/\(name)_reference.safetensors"))
            let px = try ref.tensor("pixels_native")
            let S = px.shape[2]
            let m = try TrainableViT(from: loaded, size: S, classes: 2)
            _ = try m.forward(pixels: px.scalars, batch: px.shape[0])
            assertClose(m.lastPooled, try ref.tensor("native.pooled").scalars, rel: 1e-5, "\(name) pooled through the trainable encoder")
            try m.setTrainable(.full)
            m.zeroGrad()
            let logits = try m.forward(pixels: px.scalars, batch: px.shape[0])
            m.backward(dlogits: Loss.crossEntropy(logits: logits, labels: [0, 1], classes: 2).dlogits)
            XCTAssertTrue(m.trainableParameters.allSatisfy { p in p.grad!.array.allSatisfy(\.isFinite) }, name)
        }
    }
}
