// GELU forward and backward, in two variants: exact (erf), y = 0.5 x (1 + erf(x / sqrt(2)))
// (torch.nn.GELU(approximate="none")), and GPT-2's tanh approximation.
import Foundation

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
public func biasGELUForward(
    _ out: UnsafeMutablePointer<Float>, from x: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
    rows: Int, cols: Int, ld: Int? = nil
) {
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

/// d GELU(u) / du = Φ(u) + u·φ(u) for the exact (erf) GELU; du = dy ⊙ GELU'(u), in place on dy.
public func geluBackward(_ dy: UnsafeMutablePointer<Float>, preActivation u: UnsafePointer<Float>, count: Int) {
    let invSqrt2: Float = 0.707_106_781_186_547_5, invSqrt2Pi: Float = 0.398_942_280_401_432_7
    let n8 = count & ~7
    var i = 0
    while i < n8 {
        let v = UnsafeRawPointer(u + i).loadUnaligned(as: SIMD8<Float>.self)
        let d = UnsafeRawPointer(dy + i).loadUnaligned(as: SIMD8<Float>.self)
        let (e, g) = simdErfAndGaussian(v * invSqrt2) // g = exp(−u²/2)
        let cdf = 0.5 * (1 + e), pdf = g * invSqrt2Pi
        UnsafeMutableRawPointer(dy + i).storeBytes(of: d * (cdf + v * pdf), as: SIMD8<Float>.self)
        i += 8
    }
    if i < count {
        var v = SIMD8<Float>(), d = SIMD8<Float>()
        for j in i..<count { v[j - i] = u[j]; d[j - i] = dy[j] }
        let (e, gauss) = simdErfAndGaussian(v * invSqrt2)
        let g = d * (0.5 * (1 + e) + v * (gauss * invSqrt2Pi))
        for j in i..<count { dy[j] = g[j - i] }
    }
}

/// y clamped to [-15, 15] with masked selects (the generic `clamped` is not specialised and runs scalar).
@inline(__always)
func clamp15(_ y: SIMD8<Float>) -> SIMD8<Float> {
    let lo = SIMD8<Float>(repeating: -15), hi = SIMD8<Float>(repeating: 15)
    return y.replacing(with: lo, where: y .< lo).replacing(with: hi, where: y .> hi)
}

/// GPT-2's GELU ("gelu_new"): 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))), in place.
/// tanh(y) = 1 − 2 / (e^{2y} + 1), SIMD with `simdExp`.
public func geluTanhForward(_ x: UnsafeMutablePointer<Float>, count: Int) {
    let c: Float = 0.797_884_560_802_865_4
    let n8 = count & ~7
    var i = 0
    while i < n8 {
        let u = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
        let y = c * (u + 0.044715 * u * u * u)
        let t = 1 - 2 / (simdExp(2 * clamp15(y)) + 1)
        UnsafeMutableRawPointer(x + i).storeBytes(of: 0.5 * u * (1 + t), as: SIMD8<Float>.self)
        i += 8
    }
    while i < count { let u = x[i]; x[i] = 0.5 * u * (1 + tanhf(c * (u + 0.044715 * u * u * u))); i += 1 }
}

/// Backward of `geluTanhForward`: dy ← dy ⊙ GELU'(u), in place on dy, with u the saved
/// pre-activation; GELU'(u) = 0.5 (1 + t) + 0.5 u (1 − t²) √(2/π) (1 + 3·0.044715 u²), t the tanh above.
public func geluTanhBackward(_ dy: UnsafeMutablePointer<Float>, preActivation u: UnsafePointer<Float>, count: Int) {
    let c: Float = 0.797_884_560_802_865_4
    let n8 = count & ~7
    var i = 0
    while i < n8 {
        let x = UnsafeRawPointer(u + i).loadUnaligned(as: SIMD8<Float>.self)
        let x2 = x * x
        let y = c * (x + 0.044715 * x2 * x)
        let t = 1 - 2 / (simdExp(2 * clamp15(y)) + 1)
        let inner = c * (1 + 0.134145 * x2)
        let d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * inner
        let g = UnsafeRawPointer(dy + i).loadUnaligned(as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(dy + i).storeBytes(of: g * d, as: SIMD8<Float>.self)
        i += 8
    }
    while i < count {
        let x = u[i], x2 = x * x
        let t: Float = tanhf(c * (x + 0.044715 * x2 * x))
        let inner: Float = c * (1 + 0.134145 * x2)
        let d: Float = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * inner
        dy[i] *= d
        i += 1
    }
}
