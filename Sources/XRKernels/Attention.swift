import Foundation
// Multi-head self-attention over packed qkv: forward (optionally saving the probabilities),
// backward, and the class token's row alone with its backward. B batch, T tokens, C channels,
// H heads, D = C/H. Backwards write every row of dqkv.
//
// qkv rows are [q (H, D) | k (H, D) | v (H, D)] per token (timm's fused layout; separate
// q/k/v projections are packed the same way at load time). Per (b, h): S = q kᵀ / sqrt(D)
// (T, T), row softmax, out = S v — both products on the packed-operand kernel (`packedGEMM`):
// each head's k (scaled by 1/√D) and v are packed once and serve every query row or tile.

/// Sequences longer than this use the tiled online-softmax path.
public let attentionTileThreshold = 512
let queryTile = 64, keyTile = 256

/// Workspace floats `attentionForward` needs: per worker either a T×T score block (short
/// sequences) or a query-tile × key-tile block plus the running output, max and sum (long ones),
/// and one head's packed keys and values.
public func attentionWorkspaceSize(tokens T: Int, headDim D: Int, workers: Int) -> Int {
    let scores = scoreWorkspace(tokens: T, headDim: D)
    let packs = PackedMatrix.alignedStorage(k: D, n: T) + PackedMatrix.alignedStorage(k: T, n: D)
    return max(1, workers) * (scores + packs)
}

/// Floats of one worker's score block (the part of its workspace before the packings).
private func scoreWorkspace(tokens T: Int, headDim D: Int) -> Int {
    T > attentionTileThreshold ? queryTile * keyTile + queryTile * D + 2 * queryTile : T * T + T
}

/// out (B*T, C) = attention(qkv (B*T, 3C)); `scores` holds `attentionWorkspaceSize` floats.
/// (batch, head) pairs are claimed by the workers one at a time. With `probabilities` (B, H, T, T) the softmax
/// rows are written there and kept (training's forward, whose backward reads them), at any length.
///
/// Short sequences: S = q kᵀ / √D for the whole head, row softmax, S v (without `probabilities`
/// the rows of S are left unnormalised and the output rows scaled by 1 / sum). Long sequences (T > 512,
/// e.g. 1,370 tokens at 518 px): queries in tiles of 64, keys in tiles of 256, with the online
/// softmax (running row max m and sum l; accumulators rescaled by exp(m_old − m_new)), so the
/// T×T matrix is never materialised and each tile stays in cache (Milakov & Gimelshein 2018;
/// Dao et al. 2022).
public func attentionForward(
    _ out: UnsafeMutablePointer<Float>, _ qkv: UnsafePointer<Float>,
    scores: UnsafeMutablePointer<Float>,
    batch: Int, tokens: Int, channels: Int, heads: Int,
    probabilities: UnsafeMutablePointer<Float>? = nil
) {
    let T = tokens, C = channels, D = C / heads
    precondition(D * heads == C, "channels \(C) not divisible by heads \(heads)")
    let scale = 1 / Float(D).squareRoot()
    let o = SendablePointer(out), s = SendablePointer(scores), q0 = SendablePointer(UnsafeMutablePointer(mutating: qkv))
    let pp = probabilities.map(SendablePointer.init)
    let whole = T <= attentionTileThreshold || probabilities != nil // all of a head's scores at once
    let pairs = batch * heads, workers = max(1, min(Parallel.workers, pairs))
    // Few heads that do not divide among the workers (ViT-Ti, one image: 3 heads on 2 cores)
    // leave a core idle for a head's time; whole-score heads then split their queries.
    let parts = whole && pairs % workers != 0 && pairs < 8 * workers ? workers : 1
    let items = pairs * parts
    let per = attentionWorkspaceSize(tokens: T, headDim: D, workers: 1)
    // Items (heads, or parts of one) are claimed one at a time by whichever worker is free.
    Parallel.claiming(items) { w, next in
        // Each worker owns one block of the workspace.
        let ws = s.p + w * per
        // This worker's packings of one head's keys (B = (k / √D)ᵀ: D × T) and values (T × D),
        // after its score block in the workspace.
        let packs = ws + scoreWorkspace(tokens: T, headDim: D)
        let keys = PackedMatrix(k: D, n: T, in: packs)
        let values = PackedMatrix(k: T, n: D, in: packs + PackedMatrix.alignedStorage(k: D, n: T))
        var packed = -1
        while let item = next() {
            let bh = item / parts, part = item % parts
            let b = bh / heads, h = bh % heads
            let base = q0.p + b * T * 3 * C
            let q = base + h * D, k = base + C + h * D, v = base + 2 * C + h * D
            let dst = o.p + b * T * C + h * D
            if bh != packed {
                keys.fillTransposed(k, ld: 3 * C, scale: scale)
                values.fill(v, ld: 3 * C)
                packed = bh
            }
            if whole {
                let r0 = part * T / parts, n = (part + 1) * T / parts - r0
                let sc = pp.map { $0.p + (bh * T + r0) * T } ?? ws
                packedGEMM(sc, ldc: T, q + r0 * 3 * C, lda: 3 * C, keys, rows: n, columns: 0..<T)
                if pp != nil {
                    softmaxRows(sc, rows: n, cols: T)
                    packedGEMM(dst + r0 * C, ldc: C, sc, lda: T, values, rows: n, columns: 0..<D)
                } else {
                    // Unnormalised probabilities; the output rows (D wide, not T) take the 1 / sum.
                    let inverseSums = ws + T * T
                    softmaxRowsUnnormalised(sc, rows: n, cols: T, inverseSums: inverseSums)
                    packedGEMM(dst + r0 * C, ldc: C, sc, lda: T, values, rows: n, columns: 0..<D)
                    for i in 0..<n { scaleRow(dst + (r0 + i) * C, D, inverseSums[i]) }
                }
            } else {
                tiledHead(dst, q: q, keys: keys, values: values, workspace: ws, tokens: T, headDim: D, stride: 3 * C, outStride: C)
            }
        }
    }
}

/// One head with the online softmax: q rows `stride` apart, keys and values packed (keys already
/// scaled by 1/√D); out rows `outStride` apart.
func tiledHead(
    _ out: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>, keys: PackedMatrix, values: PackedMatrix,
    workspace: UnsafeMutablePointer<Float>, tokens T: Int, headDim D: Int, stride: Int, outStride: Int
) {
    let sc = workspace, acc = workspace + queryTile * keyTile
    let rowMax = acc + queryTile * D, rowSum = rowMax + queryTile
    var i0 = 0
    while i0 < T {
        let bq = min(queryTile, T - i0)
        for r in 0..<bq { rowMax[r] = -.infinity; rowSum[r] = 0 }
        acc.update(repeating: 0, count: bq * D)
        var j0 = 0
        while j0 < T {
            let bk = min(keyTile, T - j0)
            packedGEMM(sc, ldc: bk, q + i0 * stride, lda: stride, keys, rows: bq, columns: j0..<(j0 + bk), outputFromFirstColumn: true)
            for r in 0..<bq {
                let row = sc + r * bk
                let m = max(rowMax[r], vectorMax(row, bk))
                let correction = rowMax[r] == -.infinity ? 0 : expf(rowMax[r] - m)
                // Sum in vector lanes, reduced once per row (a horizontal sum per 8 scores cost as
                // much as the exp).
                var sum8 = SIMD8<Float>(repeating: 0)
                let m8 = SIMD8<Float>(repeating: m)
                var j = 0
                while j + 8 <= bk {
                    let e = simdExp(UnsafeRawPointer(row + j).loadUnaligned(as: SIMD8<Float>.self) - m8)
                    UnsafeMutableRawPointer(row + j).storeBytes(of: e, as: SIMD8<Float>.self)
                    sum8 += e
                    j += 8
                }
                var sum = hsum(sum8)
                while j < bk { row[j] = expf(row[j] - m); sum += row[j]; j += 1 }
                rowSum[r] = rowSum[r] * correction + sum
                rowMax[r] = m
                if correction != 1 { scaleRow(acc + r * D, D, correction) }
            }
            packedGEMM(acc, ldc: D, sc, lda: bk, values, rows: bq, columns: 0..<D, inner: j0..<(j0 + bk), accumulate: true)
            j0 += bk
        }
        for r in 0..<bq {
            scaleRow(acc + r * D, D, 1 / rowSum[r])
            (out + (i0 + r) * outStride).update(from: acc + r * D, count: D)
        }
        i0 += bq
    }
}

/// p (n) ← p · s.
@inline(__always)
func scaleRow(_ p: UnsafeMutablePointer<Float>, _ n: Int, _ s: Float) {
    let s8 = SIMD8<Float>(repeating: s)
    var i = 0
    while i + 8 <= n {
        UnsafeMutableRawPointer(p + i).storeBytes(of: UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self) * s8, as: SIMD8<Float>.self)
        i += 8
    }
    while i < n { p[i] *= s; i += 1 }
}

/// Scratch floats `attentionTrainingBackward` needs for `workers` workers: per worker a T × T
/// block and one head's packings (a D × T and a T × D operand).
public func attentionTrainingScratchSize(tokens T: Int, headDim D: Int, workers: Int) -> Int {
    max(1, workers) * (T * T + PackedMatrix.alignedStorage(k: D, n: T) + PackedMatrix.alignedStorage(k: T, n: D))
}

/// Runs `body(next, scratch, wide, tall)` once per worker over the (batch, head) pairs, claimed
/// one at a time (`Parallel.claiming`), each worker with its own block of `scratch` and its two
/// packings.
private func claimingHeads(
    _ pairs: Int, scratch: UnsafeMutablePointer<Float>, tokens T: Int, headDim D: Int,
    _ body: (() -> Int?, UnsafeMutablePointer<Float>, PackedMatrix, PackedMatrix) -> Void
) {
    let size = attentionTrainingScratchSize(tokens: T, headDim: D, workers: 1), sc = SendablePointer(scratch)
    Parallel.claiming(pairs) { w, next in
        let ws = sc.p + w * size
        let packs = ws + T * T
        let wide = PackedMatrix(k: D, n: T, in: packs)
        let tall = PackedMatrix(k: T, n: D, in: packs + PackedMatrix.alignedStorage(k: D, n: T))
        withoutActuallyEscaping(next) { next in body(next, ws, wide, tall) }
    }
}

/// What both fused-qkv backwards start from: C = H·D, the qkv row stride 3C, the score scale
/// 1/√D, and dqkv, dout, qkv and the probabilities as pointers the workers may share.
private func backwardOperands(
    _ dqkv: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>,
    _ qkv: UnsafePointer<Float>, _ probabilities: UnsafePointer<Float>, heads H: Int, headDim D: Int
)
    -> (Int, Int, Float, SendablePointer<Float>, SendablePointer<Float>, SendablePointer<Float>, SendablePointer<Float>)
{
    let C = H * D
    return (
        C, 3 * C, 1 / Float(D).squareRoot(), SendablePointer(dqkv), SendablePointer(UnsafeMutablePointer(mutating: dout)),
        SendablePointer(UnsafeMutablePointer(mutating: qkv)), SendablePointer(UnsafeMutablePointer(mutating: probabilities))
    )
}

/// Backward of attention over a fused qkv buffer (`attentionForward` with `probabilities`):
/// dqkv (B·T, 3C) from dout (B·T, C), with P (B, H, T, T) saved.
/// dV = Pᵀ dO; dP = dO Vᵀ; dS = scale · P ⊙ (dP − rowsum(dP ⊙ P)); dQ = dS K; dK = dSᵀ Q — each
/// product on the packed-operand kernel (Pᵀ and dSᵀ read in place, as transposed A operands).
/// `scratch` holds `attentionTrainingScratchSize` floats.
public func attentionTrainingBackward(
    dqkv: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
    qkv: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
    scratch: UnsafeMutablePointer<Float>,
    batch B: Int, tokens T: Int, heads H: Int, headDim D: Int
) {
    let (C, ld, scale, dq, dO, q, pp) = backwardOperands(dqkv, dout, qkv, probabilities, heads: H, headDim: D)
    claimingHeads(B * H, scratch: scratch, tokens: T, headDim: D) { next, ws, wide, tall in
        let dp = ws
        while let bh = next() {
            let b = bh / H, h = bh % H
            let base = q.p + b * T * ld + h * D, dbase = dq.p + b * T * ld + h * D
            let p = pp.p + bh * T * T, go = dO.p + b * T * C + h * D
            // dV (T, D) = Pᵀ (T, T) · dO (T, D)
            tall.fill(go, ld: C)
            packedGEMM(dbase + 2 * C, ldc: ld, p, lda: T, tall, rows: T, columns: 0..<D, transposedA: true)
            // dP (T, T) = dO (T, D) · Vᵀ, then dS
            wide.fillTransposed(base + 2 * C, ld: ld)
            packedGEMM(dp, ldc: T, go, lda: C, wide, rows: T, columns: 0..<T)
            softmaxBackward(dp, probabilities: p, rows: T, cols: T, scale: scale)
            // dQ = dS · K ; dK = dSᵀ · Q
            tall.fill(base + C, ld: ld)
            packedGEMM(dbase, ldc: ld, dp, lda: T, tall, rows: T, columns: 0..<D)
            tall.fill(base, ld: ld)
            packedGEMM(dbase + C, ldc: ld, dp, lda: T, tall, rows: T, columns: 0..<D, transposedA: true)
        }
    }
}

/// The class token's row of `attentionForward` (saving its probabilities): for each image only query row 0 (keys and
/// values of every token), for a last block whose other rows no output reads. out (B, C): one
/// row per image; probabilities (B, H, T): the class token's softmax row per head.
public func classTokenAttentionForward(
    out: UnsafeMutablePointer<Float>, qkv: UnsafePointer<Float>,
    probabilities: UnsafeMutablePointer<Float>,
    batch B: Int, tokens T: Int, heads H: Int, headDim D: Int
) {
    let C = H * D, ld = 3 * C, scale = 1 / Float(D).squareRoot()
    let o = SendablePointer(out), q = SendablePointer(UnsafeMutablePointer(mutating: qkv)), pp = SendablePointer(probabilities)
    Parallel.ranges(B * H) { range in
        for bh in range {
            let b = bh / H, h = bh % H
            let base = q.p + b * T * ld + h * D, p = pp.p + bh * T
            for j in 0..<T { p[j] = scale * dot(base, base + j * ld + C, D) }
            softmaxRows(p, rows: 1, cols: T)
            let y = o.p + b * C + h * D
            y.update(repeating: 0, count: D)
            for j in 0..<T { axpy(p[j], base + j * ld + 2 * C, y, D) }
        }
    }
}

/// Backward of `classTokenAttentionForward`: dqkv (B·T, 3C), every row written, from dout (B, C),
/// the gradient of the class-token rows only. Per head, with p the saved row and dO its gradient:
/// dV_j = p_j dO; dS_j = p_j (dO·v_j − Σ_i p_i dO·v_i); dQ_0 = scale Σ_j dS_j k_j; dK_j = scale dS_j q_0;
/// query gradients of the other rows are zero.
public func classTokenAttentionBackward(
    dqkv: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
    qkv: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
    scratch: UnsafeMutablePointer<Float>,
    batch B: Int, tokens T: Int, heads H: Int, headDim D: Int
) {
    let (C, ld, scale, dq, dO, q, pp) = backwardOperands(dqkv, dout, qkv, probabilities, heads: H, headDim: D)
    let sc = SendablePointer(scratch)
    Parallel.claiming(B * H) { w, next in
        let ds = sc.p + w * T
        while let bh = next() {
            let b = bh / H, h = bh % H
            let base = q.p + b * T * ld + h * D, dbase = dq.p + b * T * ld + h * D
            let p = pp.p + bh * T, g = dO.p + b * C + h * D
            var s = 0 as Float
            for j in 0..<T {
                ds[j] = dot(g, base + j * ld + 2 * C, D)
                s += ds[j] * p[j]
            }
            for j in 0..<T { ds[j] = scale * p[j] * (ds[j] - s) }
            dbase.update(repeating: 0, count: D)
            for j in 0..<T {
                let row = dbase + j * ld
                if j > 0 { row.update(repeating: 0, count: D) }
                axpy(ds[j], base + j * ld + C, dbase, D)
                scaled(base, ds[j], row + C, D)
                scaled(g, p[j], row + 2 * C, D)
            }
        }
    }
}

@inline(__always)
private func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var s8 = SIMD8<Float>(), i = 0
    while i + 8 <= n {
        s8 = s8.addingProduct(UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self), UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self))
        i += 8
    }
    var s = s8.sum()
    while i < n { s += a[i] * b[i]; i += 1 }
    return s
}

/// y += a · x over n floats.
@inline(__always)
private func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    var i = 0
    let av = SIMD8<Float>(repeating: a)
    while i + 8 <= n {
        let v = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self).addingProduct(av, UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self))
        UnsafeMutableRawPointer(y + i).storeBytes(of: v, as: SIMD8<Float>.self)
        i += 8
    }
    while i < n { y[i] += a * x[i]; i += 1 }
}

/// y = a · x over n floats.
@inline(__always)
private func scaled(_ x: UnsafePointer<Float>, _ a: Float, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    var i = 0
    while i + 8 <= n {
        UnsafeMutableRawPointer(y + i).storeBytes(of: UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self) * a, as: SIMD8<Float>.self)
        i += 8
    }
    while i < n { y[i] = a * x[i]; i += 1 }
}
