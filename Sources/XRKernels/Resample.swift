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

public enum ResampleFilter: Sendable {
    case bicubic, bilinear
}

/// Weights for one output index along one axis.
struct AxisTaps {
    var start: [Int]       // first input index per output index
    var count: Int         // taps per output (max)
    var index: [Int]       // (out, count) input indices (already clamped / valid)
    var weight: [Float]    // (out, count)
}

@inline(__always) func cubic1(_ x: Double, _ a: Double) -> Double { ((a + 2) * x - (a + 3)) * x * x + 1 }
@inline(__always) func cubic2(_ x: Double, _ a: Double) -> Double { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }

/// Non-antialiased bicubic taps (torch upsample_bicubic2d).
func bicubicTaps(inSize: Int, outSize: Int, scaleFactor: Double?) -> AxisTaps {
    let a = -0.75
    let scale = Float(scaleFactor.map { 1 / $0 } ?? Double(inSize) / Double(outSize))
    var index = [Int](), weight = [Float]()
    for o in 0..<outSize {
        let real = scale * (Float(o) + 0.5) - 0.5      // torch computes this in float
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
public func resample(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                     channels: Int, inH: Int, inW: Int, outH: Int, outW: Int,
                     filter: ResampleFilter, antialias: Bool, scaleFactor: (Double, Double)? = nil) {
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
    // Horizontal pass into (C, inH, outW), then vertical pass into (C, outH, outW).
    var tmp = [Float](repeating: 0, count: channels * inH * outW)
    tmp.withUnsafeMutableBufferPointer { t in
        guard let tp = t.baseAddress else { return }
        for c in 0..<channels {
            for y in 0..<inH {
                let row = inp + (c * inH + y) * inW
                let dst = tp + (c * inH + y) * outW
                for x in 0..<outW {
                    var s: Float = 0
                    for k in 0..<tw.count { s += tw.weight[x * tw.count + k] * row[tw.index[x * tw.count + k]] }
                    dst[x] = s
                }
            }
        }
        for c in 0..<channels {
            for y in 0..<outH {
                let dst = out + (c * outH + y) * outW
                for x in 0..<outW { dst[x] = 0 }
                for k in 0..<th.count {
                    let w = th.weight[y * th.count + k]
                    if w == 0 { continue }
                    let src = tp + (c * inH + th.index[y * th.count + k]) * outW
                    var x = 0
                    while x + 8 <= outW {
                        let v = UnsafeRawPointer(dst + x).loadUnaligned(as: SIMD8<Float>.self)
                            + w * UnsafeRawPointer(src + x).loadUnaligned(as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(dst + x).storeBytes(of: v, as: SIMD8<Float>.self)
                        x += 8
                    }
                    while x < outW { dst[x] += w * src[x]; x += 1 }
                }
            }
        }
    }
}
