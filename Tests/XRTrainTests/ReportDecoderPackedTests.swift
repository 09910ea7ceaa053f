import XCTest
import XRTensor
@testable import XRTrain
import TestSupport

/// The report decoder's training step with its products on the packed kernel (weights packed per
/// pass, weight gradients `packedProductTransposedA`, fused residual and GELU epilogues) against
/// the same step on OpenBLAS sgemm, on sizes that are multiples of nothing: width 40 (not a
/// multiple of the 16-column panel), 279 rows through the blocks (row blocks, a ragged 6-row
/// strip), a 1,101-token vocabulary (the logits' input gradient takes two depth passes), 11 visual
/// tokens of width 27. Tolerance: relative L2 1e-5 for logits, every parameter gradient and the
/// visual-token gradient at the first step (fp32 sums in another order), and 2e-4 at the second,
/// after an AdamW update (the packings must follow the updated weights): AdamW divides each
/// gradient by its own running size, so the first step's last-bit differences become update
/// differences of up to the learning rate's order in near-zero gradients (measured up to 5.1e-5);
/// stale packings give errors of order 1.
final class ReportDecoderPackedTests: XCTestCase {
    func testPackedStepMatchesSgemmStep() throws { try check(visualPrefix: false) }
    func testPackedStepMatchesSgemmStepWithVisualPrefix() throws { try check(visualPrefix: true) }

    /// Hugging Face-named random weights for `c` (Conv1D weights (in, out)).
    func randomTensors(_ c: DecoderConfig, seed: UInt64) -> [String: Tensor] {
        var rng = XRRandom(seed: seed)
        let C = c.dim
        var t: [String: Tensor] = [:]
        func add(_ name: String, _ shape: [Int], scale: Float = 0.2, offset: Float = 0) {
            t[name] = Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { _ in offset + scale * rng.nextGaussian() })
        }
        add("transformer.wte.weight", [c.vocab, C])
        add("transformer.wpe.weight", [c.positions, C], scale: 0.05)
        var norms = ["transformer.ln_f"]
        for i in 0..<c.layers {
            let p = "transformer.h.\(i)."
            norms += [p + "ln_1", p + "ln_2"] + (c.visualPrefix ? [] : [p + "ln_cross_attn"])
            var convs = [("attn.c_attn", 3 * C, C), ("attn.c_proj", C, C), ("mlp.c_fc", 4 * C, C), ("mlp.c_proj", C, 4 * C)]
            if !c.visualPrefix { convs += [("crossattention.q_attn", C, C), ("crossattention.c_attn", 2 * C, C), ("crossattention.c_proj", C, C)] }
            for (n, o, inp) in convs {
                add(p + n + ".weight", [inp, o], scale: 1 / Float(inp).squareRoot())
                add(p + n + ".bias", [o], scale: 0.05)
            }
        }
        for n in norms {
            add(n + ".weight", [C], scale: 0.1, offset: 1)
            add(n + ".bias", [C], scale: 0.05)
        }
        add("visual_proj.weight", [C, c.visualDim], scale: 1 / Float(c.visualDim).squareRoot())
        add("visual_proj.bias", [C], scale: 0.05)
        return t
    }

    func check(visualPrefix: Bool) throws {
        let c = DecoderConfig(vocab: 1101, positions: 128, dim: 40, layers: 2, heads: 4, visualDim: 27, visualPrefix: visualPrefix)
        let tensors = randomTensors(c, seed: 41)
        let packed = try ReportDecoder(config: c, tensors: tensors, source: "random")
        let blas = try ReportDecoder(config: c, tensors: tensors, source: "random")
        XCTAssertFalse(blas.packedProducts)
        packed.packedProducts = true
        for m in [packed, blas] { m.needsVisualGradient = true }
        var rng = XRRandom(seed: 42)
        let B = 3, S = 11, T = 93
        let v = (0..<(B * S * c.visualDim)).map { _ in rng.nextGaussian() }
        let ids = (0..<(B * T)).map { _ in rng.nextInt(below: c.vocab) }
        var labels = ids
        for t in 80..<T { labels[2 * T + t] = -100 } // a shorter third report
        let lengths = [T, T, 80]
        let optimisers = [AdamW(weightDecay: 0.01), AdamW(weightDecay: 0.01)]
        for step in 0..<2 {
            var results: [(logits: [Float], loss: Double)] = []
            for m in [packed, blas] {
                m.zeroGrad()
                let logits = try m.forward(visual: v, visualTokens: S, ids: ids, batch: B, lengths: lengths)
                results.append((logits, m.lossAndBackward(labels: labels, smoothing: 0.1).loss))
            }
            let what = "\(visualPrefix ? "prefix" : "cross-attention") step \(step)"
            let tol = step == 0 ? 1e-5 : 2e-4
            assertClose(results[0].logits, results[1].logits, rel: tol, "logits, " + what)
            XCTAssertEqual(results[0].loss, results[1].loss, accuracy: tol * results[1].loss, what)
            for (p, q) in zip(packed.parameters, blas.parameters) {
                XCTAssertEqual(p.name, q.name)
                assertClose(try XCTUnwrap(p.grad).array, try XCTUnwrap(q.grad).array, rel: tol, "\(p.name) gradient, " + what)
            }
            assertClose(packed.visualGradient, blas.visualGradient, rel: tol, "visual-token gradient, " + what)
            if step == 0 {
                // The update moves the weights: the next step's packings must follow them.
                for (m, opt) in zip([packed, blas], optimisers) { opt.update(m.parameters, lr: 1e-2) }
                XCTAssertNotEqual(packed.parameters[0].value.array, tensors["transformer.wte.weight"]?.scalars)
            }
        }
    }
}
