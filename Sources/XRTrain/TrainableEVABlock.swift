// The trainable EVA-02 / EVA-X block (`ViTConfig.BlockKind.eva02`): its parameters under the
// canonical names `EVABlockKeys` gives them, a forward that keeps what the backward needs, and a
// backward that fills the gradients of the trainable parameters (the twins of the forward, in
// reverse order); and EVA's pooling, `fc_norm` of the patch-token mean, with its backward.
//
//     x += proj(LN_a(attention(RoPE(q), RoPE(k), v)))     q, k, v = LN1(x) Wqkvᵀ + [q_bias; 0; v_bias]
//     x += fc2(LN_m(SiLU(g) ⊙ v))                        [g | v] = fc1(LN2(x))
//
// B batch, T tokens (class token + patches), C width, M SwiGLU width, H heads, N patches, R = B·T rows.
import Foundation
import XRTensor
import XRKernels
import XRModels

/// What the trainable encoder needs of a block's parameters, whatever the block's kind.
protocol TrainableBlock: AnyObject {
    /// The block's linear layers (the LoRA sites), named like `blocks.0.attn.qkv`.
    var linears: [Linear] { get }
    /// The block's own parameters, in model order.
    var parameters: [Parameter] { get }
    /// A bottleneck adapter on the MLP branch, when the tuning method adds one.
    var adapter: Adapter? { get set }
}

extension TrainableBlock {
    var adapterParameters: [Parameter] { adapter.map { [$0.down.weight, $0.down.bias, $0.up.weight, $0.up.bias].compactMap { $0 } } ?? [] }
}

extension BlockParams: TrainableBlock {}

/// One EVA-02 block's parameters, under the names `EVABlockKeys` gives them (timm `EvaBlock`).
final class EVABlockParams: TrainableBlock {
    let norm1w, norm1b, norm2w, norm2b: Parameter // (C)
    /// Fused layout: `attn.qkv` (3C, C) without a bias of its own; `attn.q_bias`, `attn.v_bias` (C) (k has none).
    let qkv: Linear?
    let qBias, vBias: Parameter?
    /// Separate layout: `attn.q_proj` (bias), `attn.k_proj` (no bias), `attn.v_proj` (bias), each (C, C).
    let qProj, kProj, vProj: Linear?
    /// The attention output's sub-LayerNorm `attn.norm` (EVA's `inner_attn_ln`), (C).
    let attnNormW, attnNormB: Parameter?
    let proj: Linear // (C, C)
    /// Packed SwiGLU input `mlp.fc1` (2M, C), rows [gate; value] (EVA's `w12`), or the two halves
    /// `mlp.fc1_g` / `mlp.fc1_x` (M, C) (EVA's `w1` / `w2`).
    let fc1, fc1g, fc1x: Linear?
    /// The SwiGLU output's sub-LayerNorm `mlp.norm` (EVA's `ffn_ln`), (M).
    let mlpNormW, mlpNormB: Parameter?
    let fc2: Linear // (C, M) (EVA's `w3`)
    var adapter: Adapter?

    /// `get` reads a parameter by canonical name; the variant is the config's `EVAOptions`.
    init(_ i: Int, _ get: (String) throws -> Parameter, c: TrainConfig) throws {
        let k = EVABlockKeys(block: i), bias = c.encoder.qkvBias
        let o = c.encoder.eva ?? ViTConfig.EVAOptions(ropeReferenceGrid: nil, qkvFused: true, mlpPacked: true, mlpNorm: false)
        func linear(_ weight: String, _ w: Parameter, _ b: Parameter?) -> Linear {
            Linear(String(weight.dropLast(".weight".count)), weight: w, bias: b)
        }
        norm1w = try get(k.norm1Weight); norm1b = try get(k.norm1Bias)
        if o.qkvFused {
            qkv = linear(k.qkvWeight, try get(k.qkvWeight), nil)
            qBias = bias ? try get(k.qBias) : nil
            vBias = bias ? try get(k.vBias) : nil
            qProj = nil; kProj = nil; vProj = nil
        } else {
            qkv = nil; qBias = nil; vBias = nil
            qProj = linear(k.qProjWeight, try get(k.qProjWeight), bias ? try get(k.qProjBias) : nil)
            kProj = linear(k.kProjWeight, try get(k.kProjWeight), nil)
            vProj = linear(k.vProjWeight, try get(k.vProjWeight), bias ? try get(k.vProjBias) : nil)
        }
        attnNormW = o.attentionNorm ? try get(k.attnNormWeight) : nil
        attnNormB = o.attentionNorm ? try get(k.attnNormBias) : nil
        proj = linear(k.projWeight, try get(k.projWeight), try get(k.projBias))
        norm2w = try get(k.norm2Weight); norm2b = try get(k.norm2Bias)
        if o.mlpPacked {
            fc1 = linear(k.fc1Weight, try get(k.fc1Weight), try get(k.fc1Bias)); fc1g = nil; fc1x = nil
        } else {
            fc1 = nil
            fc1g = linear(k.fc1gWeight, try get(k.fc1gWeight), try get(k.fc1gBias))
            fc1x = linear(k.fc1xWeight, try get(k.fc1xWeight), try get(k.fc1xBias))
        }
        mlpNormW = o.mlpNorm ? try get(k.mlpNormWeight) : nil
        mlpNormB = o.mlpNorm ? try get(k.mlpNormBias) : nil
        fc2 = linear(k.fc2Weight, try get(k.fc2Weight), try get(k.fc2Bias))
    }

    /// The attention input projections: `qkv`, or `q_proj`, `k_proj`, `v_proj`.
    var qkvLinears: [Linear] { [qkv, qProj, kProj, vProj].compactMap { $0 } }
    /// The SwiGLU input projections: `fc1`, or `fc1_g`, `fc1_x`.
    var fc1Linears: [Linear] { [fc1, fc1g, fc1x].compactMap { $0 } }
    var linears: [Linear] { qkvLinears + [proj] + fc1Linears + [fc2] }

    var parameters: [Parameter] {
        func of(_ l: Linear) -> [Parameter] { [l.weight] + (l.bias.map { [$0] } ?? []) }
        var p = [norm1w, norm1b]
        if let qkv { p += [qkv.weight] + [qBias, vBias].compactMap { $0 } }
        for l in [qProj, kProj, vProj].compactMap({ $0 }) { p += of(l) }
        p += [attnNormW, attnNormB].compactMap { $0 } + of(proj) + [norm2w, norm2b]
        for l in fc1Linears { p += of(l) }
        return p + [mlpNormW, mlpNormB].compactMap { $0 } + of(fc2)
    }
}

/// An EVA-02 block's activations beyond the pre-norm block's (`BlockCache`, whose `u` holds the
/// SwiGLU input [g | v] (R, 2M) and `a` the SwiGLU output (R, M) for this kind): the attention
/// output before its sub-LN and the SwiGLU output after its sub-LN, with their statistics.
final class EVAActivations {
    let attnRaw, meanA, rstdA: Buffer? // (R, C), (R), (R)
    let gatedNorm, meanM, rstdM: Buffer? // (R, M), (R), (R)
    init(rows R: Int, c: TrainConfig) {
        let o = c.encoder.eva, C = c.dim, M = c.mlpHidden
        let a = o?.attentionNorm ?? false, m = o?.mlpNorm ?? false
        attnRaw = a ? Buffer(R * C) : nil; meanA = a ? Buffer(R) : nil; rstdA = a ? Buffer(R) : nil
        gatedNorm = m ? Buffer(R * M) : nil; meanM = m ? Buffer(R) : nil; rstdM = m ? Buffer(R) : nil
    }
}

/// What EVA-02 training shares across blocks: the RoPE angles of the training grid and the
/// backward's SwiGLU scratch.
final class EVATrainingState {
    let sin, cos: Buffer // (N, D/2)
    var scratch = Buffer(0) // (R, 2M) + (R, M)
    init(_ c: TrainConfig) {
        let ref = c.encoder.eva?.ropeReferenceGrid.map { (height: $0, width: $0) }
        let a = ropeAngles(gridHeight: c.grid, gridWidth: c.grid, headDim: c.dim / c.heads, reference: ref)
        sin = Buffer(a.sin); cos = Buffer(a.cos)
    }
}

/// Copy `rows` rows of `cols` values between buffers of row strides `ldDst` and `ldSrc`.
private func copyRows(_ dst: UnsafeMutablePointer<Float>, ldDst: Int, _ src: UnsafePointer<Float>, ldSrc: Int, rows: Int, cols: Int) {
    parallelRows(rows) { r in for i in r { (dst + i * ldDst).update(from: src + i * ldSrc, count: cols) } }
}

extension TrainableViT {
    /// One EVA-02 block with its activations kept in `cache`; x (B·T, C) is updated in place.
    func evaTrainingBlock(
        _ i: Int, _ bp: EVABlockParams, _ cache: BlockCache, x xp: UnsafeMutablePointer<Float>, batch B: Int, training: Bool
    ) {
        guard let ev = cache.eva, let st = evaState else { preconditionFailure("evaTrainingBlock: the encoder is not an EVA-02 one") }
        let c = config, C = c.dim, M = c.mlpHidden, T = c.tokens, R = B * T, H = c.heads
        func dseed(_ j: Int) -> UInt64? { training ? dropoutSeed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(8 * i + j) : nil }
        cache.xIn.p.update(from: xp, count: R * C)
        parallelLayerNorm(cache.h1.p, cache.xIn.p, bp.norm1w, bp.norm1b, rows: R, cols: C, eps: c.eps, mean: cache.mean1.p, rstd: cache.rstd1.p)
        // q, k, v (R, 3C), then RoPE on the patch tokens' q and k.
        if let qkv = bp.qkv {
            qkv.forward(cache.qkv.p, cache.h1.p, rows: R, lora: cache.lora[qkv.name], dropoutSeed: dseed(0))
            if let q = bp.qBias { addBias(cache.qkv.p, q.value.p, rows: R, cols: C, ld: 3 * C) }
            if let v = bp.vBias { addBias(cache.qkv.p + 2 * C, v.value.p, rows: R, cols: C, ld: 3 * C) }
        } else {
            for (j, l) in bp.qkvLinears.enumerated() {
                l.forward(tC.p, cache.h1.p, rows: R, lora: cache.lora[l.name], dropoutSeed: dseed(j))
                copyRows(cache.qkv.p + j * C, ldDst: 3 * C, tC.p, ldSrc: C, rows: R, cols: C)
            }
        }
        ropeForward(cache.qkv.p, sin: st.sin.p, cos: st.cos.p, batch: B, tokens: T, prefix: 1, channels: C, heads: H)
        let attnOut = ev.attnRaw ?? cache.attn
        attentionForward(
            attnOut.p, cache.qkv.p, scores: attnScratch.p, batch: B, tokens: T, channels: C, heads: H, probabilities: cache.probs.p)
        if let raw = ev.attnRaw, let w = bp.attnNormW, let b = bp.attnNormB, let mean = ev.meanA, let rstd = ev.rstdA {
            parallelLayerNorm(cache.attn.p, raw.p, w, b, rows: R, cols: C, eps: c.eps, mean: mean.p, rstd: rstd.p)
        }
        bp.proj.forward(cache.y1.p, cache.attn.p, rows: R, lora: cache.lora[bp.proj.name], dropoutSeed: dseed(3))
        parallelRows(R) { r in for j in (r.lowerBound * C)..<(r.upperBound * C) { cache.xMid.p[j] = cache.xIn.p[j] + cache.y1.p[j] } }
        // SwiGLU MLP: u = [g | v] (R, 2M), a = SiLU(g) ⊙ v (R, M), optionally normalised.
        parallelLayerNorm(cache.h2.p, cache.xMid.p, bp.norm2w, bp.norm2b, rows: R, cols: C, eps: c.eps, mean: cache.mean2.p, rstd: cache.rstd2.p)
        if let fc1 = bp.fc1 {
            fc1.forward(cache.u.p, cache.h2.p, rows: R, lora: cache.lora[fc1.name], dropoutSeed: dseed(4))
        } else {
            for (j, l) in bp.fc1Linears.enumerated() {
                l.forward(tM.p, cache.h2.p, rows: R, lora: cache.lora[l.name], dropoutSeed: dseed(4 + j))
                copyRows(cache.u.p + j * M, ldDst: 2 * M, tM.p, ldSrc: M, rows: R, cols: M)
            }
        }
        swiGLUForward(cache.a.p, cache.u.p, rows: R, hidden: M)
        var fc2In = cache.a
        if let g = ev.gatedNorm, let w = bp.mlpNormW, let b = bp.mlpNormB, let mean = ev.meanM, let rstd = ev.rstdM {
            parallelLayerNorm(g.p, cache.a.p, w, b, rows: R, cols: M, eps: c.eps, mean: mean.p, rstd: rstd.p)
            fc2In = g
        }
        bp.fc2.forward(cache.y2.p, fc2In.p, rows: R, lora: cache.lora[bp.fc2.name], dropoutSeed: dseed(6))
        if let ad = bp.adapter { adapterForward(ad, cache, rows: R) }
        parallelRows(R) { r in for j in (r.lowerBound * C)..<(r.upperBound * C) { xp[j] = cache.xMid.p[j] + cache.y2.p[j] } }
    }

    /// Backward of `evaTrainingBlock` from the residual-stream gradient in `x` (B·T, C), which
    /// becomes the block input's gradient when `needInput`.
    func evaBlockBackward(_ i: Int, _ bp: EVABlockParams, _ cache: BlockCache, needInput: Bool) {
        guard let ev = cache.eva, let st = evaState else { preconditionFailure("evaBlockBackward: the encoder is not an EVA-02 one") }
        let c = config, B = batch, C = c.dim, M = c.mlpHidden, T = c.tokens, R = B * T, H = c.heads
        if recompute {
            // Rebuild this block's activations from its saved input (same dropout masks).
            tC2.p.update(from: savedInputs[i].p, count: R * C)
            evaTrainingBlock(i, bp, cache, x: tC2.p, batch: B, training: lastForwardTraining)
        }
        if st.scratch.count < 3 * R * M { st.scratch = Buffer(3 * R * M) }
        let du = st.scratch.p, dGated = st.scratch.p + 2 * R * M // (R, 2M), (R, M)
        let dr = x.p
        // x = xMid + y2 (a sequential adapter adds to dy2, so it must not be dr itself).
        var dy2 = dr
        var adapterInputGrad: UnsafeMutablePointer<Float>? = nil
        if let ad = bp.adapter {
            if !ad.parallel { tC.p.update(from: dr, count: R * C); dy2 = tC.p }
            adapterInputGrad = adapterBackward(ad, cache, dy2: dy2, rows: R)
        }
        // fc2, the SwiGLU sub-LN, SwiGLU, fc1.
        let fc2In = ev.gatedNorm ?? cache.a
        bp.fc2.backward(dinp: tM.p, accumulate: false, dout: dy2, inp: fc2In.p, rows: R, lora: cache.lora[bp.fc2.name], scratch: scratch.p)
        var dA = tM.p
        if let w = bp.mlpNormW, let b = bp.mlpNormB, let mean = ev.meanM, let rstd = ev.rstdM {
            parallelLayerNormBackward(dx: dGated, accumulate: false, dy: tM.p, x: cache.a.p, w, b, mean: mean.p, rstd: rstd.p, rows: R, cols: M)
            dA = dGated
        }
        let dAp = SendablePointer(dA), dup = SendablePointer(du), up = SendablePointer(cache.u.p)
        parallelRows(R) { r in
            let lo = r.lowerBound
            swiGLUBackward(dup.p + lo * 2 * M, dout: dAp.p + lo * M, up.p + lo * 2 * M, rows: r.count, hidden: M)
        }
        if let fc1 = bp.fc1 {
            fc1.backward(dinp: tC2.p, accumulate: false, dout: du, inp: cache.h2.p, rows: R, lora: cache.lora[fc1.name], scratch: scratch.p)
        } else {
            for (j, l) in bp.fc1Linears.enumerated() {
                copyRows(tM.p, ldDst: M, du + j * M, ldSrc: 2 * M, rows: R, cols: M)
                l.backward(dinp: tC2.p, accumulate: j > 0, dout: tM.p, inp: cache.h2.p, rows: R, lora: cache.lora[l.name], scratch: scratch.p)
            }
        }
        if let g = adapterInputGrad { parallelRows(R) { rr in for j in (rr.lowerBound * C)..<(rr.upperBound * C) { tC2.p[j] += g[j] } } }
        parallelLayerNormBackward(
            dx: dr, accumulate: true, dy: tC2.p, x: cache.xMid.p, bp.norm2w, bp.norm2b, mean: cache.mean2.p, rstd: cache.rstd2.p, rows: R, cols: C)
        // xMid = xIn + proj(LN_a(attention)).
        bp.proj.backward(dinp: tC2.p, accumulate: false, dout: dr, inp: cache.attn.p, rows: R, lora: cache.lora[bp.proj.name], scratch: scratch.p)
        var dAttn = tC2.p
        if let raw = ev.attnRaw, let w = bp.attnNormW, let b = bp.attnNormB, let mean = ev.meanA, let rstd = ev.rstdA {
            parallelLayerNormBackward(dx: tC.p, accumulate: false, dy: tC2.p, x: raw.p, w, b, mean: mean.p, rstd: rstd.p, rows: R, cols: C)
            dAttn = tC.p
        }
        attentionTrainingBackward(
            dqkv: t3C.p, dout: dAttn, qkv: cache.qkv.p, probabilities: cache.probs.p, scratch: attnScratch.p,
            batch: B, tokens: T, heads: H, headDim: C / H)
        ropeBackward(t3C.p, sin: st.sin.p, cos: st.cos.p, batch: B, tokens: T, prefix: 1, channels: C, heads: H)
        // q, k, v projections, then LN1.
        let needH1 = needInput || bp.norm1w.trainable || bp.norm1b.trainable
        if let qkv = bp.qkv {
            if let g = bp.qBias?.grad { for r in 0..<R { for j in 0..<C { g.p[j] += t3C.p[r * 3 * C + j] } } }
            if let g = bp.vBias?.grad { for r in 0..<R { for j in 0..<C { g.p[j] += t3C.p[r * 3 * C + 2 * C + j] } } }
            qkv.backward(
                dinp: needH1 ? tC2.p : nil, accumulate: false, dout: t3C.p, inp: cache.h1.p, rows: R, lora: cache.lora[qkv.name],
                scratch: scratch.p)
        } else {
            for (j, l) in bp.qkvLinears.enumerated() {
                copyRows(tC.p, ldDst: C, t3C.p + j * C, ldSrc: 3 * C, rows: R, cols: C)
                l.backward(
                    dinp: needH1 ? tC2.p : nil, accumulate: j > 0, dout: tC.p, inp: cache.h1.p, rows: R, lora: cache.lora[l.name],
                    scratch: scratch.p)
            }
        }
        if needH1 {
            parallelLayerNormBackward(
                dx: needInput ? dr : nil, accumulate: true, dy: tC2.p, x: cache.xIn.p, bp.norm1w, bp.norm1b,
                mean: cache.mean1.p, rstd: cache.rstd1.p, rows: R, cols: C)
        }
    }

    /// EVA-02 pooling of the last forward's residual stream x (B·T, C): pooledIn (B, C) = the mean
    /// of the patch tokens, pooled = fc_norm(pooledIn) (timm `Eva.forward_head`, global_pool='avg').
    func evaPool(batch B: Int) {
        let c = config, C = c.dim, T = c.tokens, N = T - 1
        pooledIn.zero()
        for b in 0..<B {
            for n in 1..<T { for j in 0..<C { pooledIn.p[b * C + j] += x.p[(b * T + n) * C + j] } }
            for j in 0..<C { pooledIn.p[b * C + j] /= Float(N) }
        }
        layerNormForward(pooled.p, pooledIn.p, normW.value.p, normB.value.p, rows: B, cols: C, eps: c.eps, mean: fMean.p, rstd: fRstd.p)
    }

    /// Backward of `evaPool`: from d(pooled) (B, C) to the residual-stream gradient written into
    /// x (B·T, C) (the class-token rows get none), fc_norm's gradients accumulated.
    func evaPoolBackward(_ dpooled: UnsafePointer<Float>) {
        let c = config, B = batch, C = c.dim, T = c.tokens, N = T - 1
        layerNormBackward(
            dx: tC.p, accumulate: false, dy: dpooled, x: pooledIn.p, weight: normW.value.p, mean: fMean.p, rstd: fRstd.p,
            dweight: normW.grad?.p, dbias: normB.grad?.p, rows: B, cols: C)
        x.zero()
        for b in 0..<B { for n in 1..<T { for j in 0..<C { x.p[(b * T + n) * C + j] = tC.p[b * C + j] / Float(N) } } }
    }

    /// The patch tokens (B, N, C) of the last forward: EVA-02's final norm is the identity (its
    /// LayerNorm, fc_norm, applies to the pooled mean only), as in the encoder's `patch_tokens`.
    func evaPatchTokens(batch B: Int) -> [Float] {
        let C = config.dim, T = config.tokens, N = T - 1
        var out = [Float](repeating: 0, count: B * N * C)
        out.withUnsafeMutableBufferPointer { o in
            for b in 0..<B { (o.baseAddress! + b * N * C).update(from: x.p + (b * T + 1) * C, count: N * C) }
        }
        return out
    }

    /// Backward from d(patch tokens) (B, N, C) of the last `forwardPatchTokens` on an EVA-02 encoder.
    func evaBackwardPatchTokens(_ dtokens: [Float]) {
        let c = config, B = batch, C = c.dim, T = c.tokens, N = T - 1
        guard let lowest = lowestTrainableBlock else { return }
        withSingleThreadedBLAS {
            x.zero()
            dtokens.withUnsafeBufferPointer { d in
                for b in 0..<B { (x.p + (b * T + 1) * C).update(from: d.baseAddress! + b * N * C, count: N * C) }
            }
            backwardBlocks(lowest: lowest)
        }
    }

    /// A bottleneck adapter's forward on a block's MLP branch: y2 += s · up(GELU(down(in))), in = y2
    /// before the adapter (sequential) or the MLP's normalised input h2 (parallel). Q rows; uses `tC`.
    func adapterForward(_ ad: Adapter, _ cache: BlockCache, rows Q: Int) {
        guard let pre = cache.adPre, let act = cache.adAct else { return }
        let C = config.dim
        let inp: UnsafeMutablePointer<Float>
        if let adIn = cache.adIn { adIn.p.update(from: cache.y2.p, count: Q * C); inp = adIn.p } else { inp = cache.h2.p }
        let r = ad.down.outFeatures
        ad.down.forward(pre.p, inp, rows: Q, lora: nil)
        biasGELUForward(act.p, from: pre.p, bias: nil, rows: Q, cols: r)
        ad.up.forward(tC.p, act.p, rows: Q, lora: nil)
        let s = ad.scale, y2 = cache.y2.p, t = tC.p
        parallelRows(Q) { rr in for j in (rr.lowerBound * C)..<(rr.upperBound * C) { y2[j] += s * t[j] } }
    }

    /// Backward of `adapterForward` from dy2 (Q, C): the adapter's gradients; a sequential adapter
    /// adds its input gradient to dy2 (which must not be the residual gradient itself), a
    /// parallel one returns d(h2) (Q, C) for the caller to add. Uses `t3C` and `scratch`.
    func adapterBackward(_ ad: Adapter, _ cache: BlockCache, dy2: UnsafeMutablePointer<Float>, rows Q: Int) -> UnsafeMutablePointer<Float>? {
        guard let pre = cache.adPre, let act = cache.adAct else { return nil }
        let C = config.dim, R = batch * config.tokens, r = ad.down.outFeatures, s = ad.scale
        let dBranch = t3C.p
        parallelRows(Q) { rr in for j in (rr.lowerBound * C)..<(rr.upperBound * C) { dBranch[j] = s * dy2[j] } }
        let dAct = scratch.p
        ad.up.backward(dinp: dAct, accumulate: false, dout: dBranch, inp: act.p, rows: Q, lora: nil, scratch: scratch.p)
        geluBackward(dAct, preActivation: pre.p, count: Q * r)
        let dIn = t3C.p + R * C
        ad.down.backward(dinp: dIn, accumulate: false, dout: dAct, inp: cache.adIn?.p ?? cache.h2.p, rows: Q, lora: nil, scratch: scratch.p)
        if ad.parallel { return dIn }
        parallelRows(Q) { rr in for j in (rr.lowerBound * C)..<(rr.upperBound * C) { dy2[j] += dIn[j] } }
        return nil
    }
}
