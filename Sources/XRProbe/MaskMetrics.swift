// Overlap and distance metrics of binary masks.
//
// Letters: H × W mask, row-major; A the predicted foreground, B the true foreground.
import Foundation

/// Dice, IoU and Hausdorff distances of one predicted mask against the truth.
public struct MaskScores: Sendable, Codable, Equatable {
    /// 2|A∩B| / (|A| + |B|); 1 when both masks are empty.
    public var dice: Double
    /// |A∩B| / |A∪B|; 1 when both masks are empty.
    public var iou: Double
    /// max over both directions of the largest distance (pixels) from a foreground pixel of one
    /// mask to the nearest foreground pixel of the other (SciPy's `directed_hausdorff`, both
    /// ways); 0 when both are empty, nil when exactly one is.
    public var hausdorff: Double?
    /// The same with the 95th percentile (linear interpolation, as `numpy.percentile`) of those
    /// distances in place of the largest, the larger of the two directions.
    public var hd95: Double?
}

public enum MaskMetrics {
    /// Scores of `prediction` against `truth` (both H × W, true = foreground).
    public static func scores(prediction a: [Bool], truth b: [Bool], width w: Int, height h: Int) -> MaskScores {
        precondition(a.count == w * h && b.count == w * h, "mask sizes differ from \(h) x \(w)")
        var inter = 0, na = 0, nb = 0
        for i in 0..<(w * h) {
            if a[i] { na += 1 }
            if b[i] { nb += 1 }
            if a[i] && b[i] { inter += 1 }
        }
        let union = na + nb - inter
        let dice = na + nb == 0 ? 1 : 2 * Double(inter) / Double(na + nb)
        let iou = union == 0 ? 1 : Double(inter) / Double(union)
        if na == 0 && nb == 0 { return MaskScores(dice: dice, iou: iou, hausdorff: 0, hd95: 0) }
        if na == 0 || nb == 0 { return MaskScores(dice: dice, iou: iou, hausdorff: nil, hd95: nil) }
        let toB = squaredDistances(to: b, width: w, height: h), toA = squaredDistances(to: a, width: w, height: h)
        let ab = (0..<(w * h)).filter { a[$0] }.map { toB[$0].squareRoot() }.sorted()
        let ba = (0..<(w * h)).filter { b[$0] }.map { toA[$0].squareRoot() }.sorted()
        return MaskScores(
            dice: dice, iou: iou, hausdorff: max(ab.last ?? 0, ba.last ?? 0),
            hd95: max(Bootstrap.percentile(ab, 95), Bootstrap.percentile(ba, 95)))
    }

    /// Exact squared Euclidean distance from every pixel to the nearest foreground pixel of
    /// `mask` (Felzenszwalb & Huttenlocher 2012: a 1-D lower envelope of parabolas down the
    /// columns, then along the rows). O(H·W). A mask with no foreground gives +∞ everywhere.
    public static func squaredDistances(to mask: [Bool], width w: Int, height h: Int) -> [Double] {
        var f = mask.map { $0 ? 0.0 : Double.infinity }
        var line = [Double](repeating: 0, count: max(w, h)), out = [Double](repeating: 0, count: max(w, h))
        for x in 0..<w {
            for y in 0..<h { line[y] = f[y * w + x] }
            envelope(line, h, &out)
            for y in 0..<h { f[y * w + x] = out[y] }
        }
        for y in 0..<h {
            for x in 0..<w { line[x] = f[y * w + x] }
            envelope(line, w, &out)
            for x in 0..<w { f[y * w + x] = out[x] }
        }
        return f
    }

    /// The 1-D distance transform of f[0..<n]: out[q] = min_p (q − p)² + f[p].
    static func envelope(_ f: [Double], _ n: Int, _ out: inout [Double]) {
        var v = [Int](repeating: 0, count: n), z = [Double](repeating: 0, count: n + 1)
        var k = -1
        for q in 0..<n where f[q].isFinite {
            if k < 0 { k = 0; v[0] = q; z[0] = -.infinity; z[1] = .infinity; continue }
            var s = 0.0
            while true {
                let p = v[k]
                s = ((f[q] + Double(q * q)) - (f[p] + Double(p * p))) / Double(2 * q - 2 * p)
                if s <= z[k] && k > 0 { k -= 1 } else { break }
            }
            if s <= z[k] { v[k] = q; z[k + 1] = .infinity; continue } // k == 0 and q dominates
            k += 1
            v[k] = q; z[k] = s; z[k + 1] = .infinity
        }
        guard k >= 0 else { for q in 0..<n { out[q] = .infinity }; return }
        var j = 0
        for q in 0..<n {
            while z[j + 1] < Double(q) { j += 1 }
            let d = Double(q - v[j])
            out[q] = d * d + f[v[j]]
        }
    }
}
