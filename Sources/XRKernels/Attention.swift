import Foundation
// Multi-head self-attention over packed qkv. B batch, T tokens, C channels, H heads, D = C/H.
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
public func attentionForward(_ out: UnsafeMutablePointer<Float>, _ qkv: UnsafePointer<Float>,
                             scores: UnsafeMutablePointer<Float>,
                             batch: Int, tokens: Int, channels: Int, heads: Int,
                             probabilities: UnsafeMutablePointer<Float>? = nil) {
    let T = tokens, C = channels, D = C / heads
    precondition(D * heads == C, "channels \(C) not divisible by heads \(heads)")
    let scale = 1 / Float(D).squareRoot()
    let o = SendablePointer(out), s = SendablePointer(scores), q0 = SendablePointer(UnsafeMutablePointer(mutating: qkv))
    let pp = probabilities.map(SendablePointer.init)
    let whole = T <= attentionTileThreshold || probabilities != nil   // all of a head's scores at once
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
func tiledHead(_ out: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>, keys: PackedMatrix, values: PackedMatrix,
               workspace: UnsafeMutablePointer<Float>, tokens T: Int, headDim D: Int, stride: Int, outStride: Int) {
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
