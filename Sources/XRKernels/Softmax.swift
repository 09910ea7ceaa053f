// Numerically stable softmax over rows: y = exp(x - max) / sum exp(x - max); and its backward.

/// x (R, N) ← softmax(x) row by row, in place.
public func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
    let n8 = cols & ~7
    for r in 0..<rows {
        let p = x + r * cols
        let inv = 1 / exponentiateRow(p, cols)
        var i = 0
        while i < n8 {
            let v = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self) * inv
            UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: SIMD8<Float>.self)
            i += 8
        }
        while i < cols { p[i] *= inv; i += 1 }
    }
}

/// x (R, N) ← exp(x − row max) row by row, in place, and inverseSums (R) ← 1 / each row's sum:
/// the softmax without its last pass, for a product that scales its (narrower) output rows instead.
public func softmaxRowsUnnormalised(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, inverseSums: UnsafeMutablePointer<Float>) {
    for r in 0..<rows { inverseSums[r] = 1 / exponentiateRow(x + r * cols, cols) }
}

/// p (n) ← exp(p − max p); returns the sum.
@inline(__always)
private func exponentiateRow(_ p: UnsafeMutablePointer<Float>, _ cols: Int) -> Float {
    let n8 = cols & ~7
    let m = vectorMax(p, cols)
    var i = 0
    var s8 = SIMD8<Float>()
    while i < n8 {
        let e = simdExp(UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self) - m)
        UnsafeMutableRawPointer(p + i).storeBytes(of: e, as: SIMD8<Float>.self)
        s8 += e; i += 8
    }
    var s = s8.sum()
    if i < cols {
        var v = SIMD8<Float>(repeating: -.infinity)
        for j in i..<cols { v[j - i] = p[j] - m }
        let e = simdExp(v)
        for j in i..<cols { p[j] = e[j - i]; s += e[j - i] }
    }
    return s
}

/// Softmax backward over rows: dx = scale · p ⊙ (dy − Σ_j dy_j p_j), written into dy.
public func softmaxBackward(_ dy: UnsafeMutablePointer<Float>, probabilities p: UnsafePointer<Float>, rows: Int, cols: Int, scale: Float = 1) {
    for r in 0..<rows {
        let d = dy + r * cols, q = p + r * cols
        // Σ dy·p in vector lanes (a scalar float reduction does not vectorise).
        var s8 = SIMD8<Float>(repeating: 0)
        var j = 0
        while j + 8 <= cols {
            s8 = s8.addingProduct(UnsafeRawPointer(d + j).loadUnaligned(as: SIMD8<Float>.self), UnsafeRawPointer(q + j).loadUnaligned(as: SIMD8<Float>.self))
            j += 8
        }
        var s = s8.sum()
        while j < cols { s += d[j] * q[j]; j += 1 }
        if scale == 1 { for j in 0..<cols { d[j] = q[j] * (d[j] - s) } } else { for j in 0..<cols { d[j] = scale * q[j] * (d[j] - s) } }
    }
}
