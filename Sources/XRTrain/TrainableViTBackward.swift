// The trainable ViT's backward: head, final norm, blocks in reverse order, token assembly; only
// trainable parameters get gradients. B batch, T tokens, C width, M MLP width, N patches.
import Foundation
import XRTensor
import XRKernels

extension TrainableViT {
    /// Accumulate gradients of the trainable parameters from dlogits (B, classes) of the last forward.
    public func backward(dlogits: [Float]) {
        precondition(!tokenMode, "backward: the last forward returned patch tokens; use backwardPatchTokens")
        withSingleThreadedBLAS { backwardBody(dlogits: dlogits) }
    }

    /// Accumulate gradients of the trainable parameters from d(patch tokens) (B, N, C) of the last
    /// `forwardPatchTokens`. The head takes no part.
    public func backwardPatchTokens(_ dtokens: [Float]) {
        precondition(tokenMode, "backwardPatchTokens: the last forward was not forwardPatchTokens")
        let c = config, B = batch, C = c.dim, T = c.tokens, R = B * T, N = c.grid * c.grid
        precondition(dtokens.count == B * N * C, "backwardPatchTokens: gradient must be (B, N, C) of the last forward")
        if c.encoder.blockKind == .eva02 { evaBackwardPatchTokens(dtokens); return }
        guard let lowest = lowestTrainableBlock ?? (normW.trainable || normB.trainable ? c.depth : nil) else { return }
        withSingleThreadedBLAS {
            tC2.zero()
            dtokens.withUnsafeBufferPointer { d in
                for b in 0..<B { (tC2.p + (b * T + 1 + c.registers) * C).update(from: d.baseAddress! + b * N * C, count: N * C) }
            }
            parallelLayerNormBackward(
                dx: lowest < c.depth ? x.p : nil, accumulate: false, dy: tC2.p, x: pooledIn.p, normW, normB,
                mean: fMean.p, rstd: fRstd.p, rows: R, cols: C)
            backwardBlocks(lowest: lowest)
        }
    }

    private func backwardBody(dlogits: [Float]) {
        let c = config, B = batch, C = c.dim, T = c.tokens, R = B * T, N = c.grid * c.grid
        precondition(dlogits.count == B * c.classes, "backward: dlogits must be (B, classes) of the last forward")
        let dl = Buffer(dlogits)
        let headInput = c.headHidden != nil ? headAct.p : pooled.p, headWidth = c.headHidden ?? C
        if let g = headW.grad { BLAS.sgemm(g.p, dl.p, transA: true, headInput, m: c.classes, n: headWidth, k: B, beta: 1) }
        if let g = headB.grad { addColumnSums(g.p, dl.p, rows: B, cols: c.classes) }
        // MLP head: back through GELU and the first layer to d(pooled), kept in `dHead` (B, C).
        var dHead: Buffer? = nil
        if let H = c.headHidden, let w1 = headFc1W {
            let da = Buffer(B * H)
            BLAS.sgemm(da.p, dl.p, headW.value.p, m: B, n: H, k: c.classes)
            geluBackward(da.p, preActivation: headPre.p, count: B * H)
            if let g = w1.grad { BLAS.sgemm(g.p, da.p, transA: true, pooled.p, m: H, n: C, k: B, beta: 1) }
            if let g = headFc1B?.grad { addColumnSums(g.p, da.p, rows: B, cols: H) }
            let dp = Buffer(B * C)
            BLAS.sgemm(dp.p, da.p, w1.value.p, m: B, n: C, k: H)
            dHead = dp
        }
        guard let lowest = lowestTrainableBlock ?? (normW.trainable || normB.trainable ? c.depth : nil) else { return }
        let needNorm = normW.trainable || normB.trainable || lowest < c.depth
        guard needNorm else { return }
        // dpooled (B, C) → through the final norm → dx (R, C).
        let dpooled = scratch
        if let dHead { dpooled.p.update(from: dHead.p, count: B * C) } else { BLAS.sgemm(dpooled.p, dl.p, headW.value.p, m: B, n: C, k: c.classes) }
        let dx = x // reused: the residual-stream gradient
        dx.zero()
        if c.encoder.blockKind == .eva02 {
            evaPoolBackward(dpooled.p)
        } else if c.pooling == "token" {
            layerNormBackward(
                dx: tC.p, accumulate: false, dy: dpooled.p, x: pooledIn.p, weight: normW.value.p, mean: fMean.p, rstd: fRstd.p,
                dweight: normW.grad?.p, dbias: normB.grad?.p, rows: B, cols: C)
            for b in 0..<B { (dx.p + b * T * C).update(from: tC.p + b * C, count: C) }
        } else {
            tC2.zero()
            for b in 0..<B { for n in (1 + c.registers)..<T { for i in 0..<C { tC2.p[(b * T + n) * C + i] = dpooled.p[b * C + i] / Float(N) } } }
            layerNormBackward(
                dx: dx.p, accumulate: false, dy: tC2.p, x: pooledIn.p, weight: normW.value.p, mean: fMean.p, rstd: fRstd.p,
                dweight: normW.grad?.p, dbias: normB.grad?.p, rows: R, cols: C)
        }
        backwardBlocks(lowest: lowest)
    }

    /// From the residual-stream gradient in `x` (B·T, C) at the last block's output down to the
    /// lowest trainable parameter.
    func backwardBlocks(lowest: Int) {
        let c = config, B = batch, C = c.dim, T = c.tokens, R = B * T, M = c.mlpHidden, N = c.grid * c.grid
        let dx = x
        guard lowest < c.depth else { return }
        for i in stride(from: c.depth - 1, through: max(lowest, 0), by: -1) {
            if let eb = blocks[i] as? EVABlockParams { evaBlockBackward(i, eb, caches[i], needInput: i > lowest); continue }
            guard let bp = blocks[i] as? BlockParams else { preconditionFailure("backward: block \(i) is of no known kind") }
            let cache = caches[i]
            if recompute {
                // Rebuild this block's activations from its saved input (same dropout masks).
                tC2.p.update(from: savedInputs[i].p, count: R * C)
                trainingBlock(i, bp, cache, x: tC2.p, batch: B, training: lastForwardTraining, classToken: i == c.depth - 1 && lastForwardClassToken)
            }
            let needInput = i > lowest
            // Rows past the attention: every row, or for the class-token last block one per image,
            // with their residual-stream gradient gathered into `classGrad`.
            let classToken = i == c.depth - 1 && lastForwardClassToken
            let Q = classToken ? B : R, dr = classToken ? classGrad.p : dx.p
            if classToken { for b in 0..<B { (dr + b * C).update(from: dx.p + b * T * C, count: C) } }
            // x = xMid + ls2 ⊙ y2 (a sequential adapter adds to dy2, so it must not be dr itself)
            let dy2 = branchGrad(tC.p, dr, bp.ls2, cache.y2.p, rows: Q, cols: C, copy: bp.adapter.map { !$0.parallel } ?? false)
            // Adapter branch: y2 += s · up(GELU(down(in))), in = y2 before the adapter (sequential) or h2 (parallel).
            let adapterInputGrad = bp.adapter.flatMap { adapterBackward($0, cache, dy2: dy2, rows: Q) } // t3C is free until the attention
            bp.fc2.backward(dinp: tM.p, accumulate: false, dout: dy2, inp: cache.a.p, rows: Q, lora: cache.lora[bp.fc2.name], scratch: scratch.p)
            parallelRows(Q) { r in geluBackward(tM.p + r.lowerBound * M, preActivation: cache.u.p + r.lowerBound * M, count: r.count * M) }
            bp.fc1.backward(dinp: tC2.p, accumulate: false, dout: tM.p, inp: cache.h2.p, rows: Q, lora: cache.lora[bp.fc1.name], scratch: scratch.p)
            if let g = adapterInputGrad { parallelRows(Q) { rr in for j in (rr.lowerBound * C)..<(rr.upperBound * C) { tC2.p[j] += g[j] } } }
            parallelLayerNormBackward(
                dx: dr, accumulate: true, dy: tC2.p, x: cache.xMid.p, bp.norm2w, bp.norm2b, mean: cache.mean2.p, rstd: cache.rstd2.p, rows: Q, cols: C)
            // xMid = xIn + ls1 ⊙ y1
            let dy1 = branchGrad(tC.p, dr, bp.ls1, cache.y1.p, rows: Q, cols: C)
            bp.proj.backward(dinp: tC2.p, accumulate: false, dout: dy1, inp: cache.attn.p, rows: Q, lora: cache.lora[bp.proj.name], scratch: scratch.p)
            if classToken {
                classTokenAttentionBackward(
                    dqkv: t3C.p, dout: tC2.p, qkv: cache.qkv.p, probabilities: cache.probs.p, scratch: attnScratch.p,
                    batch: B, tokens: T, heads: c.heads, headDim: C / c.heads)
                // The other rows' residual gradient is zero (nothing reads their output).
                for b in 0..<B { (dx.p + b * T * C).update(from: dr + b * C, count: C) }
            } else {
                attentionTrainingBackward(
                    dqkv: t3C.p, dout: tC2.p, qkv: cache.qkv.p, probabilities: cache.probs.p, scratch: attnScratch.p,
                    batch: B, tokens: T, heads: c.heads, headDim: C / c.heads)
            }
            let needH1 = needInput || bp.norm1w.trainable || bp.norm1b.trainable
            bp.qkv.backward(
                dinp: needH1 ? tC2.p : nil, accumulate: false, dout: t3C.p, inp: cache.h1.p, rows: R,
                lora: cache.lora[bp.qkv.name], scratch: scratch.p)
            if needH1 {
                parallelLayerNormBackward(
                    dx: needInput ? dx.p : nil, accumulate: true, dy: tC2.p, x: cache.xIn.p, bp.norm1w, bp.norm1b,
                    mean: cache.mean1.p, rstd: cache.rstd1.p, rows: R, cols: C)
            }
        }
        guard lowest < 0 else { return }
        // Embedding: x[b, 0] = cls (+ pos[0]); x[b, 1+r] = reg[r] (+ pos[1+r]); x[b, 1+R+n] = cols W_pᵀ + b_p + pos[pre+n],
        // pre = posEmbedPrefix (0, 1 or 1 + R).
        let Rg = c.registers, pre = c.encoder.posEmbedPrefix, P0 = 1 + Rg
        if let g = cls.grad { for b in 0..<B { for i in 0..<C { g.p[i] += dx.p[b * T * C + i] } } }
        if let g = registers?.grad { for b in 0..<B { for j in 0..<(Rg * C) { g.p[j] += dx.p[b * T * C + C + j] } } }
        if let g = pos.grad {
            let shift = (P0 - pre) * C // a patch token's row minus its position embedding's row
            for b in 0..<B {
                let xb = dx.p + b * T * C
                if pre >= 1 { for i in 0..<C { g.p[i] += xb[i] } }
                if pre == P0 { for j in C..<(P0 * C) { g.p[j] += xb[j] } }
                for j in (P0 * C)..<(T * C) { g.p[j - shift] += xb[j] }
            }
        }
        if patchW.grad != nil || patchB.grad != nil {
            for b in 0..<B { (tC.p + b * N * C).update(from: dx.p + (b * T + P0) * C, count: N * C) }
            let embed = Linear("patch_embed.proj", weight: patchW, bias: patchB, inFeatures: 3 * c.patch * c.patch)
            embed.backward(dinp: nil, accumulate: false, dout: tC.p, inp: cols.p, rows: B * N, lora: nil, scratch: scratch.p)
        }
    }

    /// The gradient of a residual branch's output y (x = x_in + ls ⊙ y) from dx: dx ⊙ ls written
    /// to `out` (and dls += Σ dx ⊙ y). Without LayerScale it is dx itself, returned as is (read
    /// before dx next changes), or copied to `out` when the caller will modify it.
    private func branchGrad(
        _ out: UnsafeMutablePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ ls: Parameter?, _ y: UnsafePointer<Float>,
        rows: Int, cols: Int, copy: Bool = false
    ) -> UnsafeMutablePointer<Float> {
        guard let ls else {
            if !copy { return dx }
            parallelRows(rows) { r in (out + r.lowerBound * cols).update(from: dx + r.lowerBound * cols, count: r.count * cols) }
            return out
        }
        for r in 0..<rows {
            for i in 0..<cols {
                let g = dx[r * cols + i]
                out[r * cols + i] = g * ls.value.p[i]
                if let d = ls.grad { d.p[i] += g * y[r * cols + i] }
            }
        }
        return out
    }
}
