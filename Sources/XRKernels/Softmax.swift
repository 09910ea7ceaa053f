// Numerically stable softmax over rows: y = exp(x - max) / sum exp(x - max).

/// x (R, N) ← softmax(x) row by row, in place.
public func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
    let n8 = cols & ~7
    for r in 0..<rows {
        let p = x + r * cols
        let m = vectorMax(p, cols)
        var i = 0
        var s8 = SIMD8<Float>()
        i = 0
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
        let inv = 1 / s
        i = 0
        while i < n8 {
            let v = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self) * inv
            UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: SIMD8<Float>.self)
            i += 8
        }
        while i < cols { p[i] *= inv; i += 1 }
    }
}
