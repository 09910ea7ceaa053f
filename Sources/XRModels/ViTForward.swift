// ViT forward pass: the model owns a workspace reused across layers and batches.
import Foundation
import XRTensor
import XRKernels

/// A ViT encoder with loaded weights. Not safe to call `forward` from several threads at once
/// (the workspace is shared); create one model per thread if needed.
public final class ViT: @unchecked Sendable {
    public let config: ViTConfig
    /// The precision of the blocks' linear layers (qkv, proj, fc1, fc2), fixed at load. The patch
    /// embedding, attention, softmax and LayerNorm run in fp32 either way.
    public let precision: Precision
    /// Everything outside the blocks but the patch embedding's weight, which lives only in
    /// `patchPack`; `blocks` is emptied here.
    let w: ViTWeights
    private let lock = NSLock()
    private var workspace: [Float] = []
    private var resizedPos: [String: [Float]] = [:]
    /// The patch embedding's weight (C, 3·P·P) packed once for `packedGEMM`.
    let patchPack: PackedMatrix
    /// The blocks, their linear layers packed once for `precision`; the unpacked copies are
    /// released as each is packed, so a model holds its weights once.
    let blocks: [PreNormBlock]
    /// The EVA-02 blocks (`BlockKind.eva02`; `blocks` is then empty), packed likewise.
    let evaBlocks: [EVABlock]
    /// RoPE angles (sin, cos) per patch grid, for EVA-02.
    private var ropeCache: [String: (sin: [Float], cos: [Float])] = [:]

    init(config: ViTConfig, weights: consuming ViTWeights, precision: Precision = .fp32) {
        self.config = config
        self.precision = precision
        let C = config.dim, M = config.mlpHidden, K = 3 * config.patchSize * config.patchSize
        func pack(_ a: inout [Float], _ n: Int, _ k: Int) -> PackedMatrix {
            let p = a.withUnsafeBufferPointer { PackedMatrix(transposing: $0.baseAddress!, rows: n, cols: k) }
            a = []
            return p
        }
        patchPack = pack(&weights.patchWeight, C, K)
        var blocks: [PreNormBlock] = []
        for i in weights.blocks.indices {
            switch config.blockKind {
            case .preNorm:
                func linear(_ a: inout [Float], _ n: Int, _ k: Int) -> PackedLinear {
                    let p = a.withUnsafeBufferPointer { PackedLinear(transposing: $0.baseAddress!, rows: n, cols: k, precision: precision) }
                    a = []
                    return p
                }
                let qkv = linear(&weights.blocks[i].qkvWeight, 3 * C, C), proj = linear(&weights.blocks[i].projWeight, C, C)
                let fc1 = linear(&weights.blocks[i].fc1Weight, M, C), fc2 = linear(&weights.blocks[i].fc2Weight, C, M)
                let b = weights.blocks[i]
                blocks.append(
                    PreNormBlock(
                        norm1Weight: Buffer(b.norm1Weight), norm1Bias: Buffer(b.norm1Bias), linear: qkv,
                        qkvBias: b.qkvBias.map { Buffer($0) }, proj: proj, projBias: Buffer(b.projBias),
                        ls1: b.ls1.map { Buffer($0) }, norm2Weight: Buffer(b.norm2Weight), norm2Bias: Buffer(b.norm2Bias),
                        fc1: fc1, fc1Bias: Buffer(b.fc1Bias), fc2: fc2, fc2Bias: Buffer(b.fc2Bias), ls2: b.ls2.map { Buffer($0) }))
            case .eva02: break
            }
        }
        var evaBlocks: [EVABlock] = []
        for i in weights.evaBlocks.indices { evaBlocks.append(EVABlock(&weights.evaBlocks[i], dim: C, hidden: M, precision: precision)) }
        weights.blocks = []
        weights.evaBlocks = []
        self.blocks = blocks
        self.evaBlocks = evaBlocks
        w = weights
    }

    /// Encode a batch. pixels: (B, 3, H, W), already preprocessed; H and W must be multiples of
    /// the patch size. Position embeddings are resized to the (H/P, W/P) grid with the
    /// checkpoint family's own rule when it differs from the native grid.
    /// `classTokenOnly`: only the class-token outputs (`cls`, `lastBlocksCLS`) are wanted, so the
    /// last block computes keys and values for every token but attention, projection and MLP for
    /// the class token alone, and `patchMean` / `patchTokens` come back empty ((B, 0), (B, 0, C)).
    /// The class-token outputs are the same as without it. EVA-02 encoders pool the patch tokens,
    /// so for them it changes nothing: every output is computed.
    public func forward(
        pixels: [Float], batch B: Int, height: Int, width: Int, lastBlocks: Int = 0,
        classTokenOnly: Bool = false
    ) throws -> ViTOutput {
        let c = config, P = c.patchSize, C = c.dim, M = c.mlpHidden
        guard height > 0, width > 0, height % P == 0, width % P == 0 else {
            throw XRError(
                "image size \(height)×\(width) is not a positive multiple of the patch size \(P)",
                field: "pixels", hint: "resize or crop to a multiple of \(P) (e.g. \(max(P, height / P * P)))")
        }
        guard pixels.count == B * 3 * height * width else {
            throw XRError("pixel buffer has \(pixels.count) values, expected \(B)×3×\(height)×\(width)", field: "pixels")
        }
        guard lastBlocks >= 0, lastBlocks <= c.depth else {
            throw XRError("last \(lastBlocks) blocks requested but the encoder has \(c.depth)", field: "lastBlocks")
        }
        let gh = height / P, gw = width / P, N = gh * gw, R = c.numRegisters, T = 1 + R + N, BT = B * T, K = 3 * P * P
        let pos = try positionEmbedding(gh: gh, gw: gw, height: height, width: width)
        let eva = c.blockKind == .eva02
        // EVA-02 pools the patch tokens (and has no final norm), so it never takes the class-token shortcut.
        let classTokenOnly = classTokenOnly && !eva
        let rope = eva ? ropeAngles(gh: gh, gw: gw) : (sin: [Float](), cos: [Float]())

        lock.lock(); defer { lock.unlock() }
        // Workspace layout: x (BT, C) | h (BT, C) | qkv (BT, 3C) | attn (BT, C) | mlp (BT, M) | scores | cols (B·N, K)
        let scoreSize = BlockWorkspace.scoreSize(c, batch: B, tokens: T)
        let sizes = [BT * C, BT * C, BT * 3 * C, BT * C, BT * (eva ? EVABlock.mlpWidth(c) : M), scoreSize, B * N * K]
        let total = sizes.reduce(0, +)
        if workspace.count < total { workspace = [Float](repeating: 0, count: total) }
        var cls = [Float](repeating: 0, count: B * C)
        var mean = [Float](repeating: 0, count: classTokenOnly ? 0 : B * C)
        var tokens = [Float](repeating: 0, count: classTokenOnly ? 0 : B * N * C)
        var lastCLS = [[Float]](repeating: [Float](repeating: 0, count: B * C), count: lastBlocks)

        // BLAS runs single-threaded inside the encoder; the ops themselves are split across
        // workers, so the cores are neither idle nor oversubscribed.
        withSingleThreadedBLAS {
            workspace.withUnsafeMutableBufferPointer { ws in
                guard let base = ws.baseAddress else { return }
                var offs: [UnsafeMutablePointer<Float>] = []
                var o = 0
                for s in sizes { offs.append(base + o); o += s }
                let x = offs[0], h = offs[1], qkv = offs[2], attn = offs[3], mlp = offs[4], scores = offs[5], cols = offs[6]

                // Patch embedding (one GEMM per image, written straight into the token rows) and token assembly.
                pixels.withUnsafeBufferPointer { px in
                    patchify(cols, px.baseAddress!, batch: B, channels: 3, height: height, width: width, patch: P)
                }
                let xp = SendablePointer(x), cp = SendablePointer(cols), pw = patchPack
                if B >= Parallel.workers {
                    Parallel.ranges(B) { r in
                        for b in r {
                            packedGEMM(xp.p + (b * T + 1 + R) * C, ldc: C, cp.p + b * N * K, lda: K, pw, rows: N, columns: 0..<C)
                        }
                    }
                } else {
                    for b in 0..<B {
                        packedProduct(xp.p + (b * T + 1 + R) * C, cp.p + b * N * K, pw, rows: N)
                    }
                }
                assembleTokens(x, pos: pos, batch: B, patches: N)

                let ws = BlockWorkspace(h: h, qkv: qkv, attn: attn, mlp: mlp, scores: scores)
                for i in 0..<c.depth {
                    if eva {
                        rope.sin.withUnsafeBufferPointer { s in
                            rope.cos.withUnsafeBufferPointer { cs in
                                evaBlocks[i].forward(x, ws, sin: s.baseAddress!, cos: cs.baseAddress!, config: c, batch: B, tokens: T)
                            }
                        }
                    } else {
                        blocks[i].forward(x, ws, config: c, batch: B, tokens: T, classToken: classTokenOnly && i == c.depth - 1)
                    }
                    let k = i - (c.depth - lastBlocks)
                    if k >= 0 {
                        lastCLS[k].withUnsafeMutableBufferPointer { out in
                            for b in 0..<B { (out.baseAddress! + b * C).update(from: x + b * T * C, count: C) }
                            // EVA-02's final norm is the identity (its LayerNorm is fc_norm, on the pooled mean).
                            if !eva { layerNorm(out.baseAddress!, out.baseAddress!, w.normWeight, w.normBias, rows: B) }
                        }
                    }
                }
                if classTokenOnly {
                    cls.withUnsafeMutableBufferPointer { out in
                        for b in 0..<B { (out.baseAddress! + b * C).update(from: x + b * T * C, count: C) }
                        layerNorm(out.baseAddress!, out.baseAddress!, w.normWeight, w.normBias, rows: B)
                    }
                    return
                }
                if !eva { layerNorm(x, x, w.normWeight, w.normBias, rows: BT) }

                for b in 0..<B {
                    let row = x + b * T * C
                    cls.withUnsafeMutableBufferPointer { (($0.baseAddress! + b * C)).update(from: row, count: C) }
                    tokens.withUnsafeMutableBufferPointer { ($0.baseAddress! + b * N * C).update(from: row + (1 + R) * C, count: N * C) }
                    mean.withUnsafeMutableBufferPointer { m in
                        let dst = m.baseAddress! + b * C
                        for n in 0..<N { let r = row + (1 + R + n) * C; for j in 0..<C { dst[j] += r[j] } }
                        for j in 0..<C { dst[j] /= Float(N) }
                    }
                }
            }
        }
        var pooled = cls
        if eva {
            // timm `forward_head(pre_logits=True)` with global_pool='avg': fc_norm(mean of the patch tokens).
            pooled = mean
            pooled.withUnsafeMutableBufferPointer { p in layerNorm(p.baseAddress!, p.baseAddress!, w.normWeight, w.normBias, rows: B) }
        }
        return ViTOutput(
            cls: Tensor(shape: [B, C], scalars: cls), patchMean: Tensor(shape: [B, mean.count / B], scalars: mean),
            patchTokens: Tensor(shape: [B, tokens.count / (B * C), C], scalars: tokens),
            lastBlocksCLS: lastCLS.map { Tensor(shape: [B, C], scalars: $0) }, pooled: Tensor(shape: [B, C], scalars: pooled))
    }

    /// RoPE angles for a (gh, gw) patch grid, cached per grid.
    private func ropeAngles(gh: Int, gw: Int) -> (sin: [Float], cos: [Float]) {
        let key = "\(gh)x\(gw)"
        lock.lock()
        defer { lock.unlock() }
        if let cached = ropeCache[key] { return cached }
        let ref = config.eva?.ropeReferenceGrid.map { (height: $0, width: $0) }
        let angles = XRKernels.ropeAngles(gridHeight: gh, gridWidth: gw, headDim: config.dim / config.heads, reference: ref)
        ropeCache[key] = angles
        return angles
    }

    private func layerNorm(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: [Float], _ bias: [Float], rows: Int) {
        weight.withUnsafeBufferPointer { wp in
            bias.withUnsafeBufferPointer { bp in
                parallelLayerNorm(out, inp, wp.baseAddress!, bp.baseAddress!, rows: rows, cols: config.dim, eps: config.layerNormEps)
            }
        }
    }

    /// x (B, T, C): patch rows already hold patch projections; add the patch bias and position
    /// embeddings, and write CLS and register rows.
    private func assembleTokens(_ x: UnsafeMutablePointer<Float>, pos: [Float], batch B: Int, patches N: Int) {
        let C = config.dim, R = config.numRegisters, T = 1 + R + N, pre = config.posEmbedPrefix
        for b in 0..<B {
            let row = x + b * T * C
            for j in 0..<C { row[j] = w.clsToken[j] + (pre >= 1 ? pos[j] : 0) }
            for r in 0..<R {
                for j in 0..<C {
                    row[(1 + r) * C + j] = w.registers[r * C + j] + (pre == 1 + R ? pos[(1 + r) * C + j] : 0)
                }
            }
            for n in 0..<N {
                let t = row + (1 + R + n) * C, p = (pre + n) * C
                for j in 0..<C { t[j] += w.patchBias[j] + pos[p + j] }
            }
        }
    }

    /// Position embeddings for a (gh, gw) grid: (posEmbedPrefix + gh·gw, C), cached per grid.
    func positionEmbedding(gh: Int, gw: Int, height: Int, width: Int) throws -> [Float] {
        let c = config, G = c.grid, C = c.dim, pre = c.posEmbedPrefix
        let native: Bool
        switch c.posEmbedResize {
        case .timm: native = gh == G && gw == G
        case .huggingFace, .huggingFaceAntialias, .dinov2: native = gh * gw == G * G && height == width
        }
        if native { return w.posEmbed }
        let key = "\(gh)x\(gw)"
        lock.lock()
        if let cached = resizedPos[key] { lock.unlock(); return cached }
        lock.unlock()
        // (G·G, C) → planar (C, G, G)
        var planar = [Float](repeating: 0, count: C * G * G)
        for n in 0..<(G * G) { for j in 0..<C { planar[j * G * G + n] = w.posEmbed[(pre + n) * C + j] } }
        var outH = gh, outW = gw
        var scale: (Double, Double)? = nil
        var antialias = false
        switch c.posEmbedResize {
        case .timm, .huggingFaceAntialias: antialias = true
        case .huggingFace: break
        case .dinov2:
            // facebookresearch/dinov2 passes scale_factor=(sx, sy) with sx from the width for the
            // first spatial (row) axis; reproduced as is (identical for square inputs).
            let sx = (Double(gw) + 0.1) / Double(G), sy = (Double(gh) + 0.1) / Double(G)
            scale = (sx, sy)
            outH = Int((Double(G) * sx).rounded(.down)); outW = Int((Double(G) * sy).rounded(.down))
        }
        guard outH * outW == gh * gw else {
            throw XRError("position embeddings resize to \(outH)×\(outW), which does not match the \(gh)×\(gw) patch grid", field: "pos_embed")
        }
        var resized = [Float](repeating: 0, count: C * outH * outW)
        resized.withUnsafeMutableBufferPointer { o in
            planar.withUnsafeBufferPointer { i in
                resample(
                    o.baseAddress!, i.baseAddress!, channels: C, inH: G, inW: G, outH: outH, outW: outW,
                    filter: .bicubic, antialias: antialias, scaleFactor: scale)
            }
        }
        var out = Array(w.posEmbed[0..<(pre * C)])
        out.reserveCapacity((pre + outH * outW) * C)
        for n in 0..<(outH * outW) { for j in 0..<C { out.append(resized[j * outH * outW + n]) } }
        lock.lock(); resizedPos[key] = out; lock.unlock()
        return out
    }
}

extension ViT {
    /// A randomly initialised encoder (weights N(0, 0.02), norms at 1, LayerScale 1) — for
    /// benchmarks and tests that need a model of a given shape but not trained weights. Its linear
    /// layers are packed for `precision`.
    public static func random(_ c: ViTConfig, seed: UInt64 = 0, precision: Precision = .fp32) -> ViT {
        var rng = XRRandom(seed: seed)
        func normal(_ n: Int) -> [Float] { (0..<n).map { _ in rng.nextGaussian() * 0.02 } }
        func ones(_ n: Int) -> [Float] { [Float](repeating: 1, count: n) }
        func zeros(_ n: Int) -> [Float] { [Float](repeating: 0, count: n) }
        let C = c.dim, M = c.mlpHidden, P = c.patchSize
        if c.blockKind == .eva02 {
            let o = c.eva
            // Built in the initialiser's argument, so the unpacked blocks have one owner and each is
            // released as it is packed.
            return ViT(
                config: c,
                weights: ViTWeights(
                    clsToken: normal(C), registers: [], posEmbed: normal((1 + c.grid * c.grid) * C),
                    patchWeight: normal(C * 3 * P * P), patchBias: zeros(C), blocks: [],
                    evaBlocks: (0..<c.depth).map { _ in
                        EVABlockWeights(
                            norm1Weight: ones(C), norm1Bias: zeros(C), qkvWeight: normal(3 * C * C), qkvBias: c.qkvBias ? zeros(3 * C) : nil,
                            attnNormWeight: o?.attentionNorm == true ? ones(C) : nil, attnNormBias: o?.attentionNorm == true ? zeros(C) : nil,
                            projWeight: normal(C * C), projBias: zeros(C), norm2Weight: ones(C), norm2Bias: zeros(C),
                            fc1Weight: normal(2 * M * C), fc1Bias: zeros(2 * M),
                            mlpNormWeight: o?.mlpNorm == true ? ones(M) : nil, mlpNormBias: o?.mlpNorm == true ? zeros(M) : nil,
                            fc2Weight: normal(C * M), fc2Bias: zeros(C))
                    }, normWeight: ones(C), normBias: zeros(C)), precision: precision)
        }
        let blocks = (0..<c.depth).map { _ in
            ViTBlockWeights(
                norm1Weight: ones(C), norm1Bias: zeros(C), qkvWeight: normal(3 * C * C),
                qkvBias: c.qkvBias ? zeros(3 * C) : nil, projWeight: normal(C * C), projBias: zeros(C),
                ls1: c.layerScale ? ones(C) : nil, norm2Weight: ones(C), norm2Bias: zeros(C),
                fc1Weight: normal(M * C), fc1Bias: zeros(M), fc2Weight: normal(C * M), fc2Bias: zeros(C),
                ls2: c.layerScale ? ones(C) : nil)
        }
        let w = ViTWeights(
            clsToken: normal(C), registers: normal(c.numRegisters * C),
            posEmbed: normal((c.posEmbedPrefix + c.grid * c.grid) * C),
            patchWeight: normal(C * 3 * P * P), patchBias: zeros(C), blocks: blocks,
            normWeight: ones(C), normBias: zeros(C))
        return ViT(config: c, weights: w, precision: precision)
    }

    /// Floating-point operations of one forward pass per image at (height, width): matrix
    /// products (2·m·n·k each) including attention, excluding elementwise work.
    /// With `classTokenOnly`, the last block's queries, attention, projection and MLP count one row.
    public func flopsPerImage(height: Int, width: Int, classTokenOnly: Bool = false) -> Double {
        let c = config, P = c.patchSize
        let N = Double((height / P) * (width / P)), T = N + Double(1 + c.numRegisters)
        let C = Double(c.dim), M = Double(c.mlpHidden)
        // Per block: q, k, v and proj (4C²), the MLP (2CM; EVA-02's SwiGLU 3CM), attention (2 · 2T²C).
        let mlp = c.blockKind == .eva02 ? 3 * C * M : 2 * C * M
        let perBlock = 2 * T * (4 * C * C + mlp) + 4 * T * T * C
        let total = Double(c.depth) * perBlock + 2 * N * C * Double(3 * P * P)
        // EVA-02 computes every output even when only the class token is asked for.
        guard classTokenOnly, c.depth > 0, c.blockKind == .preNorm else { return total }
        let lastBlock = 2 * T * 2 * C * C + 2 * (2 * C * C + 2 * C * M) + 4 * T * C
        return total - perBlock + lastBlock
    }
}
