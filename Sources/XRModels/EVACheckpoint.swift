// Loading EVA-02 / EVA-X checkpoints: EVA's original names (`ViTLayout.eva`) or timm's `Eva` names
// (`ViTLayout.timm`), bare files or timm hub folders; the variant read off the keys, sizes off the
// tensor shapes, strictly through the one key table (`EVABlockKeys`, `checkpointKeys`).
import Foundation
import XRTensor

extension ViTLoader {
    /// The layout of an EVA-02 checkpoint, nil when the keys are not an EVA-02 encoder's: EVA's
    /// original SwiGLU names (`mlp.w12`, `mlp.w1`, `mlp.w3`) or timm's EVA attention / MLP names
    /// (`attn.q_bias`, `attn.q_proj`, `mlp.fc1_g`), which no pre-norm ViT has.
    static func evaLayout(_ src: WeightSource) -> ViTLayout? {
        func has(_ k: String) -> Bool { src.owner["blocks.0." + k] != nil }
        if has("mlp.w12.weight") || has("mlp.w1.weight") || has("mlp.w3.weight") { return .eva }
        if has("attn.q_bias") || has("attn.q_proj.weight") || has("mlp.fc1_g.weight") { return .timm }
        return nil
    }

    /// An EVA-02 encoder's architecture from its tensors: dim and patch size from the patch
    /// embedding, depth from the block indices, MLP hidden size from the SwiGLU projection, the
    /// variant (fused or separate q/k/v, packed or separate SwiGLU input, sub-LayerNorms) from which
    /// keys are present. Heads are not stored: `heads`, else dim / 64 (EVA-X's head size) with a
    /// note. RoPE's reference grid is not stored either: `ropeGrid`, else 224 / patch size — 14 for
    /// EVA-X's patch 16 (`ref_feat_shape=(14, 14)` in `eva_x.py`), 16 for timm's patch-14 EVA-02.
    static func inferEVAConfig(
        _ src: WeightSource, layout: ViTLayout, heads: Int?, ropeGrid: Int?, notes: inout [String], file: String
    ) throws -> ViTConfig {
        func key(_ canonical: String) -> String { checkpointKeys(layout, canonical, [0]).keys[0].name }
        func shape(_ canonical: String) throws -> [Int] {
            guard let s = src.shape(key(canonical)) else { throw XRError("missing key", file: file, field: key(canonical)) }
            return s
        }
        func has(_ canonical: String) -> Bool { src.owner[key(canonical)] != nil }
        let pw = try shape(ViTKeys.patchWeight)
        guard pw.count == 4, pw[1] == 3, pw[2] == pw[3], pw[0] > 0 else {
            throw XRError("patch embedding weight has shape \(describeShape(pw)), expected (C, 3, P, P)", file: file, field: key(ViTKeys.patchWeight))
        }
        let C = pw[0], P = pw[2]
        var depth = 0
        for n in src.names where n.hasPrefix("blocks.") {
            if let i = Int(n.dropFirst("blocks.".count).prefix { $0.isNumber }) { depth = max(depth, i + 1) }
        }
        guard depth > 0 else { throw XRError("no transformer blocks found", file: file, field: "blocks.0") }
        let k = EVABlockKeys(block: 0)
        let fused = has(k.qkvWeight), packed = has(k.fc1Weight)
        let hidden = try packed ? shape(k.fc1Weight)[0] / 2 : shape(k.fc1gWeight)[0]
        let pos = try shape(ViTKeys.posEmbed)
        let g = pos.count == 3 ? Int(Double(max(0, pos[1] - 1)).squareRoot().rounded()) : 0
        guard pos.count == 3, g > 0, 1 + g * g == pos[1] else {
            throw XRError(
                "position embedding \(describeShape(pos)) is not (1, 1 + grid², C)", file: file, field: key(ViTKeys.posEmbed),
                hint: "EVA-02 encoders with a class token and absolute position embeddings are supported")
        }
        let H = headCount(heads, dim: C, notes: &notes)
        guard H > 0, C % H == 0, (C / H) % 4 == 0 else {
            throw XRError(
                "dim \(C) with \(H) heads gives a head size that is not a multiple of 4, which 2-D rotary embeddings need",
                file: file, field: "heads")
        }
        let ref = ropeGrid ?? max(1, 224 / P)
        if ropeGrid == nil {
            notes.append("RoPE reference grid \(ref)×\(ref) (224 / patch size, as EVA-X and timm's EVA-02 use)")
        }
        var c = ViTConfig(imageSize: g * P, patchSize: P, dim: C, depth: depth, heads: H, mlpHidden: hidden, qkvBias: has(fused ? k.qBias : k.qProjBias))
        c.block = .eva02
        c.eva = ViTConfig.EVAOptions(
            ropeReferenceGrid: ref, qkvFused: fused, mlpPacked: packed, mlpNorm: has(k.mlpNormWeight), attentionNorm: has(k.attnNormWeight))
        return c
    }

    /// The encoder from strictly loaded parameters under their canonical names (`build`). Each is
    /// taken out of `params` as it is used, so the model holds the weights once, not twice.
    static func evaModel(_ params: inout [String: [Float]], config c: ViTConfig, precision: Precision = .fp32) -> ViT {
        let C = c.dim
        let o = c.eva ?? ViTConfig.EVAOptions(ropeReferenceGrid: nil, qkvFused: true, mlpPacked: true, mlpNorm: false)
        func p(_ k: String) -> [Float] { params.removeValue(forKey: k) ?? [] }
        func opt(_ k: String) -> [Float]? { params.removeValue(forKey: k) }
        let blocks = (0..<c.depth).map { i -> EVABlockWeights in
            let k = EVABlockKeys(block: i)
            let qkv = o.qkvFused ? p(k.qkvWeight) : p(k.qProjWeight) + p(k.kProjWeight) + p(k.vProjWeight)
            let qb = opt(o.qkvFused ? k.qBias : k.qProjBias), vb = opt(o.qkvFused ? k.vBias : k.vProjBias)
            let bias = qb.flatMap { q in vb.map { q + [Float](repeating: 0, count: C) + $0 } }
            return EVABlockWeights(
                norm1Weight: p(k.norm1Weight), norm1Bias: p(k.norm1Bias), qkvWeight: qkv, qkvBias: bias,
                attnNormWeight: opt(k.attnNormWeight), attnNormBias: opt(k.attnNormBias),
                projWeight: p(k.projWeight), projBias: p(k.projBias), norm2Weight: p(k.norm2Weight), norm2Bias: p(k.norm2Bias),
                fc1Weight: o.mlpPacked ? p(k.fc1Weight) : p(k.fc1gWeight) + p(k.fc1xWeight),
                fc1Bias: o.mlpPacked ? p(k.fc1Bias) : p(k.fc1gBias) + p(k.fc1xBias),
                mlpNormWeight: opt(k.mlpNormWeight), mlpNormBias: opt(k.mlpNormBias),
                fc2Weight: p(k.fc2Weight), fc2Bias: p(k.fc2Bias))
        }
        return ViT(
            config: c,
            weights: ViTWeights(
                clsToken: p(ViTKeys.classToken), registers: [], posEmbed: p(ViTKeys.posEmbed),
                patchWeight: p(ViTKeys.patchWeight), patchBias: p(ViTKeys.patchBias), blocks: [], evaBlocks: blocks,
                normWeight: p(EVAKeys.fcNormWeight), normBias: p(EVAKeys.fcNormBias)), precision: precision)
    }
}
