// Segmentation by label transfer from the nearest labelled patches.
//
// Letters: G labelled (gallery) patches, P patches of an image, C token channels, K classes.
import Foundation
import XRData
import XRKernels
import XRProbe

/// `knn_patches`: each patch of a new image takes the class shares of its k most similar labelled
/// patches (cosine similarity of the frozen tokens; exact search by `Retrieval.nearest`, ties to
/// the earlier labelled patch), weighted by exp(similarity / T) as DINOv2's k-NN classifier
/// weights its votes. A labelled patch's class shares are the fractions of its scored pixels in
/// each class (`PatchGrid.classFractions`); patches with no scored pixel (padding) are left out.
/// The (K, gh, gw) scores go to the image like the linear decoder's logits.
public struct PatchKNN: Sendable {
    public let grid: PatchGrid
    public let channels: Int
    public let classes: Int
    public let k: Int
    public let temperature: Double
    /// (G, C) unit rows.
    let gallery: [Float]
    /// (G, K)
    let shares: [Float]

    /// The number of labelled patches.
    public var labelledPatches: Int { shares.count / classes }

    /// Index the patches of the annotated images.
    public init(_ examples: [PatchExample], grid: PatchGrid, channels: Int, classes: Int, k: Int = 20, temperature: Double = 0.07) {
        precondition(k > 0 && temperature > 0 && classes >= 2 && channels > 0, "PatchKNN: k \(k), T \(temperature), \(classes) classes")
        self.grid = grid
        self.channels = channels
        self.classes = classes
        self.k = k
        self.temperature = temperature
        var rows: [Float] = [], shares: [Float] = []
        for (i, ex) in examples.enumerated() {
            precondition(ex.tokens.count == grid.patches * channels, "example \(i): \(ex.tokens.count) token values, not \(grid.patches)×\(channels)")
            let (f, scored) = grid.classFractions(ex.target, classes: classes)
            for p in 0..<grid.patches where scored[p] {
                rows += ex.tokens[(p * channels)..<((p + 1) * channels)]
                shares += f[(p * classes)..<((p + 1) * classes)]
            }
        }
        gallery = Probe.normalized(rows, d: channels)
        self.shares = shares
    }

    /// (K, gh, gw) class scores (each patch's sums to 1) of one image's tokens (P, C).
    public func patchScores(_ tokens: [Float]) -> [Float] {
        precondition(tokens.count == grid.patches * channels, "patchScores: \(tokens.count) values, not \(grid.patches)×\(channels)")
        let p = grid.patches
        var out = [Float](repeating: 0, count: classes * p)
        let (idx, sim) = Retrieval.nearest(
            queries: Probe.normalized(tokens, d: channels), gallery: gallery, dim: channels, k: k, unitRows: true)
        let kk = idx.count / max(p, 1)
        guard kk > 0 else { return out }
        for q in 0..<p {
            var acc = [Double](repeating: 0, count: classes), total = 0.0
            // Weights relative to the best neighbour (exp(0) = 1), so a small T cannot overflow.
            let top = Double(sim[q * kk])
            for j in 0..<kk {
                let g = idx[q * kk + j], w = exp((Double(sim[q * kk + j]) - top) / temperature)
                total += w
                for c in 0..<classes { acc[c] += w * Double(shares[g * classes + c]) }
            }
            for c in 0..<classes { out[c * p + q] = Float(acc[c] / total) }
        }
        return out
    }

    /// (H, W) predicted classes: the largest bilinearly interpolated score (ties to the lower
    /// class); background where the crop cut the image away.
    public func predict(_ tokens: [Float], geometry: ImageGeometry) -> [UInt8] {
        let s = geometry.backward(
            grid: patchScores(tokens), channels: classes, gridHeight: grid.gridHeight, gridWidth: grid.gridWidth, fill: .nan)
        return LinearDecoder.classes(fromLogits: s, rows: classes, pixels: geometry.imageHeight * geometry.imageWidth)
    }
}
