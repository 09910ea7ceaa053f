// How the image encoder takes part in report training: frozen (patch tokens computed once and
// cached), or tuned with LoRA or its last k blocks (patch tokens recomputed every step, the
// decoder's visual-token gradient flowing back through the encoder).
import Foundation
import XRTensor
import XRData
import XRModels
import XRPipeline
import XRTrain

/// An encoder being tuned (or applied after tuning): the base encoder under timm names at the
/// preprocessing's square size with the spec's trainable parameters.
final class TunedEncoder {
    let vit: TrainableViT
    let size: Int
    let preprocessing: Preprocessing
    /// Trainable encoder parameters (the classification head excluded).
    let parameters: [Parameter]

    init(_ encoder: Encoder, spec: ReportEncoderSpec, seed: UInt64, source: String) throws {
        guard let set = spec.trainableSet else { throw XRError("the encoder is frozen", field: "encoder") }
        let pre = encoder.preprocessing
        guard let S = pre.cropHeight ?? pre.resizeHeight, (pre.cropWidth ?? pre.resizeWidth) == S else {
            throw XRError(
                "tuning the encoder needs a fixed square input size, but the preprocessing (\(pre)) gives images of varying shape",
                file: source, field: "preprocessing", hint: "give the encoder a preprocessing with a crop (e.g. its native size)")
        }
        size = S
        preprocessing = pre
        vit = try TrainableViT(from: encoder.loaded, size: S, classes: 2, source: source)
        try vit.setTrainable(set, seed: seed)
        parameters = vit.trainableParameters.filter { !$0.name.hasPrefix("head") }
    }

    /// Pooled visual tokens (B, G², C) for preprocessed pixels (B, 3, S, S).
    func visualTokens(pixels: [Float], batch B: Int, pool: Int, training: Bool) throws -> (tokens: [Float], S: Int) {
        vit.training = training
        let t = try vit.forwardPatchTokens(pixels: pixels, batch: B)
        let g = vit.config.grid
        return (PatchPooling.pool(t, batch: B, grid: g, channels: vit.config.dim, factor: pool), PatchPooling.pooledCount(grid: g, factor: pool))
    }

    /// Back from d(pooled visual tokens) into the encoder's parameter gradients.
    func backward(_ dvisual: [Float], batch B: Int, pool: Int) {
        vit.backwardPatchTokens(PatchPooling.unpool(dvisual, batch: B, grid: vit.config.grid, channels: vit.config.dim, factor: pool))
    }

    /// Load tuned values (names as `parameters`).
    func load(_ tensors: [String: Tensor], source: String) throws {
        for p in parameters {
            guard let t = tensors[p.name] else { throw XRError("missing tensor", file: source, field: p.name) }
            guard t.count == p.count, t.scalars.allSatisfy(\.isFinite) else { throw XRError("wrong size or non-finite values", file: source, field: p.name) }
            p.assign(t.scalars)
        }
    }
}

/// Average pooling of a square patch grid by an integer factor (rows and columns beyond the last
/// whole cell are dropped), and its backward.
enum PatchPooling {
    static func pooledCount(grid g: Int, factor: Int) -> Int { let G = g / max(1, min(factor, g)); return G * G }

    static func pool(_ t: [Float], batch n: Int, grid g: Int, channels C: Int, factor: Int) -> [Float] {
        let p = max(1, min(factor, g)), G = g / p, N = g * g
        var out = [Float](repeating: 0, count: n * G * G * C)
        let inv = 1 / Float(p * p)
        for i in 0..<n {
            for gy in 0..<(G * p) {
                for gx in 0..<(G * p) {
                    let dst = (i * G * G + (gy / p) * G + gx / p) * C, src = (i * N + gy * g + gx) * C
                    for c in 0..<C { out[dst + c] += t[src + c] * inv }
                }
            }
        }
        return out
    }

    static func unpool(_ d: [Float], batch n: Int, grid g: Int, channels C: Int, factor: Int) -> [Float] {
        let p = max(1, min(factor, g)), G = g / p, N = g * g
        var out = [Float](repeating: 0, count: n * N * C)
        let inv = 1 / Float(p * p)
        for i in 0..<n {
            for gy in 0..<(G * p) {
                for gx in 0..<(G * p) {
                    let src = (i * G * G + (gy / p) * G + gx / p) * C, dst = (i * N + gy * g + gx) * C
                    for c in 0..<C { out[dst + c] = d[src + c] * inv }
                }
            }
        }
        return out
    }
}
