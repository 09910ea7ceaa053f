// Multi-head attention over separate query, key and value buffers with masks: causal
// self-attention and cross-attention (a text decoder's two attention kinds). Forward saving the
// probabilities, and backward. B batch, Tq queries, Tk keys, H heads, D head dimension; head h
// sits at column h·D of each buffer, rows `ld` floats apart. Products run on BLAS (single-threaded:
// the (batch, head) pairs are split across workers here).

/// Multi-head attention with separate query / key / value buffers (row strides ldq, ldk, ldv;
/// head h at column h·D), for causal self-attention and cross-attention. Queries (B·Tq rows),
/// keys and values (B·Tk rows); `causal` masks key j > query i; `keyLengths[b]` masks keys at or
/// beyond it. Saves the probabilities (B, H, Tq, Tk; zero where masked). out (B·Tq, H·D) with
/// stride ldo. Causal attention runs in blocks of `causalBlock` queries, each block's products over
/// only the keys its last query sees (about 5/8 of the full products at 128 tokens and blocks of 32);
/// other attention is one block of every query over the keys below `keyLengths[b]`.
public func maskedAttentionForward(
    out: UnsafeMutablePointer<Float>, ldo: Int,
    q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int, v: UnsafePointer<Float>, ldv: Int,
    probabilities: UnsafeMutablePointer<Float>, batch B: Int, queries Tq: Int, keys Tk: Int, heads H: Int, headDim D: Int,
    causal: Bool, keyLengths: [Int]? = nil, causalBlock: Int = 32
) {
    let scale = 1 / Float(D).squareRoot()
    let o = SendablePointer(out), qp = SendablePointer(UnsafeMutablePointer(mutating: q)), kp = SendablePointer(UnsafeMutablePointer(mutating: k))
    let vp = SendablePointer(UnsafeMutablePointer(mutating: v)), pp = SendablePointer(probabilities)
    let block = causal ? max(1, causalBlock) : max(1, Tq)
    Parallel.ranges(B * H) { range in
        for bh in range {
            let b = bh / H, h = bh % H
            let p = pp.p + bh * Tq * Tk
            let len = keyLengths?[b] ?? Tk
            for i0 in stride(from: 0, to: Tq, by: block) {
                // the keys the block's last query sees
                let i1 = min(Tq, i0 + block), n = min(len, causal ? i1 : Tk, Tk)
                BLAS.sgemm(
                    p + i0 * Tk, qp.p + (b * Tq + i0) * ldq + h * D, kp.p + b * Tk * ldk + h * D, transB: true, m: i1 - i0, n: n, k: D,
                    alpha: scale, lda: ldq, ldb: ldk, ldc: Tk)
                for i in i0..<i1 {
                    let row = p + i * Tk, limit = min(len, causal ? i + 1 : Tk, Tk)
                    if limit > 0 { softmaxRows(row, rows: 1, cols: limit) }
                    (row + limit).update(repeating: 0, count: Tk - limit)
                }
                BLAS.sgemm(
                    o.p + (b * Tq + i0) * ldo + h * D, p + i0 * Tk, vp.p + b * Tk * ldv + h * D, m: i1 - i0, n: D, k: n, lda: Tk, ldb: ldv, ldc: ldo)
            }
        }
    }
}

/// Backward of `maskedAttentionForward`: dq, dk, dv (same strides as their inputs) from dout, with the
/// saved probabilities. dq is written; dk and dv are written (each key row belongs to one batch item).
/// `causal` skips, per block of `causalBlock` queries, the keys none of them sees (their probabilities are zero);
/// other attention is one block of every query.
public func maskedAttentionBackward(
    dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
    dout: UnsafePointer<Float>, ldo: Int,
    q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int, v: UnsafePointer<Float>, ldv: Int,
    probabilities: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>,
    batch B: Int, queries Tq: Int, keys Tk: Int, heads H: Int, headDim D: Int, causal: Bool = false, causalBlock: Int = 32
) {
    let scale = 1 / Float(D).squareRoot(), block = causal ? max(1, causalBlock) : max(1, Tq)
    let dqp = SendablePointer(dq), dkp = SendablePointer(dk), dvp = SendablePointer(dv), dO = SendablePointer(UnsafeMutablePointer(mutating: dout))
    let qp = SendablePointer(UnsafeMutablePointer(mutating: q)), kp = SendablePointer(UnsafeMutablePointer(mutating: k))
    let vp = SendablePointer(UnsafeMutablePointer(mutating: v)), pp = SendablePointer(UnsafeMutablePointer(mutating: probabilities)),
        sc = SendablePointer(scratch)
    let chunks = max(1, min(Parallel.workers, B * H)), per = (B * H + chunks - 1) / chunks
    Parallel.ranges(chunks) { workers in
        for w in workers {
            let dp = sc.p + w * Tq * Tk
            for bh in (w * per)..<min(B * H, (w + 1) * per) {
                let b = bh / H, h = bh % H
                let p = pp.p + bh * Tq * Tk, go = dO.p + b * Tq * ldo + h * D
                let dkb = dkp.p + b * Tk * ldk + h * D, dvb = dvp.p + b * Tk * ldv + h * D
                let kb = kp.p + b * Tk * ldk + h * D, vb = vp.p + b * Tk * ldv + h * D
                for j in 0..<Tk {
                    (dkb + j * ldk).update(repeating: 0, count: D)
                    (dvb + j * ldv).update(repeating: 0, count: D)
                }
                for i0 in stride(from: 0, to: Tq, by: block) {
                    let i1 = min(Tq, i0 + block), m = i1 - i0, n = causal ? min(i1, Tk) : Tk
                    let pb = p + i0 * Tk, db = dp + i0 * Tk, gb = go + i0 * ldo, qb = qp.p + (b * Tq + i0) * ldq + h * D
                    // dV[0, n) += P[block, 0..<n)ᵀ dO[block]; dP = dO Vᵀ; dS = softmax backward
                    BLAS.sgemm(dvb, pb, transA: true, gb, m: n, n: D, k: m, beta: 1, lda: Tk, ldb: ldo, ldc: ldv)
                    BLAS.sgemm(db, gb, vb, transB: true, m: m, n: n, k: D, lda: ldo, ldb: ldv, ldc: Tk)
                    for i in 0..<m { softmaxBackward(db + i * Tk, probabilities: pb + i * Tk, rows: 1, cols: n) }
                    // dQ[block] = scale dS K[0, n); dK[0, n) += scale dSᵀ Q[block]
                    BLAS.sgemm(dqp.p + (b * Tq + i0) * ldq + h * D, db, kb, m: m, n: D, k: n, alpha: scale, lda: Tk, ldb: ldk, ldc: ldq)
                    BLAS.sgemm(dkb, db, transA: true, qb, m: n, n: D, k: m, alpha: scale, beta: 1, lda: Tk, ldb: ldq, ldc: ldk)
                }
            }
        }
    }
}
