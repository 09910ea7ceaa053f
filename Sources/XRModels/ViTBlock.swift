// The encoder's transformer block: one forward per block kind, run by the inference encoder
// and by the frozen blocks of a trainable encoder. B batch, T tokens, C channels, H heads,
// M MLP hidden.
import Foundation
import XRTensor
import XRKernels

/// One pre-norm block (`ViTConfig.BlockKind.preNorm`) as its forward reads it: vectors in
/// buffers, linear weights packed as Wᵀ for `packedProduct`.
///
///     x += ls1 ⊙ proj(attn(LN1 x))
///     x += ls2 ⊙ fc2(GELU(fc1(LN2 x)))
public struct PreNormBlock: @unchecked Sendable {
    public var norm1Weight, norm1Bias: Buffer // (C)
    public var qkv: PackedMatrix // (3C, C), rows [q; k; v]
    public var qkvBias: Buffer? // (3C)
    public var proj: PackedMatrix // (C, C)
    public var projBias: Buffer // (C)
    public var ls1: Buffer? // (C)
    public var norm2Weight, norm2Bias: Buffer // (C)
    public var fc1: PackedMatrix // (M, C)
    public var fc1Bias: Buffer // (M)
    public var fc2: PackedMatrix // (C, M)
    public var fc2Bias: Buffer // (C)
    public var ls2: Buffer? // (C)

    public init(
        norm1Weight: Buffer, norm1Bias: Buffer, qkv: PackedMatrix, qkvBias: Buffer?, proj: PackedMatrix, projBias: Buffer,
        ls1: Buffer?, norm2Weight: Buffer, norm2Bias: Buffer, fc1: PackedMatrix, fc1Bias: Buffer, fc2: PackedMatrix,
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
            packedProduct(qkv, h, self.qkv, rows: BT, columns: C..<(3 * C), finish: finish)
            packedProduct(qkv, h, self.qkv, rows: B, lda: T * C, ldc: T * 3 * C, columns: 0..<C, finish: finish)
            for b in 0..<B { (x + b * C).update(from: xFull + b * T * C, count: C) }
            classTokenAttentionForward(out: attn, qkv: qkv, probabilities: ws.scores, batch: B, tokens: T, heads: config.heads, headDim: C / config.heads)
        } else {
            packedProduct(qkv, h, self.qkv, rows: BT, finish: finish)
            attentionForward(attn, qkv, scores: ws.scores, batch: B, tokens: T, channels: C, heads: config.heads)
        }
        packedProduct(h, attn, proj, rows: rows, finish: .biasScaleResidual(bias: projBias.p, scale: ls1?.p, residual: x, ld: C))
        // MLP branch: x += ls2 ⊙ fc2(GELU(fc1(LN2(x))))
        parallelLayerNorm(h, x, norm2Weight.p, norm2Bias.p, rows: rows, cols: C, eps: eps)
        packedProduct(mlp, h, fc1, rows: rows, finish: .biasGELU(fc1Bias.p))
        packedProduct(h, mlp, fc2, rows: rows, finish: .biasScaleResidual(bias: fc2Bias.p, scale: ls2?.p, residual: x, ld: C))
        if classToken { for b in 0..<B { (xFull + b * T * C).update(from: x + b * C, count: C) } }
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
