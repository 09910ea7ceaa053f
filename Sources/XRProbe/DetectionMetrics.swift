// Localisation metrics: average precision at an IoU threshold, FROC sensitivity, pointing game.
//
// Boxes are (x, y, width, height) in image pixels.
import Foundation

/// An axis-aligned box in image pixels.
public struct Box: Sendable, Codable, Equatable {
    public var x: Double, y: Double, width: Double, height: Double
    public init(x: Double, y: Double, width: Double, height: Double) { self.x = x; self.y = y; self.width = width; self.height = height }

    /// Intersection over union with `o` (0 when the union is empty).
    public func iou(_ o: Box) -> Double {
        let iw = max(0, min(x + width, o.x + o.width) - max(x, o.x))
        let ih = max(0, min(y + height, o.y + o.height) - max(y, o.y))
        let inter = iw * ih
        let union = width * height + o.width * o.height - inter
        return union > 0 ? inter / union : 0
    }

    /// Whether the point lies inside the box, edges included.
    public func contains(x px: Double, y py: Double) -> Bool { px >= x && px <= x + width && py >= y && py <= y + height }
}

/// A scored predicted box on one image.
public struct ScoredBox: Sendable, Codable, Equatable {
    public var image: Int
    public var box: Box
    public var score: Double
    public init(image: Int, box: Box, score: Double) { self.image = image; self.box = box; self.score = score }
}

public enum DetectionMetrics {
    /// Whether each prediction is a true positive at IoU ≥ `threshold`, in the order predictions
    /// are considered: descending score, ties in input order. Each is matched to the unmatched true
    /// box of its image with the highest IoU (a true box matches at most one prediction).
    public static func matches(_ predictions: [ScoredBox], truth: [[Box]], threshold: Double) -> [Bool] {
        let order = predictions.indices.sorted {
            predictions[$0].score != predictions[$1].score ? predictions[$0].score > predictions[$1].score : $0 < $1
        }
        var used = truth.map { [Bool](repeating: false, count: $0.count) }
        var out: [Bool] = []
        out.reserveCapacity(order.count)
        for i in order {
            let p = predictions[i]
            var best = -1.0, bi = -1
            let boxes = truth.indices.contains(p.image) ? truth[p.image] : []
            for (j, g) in boxes.enumerated() where !used[p.image][j] {
                let v = p.box.iou(g)
                if v > best { best = v; bi = j }
            }
            if bi >= 0 && best >= threshold {
                used[p.image][bi] = true
                out.append(true)
            } else {
                out.append(false)
            }
        }
        return out
    }

    /// Average precision at IoU ≥ `threshold` over every image: all-points interpolation (at each
    /// recall step, the highest precision at that recall or beyond). Nil without true boxes.
    public static func averagePrecision(_ predictions: [ScoredBox], truth: [[Box]], threshold: Double) -> Double? {
        let nTrue = truth.reduce(0) { $0 + $1.count }
        guard nTrue > 0 else { return nil }
        let tp = matches(predictions, truth: truth, threshold: threshold)
        var precision: [Double] = [], recall: [Double] = []
        var hits = 0
        for (k, t) in tp.enumerated() {
            if t { hits += 1 }
            precision.append(Double(hits) / Double(k + 1))
            recall.append(Double(hits) / Double(nTrue))
        }
        // Highest precision at index k or later.
        var envelope = precision
        for k in stride(from: envelope.count - 2, through: 0, by: -1) { envelope[k] = max(envelope[k], envelope[k + 1]) }
        var ap = 0.0, previous = 0.0
        for k in recall.indices where recall[k] > previous {
            ap += (recall[k] - previous) * envelope[k]
            previous = recall[k]
        }
        return ap
    }

    /// FROC: the share of true boxes found (IoU ≥ `threshold`) at each rate of false positives
    /// per image — the largest sensitivity among score cut-offs whose false positives per image stay
    /// at or under the rate. `images` counts every image, with or without a finding. Nil without true boxes.
    public static func froc(
        _ predictions: [ScoredBox], truth: [[Box]], images: Int, threshold: Double,
        rates: [Double] = [0.5, 1, 2, 4]
    ) -> [Double: Double]? {
        let nTrue = truth.reduce(0) { $0 + $1.count }
        guard nTrue > 0, images > 0 else { return nil }
        let tp = matches(predictions, truth: truth, threshold: threshold)
        var out: [Double: Double] = [:]
        for r in rates { out[r] = 0 }
        var hits = 0, false_ = 0
        for t in tp {
            if t { hits += 1 } else { false_ += 1 }
            let s = Double(hits) / Double(nTrue), fpi = Double(false_) / Double(images)
            for r in rates where fpi <= r { out[r] = max(out[r] ?? 0, s) }
        }
        return out
    }

    /// Pointing game: of the images with a true box, the share whose heatmap maximum `points[i]`
    /// (x, y in pixels) lies inside one of them. Nil when no image has a true box.
    public static func pointingGame(points: [(x: Double, y: Double)], truth: [[Box]]) -> Double? {
        let withBoxes = truth.indices.filter { !truth[$0].isEmpty && points.indices.contains($0) }
        guard !withBoxes.isEmpty else { return nil }
        let hits = withBoxes.filter { i in truth[i].contains { $0.contains(x: points[i].x, y: points[i].y) } }.count
        return Double(hits) / Double(withBoxes.count)
    }
}
