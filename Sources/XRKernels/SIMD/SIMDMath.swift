// Vectorised elementary functions over SIMD8<Float> (AVX2 lanes).
//
// exp: Cody-Waite range reduction x = n ln2 + r, |r| ≤ ln2/2, degree-6 polynomial for e^r,
//      scale by 2^n through the exponent bits. Max relative error ~2 ulp on [-87, 88].
// erf: Abramowitz & Stegun 7.1.26, |error| ≤ 1.5e-7 absolute, using the vector exp.

@_transparent
public func simdExp(_ x: SIMD8<Float>) -> SIMD8<Float> {
    // Clamp with masked selects: the generic clamped(...) is not specialised and runs scalar.
    let lo = SIMD8<Float>(repeating: -87.3), hi = SIMD8<Float>(repeating: 88.3)
    var x = x.replacing(with: lo, where: x .< lo)
    x = x.replacing(with: hi, where: x .> hi)
    let log2e: Float = 1.442_695_04
    // Round x·log2(e) to the nearest integer by adding 1.5·2^23: the integer lands in the low
    // mantissa bits, so it is read back without a (slow, unvectorised) float→int conversion.
    let magic = SIMD8<Float>(repeating: 12_582_912)
    let t = x * log2e + magic
    let n = t - magic
    // ln2 split in two parts so n*ln2 is exact in the first subtraction.
    var r = x - n * 0.693_145_75
    r = r - n * 1.428_606_8e-6
    // e^r on |r| ≤ 0.347: Taylor/minimax coefficients.
    var p = SIMD8<Float>(repeating: 1.0 / 720)
    p = p * r + 1.0 / 120
    p = p * r + 1.0 / 24
    p = p * r + 1.0 / 6
    p = p * r + 0.5
    p = p * r + 1
    p = p * r + 1
    let ni = unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000
    let bits = (ni &+ 127) &<< 23
    return p * unsafeBitCast(bits, to: SIMD8<Float>.self)
}

// exp and erf are transparent: `@inline(__always)` left them out of line in some loops (GELU,
// softmax): a call per eight lanes, constants reloaded each time, the vector split into halves
// by the calling convention.
@_transparent
public func simdErf(_ x: SIMD8<Float>) -> SIMD8<Float> { simdErfAndGaussian(x).erf }

/// erf(x) and the exp(−x²) it is built from (GELU's backward needs both: φ(u) ∝ exp(−u²/2)
/// with x = u/√2), for the price of one exponential.
@_transparent
public func simdErfAndGaussian(_ x: SIMD8<Float>) -> (erf: SIMD8<Float>, gaussian: SIMD8<Float>) {
    let a = x.replacing(with: -x, where: x .< 0)
    let t = 1 / (1 + 0.327_591_1 * a)
    var y = SIMD8<Float>(repeating: 1.061_405_429)
    y = y * t - 1.453_152_027
    y = y * t + 1.421_413_741
    y = y * t - 0.284_496_736
    y = y * t + 0.254_829_592
    y = y * t
    let g = simdExp(-(a * a))
    let r = 1 - y * g
    return (r.replacing(with: -r, where: x .< 0), g)
}

/// Lane-wise maximum (a masked select; vectorises, unlike the generic pointwiseMax).
@inline(__always)
public func simdMax(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> { a.replacing(with: b, where: b .> a) }

/// Maximum of n floats.
@inline(__always)
public func vectorMax(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var m8 = SIMD8<Float>(repeating: -.infinity)
    var i = 0
    while i + 8 <= n { m8 = simdMax(m8, UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)); i += 8 }
    var m = m8.max()
    while i < n { m = max(m, p[i]); i += 1 }
    return m
}

/// Horizontal sum of a SIMD8.
@inline(__always)
public func hsum(_ v: SIMD8<Float>) -> Float { v.sum() }
