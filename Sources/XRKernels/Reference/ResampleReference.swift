// Slow, obviously-correct twin of `resample` (Resample.swift): weights straight from torch's
// formulas in Double, one output pixel at a time, no SIMD, no transposes, no shared tap tables.
import Foundation

/// Reference for `resample`: out (C, outH, outW) from inp (C, inH, inW); same semantics.
public func resampleReference(
    _ inp: [Float], channels: Int, inH: Int, inW: Int, outH: Int, outW: Int,
    filter: ResampleFilter, antialias: Bool
) -> [Float] {
    precondition(inp.count == channels * inH * inW && outH > 0 && outW > 0)
    // (output index) -> [(input index, weight)]
    func weights(_ inSize: Int, _ outSize: Int) -> [[(Int, Double)]] {
        let scale = Double(inSize) / Double(outSize)
        return (0..<outSize).map { o in
            if antialias {
                // torch _compute_weights_aa: window [center - support, center + support), normalised.
                let support = (filter == .bicubic ? 2.0 : 1.0) * max(scale, 1)
                let inv = scale >= 1 ? 1 / scale : 1
                let center = scale * (Double(o) + 0.5)
                let lo = max(Int(center - support + 0.5), 0), hi = min(Int(center + support + 0.5), inSize)
                var taps: [(Int, Double)] = []
                for j in lo..<max(hi, lo) {
                    let x = abs((Double(j) - center + 0.5) * inv)
                    let a = -0.5
                    let v: Double
                    if filter == .bilinear {
                        v = max(0, 1 - x)
                    } else if x < 1 {
                        v = (a + 2) * x * x * x - (a + 3) * x * x + 1
                    } else if x < 2 {
                        v = a * x * x * x - 5 * a * x * x + 8 * a * x - 4 * a
                    } else {
                        v = 0
                    }
                    taps.append((j, v))
                }
                let total = taps.reduce(0) { $0 + $1.1 }
                return taps.map { ($0.0, total != 0 ? $0.1 / total : 0) }
            }
            // torch upsample_bicubic2d: A = -0.75, clamped border taps; torch forms the source
            // coordinate in float (opmath_t), which moves t by up to ~1e-5, so do the same.
            let realF = Float(inSize) / Float(outSize) * (Float(o) + 0.5) - 0.5
            let real = Double(realF)
            let i0 = Int(floor(real)), t = min(max(real - floor(real), 0), 1), a = -0.75
            func k(_ x: Double) -> Double {
                let x = abs(x)
                return x <= 1 ? (a + 2) * x * x * x - (a + 3) * x * x + 1 : a * x * x * x - 5 * a * x * x + 8 * a * x - 4 * a
            }
            return (0..<4).map { j in (min(max(i0 - 1 + j, 0), inSize - 1), k(t + 1 - Double(j))) }
        }
    }
    let wy = weights(inH, outH), wx = weights(inW, outW)
    var out = [Float](repeating: 0, count: channels * outH * outW)
    for c in 0..<channels {
        for y in 0..<outH {
            for x in 0..<outW {
                var s = 0.0
                for (iy, a) in wy[y] { for (ix, b) in wx[x] { s += a * b * Double(inp[(c * inH + iy) * inW + ix]) } }
                out[(c * outH + y) * outW + x] = Float(s)
            }
        }
    }
    return out
}
