// Multi-head self-attention over packed qkv. B batch, T tokens, C channels, H heads, D = C/H.
//
// qkv rows are [q (H, D) | k (H, D) | v (H, D)] per token (timm's fused layout; separate
// q/k/v projections are packed the same way at load time). Per (b, h): S = q kᵀ / sqrt(D)
// (T, T), row softmax, out = S v — both products on BLAS, reading q/k/v in place through
// leading dimensions (no copies).

/// out (B*T, C) = attention(qkv (B*T, 3C)); `scores` is a workspace of at least T*T floats.
public func attentionForward(_ out: UnsafeMutablePointer<Float>, _ qkv: UnsafePointer<Float>,
                             scores: UnsafeMutablePointer<Float>,
                             batch: Int, tokens: Int, channels: Int, heads: Int) {
    let T = tokens, C = channels, D = C / heads
    precondition(D * heads == C, "channels \(C) not divisible by heads \(heads)")
    let scale = 1 / Float(D).squareRoot()
    for b in 0..<batch {
        let base = qkv + b * T * 3 * C
        for h in 0..<heads {
            let q = base + h * D, k = base + C + h * D, v = base + 2 * C + h * D
            BLAS.sgemm(scores, q, k, transB: true, m: T, n: T, k: D, alpha: scale, lda: 3 * C, ldb: 3 * C, ldc: T)
            softmaxRows(scores, rows: T, cols: T)
            BLAS.sgemm(out + b * T * C + h * D, scores, v, m: T, n: D, k: T, lda: T, ldb: 3 * C, ldc: C)
        }
    }
}
