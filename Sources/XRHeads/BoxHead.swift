// Localisation with a patch-level "inside a box" head: the linear decoder trained on rasterised
// boxes, boxes read off its heatmap.
//
// Letters: H × W original image, oh × ow model input.
import Foundation
import XRData
import XRProbe

/// How a connected component of the heatmap is scored.
public enum ComponentScore: String, Sendable, Codable, CaseIterable {
    /// The largest logit in the component.
    case max
    /// The mean logit over the component.
    case mean
}

/// A component of a thresholded map: its bounding box in map pixels (inclusive) and score.
public struct MapComponent: Sendable, Equatable {
    public var x0: Int, y0: Int, x1: Int, y1: Int
    public var pixels: Int
    public var score: Double

    public init(x0: Int, y0: Int, x1: Int, y1: Int, pixels: Int, score: Double) {
        self.x0 = x0
        self.y0 = y0
        self.x1 = x1
        self.y1 = y1
        self.pixels = pixels
        self.score = score
    }
}

/// What the box head finds on one image.
public struct BoxDetection: Sendable {
    /// Boxes in original image pixels, highest score first.
    public var boxes: [ScoredBox]
    /// Image-level score: the heatmap's largest logit (for AUROC against image labels).
    public var imageScore: Double
    /// Where that maximum is, in image pixels (the pointing game).
    public var peak: (x: Double, y: Double)
}

/// Boxes from a patch-level "inside a box" head.
///
/// Training: each image's boxes are rasterised at image resolution (a pixel is foreground when
/// its centre lies inside a box), taken through the encoder's geometry like a mask, and a
/// two-class `LinearDecoder` learns them with the per-pixel loss — the segmentation head with
/// box-derived targets. Images without boxes are negatives (all background).
///
/// Inference: the decoder's logits at the model input (bilinearly upsampled patch logits) are
/// thresholded; each 8-connected component becomes a box (its bounding box, mapped back to image
/// pixels through the geometry and clipped to the image), scored by the component's max or mean
/// logit. The image score is the map's largest logit.
public struct BoxHead: Sendable {
    public var decoder: LinearDecoder
    /// Logit threshold of the heatmap (0 = probability ½).
    public var threshold: Float
    public var scoring: ComponentScore

    public init(decoder: LinearDecoder, threshold: Float = 0, scoring: ComponentScore = .max) {
        precondition(decoder.classes == 2, "BoxHead: a two-class decoder")
        self.decoder = decoder
        self.threshold = threshold
        self.scoring = scoring
    }

    /// (H, W) label map of boxes: 1 where the pixel centre (x + ½, y + ½) lies inside a box.
    public static func rasterize(_ boxes: [Box], width w: Int, height h: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: w * h)
        for b in boxes {
            // Centres inside [x, x + width]: columns ⌈x − ½⌉ … ⌊x + width − ½⌋.
            let x0 = max(0, Int((b.x - 0.5).rounded(.up))), x1 = min(w - 1, Int((b.x + b.width - 0.5).rounded(.down)))
            let y0 = max(0, Int((b.y - 0.5).rounded(.up))), y1 = min(h - 1, Int((b.y + b.height - 0.5).rounded(.down)))
            guard x0 <= x1, y0 <= y1 else { continue }
            for y in y0...y1 { for x in x0...x1 { out[y * w + x] = 1 } }
        }
        return out
    }

    /// The training example of one image: its tokens and its boxes rasterised and taken to the
    /// model input (padding not scored).
    public static func example(tokens: [Float], boxes: [Box], geometry g: ImageGeometry) -> PatchExample {
        let labels = rasterize(boxes, width: g.imageWidth, height: g.imageHeight)
        return PatchExample(tokens: tokens, target: g.forward(labels: labels, fill: LinearDecoder.ignore))
    }

    /// 8-connected components of `map > threshold` on a (h, w) map, in raster order of their
    /// first pixel; NaN pixels are never inside.
    public static func components(_ map: [Float], width w: Int, height h: Int, threshold: Float, scoring: ComponentScore) -> [MapComponent] {
        precondition(map.count == w * h, "components: \(map.count) values for \(h)×\(w)")
        var seen = [Bool](repeating: false, count: w * h)
        var out: [MapComponent] = []
        var stack: [Int] = []
        for start in 0..<(w * h) where !seen[start] && map[start] > threshold {
            var c = MapComponent(x0: w, y0: h, x1: -1, y1: -1, pixels: 0, score: -.infinity)
            var sum = 0.0
            seen[start] = true
            stack.append(start)
            while let i = stack.popLast() {
                let x = i % w, y = i / w
                c.x0 = min(c.x0, x); c.x1 = max(c.x1, x); c.y0 = min(c.y0, y); c.y1 = max(c.y1, y)
                c.pixels += 1
                sum += Double(map[i])
                c.score = max(c.score, Double(map[i]))
                for dy in -1...1 {
                    for dx in -1...1 {
                        let nx = x + dx, ny = y + dy
                        guard nx >= 0, nx < w, ny >= 0, ny < h else { continue }
                        let j = ny * w + nx
                        if !seen[j] && map[j] > threshold { seen[j] = true; stack.append(j) }
                    }
                }
            }
            if scoring == .mean { c.score = sum / Double(c.pixels) }
            out.append(c)
        }
        return out
    }

    /// Detect on one image (`image` is its index in the returned `ScoredBox`es).
    public func detect(_ tokens: [Float], geometry g: ImageGeometry, image: Int) -> BoxDetection {
        Self.detect(inputMap: decoder.inputLogits(tokens), geometry: g, threshold: threshold, scoring: scoring, image: image)
    }

    /// Boxes from any (oh, ow) score map at the model input (the decoder's logits, or label
    /// transfer's foreground shares): components of `map > threshold` over the part of the input
    /// that shows the image, mapped back to image pixels; the image score and peak are the map's
    /// maximum there.
    public static func detect(inputMap map: [Float], geometry g: ImageGeometry, threshold: Float, scoring: ComponentScore, image: Int) -> BoxDetection {
        let oh = g.inputHeight, ow = g.inputWidth
        precondition(map.count == oh * ow, "detect: \(map.count) values for the \(oh)×\(ow) model input")
        // Only the part of the input that shows the image (not the padding) can hold a finding.
        let ry0 = max(0, -g.top), ry1 = min(oh, g.resizedHeight - g.top), rx0 = max(0, -g.left), rx1 = min(ow, g.resizedWidth - g.left)
        var visible = [Float](repeating: .nan, count: oh * ow)
        var best = -Float.infinity, at = (x: 0, y: 0)
        for y in ry0..<max(ry0, ry1) {
            for x in rx0..<max(rx0, rx1) {
                let v = map[y * ow + x]
                visible[y * ow + x] = v
                if v > best { best = v; at = (x, y) }
            }
        }
        let comps = components(visible, width: ow, height: oh, threshold: threshold, scoring: scoring)
        let boxes = comps.map { c -> ScoredBox in
            let a = g.imagePoint(x: Double(c.x0), y: Double(c.y0)), b = g.imagePoint(x: Double(c.x1 + 1), y: Double(c.y1 + 1))
            let x0 = min(max(a.x, 0), Double(g.imageWidth)), y0 = min(max(a.y, 0), Double(g.imageHeight))
            let x1 = min(max(b.x, 0), Double(g.imageWidth)), y1 = min(max(b.y, 0), Double(g.imageHeight))
            return ScoredBox(image: image, box: Box(x: x0, y: y0, width: x1 - x0, height: y1 - y0), score: c.score)
        }
        // Highest score first; ties keep raster order.
        let ranked = boxes.enumerated().sorted { $0.element.score != $1.element.score ? $0.element.score > $1.element.score : $0.offset < $1.offset }
        let peak = g.imagePoint(x: Double(at.x) + 0.5, y: Double(at.y) + 0.5)
        return BoxDetection(boxes: ranked.map(\.element), imageScore: Double(best), peak: peak)
    }
}

extension PatchKNN {
    /// (oh, ow) foreground share at the model input (class 1's scores bilinearly upsampled), the
    /// map `BoxHead.detect(inputMap:…)` reads boxes from.
    public func inputForeground(_ tokens: [Float]) -> [Float] {
        precondition(classes == 2, "inputForeground: a two-class index")
        let p = grid.patches
        return Upsampler(grid).up(Array(patchScores(tokens)[p..<(2 * p)]), rows: 1)
    }

    /// (H, W) foreground share at the original image size; NaN where the crop cut the image away.
    public func imageForeground(_ tokens: [Float], geometry: ImageGeometry) -> [Float] {
        precondition(classes == 2, "imageForeground: a two-class index")
        let p = grid.patches
        return geometry.backward(
            grid: Array(patchScores(tokens)[p..<(2 * p)]), channels: 1, gridHeight: grid.gridHeight, gridWidth: grid.gridWidth, fill: .nan)
    }
}
