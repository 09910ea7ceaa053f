// The report decoder's visual input: pooled patch tokens of the image encoder, frozen (computed
// once) or tuned (recomputed every step), standardised per position and channel.
import Foundation
import XRTensor
import XRPipeline

/// The visual input of a training run: the encoder, the tuned part of it (if any), and the
/// standardised tokens (S tokens of Cv channels per image) by pair index (`ReportSplit.all`).
struct VisualInput {
    let encoder: Encoder
    let tuned: TunedEncoder?
    let S: Int, Cv: Int
    let norm: VisualNorm
    /// Standardised tokens by pair index: every pair's for a frozen encoder; for a tuned one only
    /// the test pairs', after `encodeTest`.
    private(set) var vis: [[Float]]
    private let pixelCache: PixelStore
    private let pool: Int
    private let quiet: Bool

    init(_ o: ReportTrainOptions, reports: ReportSplit) throws {
        let encoder = try o.loadedEncoder ?? Encoder.load(model: o.encoder)
        let all = reports.all, fitIdx = reports.fitIdx
        // Visual tokens: cached for a frozen encoder; a tuned one recomputes them every step.
        let tuned = o.encoderSpec.isFrozen ? nil : try TunedEncoder(encoder, spec: o.encoderSpec, seed: o.seed, source: o.encoder.path)
        var vis: [[Float]] = [], S = 0, Cv = 0
        if let tuned {
            S = PatchPooling.pooledCount(grid: tuned.vit.config.grid, factor: o.pool); Cv = tuned.vit.config.dim
        } else {
            (vis, S, Cv) = try ReportTraining.visualTokens(all, encoder: encoder, pool: o.pool, quiet: o.quiet)
        }
        let pixelCache = PixelStore(all.map(\.image), tuned: tuned)
        // Visual tokens are standardised per position and channel with statistics of the training
        // images (for a tuned encoder, of its starting weights; the transform then stays fixed).
        let norm: VisualNorm
        if let tuned {
            norm = VisualNorm(fitting: try ReportTraining.visualTokens(fitIdx.map { all[$0].image }, tuned: tuned, pool: o.pool, quiet: o.quiet))
        } else {
            norm = VisualNorm(fitting: fitIdx.map { vis[$0] })
            vis = vis.map { norm.apply($0) }
        }
        self.encoder = encoder; self.tuned = tuned; self.S = S; self.Cv = Cv; self.norm = norm; self.vis = vis
        self.pixelCache = pixelCache; self.pool = o.pool; self.quiet = o.quiet
    }

    /// Standardised visual tokens (B, S, Cv) of the pairs `idx`; a tuned encoder runs in training
    /// mode (dropout) when `training`.
    func tokens(_ idx: [Int], training: Bool) throws -> [Float] {
        guard let tuned else { return idx.flatMap { vis[$0] } }
        let px = try idx.flatMap { try pixelCache.pixels($0) }
        return norm.apply(try tuned.visualTokens(pixels: px, batch: idx.count, pool: pool, training: training).tokens)
    }

    /// After training a tuned encoder: the test images' tokens under its kept weights.
    mutating func encodeTest(_ reports: ReportSplit) throws {
        guard let tuned else { return }
        let all = reports.all, testIdx = reports.testIdx
        vis = [[Float]](repeating: [], count: all.count)
        for (k, v) in try ReportTraining.visualTokens(testIdx.map { all[$0].image }, tuned: tuned, pool: pool, quiet: quiet).enumerated() {
            vis[testIdx[k]] = norm.apply(v)
        }
    }
}

/// Per-(position, channel) standardisation of visual tokens: (v − mean) · invStd, with statistics
/// of the training images (a feature scale the decoder's projection does not have to learn).
public struct VisualNorm: Sendable {
    public var mean: [Float]
    public var invStd: [Float]

    public init(mean: [Float], invStd: [Float]) { self.mean = mean; self.invStd = invStd }

    init(fitting tokens: [[Float]]) {
        let n = tokens.first?.count ?? 0, k = Double(max(tokens.count, 1))
        var m = [Double](repeating: 0, count: n), sq = [Double](repeating: 0, count: n)
        for t in tokens { for j in 0..<n { m[j] += Double(t[j]); sq[j] += Double(t[j]) * Double(t[j]) } }
        mean = m.map { Float($0 / k) }
        invStd = (0..<n).map { j in
            let mu = m[j] / k
            return Float(1 / (max(sq[j] / k - mu * mu, 0).squareRoot() + 1e-3))
        }
    }

    /// Standardise tokens (any number of images of S × Cv each).
    public func apply(_ v: [Float]) -> [Float] {
        let n = mean.count
        var out = v
        for i in out.indices { out[i] = (v[i] - mean[i % n]) * invStd[i % n] }
        return out
    }

    /// d(raw tokens) from d(standardised tokens).
    func backward(_ d: [Float]) -> [Float] {
        let n = invStd.count
        var out = d
        for i in out.indices { out[i] *= invStd[i % n] }
        return out
    }
}

/// Preprocessed pixels by image index, decoded once (for a tuned encoder).
final class PixelStore: @unchecked Sendable {
    let urls: [URL]
    let tuned: TunedEncoder?
    private var store: [Int: [Float]] = [:]
    init(_ urls: [URL], tuned: TunedEncoder?) { self.urls = urls; self.tuned = tuned }
    func pixels(_ i: Int) throws -> [Float] {
        if let p = store[i] { return p }
        guard let tuned else { throw XRError("no tuned encoder", field: "encoder") }
        let x = try tuned.preprocessing.apply(contentsOf: urls[i])
        guard x.count == 3 * tuned.size * tuned.size else {
            throw XRError("preprocessed to \(x.count) values, expected 3×\(tuned.size)×\(tuned.size)", file: urls[i].path)
        }
        store[i] = x
        return x
    }
}
