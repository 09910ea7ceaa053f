// Multi-head attention over separate query, key and value buffers with masks: causal
// self-attention and cross-attention (a text decoder's two attention kinds). Forward saving the
// probabilities, and backward. B batch, Tq queries, Tk keys, H heads, D head dimension; head h
// sits at column h·D of each buffer, rows `ld` floats apart. Products run on BLAS (single-threaded:
// the (batch, head) pairs are split across workers here).

/// Multi-head attention with separate query / key / value buffers (row strides ldq, ldk, ldv;
/// head h at column h·D), for causal self-attention and cross-attention. Queries (B·Tq rows),
/// keys and values (B·Tk rows); `causal` masks key j > query i; `keyLengths[b]` masks keys at or
/// beyond it. Saves the probabilities (B, H, Tq, Tk). out (B·Tq, H·D) with stride ldo.
public func maskedAttentionForward(
    out: UnsafeMutablePointer<Float>, ldo: Int,
    q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int, v: UnsafePointer<Float>, ldv: Int,
    probabilities: UnsafeMutablePointer<Float>, batch B: Int, queries Tq: Int, keys Tk: Int, heads H: Int, headDim D: Int,
    causal: Bool, keyLengths: [Int]? = nil
) {
    let scale = 1 / Float(D).squareRoot()
    let o = SendablePointer(out), qp = SendablePointer(UnsafeMutablePointer(mutating: q)), kp = SendablePointer(UnsafeMutablePointer(mutating: k))
    let vp = SendablePointer(UnsafeMutablePointer(mutating: v)), pp = SendablePointer(probabilities)
    Parallel.ranges(B * H) { range in
        for bh in range {
            let b = bh / H, h = bh % H
            let p = pp.p + bh * Tq * Tk
            BLAS.sgemm(p, qp.p + b * Tq * ldq + h * D, kp.p + b * Tk * ldk + h * D, transB: true, m: Tq, n: Tk, k: D, alpha: scale, lda: ldq, ldb: ldk, ldc: Tk)
            let len = keyLengths?[b] ?? Tk
            for i in 0..<Tq {
                let row = p + i * Tk
                let limit = min(len, causal ? i + 1 : Tk)
                for j in limit..<Tk { row[j] = -.infinity }
                if limit == 0 { for j in 0..<Tk { row[j] = 0 }; continue }
                softmaxRows(row, rows: 1, cols: Tk)
            }
            BLAS.sgemm(o.p + b * Tq * ldo + h * D, p, vp.p + b * Tk * ldv + h * D, m: Tq, n: D, k: Tk, lda: Tk, ldb: ldv, ldc: ldo)
        }
    }
}

/// Backward of `maskedAttentionForward`: dq, dk, dv (same strides as their inputs) from dout, with the
/// saved probabilities. dq is written; dk and dv are written (each key row belongs to one batch item).
public func maskedAttentionBackward(
    dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
    dout: UnsafePointer<Float>, ldo: Int,
    q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int, v: UnsafePointer<Float>, ldv: Int,
    probabilities: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>,
    batch B: Int, queries Tq: Int, keys Tk: Int, heads H: Int, headDim D: Int
) {
    let scale = 1 / Float(D).squareRoot()
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
                BLAS.sgemm(dvp.p + b * Tk * ldv + h * D, p, transA: true, go, m: Tk, n: D, k: Tq, lda: Tk, ldb: ldo, ldc: ldv)
                BLAS.sgemm(dp, go, vp.p + b * Tk * ldv + h * D, transB: true, m: Tq, n: Tk, k: D, lda: ldo, ldb: ldv, ldc: Tk)
                softmaxBackward(dp, probabilities: p, rows: Tq, cols: Tk)
                BLAS.sgemm(dqp.p + b * Tq * ldq + h * D, dp, kp.p + b * Tk * ldk + h * D, m: Tq, n: D, k: Tk, alpha: scale, lda: Tk, ldb: ldk, ldc: ldq)
                BLAS.sgemm(
                    dkp.p + b * Tk * ldk + h * D, dp, transA: true, qp.p + b * Tq * ldq + h * D, m: Tk, n: D, k: Tq, alpha: scale, lda: Tk, ldb: ldq, ldc: ldk)
            }
        }
    }
}
