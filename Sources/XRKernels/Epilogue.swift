// Elementwise epilogues around matrix products. R rows, C channels.

/// x (R, C) += bias (C).
public func addBias(_ x: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>, rows: Int, cols: Int, ld: Int? = nil) {
    let c8 = cols & ~7, ld = ld ?? cols
    for r in 0..<rows {
        let p = x + r * ld
        var i = 0
        while i < c8 {
            let v = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self) + UnsafeRawPointer(bias + i).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: SIMD8<Float>.self)
            i += 8
        }
        while i < cols { p[i] += bias[i]; i += 1 }
    }
}

/// residual (R, C) += scale (C) ⊙ (y (R, C) + bias (C)): a linear layer's bias, LayerScale and
/// the residual add in one pass. `bias` and `scale` are optional (nil = 0 and 1).
public func biasScaleResidual(
    _ residual: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>,
    bias: UnsafePointer<Float>?, scale: UnsafePointer<Float>?, rows: Int, cols: Int, ld: Int? = nil
) {
    let c8 = cols & ~7, ld = ld ?? cols
    for r in 0..<rows {
        let o = residual + r * ld, p = y + r * ld
        var i = 0
        while i < c8 {
            var v = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
            if let bias { v += UnsafeRawPointer(bias + i).loadUnaligned(as: SIMD8<Float>.self) }
            if let scale { v *= UnsafeRawPointer(scale + i).loadUnaligned(as: SIMD8<Float>.self) }
            v += UnsafeRawPointer(o + i).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(o + i).storeBytes(of: v, as: SIMD8<Float>.self)
            i += 8
        }
        while i < cols {
            var v = p[i] + (bias?[i] ?? 0)
            if let scale { v *= scale[i] }
            o[i] += v
            i += 1
        }
    }
}
