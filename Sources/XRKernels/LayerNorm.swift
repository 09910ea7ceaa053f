// LayerNorm over the last dimension: forward, forward saving the row statistics, backward.
// Dimension letters: R rows (B*T), C channels.
//
// y = (x - mean) / sqrt(var + eps) * weight + bias, biased variance (as torch.nn.LayerNorm).
// Two passes over each row (mean, then centred sum of squares) for accuracy; each row stays
// in L1 between passes. The backward accumulates (`+=`) into the parameter gradients and writes
// the input gradient (or adds to it with `accumulate`).

/// out (R, C) = LayerNorm(inp (R, C)) with weight (C), bias (C). `out` may alias `inp`.
public func layerNormForward(
    _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
    _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
    rows: Int, cols: Int, eps: Float
) {
    for r in 0..<rows {
        let (mean, rstd) = layerNormStatistics(inp + r * cols, cols: cols, eps: eps)
        layerNormRow(out + r * cols, inp + r * cols, weight, bias, cols: cols, mean: mean, rstd: rstd)
    }
}

/// LayerNorm forward that also saves each row's mean and 1/std for the backward (the statistics
/// the row was normalised with). `out` may alias `inp`.
public func layerNormForward(
    _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
    _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
    rows: Int, cols: Int, eps: Float,
    mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>
) {
    for r in 0..<rows {
        let (m, s) = layerNormStatistics(inp + r * cols, cols: cols, eps: eps)
        mean[r] = m
        rstd[r] = s
        layerNormRow(out + r * cols, inp + r * cols, weight, bias, cols: cols, mean: m, rstd: s)
    }
}

/// One row's mean and 1 / sqrt(biased variance + eps), in eight lanes: the mean, then the
/// centred sum of squares.
@inline(__always)
private func layerNormStatistics(_ x: UnsafePointer<Float>, cols: Int, eps: Float) -> (mean: Float, rstd: Float) {
    let c8 = cols & ~7
    var s = SIMD8<Float>()
    var i = 0
    while i < c8 { s += UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self); i += 8 }
    var sum = s.sum()
    while i < cols { sum += x[i]; i += 1 }
    let mean = sum / Float(cols)
    var q = SIMD8<Float>()
    i = 0
    while i < c8 {
        let d = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self) - mean
        q += d * d; i += 8
    }
    var sq = q.sum()
    while i < cols { let d = x[i] - mean; sq += d * d; i += 1 }
    return (mean, 1 / (sq / Float(cols) + eps).squareRoot())
}

/// y = (x − mean) · rstd · weight + bias over one row (`y` may alias `x`).
@inline(__always)
private func layerNormRow(
    _ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
    cols: Int, mean: Float, rstd: Float
) {
    let c8 = cols & ~7
    var i = 0
    while i < c8 {
        let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
        let w = UnsafeRawPointer(weight + i).loadUnaligned(as: SIMD8<Float>.self)
        let b = UnsafeRawPointer(bias + i).loadUnaligned(as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(y + i).storeBytes(of: (v - mean) * rstd * w + b, as: SIMD8<Float>.self)
        i += 8
    }
    while i < cols { y[i] = (x[i] - mean) * rstd * weight[i] + bias[i]; i += 1 }
}

/// LayerNorm backward. x̂ = (x − mean)·rstd, g = dy ⊙ weight:
/// dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)); dweight += Σ_rows dy ⊙ x̂; dbias += Σ_rows dy.
public func layerNormBackward(
    dx: UnsafeMutablePointer<Float>?, accumulate: Bool, dy: UnsafePointer<Float>,
    x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
    mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
    dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?,
    rows: Int, cols: Int
) {
    let n = Float(cols)
    for r in 0..<rows {
        let xr = x + r * cols, g = dy + r * cols, m = mean[r], s = rstd[r]
        // The two row sums in vector lanes (scalar float reductions do not vectorise).
        var g8 = SIMD8<Float>(repeating: 0), gx8 = SIMD8<Float>(repeating: 0)
        let m8 = SIMD8<Float>(repeating: m), s8 = SIMD8<Float>(repeating: s)
        var i = 0
        while i + 8 <= cols {
            let xh = (UnsafeRawPointer(xr + i).loadUnaligned(as: SIMD8<Float>.self) - m8) * s8
            let gw = UnsafeRawPointer(g + i).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(weight + i).loadUnaligned(as: SIMD8<Float>.self)
            g8 += gw
            gx8 = gx8.addingProduct(gw, xh)
            i += 8
        }
        var sumG = g8.sum(), sumGX = gx8.sum()
        while i < cols {
            let xh = (xr[i] - m) * s, gw = g[i] * weight[i]
            sumG += gw; sumGX += gw * xh
            i += 1
        }
        if let dweight { for i in 0..<cols { dweight[i] += g[i] * ((xr[i] - m) * s) } }
        if let dbias { for i in 0..<cols { dbias[i] += g[i] } }
        guard let dx else { continue }
        let a = sumG / n, b = sumGX / n
        let o = dx + r * cols
        for i in 0..<cols {
            let xh = (xr[i] - m) * s
            let v = s * (g[i] * weight[i] - a - xh * b)
            if accumulate { o[i] += v } else { o[i] = v }
        }
    }
}

/// LayerNorm parameter gradients over a range of columns (so workers can split columns):
/// dweight[i] += Σ_r dy[r, i] · x̂[r, i]; dbias[i] += Σ_r dy[r, i].
public func layerNormParameterGradients(
    dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?,
    dy: UnsafePointer<Float>, x: UnsafePointer<Float>,
    mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
    rows: Int, cols: Int, columns: Range<Int>
) {
    for r in 0..<rows {
        let g = dy + r * cols, xr = x + r * cols, m = mean[r], s = rstd[r]
        if let dweight { for i in columns { dweight[i] += g[i] * (xr[i] - m) * s } }
        if let dbias { for i in columns { dbias[i] += g[i] } }
    }
}
