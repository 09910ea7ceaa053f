// The trainable ViT's forward: token assembly, blocks that keep what the backward needs (or, below
// every trainable parameter, the encoder's own block), final norm, pooling and head.
// B batch, T tokens (prefix + patches), C width, M MLP width, P patch, N patches, R registers.
import Foundation
import XRTensor
import XRKernels
import XRModels

extension TrainableViT {
    private func prepare(batch B: Int) {
        if B == batch { return }
        let c = config, R = B * c.tokens, C = c.dim, M = c.mlpHidden, N = c.grid * c.grid, K = 3 * c.patch * c.patch
        // Blocks below the lowest trainable one need no saved activations: they share one cache.
        let keepFrom = max(0, lowestTrainableBlock ?? c.depth)
        var shared: BlockCache? = nil, sharedTrainable: BlockCache? = nil
        savedInputs = recompute ? blocks.indices.map { $0 >= keepFrom ? Buffer(R * C) : Buffer(0) } : []
        caches = blocks.enumerated().map { i, b in
            if i < keepFrom, let shared { return shared }
            if i >= keepFrom, recompute, let st = sharedTrainable {
                for l in b.linears {
                    if let lora = l.lora {
                        let drop = lora.dropout > 0
                        st.lora[l.name] = LoRAActivations(
                            z: Buffer(R * lora.rank), xd: drop ? Buffer(R * l.inFeatures) : nil, mask: drop ? Buffer(R * l.inFeatures) : nil)
                    }
                }
                return st
            }
            let cache = BlockCache(rows: R, c: c, batch: B)
            for l in b.linears {
                if let lora = l.lora {
                    let drop = lora.dropout > 0
                    cache.lora[l.name] = LoRAActivations(
                        z: Buffer(R * lora.rank), xd: drop ? Buffer(R * l.inFeatures) : nil, mask: drop ? Buffer(R * l.inFeatures) : nil)
                }
            }
            if let ad = b.adapter {
                let r = ad.down.outFeatures
                cache.adIn = ad.parallel ? nil : Buffer(R * C); cache.adPre = Buffer(R * r); cache.adAct = Buffer(R * r)
            }
            if i < keepFrom { shared = cache } else if recompute { sharedTrainable = cache }
            return cache
        }
        cols = Buffer(B * N * K); x = Buffer(R * C)
        let pooledRows = c.pooling == "token" && !tokenMode ? B : R
        pooledIn = Buffer(pooledRows * C); fMean = Buffer(pooledRows); fRstd = Buffer(pooledRows)
        pooled = Buffer(B * C); logits = Buffer(B * c.classes); classGrad = Buffer(B * C)
        headPre = Buffer(B * (c.headHidden ?? 1)); headAct = Buffer(B * (c.headHidden ?? 1))
        tC = Buffer(R * C); tC2 = Buffer(R * C); t3C = Buffer(R * 3 * C); tM = Buffer(R * M)
        let maxRank = max(blocks.flatMap { $0.linears.compactMap { $0.lora?.rank } }.max() ?? 0, blocks.compactMap { $0.adapter?.down.outFeatures }.max() ?? 0)
        scratch = Buffer(max(R * maxRank, B * C))
        attnScratch = Buffer(
            max(
                attentionTrainingScratchSize(tokens: c.tokens, headDim: C / c.heads, workers: Parallel.workers),
                attentionWorkspaceSize(tokens: c.tokens, headDim: C / c.heads, workers: Parallel.workers)))
        batch = B
    }

    /// Logits (B, classes) for pixels (B, 3, S, S), keeping activations for `backward`.
    public func forward(pixels: [Float], batch B: Int) throws -> [Float] {
        try run(pixels: pixels, batch: B, tokens: false)
    }

    /// Patch tokens (B, N, C) after the final norm — what the encoder's `patch_tokens` output
    /// holds — for pixels (B, 3, S, S), keeping activations for `backwardPatchTokens`.
    public func forwardPatchTokens(pixels: [Float], batch B: Int) throws -> [Float] {
        try run(pixels: pixels, batch: B, tokens: true)
    }

    private func run(pixels: [Float], batch B: Int, tokens: Bool) throws -> [Float] {
        if tokens != tokenMode { tokenMode = tokens; batch = 0 }
        var out: [Float] = []
        var failure: Error? = nil
        lastForwardTraining = training
        withSingleThreadedBLAS { do { out = try forwardBody(pixels: pixels, batch: B) } catch { failure = error } }
        if let failure { throw failure }
        return out
    }

    private func forwardBody(pixels: [Float], batch B: Int) throws -> [Float] {
        let c = config, S = c.imageSize, P = c.patch, C = c.dim, T = c.tokens, N = c.grid * c.grid, R = B * T, K = 3 * P * P
        guard pixels.count == B * 3 * S * S else { throw XRError("pixel buffer has \(pixels.count) values, expected \(B)×3×\(S)×\(S)", field: "pixels") }
        prepare(batch: B)
        pixels.withUnsafeBufferPointer { patchify(cols.p, $0.baseAddress!, batch: B, channels: 3, height: S, width: S, patch: P) }
        // Tokens: [cls | registers | patches], position embeddings on the patches and on the
        // first `posEmbedPrefix` prefix tokens (none, the class token, or class token and registers).
        let embed = Linear("patch_embed.proj", weight: patchW, bias: patchB, inFeatures: K)
        embed.forward(tC.p, cols.p, rows: B * N, lora: nil)
        let Rg = c.registers, pre = c.encoder.posEmbedPrefix, pv = pos.value.p
        for b in 0..<B {
            let xb = x.p + b * T * C
            for i in 0..<C { xb[i] = cls.value.p[i] + (pre >= 1 ? pv[i] : 0) }
            if let reg = registers?.value.p {
                for r in 0..<Rg { for i in 0..<C { xb[(1 + r) * C + i] = reg[r * C + i] + (pre == 1 + Rg ? pv[(1 + r) * C + i] : 0) } }
            }
            for n in 0..<N { for i in 0..<C { xb[(1 + Rg + n) * C + i] = tC.p[(b * N + n) * C + i] + pv[(pre + n) * C + i] } }
        }
        let firstSaved = max(0, lowestTrainableBlock ?? c.depth)
        let eva = c.encoder.blockKind == .eva02 // pools the patch tokens: no class-token shortcut
        let classToken = classTokenShortcut && c.pooling == "token" && !tokenMode && !eva
        lastForwardClassToken = classToken
        for (i, (block, cache)) in zip(blocks, caches).enumerated() {
            if let eb = block as? EVABlockParams {
                // Frozen EVA-02 blocks below every trainable parameter run the same forward in the shared cache.
                if recompute && i >= firstSaved { savedInputs[i].p.update(from: x.p, count: R * C) }
                evaTrainingBlock(i, eb, cache, x: x.p, batch: B, training: training)
                continue
            }
            guard let bp = block as? BlockParams else { preconditionFailure("forward: block \(i) is of no known kind") }
            if i == c.depth - 1 && classToken {
                if recompute && i >= firstSaved { savedInputs[i].p.update(from: x.p, count: R * C) }
                trainingBlock(i, bp, cache, x: x.p, batch: B, training: training, classToken: true)
                continue
            }
            if i < firstSaved {
                // Frozen and below every trainable parameter: the inference path (fused epilogues,
                // no saved activations).
                frozenBlock(bp, x: x.p, cache: cache, batch: B)
                continue
            }
            if recompute { savedInputs[i].p.update(from: x.p, count: R * C) }
            trainingBlock(i, bp, cache, x: x.p, batch: B, training: training)
        }
        if tokenMode && eva { return evaPatchTokens(batch: B) }
        if tokenMode {
            pooledIn.p.update(from: x.p, count: R * C)
            parallelLayerNorm(tC2.p, pooledIn.p, normW, normB, rows: R, cols: C, eps: c.eps, mean: fMean.p, rstd: fRstd.p)
            var out = [Float](repeating: 0, count: B * N * C)
            out.withUnsafeMutableBufferPointer { o in
                for b in 0..<B { (o.baseAddress! + b * N * C).update(from: tC2.p + (b * T + 1 + Rg) * C, count: N * C) }
            }
            return out
        }
        // Final norm and pooling.
        if eva {
            evaPool(batch: B) // fc_norm of the patch-token mean, whatever `pooling` says
        } else if c.pooling == "token" {
            for b in 0..<B { (pooledIn.p + b * C).update(from: x.p + b * T * C, count: C) }
            layerNormForward(pooled.p, pooledIn.p, normW.value.p, normB.value.p, rows: B, cols: C, eps: c.eps, mean: fMean.p, rstd: fRstd.p)
        } else {
            pooledIn.p.update(from: x.p, count: R * C)
            layerNormForward(tC2.p, pooledIn.p, normW.value.p, normB.value.p, rows: R, cols: C, eps: c.eps, mean: fMean.p, rstd: fRstd.p)
            pooled.zero()
            for b in 0..<B { for n in (1 + Rg)..<T { for i in 0..<C { pooled.p[b * C + i] += tC2.p[(b * T + n) * C + i] / Float(N) } } }
        }
        var headInput = pooled.p, headWidth = C
        if let H = c.headHidden, let w1 = headFc1W, let b1 = headFc1B {
            BLAS.sgemm(headPre.p, pooled.p, w1.value.p, transB: true, m: B, n: H, k: C)
            addBias(headPre.p, b1.value.p, rows: B, cols: H)
            biasGELUForward(headAct.p, from: headPre.p, bias: nil, rows: B, cols: H)
            headInput = headAct.p; headWidth = H
        }
        BLAS.sgemm(logits.p, headInput, headW.value.p, transB: true, m: B, n: c.classes, k: headWidth)
        addBias(logits.p, headB.value.p, rows: B, cols: c.classes)
        return logits.array
    }

    /// One block with its activations kept in `cache` (x (B·T, C) is updated in place). With
    /// `classToken` (the last block under class-token pooling) everything past the keys and
    /// values runs on the B class-token rows only, kept compact (row b of attn, y1, xMid, …), and
    /// only those rows of x are updated.
    func trainingBlock(
        _ i: Int, _ bp: BlockParams, _ cache: BlockCache, x xp: UnsafeMutablePointer<Float>, batch B: Int, training: Bool,
        classToken: Bool = false
    ) {
        let c = config, C = c.dim, T = c.tokens, R = B * T
        let Q = classToken ? B : R, stride = classToken ? T : 1 // rows past the attention; row q is x's row q · stride
        cache.xIn.p.update(from: xp, count: R * C)
        parallelLayerNorm(cache.h1.p, cache.xIn.p, bp.norm1w, bp.norm1b, rows: R, cols: C, eps: c.eps, mean: cache.mean1.p, rstd: cache.rstd1.p)
        func dseed(_ j: Int) -> UInt64? { training ? dropoutSeed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(4 * i + j) : nil }
        bp.qkv.forward(cache.qkv.p, cache.h1.p, rows: R, lora: cache.lora[bp.qkv.name], dropoutSeed: dseed(0))
        if classToken {
            classTokenAttentionForward(
                out: cache.attn.p, qkv: cache.qkv.p, probabilities: cache.probs.p, batch: B, tokens: T, heads: c.heads, headDim: C / c.heads)
        } else {
            attentionForward(
                cache.attn.p, cache.qkv.p, scores: attnScratch.p, batch: B, tokens: T, channels: C, heads: c.heads,
                probabilities: cache.probs.p)
        }
        bp.proj.forward(cache.y1.p, cache.attn.p, rows: Q, lora: cache.lora[bp.proj.name], dropoutSeed: dseed(1))
        let M = c.mlpHidden
        parallelRows(Q) { r in
            let lo = r.lowerBound
            if classToken {
                for q in r { (cache.xMid.p + q * C).update(from: cache.xIn.p + q * stride * C, count: C) }
            } else {
                (cache.xMid.p + lo * C).update(from: cache.xIn.p + lo * C, count: r.count * C)
            }
            biasScaleResidual(cache.xMid.p + lo * C, cache.y1.p + lo * C, bias: nil, scale: bp.ls1?.value.p, rows: r.count, cols: C)
        }
        parallelLayerNorm(cache.h2.p, cache.xMid.p, bp.norm2w, bp.norm2b, rows: Q, cols: C, eps: c.eps, mean: cache.mean2.p, rstd: cache.rstd2.p)
        bp.fc1.forward(cache.u.p, cache.h2.p, rows: Q, lora: cache.lora[bp.fc1.name], dropoutSeed: dseed(2))
        parallelRows(Q) { r in
            let lo = r.lowerBound
            biasGELUForward(cache.a.p + lo * M, from: cache.u.p + lo * M, bias: nil, rows: r.count, cols: M)
        }
        bp.fc2.forward(cache.y2.p, cache.a.p, rows: Q, lora: cache.lora[bp.fc2.name], dropoutSeed: dseed(3))
        if let ad = bp.adapter { adapterForward(ad, cache, rows: Q) }
        parallelRows(Q) { r in
            let lo = r.lowerBound
            if classToken {
                for q in r {
                    (xp + q * stride * C).update(from: cache.xMid.p + q * C, count: C)
                    biasScaleResidual(xp + q * stride * C, cache.y2.p + q * C, bias: nil, scale: bp.ls2?.value.p, rows: 1, cols: C)
                }
            } else {
                (xp + lo * C).update(from: cache.xMid.p + lo * C, count: r.count * C)
                biasScaleResidual(xp + lo * C, cache.y2.p + lo * C, bias: nil, scale: bp.ls2?.value.p, rows: r.count, cols: C)
            }
        }
    }

    /// A block below every trainable parameter: the encoder's own block forward (fused epilogues,
    /// no saved activations), with `cache` as its workspace. Its weights are frozen, so each
    /// linear layer has its packed copy.
    func frozenBlock(_ bp: BlockParams, x: UnsafeMutablePointer<Float>, cache: BlockCache, batch B: Int) {
        switch config.encoder.blockKind {
        case .preNorm:
            guard let qkv = bp.qkv.frozenPack, let proj = bp.proj.frozenPack, let fc1 = bp.fc1.frozenPack, let fc2 = bp.fc2.frozenPack,
                let projBias = bp.proj.bias, let fc1Bias = bp.fc1.bias, let fc2Bias = bp.fc2.bias
            else {
                preconditionFailure("frozenBlock: a block below the lowest trainable one has a trainable or bias-less layer")
            }
            let block = PreNormBlock(
                norm1Weight: bp.norm1w.value, norm1Bias: bp.norm1b.value, qkv: qkv, qkvBias: bp.qkv.bias?.value,
                proj: proj, projBias: projBias.value, ls1: bp.ls1?.value, norm2Weight: bp.norm2w.value,
                norm2Bias: bp.norm2b.value, fc1: fc1, fc1Bias: fc1Bias.value, fc2: fc2, fc2Bias: fc2Bias.value,
                ls2: bp.ls2?.value)
            let ws = BlockWorkspace(h: cache.h1.p, qkv: cache.qkv.p, attn: cache.attn.p, mlp: cache.u.p, scores: attnScratch.p)
            block.forward(x, ws, config: config.encoder, batch: B, tokens: config.tokens)
        case .eva02: preconditionFailure("frozenBlock: EVA-02 blocks run `evaTrainingBlock`")
        }
    }
}
