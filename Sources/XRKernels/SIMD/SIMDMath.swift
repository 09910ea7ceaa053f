// Vectorised elementary functions over SIMD8<Float> (AVX2 lanes).
//
// exp: Cody-Waite range reduction x = n ln2 + r, |r| ≤ ln2/2, degree-6 polynomial for e^r,
//      scale by 2^n through the exponent bits. Max relative error ~2 ulp on [-87, 88].
// erf: x · P(x²) / Q(x²) on |x| ≤ 4 (clamped there; erf(4) = 1 − 1.5e-8), degrees 6 and 5,
//      coefficients fitted by fixtures/fit_erf.py: largest |error| 2.7e-7 in float32 over
//      [-6, 6] (the fit itself 1.5e-9). No exponential: about half the work of the
//      exp-based Abramowitz & Stegun 7.1.26 form it replaced, which was 7% of ViT-Ti's cycles.

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
    let t = magic.addingProduct(x, SIMD8(repeating: log2e))
    let n = t - magic
    // ln2 split in two parts so n*ln2 is exact in the first subtraction.
    var r = x.addingProduct(n, SIMD8(repeating: -0.693_145_75))
    r = r.addingProduct(n, SIMD8(repeating: -1.428_606_8e-6))
    // e^r on |r| ≤ 0.347: Taylor/minimax coefficients, Horner steps as fused multiply-adds
    // (Swift does not contract `a * b + c` on its own: a multiply and an add each).
    var p = SIMD8<Float>(repeating: 1.0 / 720)
    p = horner(p, r, 1.0 / 120)
    p = horner(p, r, 1.0 / 24)
    p = horner(p, r, 1.0 / 6)
    p = horner(p, r, 0.5)
    p = horner(p, r, 1)
    p = horner(p, r, 1)
    let ni = unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000
    let bits = (ni &+ 127) &<< 23
    return p * unsafeBitCast(bits, to: SIMD8<Float>.self)
}

// exp and erf are transparent: `@inline(__always)` left them out of line in some loops (GELU,
// softmax): a call per eight lanes, constants reloaded each time, the vector split into halves
// by the calling convention.
@_transparent
public func simdErf(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let lo = SIMD8<Float>(repeating: -4), hi = SIMD8<Float>(repeating: 4)
    var v = x.replacing(with: lo, where: x .< lo)
    v = v.replacing(with: hi, where: v .> hi)
    let z = v * v
    var p = SIMD8<Float>(repeating: -1.366_922_2e-8)
    p = horner(p, z, 4.781_034e-6)
    p = horner(p, z, 3.827_118_8e-4)
    p = horner(p, z, 3.839_590_8e-3)
    p = horner(p, z, 5.433_303_5e-2)
    p = horner(p, z, 0.184_710_32)
    p = horner(p, z, 1.128_379_2)
    var q = SIMD8<Float>(repeating: 6.401_408_6e-5)
    q = horner(q, z, 1.309_619_1e-3)
    q = horner(q, z, 1.545_37e-2)
    q = horner(q, z, 0.113_826_69)
    q = horner(q, z, 0.497_028_8)
    q = horner(q, z, 1)
    return v * p / q
}

/// One Horner step p·x + c as a fused multiply-add.
@_transparent
public func horner(_ p: SIMD8<Float>, _ x: SIMD8<Float>, _ c: Float) -> SIMD8<Float> {
    SIMD8(repeating: c).addingProduct(p, x)
}

/// erf(x) and the exp(−x²) GELU's backward needs beside it (φ(u) ∝ exp(−u²/2) with x = u/√2).
@_transparent
public func simdErfAndGaussian(_ x: SIMD8<Float>) -> (erf: SIMD8<Float>, gaussian: SIMD8<Float>) {
    (simdErf(x), simdExp(-(x * x)))
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
    // Horizontal maximum by halves (the generic `max()` reduction ran lane by lane).
    let h4 = m8.lowHalf.replacing(with: m8.highHalf, where: m8.highHalf .> m8.lowHalf)
    let h2 = h4.lowHalf.replacing(with: h4.highHalf, where: h4.highHalf .> h4.lowHalf)
    var m = Swift.max(h2[0], h2[1])
    while i < n { m = Swift.max(m, p[i]); i += 1 }
    return m
}

/// Horizontal sum of a SIMD8.
@inline(__always)
public func hsum(_ v: SIMD8<Float>) -> Float { v.sum() }
