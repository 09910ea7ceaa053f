// The encoder's transformer block: one forward per block kind, run by the inference encoder
// and by the frozen blocks of a trainable encoder. B batch, T tokens, N patches, C channels,
// H heads, D = C/H, M MLP hidden.
import Foundation
import XRTensor
import XRKernels

/// One pre-norm block (`ViTConfig.BlockKind.preNorm`) as its forward reads it: vectors in
/// buffers, linear weights packed once for their precision (`PackedLinear`: fp32 for
/// `packedProduct`, int8 for `int8Product`).
///
///     x += ls1 ⊙ proj(attn(LN1 x))
///     x += ls2 ⊙ fc2(GELU(fc1(LN2 x)))
public struct PreNormBlock: @unchecked Sendable {
    public var norm1Weight, norm1Bias: Buffer // (C)
    public var qkv: PackedLinear // (3C, C), rows [q; k; v]
    public var qkvBias: Buffer? // (3C)
    public var proj: PackedLinear // (C, C)
    public var projBias: Buffer // (C)
    public var ls1: Buffer? // (C)
    public var norm2Weight, norm2Bias: Buffer // (C)
    public var fc1: PackedLinear // (M, C)
    public var fc1Bias: Buffer // (M)
    public var fc2: PackedLinear // (C, M)
    public var fc2Bias: Buffer // (C)
    public var ls2: Buffer? // (C)

    /// A block on fp32 weights packed for `packedProduct`.
    public init(
        norm1Weight: Buffer, norm1Bias: Buffer, qkv: PackedMatrix, qkvBias: Buffer?, proj: PackedMatrix, projBias: Buffer,
        ls1: Buffer?, norm2Weight: Buffer, norm2Bias: Buffer, fc1: PackedMatrix, fc1Bias: Buffer, fc2: PackedMatrix,
        fc2Bias: Buffer, ls2: Buffer?
    ) {
        self.init(
            norm1Weight: norm1Weight, norm1Bias: norm1Bias, linear: .fp32(qkv), qkvBias: qkvBias, proj: .fp32(proj), projBias: projBias,
            ls1: ls1, norm2Weight: norm2Weight, norm2Bias: norm2Bias, fc1: .fp32(fc1), fc1Bias: fc1Bias, fc2: .fp32(fc2),
            fc2Bias: fc2Bias, ls2: ls2)
    }

    /// A block on linear weights of any precision.
    public init(
        norm1Weight: Buffer, norm1Bias: Buffer, linear qkv: PackedLinear, qkvBias: Buffer?, proj: PackedLinear, projBias: Buffer,
        ls1: Buffer?, norm2Weight: Buffer, norm2Bias: Buffer, fc1: PackedLinear, fc1Bias: Buffer, fc2: PackedLinear,
        fc2Bias: Buffer, ls2: Buffer?
    ) {
        self.norm1Weight = norm1Weight; self.norm1Bias = norm1Bias; self.qkv = qkv; self.qkvBias = qkvBias
        self.proj = proj; self.projBias = projBias; self.ls1 = ls1; self.norm2Weight = norm2Weight; self.norm2Bias = norm2Bias
        self.fc1 = fc1; self.fc1Bias = fc1Bias; self.fc2 = fc2; self.fc2Bias = fc2Bias; self.ls2 = ls2
    }
}

/// Scratch a block's forward works in, in a workspace the caller owns.
public struct BlockWorkspace {
    public var h: UnsafeMutablePointer<Float> // (B·T, C) normalised input / branch output
    public var qkv: UnsafeMutablePointer<Float> // (B·T, 3C)
    public var attn: UnsafeMutablePointer<Float> // (B·T, C)
    public var mlp: UnsafeMutablePointer<Float> // (B·T, M)
    /// max(`attentionWorkspaceSize`, B·H·T) floats.
    public var scores: UnsafeMutablePointer<Float>

    public init(
        h: UnsafeMutablePointer<Float>, qkv: UnsafeMutablePointer<Float>, attn: UnsafeMutablePointer<Float>,
        mlp: UnsafeMutablePointer<Float>, scores: UnsafeMutablePointer<Float>
    ) {
        self.h = h; self.qkv = qkv; self.attn = attn; self.mlp = mlp; self.scores = scores
    }

    /// Floats of `scores` for a batch.
    public static func scoreSize(_ c: ViTConfig, batch B: Int, tokens T: Int) -> Int {
        max(attentionWorkspaceSize(tokens: T, headDim: c.dim / c.heads, workers: Parallel.workers), B * c.heads * T)
    }
}

extension PreNormBlock {
    /// x (B·T, C) updated in place. With `classToken` (the last block when only class-token
    /// outputs are wanted) everything past the keys and values runs on the B class-token rows,
    /// gathered into a compact (B, C) residual after the attention output, and only those rows
    /// of x are updated. BLAS must be single-threaded when there are several workers.
    public func forward(
        _ xFull: UnsafeMutablePointer<Float>, _ ws: BlockWorkspace, config: ViTConfig, batch B: Int, tokens T: Int,
        classToken: Bool = false
    ) {
        let C = config.dim, BT = B * T, eps = config.layerNormEps
        let h = ws.h, qkv = ws.qkv, attn = ws.attn, mlp = ws.mlp
        let rows = classToken ? B : BT // rows past the attention
        let x = classToken ? attn + B * C : xFull
        // The bias, GELU and LayerScale + residual epilogues run inside the products' stores
        // (`PackedEpilogue`): each tile finishes in registers, with no second pass over the output.
        // Attention branch: x += ls1 ⊙ proj(attn(LN1(x)))
        parallelLayerNorm(h, xFull, norm1Weight.p, norm1Bias.p, rows: BT, cols: C, eps: eps)
        let finish: PackedEpilogue = qkvBias.map { .bias($0.p) } ?? .none
        if classToken {
            // Keys and values for every token, the query for the class tokens alone.
            self.qkv.product(qkv, h, rows: BT, columns: C..<(3 * C), finish: finish)
            self.qkv.product(qkv, h, rows: B, lda: T * C, ldc: T * 3 * C, columns: 0..<C, finish: finish)
            for b in 0..<B { (x + b * C).update(from: xFull + b * T * C, count: C) }
            classTokenAttentionForward(out: attn, qkv: qkv, probabilities: ws.scores, batch: B, tokens: T, heads: config.heads, headDim: C / config.heads)
        } else {
            self.qkv.product(qkv, h, rows: BT, finish: finish)
            attentionForward(attn, qkv, scores: ws.scores, batch: B, tokens: T, channels: C, heads: config.heads)
        }
        proj.product(h, attn, rows: rows, finish: .biasScaleResidual(bias: projBias.p, scale: ls1?.p, residual: x, ld: C))
        // MLP branch: x += ls2 ⊙ fc2(GELU(fc1(LN2(x))))
        parallelLayerNorm(h, x, norm2Weight.p, norm2Bias.p, rows: rows, cols: C, eps: eps)
        fc1.product(mlp, h, rows: rows, finish: .biasGELU(fc1Bias.p))
        // The GELU output is heavy-tailed (a row's few large values set its step): at int8 fc2 takes
        // all eight activation bits on every CPU (`Int8Kernel.eightBit`: `u8` on VNNI, the default
        // there anyway; `i16` on the AVX2 fallback, where the other layers keep seven).
        fc2.product(
            h, mlp, rows: rows, finish: .biasScaleResidual(bias: fc2Bias.p, scale: ls2?.p, residual: x, ld: C), int8Kernel: .eightBit)
        if classToken { for b in 0..<B { (xFull + b * T * C).update(from: x + b * C, count: C) } }
    }
}

// MARK: EVA-02

struct EVABlockWeights: Sendable {
    var norm1Weight, norm1Bias: [Float] // (C)
    var qkvWeight: [Float] // (3C, C)
    var qkvBias: [Float]? // (3C), k part zero
    var attnNormWeight, attnNormBias: [Float]? // (C)
    var projWeight, projBias: [Float] // (C, C), (C)
    var norm2Weight, norm2Bias: [Float] // (C)
    var fc1Weight, fc1Bias: [Float] // (2M, C), (2M)
    var mlpNormWeight, mlpNormBias: [Float]? // (M)
    var fc2Weight, fc2Bias: [Float] // (C, M), (C)
}

/// One EVA-02 block as its forward reads it: vectors in buffers, linear weights packed once for
/// their precision (`PackedLinear`).
///
///     x += proj(LN_a(attention(RoPE(q), RoPE(k), v)))      q, k, v = LN1(x) Wqkvᵀ + [q_bias; 0; v_bias]
///     x += fc2(LN_m(SiLU(g) ⊙ v))                         [g | v] = fc1(LN2(x))
///
/// RoPE turns the patch tokens' queries and keys (never the class token's); LN_a and LN_m are
/// present only in the variants that have them (`EVAOptions.attentionNorm`, `.mlpNorm`).
public struct EVABlock: @unchecked Sendable {
    public var norm1Weight, norm1Bias: Buffer // (C)
    public var qkv: PackedLinear // (3C, C), rows [q; k; v]
    public var qkvBias: Buffer? // (3C)
    public var attnNormWeight, attnNormBias: Buffer? // (C)
    public var proj: PackedLinear // (C, C)
    public var projBias: Buffer // (C)
    public var norm2Weight, norm2Bias: Buffer // (C)
    public var fc1: PackedLinear // (2M, C), rows [gate; value]
    public var fc1Bias: Buffer // (2M)
    public var mlpNormWeight, mlpNormBias: Buffer? // (M)
    public var fc2: PackedLinear // (C, M)
    public var fc2Bias: Buffer // (C)

    /// Pack one block's loaded weights for `precision` (each unpacked copy released as it is packed).
    init(_ w: inout EVABlockWeights, dim C: Int, hidden M: Int, precision: Precision = .fp32) {
        func pack(_ a: inout [Float], _ n: Int, _ k: Int) -> PackedLinear {
            let p = a.withUnsafeBufferPointer { PackedLinear(transposing: $0.baseAddress!, rows: n, cols: k, precision: precision) }
            a = []
            return p
        }
        norm1Weight = Buffer(w.norm1Weight); norm1Bias = Buffer(w.norm1Bias)
        qkv = pack(&w.qkvWeight, 3 * C, C); qkvBias = w.qkvBias.map { Buffer($0) }
        attnNormWeight = w.attnNormWeight.map { Buffer($0) }; attnNormBias = w.attnNormBias.map { Buffer($0) }
        proj = pack(&w.projWeight, C, C); projBias = Buffer(w.projBias)
        norm2Weight = Buffer(w.norm2Weight); norm2Bias = Buffer(w.norm2Bias)
        fc1 = pack(&w.fc1Weight, 2 * M, C); fc1Bias = Buffer(w.fc1Bias)
        mlpNormWeight = w.mlpNormWeight.map { Buffer($0) }; mlpNormBias = w.mlpNormBias.map { Buffer($0) }
        fc2 = pack(&w.fc2Weight, C, M); fc2Bias = Buffer(w.fc2Bias)
    }

    /// Floats of `BlockWorkspace.mlp` an EVA-02 block needs per token row: the 2M gate and value
    /// features and the M gated ones.
    static func mlpWidth(_ c: ViTConfig) -> Int { 3 * c.mlpHidden }

    /// x (B·T, C) updated in place; `ws.mlp` holds B·T · 3M floats. sin, cos (N, D/2): the
    /// rotation angles of this input's patch grid (`ropeAngles`). BLAS must be single-threaded
    /// when there are several workers.
    public func forward(
        _ x: UnsafeMutablePointer<Float>, _ ws: BlockWorkspace, sin: UnsafePointer<Float>, cos: UnsafePointer<Float>,
        config: ViTConfig, batch B: Int, tokens T: Int
    ) {
        let C = config.dim, M = config.mlpHidden, BT = B * T, eps = config.layerNormEps
        let h = ws.h, qkv = ws.qkv, attn = ws.attn, u = ws.mlp, gated = ws.mlp + BT * 2 * M
        // Attention branch. The biases and the residual add run in the products' epilogues.
        parallelLayerNorm(h, x, norm1Weight.p, norm1Bias.p, rows: BT, cols: C, eps: eps)
        self.qkv.product(qkv, h, rows: BT, finish: qkvBias.map { .bias($0.p) } ?? .none)
        ropeForward(qkv, sin: sin, cos: cos, batch: B, tokens: T, prefix: 1, channels: C, heads: config.heads)
        attentionForward(attn, qkv, scores: ws.scores, batch: B, tokens: T, channels: C, heads: config.heads)
        if let w = attnNormWeight, let b = attnNormBias { parallelLayerNorm(attn, attn, w.p, b.p, rows: BT, cols: C, eps: eps) }
        proj.product(h, attn, rows: BT, finish: .biasScaleResidual(bias: projBias.p, scale: nil, residual: x, ld: C))
        // SwiGLU MLP branch.
        parallelLayerNorm(h, x, norm2Weight.p, norm2Bias.p, rows: BT, cols: C, eps: eps)
        fc1.product(u, h, rows: BT, finish: .bias(fc1Bias.p))
        swiGLUForward(gated, u, rows: BT, hidden: M)
        if let w = mlpNormWeight, let b = mlpNormBias { parallelLayerNorm(gated, gated, w.p, b.p, rows: BT, cols: M, eps: eps) }
        // The gated features (products of two projections) are heavy-tailed: a row's few large values
        // set its quantisation step, so at int8 fc2 takes all eight activation bits even on the AVX2
        // fallback (`Int8Kernel.eightBit`: `u8` on VNNI, else `i16`); with seven (`u7`) EVA-X-S-shaped
        // random encoders fell to cos(cls) ≈ 0.9975 against fp32.
        fc2.product(
            h, gated, rows: BT, finish: .biasScaleResidual(bias: fc2Bias.p, scale: nil, residual: x, ld: C), int8Kernel: .eightBit)
    }
}

/// Row-parallel LayerNorm forward over (rows, cols), without saved statistics.
func parallelLayerNorm(
    _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
    _ bias: UnsafePointer<Float>, rows: Int, cols C: Int, eps: Float
) {
    let o = SendablePointer(out), i = SendablePointer(UnsafeMutablePointer(mutating: inp))
    let w = SendablePointer(UnsafeMutablePointer(mutating: weight)), b = SendablePointer(UnsafeMutablePointer(mutating: bias))
    Parallel.ranges(rows, minChunk: 32) { r in
        layerNormForward(o.p + r.lowerBound * C, i.p + r.lowerBound * C, w.p, b.p, rows: r.count, cols: C, eps: eps)
    }
}
