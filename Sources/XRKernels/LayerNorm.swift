// LayerNorm over the last dimension. Dimension letters: R rows (B*T), C channels.
//
// y = (x - mean) / sqrt(var + eps) * weight + bias, biased variance (as torch.nn.LayerNorm).
// Two passes over each row (mean, then centred sum of squares) for accuracy; each row stays
// in L1 between passes.

/// out (R, C) = LayerNorm(inp (R, C)) with weight (C), bias (C). `out` may alias `inp`.
public func layerNormForward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                             _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
                             rows: Int, cols: Int, eps: Float) {
    let c8 = cols & ~7
    for r in 0..<rows {
        let x = inp + r * cols, y = out + r * cols
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
        let rstd = 1 / (sq / Float(cols) + eps).squareRoot()
        i = 0
        while i < c8 {
            let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
            let w = UnsafeRawPointer(weight + i).loadUnaligned(as: SIMD8<Float>.self)
            let b = UnsafeRawPointer(bias + i).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(y + i).storeBytes(of: (v - mean) * rstd * w + b, as: SIMD8<Float>.self)
            i += 8
        }
        while i < cols { y[i] = (x[i] - mean) * rstd * weight[i] + bias[i]; i += 1 }
    }
}
