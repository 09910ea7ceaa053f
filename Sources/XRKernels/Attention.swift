// Multi-head self-attention over packed qkv. B batch, T tokens, C channels, H heads, D = C/H.
//
// qkv rows are [q (H, D) | k (H, D) | v (H, D)] per token (timm's fused layout; separate
// q/k/v projections are packed the same way at load time). Per (b, h): S = q kᵀ / sqrt(D)
// (T, T), row softmax, out = S v — both products on BLAS, reading q/k/v in place through
// leading dimensions (no copies).

/// out (B*T, C) = attention(qkv (B*T, 3C)); `scores` is a workspace of at least
/// `Parallel.workers`·T·T floats (one T×T block per worker). (batch, head) pairs are split
/// across workers; BLAS must be single-threaded here.
public func attentionForward(_ out: UnsafeMutablePointer<Float>, _ qkv: UnsafePointer<Float>,
                             scores: UnsafeMutablePointer<Float>,
                             batch: Int, tokens: Int, channels: Int, heads: Int) {
    let T = tokens, C = channels, D = C / heads
    precondition(D * heads == C, "channels \(C) not divisible by heads \(heads)")
    let scale = 1 / Float(D).squareRoot()
    let o = SendablePointer(out), s = SendablePointer(scores), q0 = SendablePointer(UnsafeMutablePointer(mutating: qkv))
    let workers = max(1, min(Parallel.workers, batch * heads))
    Parallel.ranges(batch * heads, minChunk: (batch * heads + workers - 1) / workers) { r in
        guard let first = r.first else { return }
        // Each worker owns one T×T block of the workspace.
        let w = first * workers / (batch * heads)
        let sc = s.p + w * T * T
        for bh in r {
            let b = bh / heads, h = bh % heads
            let base = q0.p + b * T * 3 * C
            let q = base + h * D, k = base + C + h * D, v = base + 2 * C + h * D
            BLAS.sgemm(sc, q, k, transB: true, m: T, n: T, k: D, alpha: scale, lda: 3 * C, ldb: 3 * C, ldc: T)
            softmaxRows(sc, rows: T, cols: T)
            BLAS.sgemm(o.p + b * T * C + h * D, sc, v, m: T, n: D, k: T, lda: T, ldb: 3 * C, ldc: C)
        }
    }
}
