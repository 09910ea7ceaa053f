// The loaded weights under timm names, whatever layout they were read from (timm, DINOv2,
// Hugging Face), with position embeddings at the grid of a given input size — what the
// training code starts from.
import Foundation
import XRTensor

extension ViT {
    /// timm-named tensors (`cls_token`, `pos_embed` (1, 1 + N, C), `patch_embed.proj.*`,
    /// `blocks.i.*` with fused qkv, `ls1.gamma` / `ls2.gamma` with LayerScale, `norm.*`) for
    /// square inputs of `size` pixels. Encoders with register tokens are refused.
    public func timmTensors(size: Int) throws -> [String: Tensor] {
        let c = config, C = c.dim, P = c.patchSize, M = c.mlpHidden
        guard c.numRegisters == 0 else {
            throw XRError("encoders with register tokens cannot be tuned yet", field: "model", hint: "use a probe method, or an encoder without registers")
        }
        guard size > 0, size % P == 0 else { throw XRError("input size \(size) is not a multiple of the patch size \(P)", field: "preprocessing") }
        let g = size / P
        let pos = try positionEmbedding(gh: g, gw: g, height: size, width: size)
        var posFull = [Float](repeating: 0, count: (1 + g * g) * C)
        if c.posEmbedPrefix >= 1 {
            posFull = Array(pos.prefix((1 + g * g) * C))
        } else {
            // No position embedding on the class token (timm `no_embed_class`): zero for it.
            for i in 0..<(g * g * C) { posFull[C + i] = pos[i] }
        }
        var t: [String: Tensor] = [
            "cls_token": Tensor(shape: [1, 1, C], scalars: w.clsToken),
            "pos_embed": Tensor(shape: [1, 1 + g * g, C], scalars: posFull),
            "patch_embed.proj.weight": Tensor(shape: [C, 3, P, P], scalars: packs.patch.transposedValues()),
            "patch_embed.proj.bias": Tensor(shape: [C], scalars: w.patchBias),
            "norm.weight": Tensor(shape: [C], scalars: w.normWeight),
            "norm.bias": Tensor(shape: [C], scalars: w.normBias),
        ]
        for (i, b) in w.blocks.enumerated() {
            let p = "blocks.\(i).", pk = packs.blocks[i]
            t[p + "norm1.weight"] = Tensor(shape: [C], scalars: b.norm1Weight)
            t[p + "norm1.bias"] = Tensor(shape: [C], scalars: b.norm1Bias)
            t[p + "attn.qkv.weight"] = Tensor(shape: [3 * C, C], scalars: pk.qkv.transposedValues())
            t[p + "attn.qkv.bias"] = Tensor(shape: [3 * C], scalars: b.qkvBias ?? [Float](repeating: 0, count: 3 * C))
            t[p + "attn.proj.weight"] = Tensor(shape: [C, C], scalars: pk.proj.transposedValues())
            t[p + "attn.proj.bias"] = Tensor(shape: [C], scalars: b.projBias)
            t[p + "norm2.weight"] = Tensor(shape: [C], scalars: b.norm2Weight)
            t[p + "norm2.bias"] = Tensor(shape: [C], scalars: b.norm2Bias)
            t[p + "mlp.fc1.weight"] = Tensor(shape: [M, C], scalars: pk.fc1.transposedValues())
            t[p + "mlp.fc1.bias"] = Tensor(shape: [M], scalars: b.fc1Bias)
            t[p + "mlp.fc2.weight"] = Tensor(shape: [C, M], scalars: pk.fc2.transposedValues())
            t[p + "mlp.fc2.bias"] = Tensor(shape: [C], scalars: b.fc2Bias)
            if let ls = b.ls1 { t[p + "ls1.gamma"] = Tensor(shape: [C], scalars: ls) }
            if let ls = b.ls2 { t[p + "ls2.gamma"] = Tensor(shape: [C], scalars: ls) }
        }
        return t
    }
}
