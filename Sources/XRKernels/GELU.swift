// Exact GELU: y = 0.5 x (1 + erf(x / sqrt(2))) (torch.nn.GELU(approximate="none")).

/// GELU of eight lanes — the one definition the standalone pass and the packed product's fused
/// epilogue (`PackedEpilogue.biasGELU`) share.
@_transparent
public func simdGELU(_ v: SIMD8<Float>) -> SIMD8<Float> {
    let half = 0.5 * v
    return half.addingProduct(half, simdErf(v * 0.707_106_781_186_547_5))
}

/// x (N) ← GELU(x), in place, fused with an optional bias add per column: x (R, C) + bias (C).
public func biasGELUForward(_ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, rows: Int, cols: Int, ld: Int? = nil) {
    biasGELUForward(x, from: x, bias: bias, rows: rows, cols: cols, ld: ld)
}

/// out ← GELU(x + bias), out of place (training keeps the pre-activation x for the backward);
/// rows of both `ld` apart.
public func biasGELUForward(_ out: UnsafeMutablePointer<Float>, from x: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                            rows: Int, cols: Int, ld: Int? = nil) {
    let c8 = cols & ~7, ld = ld ?? cols
    for r in 0..<rows {
        let p = x + r * ld, o = out + r * ld
        var i = 0
        while i < c8 {
            var v = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
            if let bias { v += UnsafeRawPointer(bias + i).loadUnaligned(as: SIMD8<Float>.self) }
            UnsafeMutableRawPointer(o + i).storeBytes(of: simdGELU(v), as: SIMD8<Float>.self)
            i += 8
        }
        if i < cols {
            var v = SIMD8<Float>()
            for j in i..<cols { v[j - i] = p[j] + (bias?[j] ?? 0) }
            let g = simdGELU(v)
            for j in i..<cols { o[j] = g[j - i] }
        }
    }
}
