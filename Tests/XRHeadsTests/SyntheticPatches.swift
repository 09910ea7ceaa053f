import Foundation
import XRData
import XRHeads
import XRProbe
import XRTensor

/// Synthetic frozen patch tokens with a planted direction on a block of 2 × 2 patches per image,
/// and the truth at the original image size. The images (60 high, 80 wide) preprocess with a
/// shortest edge of 48 and a 48 crop — resize by 0.8, then the crop cuts 8 resized columns (one
/// patch) on each side — to a 6 × 6 grid of 8-pixel patches. The truth marks the image pixels
/// whose centre lands in a planted patch, so a head that reads the grid one patch off (or a
/// geometry that forgets the crop offset) loses half of every object.
struct SyntheticPatches {
    static let preprocessing = Preprocessing(shortestEdge: 48, crop: 48, mean: [0, 0, 0], std: [1, 1, 1])
    static let grid = PatchGrid(gridHeight: 6, gridWidth: 6, inputHeight: 48, inputWidth: 48)
    static let height = 60, width = 80, patch = 8

    var geometry: ImageGeometry { Self.preprocessing.geometry(height: Self.height, width: Self.width) }
    let channels: Int
    /// Per image: (P, C) tokens.
    var tokens: [[Float]] = []
    /// Per image: the planted patches' top-left grid cell, or nil for a negative image.
    var planted: [(row: Int, col: Int)?] = []

    init(images: Int, channels: Int = 16, strength: Float = 4, negatives: Int = 0, seed: UInt64) {
        self.channels = channels
        var rng = XRRandom(seed: seed)
        var direction = (0..<channels).map { _ in rng.nextGaussian() }
        let norm = direction.reduce(0) { $0 + $1 * $1 }.squareRoot()
        direction = direction.map { $0 / norm }
        for i in 0..<images {
            let cell: (row: Int, col: Int)? = i < negatives ? nil : (rng.nextInt(below: 5), rng.nextInt(below: 5))
            var t = (0..<(Self.grid.patches * channels)).map { _ in rng.nextGaussian() }
            if let cell {
                for r in cell.row...(cell.row + 1) {
                    for c in cell.col...(cell.col + 1) { for j in 0..<channels { t[(r * 6 + c) * channels + j] += strength * direction[j] } }
                }
            }
            tokens.append(t)
            planted.append(cell)
        }
    }

    /// (H, W) truth of image i: 1 where the pixel centre lands in a planted patch, shifted by
    /// `shift` patches to the right (to show what an off-by-a-patch error costs).
    func truth(_ i: Int, shift: Int = 0) -> [UInt8] {
        let g = geometry
        var out = [UInt8](repeating: 0, count: Self.height * Self.width)
        guard let cell = planted[i] else { return out }
        for y in 0..<Self.height {
            for x in 0..<Self.width {
                let t = g.inputPoint(x: Double(x) + 0.5, y: Double(y) + 0.5)
                guard t.x >= 0, t.x < 48, t.y >= 0, t.y < 48 else { continue }
                let r = Int(t.y) / Self.patch, c = Int(t.x) / Self.patch - shift
                if r >= cell.row && r <= cell.row + 1 && c >= cell.col && c <= cell.col + 1 { out[y * Self.width + x] = 1 }
            }
        }
        return out
    }

    /// The true box of image i in image pixels (nil for a negative).
    func box(_ i: Int) -> Box? {
        guard let cell = planted[i] else { return nil }
        let g = geometry
        let a = g.imagePoint(x: Double(cell.col * 8), y: Double(cell.row * 8)), b = g.imagePoint(x: Double(cell.col * 8 + 16), y: Double(cell.row * 8 + 16))
        return Box(x: a.x, y: a.y, width: b.x - a.x, height: b.y - a.y)
    }

    /// Training examples: tokens with the truth taken to the model input.
    func examples(_ range: Range<Int>) -> [PatchExample] {
        range.map { PatchExample(tokens: tokens[$0], target: geometry.forward(labels: truth($0), fill: LinearDecoder.ignore)) }
    }

    /// Mean Dice of predictions against the truth (shifted by `shift` patches).
    func meanDice(_ predictions: [[UInt8]], _ range: Range<Int>, shift: Int = 0) -> Double {
        let scores = zip(predictions, range).map { p, i in
            MaskMetrics.scores(prediction: p.map { $0 == 1 }, truth: truth(i, shift: shift).map { $0 == 1 }, width: Self.width, height: Self.height).dice
        }
        return scores.reduce(0, +) / Double(scores.count)
    }
}
