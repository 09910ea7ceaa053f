// The loaded weights under their canonical (timm) names, whatever layout they were read from
// (timm, DINOv2, Hugging Face), with position embeddings at the grid of a given input size —
// what a trainable encoder starts from.
import Foundation
import XRTensor

extension ViT {
    /// Every parameter of `config.resized(to: size)` under its canonical name
    /// (`ViTConfig.parameterShapes`), for square inputs of `size` pixels: `pos_embed` is
    /// (1, posEmbedPrefix + (size / P)², C), resized with the checkpoint family's own rule.
    public func timmTensors(size: Int) throws -> [String: Tensor] {
        let c = config, P = c.patchSize
        guard c.blockKind == .preNorm else {
            throw XRError(
                "EVA-02 encoders are not trainable yet: their weights cannot be exported for training", field: "model",
                hint: "use EVA-02 / EVA-X features with the probe methods (logistic, knn, prototype) and pack / predict")
        }
        guard precision == .fp32 else {
            throw XRError(
                "this encoder was loaded with int8 linear layers; training starts from its fp32 weights", field: "precision",
                hint: "load the encoder with precision fp32 to tune it (int8 applies to frozen-feature extraction)")
        }
        guard size > 0, size % P == 0 else { throw XRError("input size \(size) is not a multiple of the patch size \(P)", field: "preprocessing") }
        let g = size / P
        var values: [String: [Float]] = [
            ViTKeys.classToken: w.clsToken, ViTKeys.registers: w.registers,
            ViTKeys.posEmbed: try positionEmbedding(gh: g, gw: g, height: size, width: size),
            ViTKeys.patchWeight: patchPack.transposedValues(), ViTKeys.patchBias: w.patchBias,
            ViTKeys.normWeight: w.normWeight, ViTKeys.normBias: w.normBias
        ]
        for (i, b) in blocks.enumerated() {
            let k = PreNormBlockKeys(block: i)
            values[k.norm1Weight] = b.norm1Weight.array; values[k.norm1Bias] = b.norm1Bias.array
            values[k.qkvWeight] = b.qkv.transposedValues(); values[k.qkvBias] = b.qkvBias?.array
            values[k.projWeight] = b.proj.transposedValues(); values[k.projBias] = b.projBias.array
            values[k.ls1] = b.ls1?.array; values[k.ls2] = b.ls2?.array
            values[k.norm2Weight] = b.norm2Weight.array; values[k.norm2Bias] = b.norm2Bias.array
            values[k.fc1Weight] = b.fc1.transposedValues(); values[k.fc1Bias] = b.fc1Bias.array
            values[k.fc2Weight] = b.fc2.transposedValues(); values[k.fc2Bias] = b.fc2Bias.array
        }
        var t: [String: Tensor] = [:]
        for (name, shape) in c.resized(to: size).parameterShapes {
            guard let v = values[name], v.count == shape.reduce(1, *) else {
                throw XRError("the encoder holds no values of shape \(shape)", field: name)
            }
            t[name] = Tensor(shape: shape, scalars: v)
        }
        return t
    }
}
