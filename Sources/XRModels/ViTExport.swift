// The loaded weights under their canonical (timm) names, whatever layout they were read from
// (timm, DINOv2, Hugging Face, EVA-X), with position embeddings at the grid of a given input size —
// what a trainable encoder starts from.
import Foundation
import XRTensor

extension ViT {
    /// Every parameter of `config.resized(to: size)` under its canonical name
    /// (`ViTConfig.parameterShapes`), for square inputs of `size` pixels: `pos_embed` is
    /// (1, posEmbedPrefix + (size / P)², C), resized with the checkpoint family's own rule.
    public func timmTensors(size: Int) throws -> [String: Tensor] {
        let c = config, P = c.patchSize
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
            ViTKeys.normWeight: w.normWeight, ViTKeys.normBias: w.normBias,
            EVAKeys.fcNormWeight: w.normWeight, EVAKeys.fcNormBias: w.normBias
        ]
        for (i, b) in evaBlocks.enumerated() { evaValues(b, block: i, into: &values) }
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

    /// One EVA-02 block's weights under their canonical names, split back into the layout the
    /// config names (q / v biases or q / k / v projections, packed or separate SwiGLU input).
    private func evaValues(_ b: EVABlock, block i: Int, into values: inout [String: [Float]]) {
        let k = EVABlockKeys(block: i), C = config.dim, M = config.mlpHidden
        let o = config.eva ?? ViTConfig.EVAOptions(ropeReferenceGrid: nil, qkvFused: true, mlpPacked: true, mlpNorm: false)
        func rows(_ a: [Float], _ part: Int, _ n: Int, _ width: Int) -> [Float] { Array(a[(part * n * width)..<((part + 1) * n * width)]) }
        values[k.norm1Weight] = b.norm1Weight.array; values[k.norm1Bias] = b.norm1Bias.array
        let qkv = b.qkv.transposedValues(), bias = b.qkvBias?.array
        if o.qkvFused {
            values[k.qkvWeight] = qkv
            values[k.qBias] = bias.map { rows($0, 0, C, 1) }; values[k.vBias] = bias.map { rows($0, 2, C, 1) }
        } else {
            values[k.qProjWeight] = rows(qkv, 0, C, C); values[k.kProjWeight] = rows(qkv, 1, C, C); values[k.vProjWeight] = rows(qkv, 2, C, C)
            values[k.qProjBias] = bias.map { rows($0, 0, C, 1) }; values[k.vProjBias] = bias.map { rows($0, 2, C, 1) }
        }
        values[k.attnNormWeight] = b.attnNormWeight?.array; values[k.attnNormBias] = b.attnNormBias?.array
        values[k.projWeight] = b.proj.transposedValues(); values[k.projBias] = b.projBias.array
        values[k.norm2Weight] = b.norm2Weight.array; values[k.norm2Bias] = b.norm2Bias.array
        let fc1 = b.fc1.transposedValues(), fc1Bias = b.fc1Bias.array
        if o.mlpPacked {
            values[k.fc1Weight] = fc1; values[k.fc1Bias] = fc1Bias
        } else {
            values[k.fc1gWeight] = rows(fc1, 0, M, C); values[k.fc1xWeight] = rows(fc1, 1, M, C)
            values[k.fc1gBias] = rows(fc1Bias, 0, M, 1); values[k.fc1xBias] = rows(fc1Bias, 1, M, 1)
        }
        values[k.mlpNormWeight] = b.mlpNormWeight?.array; values[k.mlpNormBias] = b.mlpNormBias?.array
        values[k.fc2Weight] = b.fc2.transposedValues(); values[k.fc2Bias] = b.fc2Bias.array
    }
}
