// 2-D resampling of planar images (C, H, W), with torch.nn.functional.interpolate semantics
// (align_corners=False). Used for image preprocessing and for resizing ViT position
// embeddings to a new patch grid.
//
// * `bicubic` (antialias=False): cubic convolution with A = -0.75, source coordinate
//   (dst + 0.5) * scale - 0.5, taps clamped at the borders.
// * `antialiased` (antialias=True, bicubic or bilinear): separable filtering whose support
//   widens by the downsampling factor, weights normalised per output pixel, taps outside the
//   image dropped (not clamped). Cubic uses A = -0.5 here (Keys), as torch/PIL do.
//
// scale = in/out, or 1/scaleFactor when an explicit scale factor is given (torch uses the
// given factor, not the ratio of sizes, when `scale_factor` is passed).
//
// Order of work, as in torch's separable kernel: the horizontal pass (along W) first into
// (C, inH, outW), then the vertical pass (along H).
//
// * vertical: `filterRows` mixes whole rows, out[o, :] = Σ_k w[o, k] · in[idx[o, k], :], SIMD
//   along the row, taps in increasing input index from zero (sums round as torch's do);
// * horizontal: `filterColumns`, a SIMD dot product over each contiguous window when it is long
//   (downsampling), a scalar loop in tap order otherwise.
// Both split rows across workers. `resampleReference` (Reference/ResampleReference.swift) is the
// slow, obviously-correct twin.

public enum ResampleFilter: Sendable {
    case bicubic, bilinear
}

/// Weights for one output index along one axis.
struct AxisTaps {
    var start: [Int] // first input index per output index
    var count: Int // taps per output (max)
    var index: [Int] // (out, count) input indices (already clamped / valid)
    var weight: [Float] // (out, count)
}

@inline(__always) func cubic1(_ x: Double, _ a: Double) -> Double { ((a + 2) * x - (a + 3)) * x * x + 1 }
@inline(__always) func cubic2(_ x: Double, _ a: Double) -> Double { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }

/// Non-antialiased bicubic taps (torch upsample_bicubic2d).
func bicubicTaps(inSize: Int, outSize: Int, scaleFactor: Double?) -> AxisTaps {
    let a = -0.75
    let scale = Float(scaleFactor.map { 1 / $0 } ?? Double(inSize) / Double(outSize))
    var index = [Int](), weight = [Float]()
    for o in 0..<outSize {
        let real = scale * (Float(o) + 0.5) - 0.5 // torch computes this in float
        let i0 = Int(real.rounded(.down))
        let t = Double(min(max(real - Float(i0), 0), 1))
        let w = [cubic2(t + 1, a), cubic1(t, a), cubic1(1 - t, a), cubic2(2 - t, a)]
        for k in 0..<4 {
            index.append(min(max(i0 - 1 + k, 0), inSize - 1))
            weight.append(Float(w[k]))
        }
    }
    return AxisTaps(start: [], count: 4, index: index, weight: weight)
}

/// Antialiased taps (torch _upsample_bicubic2d_aa / _upsample_bilinear2d_aa).
func antialiasTaps(inSize: Int, outSize: Int, filter: ResampleFilter) -> AxisTaps {
    let scale = Double(inSize) / Double(outSize)
    let interp = filter == .bicubic ? 4.0 : 2.0
    let support = scale >= 1 ? interp * 0.5 * scale : interp * 0.5
    let invscale = scale >= 1 ? 1 / scale : 1
    let maxTaps = Int((support * 2 + 1).rounded(.up)) + 1
    func f(_ x: Double) -> Double {
        let x = abs(x)
        switch filter {
        case .bicubic: return x < 1 ? cubic1(x, -0.5) : (x < 2 ? cubic2(x, -0.5) : 0)
        case .bilinear: return x < 1 ? 1 - x : 0
        }
    }
    var index = [Int](repeating: 0, count: outSize * maxTaps)
    var weight = [Float](repeating: 0, count: outSize * maxTaps)
    for o in 0..<outSize {
        let center = scale * (Double(o) + 0.5)
        let xmin = max(Int(center - support + 0.5), 0)
        let xsize = min(Int(center + support + 0.5), inSize) - xmin
        var w = [Double](repeating: 0, count: max(xsize, 0))
        var total = 0.0
        for j in 0..<max(xsize, 0) {
            w[j] = f((Double(j + xmin) - center + 0.5) * invscale)
            total += w[j]
        }
        for j in 0..<min(max(xsize, 0), maxTaps) {
            index[o * maxTaps + j] = xmin + j
            weight[o * maxTaps + j] = Float(total != 0 ? w[j] / total : 0)
        }
        for j in max(xsize, 0)..<maxTaps { index[o * maxTaps + j] = min(xmin, inSize - 1) }
    }
    return AxisTaps(start: [], count: maxTaps, index: index, weight: weight)
}

/// out (C, outH, outW) = resize(inp (C, inH, inW)).
/// - Parameters:
///   - antialias: torch's `antialias` flag.
///   - scaleFactor: explicit (h, w) scale factors as passed to torch (non-antialiased bicubic only).
public func resample(
    _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
    channels: Int, inH: Int, inW: Int, outH: Int, outW: Int,
    filter: ResampleFilter, antialias: Bool, scaleFactor: (Double, Double)? = nil
) {
    precondition(inH > 0 && inW > 0 && outH > 0 && outW > 0, "resample: empty size")
    let th: AxisTaps, tw: AxisTaps
    if antialias {
        precondition(scaleFactor == nil, "resample: explicit scale factors need antialias=false")
        th = antialiasTaps(inSize: inH, outSize: outH, filter: filter)
        tw = antialiasTaps(inSize: inW, outSize: outW, filter: filter)
    } else {
        precondition(filter == .bicubic, "resample: only bicubic without antialias is implemented")
        th = bicubicTaps(inSize: inH, outSize: outH, scaleFactor: scaleFactor?.0)
        tw = bicubicTaps(inSize: inW, outSize: outW, scaleFactor: scaleFactor?.1)
    }
    // Horizontal pass (C·inH rows) into (C, inH, outW), then the vertical row mix per channel.
    let mid = UnsafeMutablePointer<Float>.allocate(capacity: channels * inH * outW)
    defer { mid.deallocate() }
    filterColumns(mid, inp, taps: tw, rows: channels * inH, inLength: inW, outLength: outW)
    for c in 0..<channels {
        filterRows(out + c * outH * outW, mid + c * inH * outW, taps: th, outRows: outH, length: outW)
    }
}

/// out (R, outLength) with out[r, o] = Σ_k w[o, k] · inp[r, idx[o, k]]: the horizontal pass.
/// Antialiased windows are contiguous runs of input pixels, so a long window (downsampling)
/// is a SIMD dot product over 8 taps at a time (partial sums per lane, then reduced: rounding
/// differs from torch's sequential sum at the 1e-7 level); short windows and clamped
/// (non-antialiased) taps use a scalar loop in tap order.
func filterColumns(
    _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, taps: AxisTaps,
    rows: Int, inLength: Int, outLength: Int
) {
    let n = taps.count
    // Per output: the tap range without zero weights at its ends, and whether it is a run of
    // consecutive input indices long enough for SIMD.
    var plan = [(k0: Int, k1: Int, run: Bool)]()
    plan.reserveCapacity(outLength)
    for o in 0..<outLength {
        var k0 = 0, k1 = n
        while k0 < k1 && taps.weight[o * n + k0] == 0 { k0 += 1 }
        while k1 > k0 && taps.weight[o * n + k1 - 1] == 0 { k1 -= 1 }
        let run = k1 - k0 >= 8 && (k0..<k1).allSatisfy { taps.index[o * n + $0] == taps.index[o * n + k0] + ($0 - k0) }
        plan.append((k0, k1, run))
    }
    let optr = SendablePointer(out)
    let iptr = SendablePointer(UnsafeMutablePointer(mutating: inp))
    taps.weight.withUnsafeBufferPointer { wb in
        taps.index.withUnsafeBufferPointer { ib in
            plan.withUnsafeBufferPointer { pb in
                guard let wp = wb.baseAddress, let ip = ib.baseAddress, let pp = pb.baseAddress else { return }
                let ws = SendablePointer(UnsafeMutablePointer(mutating: wp)), xs = SendablePointer(UnsafeMutablePointer(mutating: ip))
                let ps = SendablePointer(UnsafeMutablePointer(mutating: pp))
                Parallel.ranges(rows, minChunk: max(1, 65536 / max(outLength * n, 1))) { range in
                    for r in range {
                        let src = iptr.p + r * inLength, dst = optr.p + r * outLength
                        for o in 0..<outLength {
                            let w = ws.p + o * n, idx = xs.p + o * n
                            let (k0, k1, run) = ps.p[o]
                            if run {
                                let s = src + idx[k0] - k0 // s[k] is the input under tap k
                                var acc = SIMD8<Float>()
                                var k = k0
                                while k + 8 <= k1 {
                                    acc +=
                                        UnsafeRawPointer(w + k).loadUnaligned(as: SIMD8<Float>.self)
                                        * UnsafeRawPointer(s + k).loadUnaligned(as: SIMD8<Float>.self)
                                    k += 8
                                }
                                var t = acc.sum()
                                while k < k1 { t += w[k] * s[k]; k += 1 }
                                dst[o] = t
                            } else {
                                var t: Float = 0
                                for k in k0..<k1 { t += w[k] * src[idx[k]] }
                                dst[o] = t
                            }
                        }
                    }
                }
            }
        }
    }
}

/// out (outRows, L) with out[o, :] = Σ_k w[o, k] · inp[idx[o, k], :], k ascending, from zero.
/// Rows are split across workers; within a row, 32 columns are accumulated in registers over
/// all taps before one store (the tap loop is the inner one, so each output is written once).
func filterRows(
    _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, taps: AxisTaps,
    outRows: Int, length L: Int
) {
    let n = taps.count
    let optr = SendablePointer(out)
    let iptr = SendablePointer(UnsafeMutablePointer(mutating: inp))
    taps.weight.withUnsafeBufferPointer { wb in
        taps.index.withUnsafeBufferPointer { ib in
            guard let wp = wb.baseAddress, let ip = ib.baseAddress else { return }
            let wptr = SendablePointer(UnsafeMutablePointer(mutating: wp))
            let xptr = SendablePointer(UnsafeMutablePointer(mutating: ip))
            Parallel.ranges(outRows, minChunk: max(1, 65536 / max(L * n, 1))) { range in
                for o in range {
                    let w = wptr.p + o * n, idx = xptr.p + o * n
                    // Taps with zero weight (padding of short windows) contribute nothing.
                    var k0 = 0, k1 = n
                    while k0 < k1 && w[k0] == 0 { k0 += 1 }
                    while k1 > k0 && w[k1 - 1] == 0 { k1 -= 1 }
                    let dst = optr.p + o * L
                    var x = 0
                    while x + 32 <= L {
                        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
                        for k in k0..<k1 {
                            let s = UnsafeRawPointer(iptr.p + idx[k] * L + x)
                            let wk = SIMD8<Float>(repeating: w[k])
                            a0 += wk * s.loadUnaligned(as: SIMD8<Float>.self)
                            a1 += wk * s.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self)
                            a2 += wk * s.loadUnaligned(fromByteOffset: 64, as: SIMD8<Float>.self)
                            a3 += wk * s.loadUnaligned(fromByteOffset: 96, as: SIMD8<Float>.self)
                        }
                        let d = UnsafeMutableRawPointer(dst + x)
                        d.storeBytes(of: a0, as: SIMD8<Float>.self)
                        d.storeBytes(of: a1, toByteOffset: 32, as: SIMD8<Float>.self)
                        d.storeBytes(of: a2, toByteOffset: 64, as: SIMD8<Float>.self)
                        d.storeBytes(of: a3, toByteOffset: 96, as: SIMD8<Float>.self)
                        x += 32
                    }
                    while x + 8 <= L {
                        var a = SIMD8<Float>()
                        for k in k0..<k1 {
                            a += SIMD8<Float>(repeating: w[k]) * UnsafeRawPointer(iptr.p + idx[k] * L + x).loadUnaligned(as: SIMD8<Float>.self)
                        }
                        UnsafeMutableRawPointer(dst + x).storeBytes(of: a, as: SIMD8<Float>.self)
                        x += 8
                    }
                    while x < L {
                        var a: Float = 0
                        for k in k0..<k1 { a += w[k] * iptr.p[idx[k] * L + x] }
                        dst[x] = a
                        x += 1
                    }
                }
            }
        }
    }
}
