// Linear layers: out = inp · weightᵀ (+ bias, activation, residual in an epilogue) and the bias
// gradient. R rows, K input features, N output features. The weight and input gradients are plain
// matrix products (`BLAS.sgemm`, `packedGEMM`).

/// out (R, N) = inp (R, K) · weightᵀ (weight (N, K)), rows split across workers; `epilogue`
/// runs on each worker's finished row range while it is still in cache (bias, activation,
/// residual). BLAS must be single-threaded here.
public func linearForward(
    _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
    rows: Int, inFeatures k: Int, outFeatures n: Int,
    epilogue: (Range<Int>) -> Void = { _ in }
) {
    Parallel.ranges(rows, minChunk: 16) { r in
        if r.isEmpty { return }
        BLAS.sgemm(out + r.lowerBound * n, inp + r.lowerBound * k, weight, transB: true, m: r.count, n: n, k: k)
        epilogue(r)
    }
}

/// out (R, N) = inp (R, K) · weightᵀ (weight (N, K)) with the output features split across
/// workers (ranges of multiples of 16): each worker packs only its part of the weights, and
/// `epilogue` runs on its finished column range (all rows; rows are `n` apart). The encoder ran its
/// one-image layers this way before its weights were packed once (`packedProduct`); kept as the
/// OpenBLAS baseline that `xrlab bench-gemm` measures the packed kernel against.
public func linearForwardColumns(
    _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
    rows: Int, inFeatures k: Int, outFeatures n: Int,
    epilogue: (Range<Int>) -> Void = { _ in }
) {
    let blocks = (n + 15) / 16
    Parallel.ranges(blocks, minChunk: 4) { b in
        let c = (b.lowerBound * 16)..<min(n, b.upperBound * 16)
        if c.isEmpty { return }
        BLAS.sgemm(out + c.lowerBound, inp, weight + c.lowerBound * k, transB: true, m: rows, n: c.count, k: k, ldc: n)
        epilogue(c)
    }
}

/// Column sums: out (C) += Σ_rows x (R, C) — the gradient of a bias.
public func addColumnSums(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, rows: Int, cols: Int) {
    for r in 0..<rows {
        let p = x + r * cols
        for i in 0..<cols { out[i] += p[i] }
    }
}
