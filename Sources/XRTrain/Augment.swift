// X-ray augmentation on preprocessed (normalised) images (3, S, S): random resized crop, small
// rotation, brightness / contrast / gamma, and a horizontal flip only when asked (laterality
// matters on chest films). Geometry by bilinear sampling with edge replication.
import Foundation
import XRTensor

public struct Augmentation: Codable, Sendable, Equatable {
    /// Crop area as a share of the image, and aspect-ratio range.
    public var scale: ClosedRange<Double> = 0.8...1.0
    public var ratio: ClosedRange<Double> = 0.9...1.1
    /// Rotation range in degrees (±).
    public var degrees: Double = 5
    /// Additive brightness (±, in [0, 1] intensity units), contrast factor (±), gamma (±) ranges.
    public var brightness: Double = 0.05
    public var contrast: Double = 0.05
    public var gamma: Double = 0.05
    public var horizontalFlip = false
    public init() {}

    /// Augment one image (3, S, S) normalised with per-channel mean / std.
    public func apply(_ x: [Float], size S: Int, mean: [Float], std: [Float], rng: inout XRRandom) -> [Float] {
        // Geometry: output (u, v) in [0, S) → input coordinates.
        let area = uniform(scale, &rng), logR = uniform(log(ratio.lowerBound)...log(ratio.upperBound), &rng)
        let ar = exp(logR)
        let w = min(1, (area * ar).squareRoot()), h = min(1, (area / ar).squareRoot())
        let cx = uniform((w / 2)...(1 - w / 2 + 1e-12), &rng), cy = uniform((h / 2)...(1 - h / 2 + 1e-12), &rng)
        let angle = uniform(-degrees...degrees, &rng) * Double.pi / 180
        let flip = horizontalFlip && rng.nextDouble() < 0.5
        let b = uniform(-brightness...brightness, &rng)
        let c = 1 + uniform(-contrast...contrast, &rng)
        let g = 1 + uniform(-gamma...gamma, &rng)
        let ca = cos(angle), sa = sin(angle), s = Double(S)
        var out = [Float](repeating: 0, count: x.count)
        for ch in 0..<3 {
            let m = mean[min(ch, mean.count - 1)], sd = std[min(ch, std.count - 1)]
            let plane = ch * S * S
            for v in 0..<S {
                for u in 0..<S {
                    // Normalised output coordinate in [-0.5, 0.5], flipped, rotated, then into the crop.
                    var ox = (Double(u) + 0.5) / s - 0.5, oy = (Double(v) + 0.5) / s - 0.5
                    if flip { ox = -ox }
                    let rx = ca * ox - sa * oy, ry = sa * ox + ca * oy
                    let ix = (cx + rx * w) * s - 0.5, iy = (cy + ry * h) * s - 0.5
                    let x0 = Int(floor(ix)), y0 = Int(floor(iy)), fx = Float(ix - floor(ix)), fy = Float(iy - floor(iy))
                    func at(_ xx: Int, _ yy: Int) -> Float { x[plane + min(max(yy, 0), S - 1) * S + min(max(xx, 0), S - 1)] }
                    let val = (at(x0, y0) * (1 - fx) + at(x0 + 1, y0) * fx) * (1 - fy) + (at(x0, y0 + 1) * (1 - fx) + at(x0 + 1, y0 + 1) * fx) * fy
                    // Intensity in [0, 1] units.
                    var p = Double(val * sd + m)
                    p = min(max(p, 0), 1)
                    p = pow(p, g)
                    p = (p - 0.5) * c + 0.5 + b
                    out[plane + v * S + u] = (Float(p) - m) / sd
                }
            }
        }
        return out
    }
}

/// lo + (hi − lo) · u with u from the generator (not the standard library's algorithm, so the
/// draws stay the same across Swift versions).
@inline(__always) func uniform(_ r: ClosedRange<Double>, _ rng: inout XRRandom) -> Double {
    r.lowerBound + (r.upperBound - r.lowerBound) * rng.nextDouble()
}

extension ClosedRange: @retroactive Codable where Bound: Codable {
    public init(from decoder: Decoder) throws {
        var c = try decoder.unkeyedContainer()
        let lo = try c.decode(Bound.self), hi = try c.decode(Bound.self)
        self = lo...hi
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.unkeyedContainer()
        try c.encode(lowerBound); try c.encode(upperBound)
    }
}
