// The encoder's parameters by name: canonical (timm) names and shapes, written once here, and
// the table of each checkpoint layout that maps them to its own keys. The loader, the export
// for training and the trainable encoder all read these. EVA-02's canonical names are timm's
// `Eva` ones; EVA's original names (as hustvl/EVA-X and baaivision/EVA save their checkpoints)
// map to them by the inverse of timm's `eva.checkpoint_filter_fn` renames.
// C channels, M MLP hidden, P patch size, R registers.
import Foundation

/// Canonical (timm) names of the parameters outside the blocks.
public enum ViTKeys {
    public static let classToken = "cls_token" // (1, 1, C)
    public static let registers = "reg_token" // (1, R, C)
    public static let posEmbed = "pos_embed" // (1, posEmbedPrefix + grid², C)
    public static let patchWeight = "patch_embed.proj.weight" // (C, 3, P, P)
    public static let patchBias = "patch_embed.proj.bias" // (C)
    public static let normWeight = "norm.weight" // (C)
    public static let normBias = "norm.bias" // (C)
}

/// Canonical (timm) names of one pre-norm block's parameters.
public struct PreNormBlockKeys: Sendable {
    public let norm1Weight, norm1Bias: String // (C)
    public let qkvWeight, qkvBias: String // (3C, C), (3C); rows [q; k; v]
    public let projWeight, projBias: String // (C, C), (C)
    public let ls1, ls2: String // (C) LayerScale
    public let norm2Weight, norm2Bias: String // (C)
    public let fc1Weight, fc1Bias: String // (M, C), (M)
    public let fc2Weight, fc2Bias: String // (C, M), (C)

    public init(block i: Int) {
        let p = "blocks.\(i)."
        norm1Weight = p + "norm1.weight"; norm1Bias = p + "norm1.bias"
        qkvWeight = p + "attn.qkv.weight"; qkvBias = p + "attn.qkv.bias"
        projWeight = p + "attn.proj.weight"; projBias = p + "attn.proj.bias"
        ls1 = p + "ls1.gamma"; ls2 = p + "ls2.gamma"
        norm2Weight = p + "norm2.weight"; norm2Bias = p + "norm2.bias"
        fc1Weight = p + "mlp.fc1.weight"; fc1Bias = p + "mlp.fc1.bias"
        fc2Weight = p + "mlp.fc2.weight"; fc2Bias = p + "mlp.fc2.bias"
    }

    /// The block's parameters with their shapes, in model order; the qkv bias and LayerScale as
    /// the config has them.
    public func shapes(_ c: ViTConfig) -> [(name: String, shape: [Int])] {
        let C = c.dim, M = c.mlpHidden
        var s: [(name: String, shape: [Int])] = [(norm1Weight, [C]), (norm1Bias, [C]), (qkvWeight, [3 * C, C])]
        if c.qkvBias { s.append((qkvBias, [3 * C])) }
        s += [(projWeight, [C, C]), (projBias, [C])]
        if c.layerScale { s += [(ls1, [C]), (ls2, [C])] }
        s += [(norm2Weight, [C]), (norm2Bias, [C]), (fc1Weight, [M, C]), (fc1Bias, [M]), (fc2Weight, [C, M]), (fc2Bias, [C])]
        return s
    }
}

extension ViTConfig {
    /// Every parameter of the encoder under its canonical (timm) name, with its shape, in model
    /// order: the one list of the encoder's parameters. `pos_embed` covers this config's grid.
    public var parameterShapes: [(name: String, shape: [Int])] {
        let C = dim, P = patchSize, R = numRegisters
        var s: [(name: String, shape: [Int])] = [(ViTKeys.classToken, [1, 1, C])]
        if R > 0 { s.append((ViTKeys.registers, [1, R, C])) }
        s += [(ViTKeys.posEmbed, [1, posEmbedPrefix + grid * grid, C]), (ViTKeys.patchWeight, [C, 3, P, P]), (ViTKeys.patchBias, [C])]
        for i in 0..<depth {
            switch blockKind {
            case .preNorm: s += PreNormBlockKeys(block: i).shapes(self)
            case .eva02: s += EVABlockKeys(block: i).shapes(self)
            }
        }
        switch blockKind {
        case .preNorm: s += [(ViTKeys.normWeight, [C]), (ViTKeys.normBias, [C])]
        case .eva02: s += [(EVAKeys.fcNormWeight, [C]), (EVAKeys.fcNormBias, [C])]
        }
        return s
    }
}

/// One parameter in a checkpoint: the keys it is read from (concatenated along the first
/// dimension, for q/k/v stored separately) and the shape each key must have.
struct ParamSource {
    var keys: [(name: String, shape: [Int])]
}

/// The key table of a layout for a config: canonical parameter name → checkpoint keys, in model order.
func keyTable(_ layout: ViTLayout, _ c: ViTConfig) -> [(String, ParamSource)] {
    c.parameterShapes.map { ($0.name, checkpointKeys(layout, $0.name, $0.shape)) }
}

/// Where a layout stores one canonical parameter.
func checkpointKeys(_ layout: ViTLayout, _ name: String, _ shape: [Int]) -> ParamSource {
    func one(_ k: String) -> ParamSource { ParamSource(keys: [(k, shape)]) }
    switch layout {
    case .timm:
        return one(name)
    case .eva:
        return one(evaOriginalName(name))
    case .dinov2:
        return one(name == ViTKeys.registers ? "register_tokens" : name)
    case .huggingFace:
        if let top = huggingFaceTopLevel[name] { return one(top) }
        // blocks.{i}.{rest} → encoder.layer.{i}.{rest as Hugging Face names it}
        let parts = name.split(separator: ".", maxSplits: 2).map(String.init)
        guard parts.count == 3, parts[0] == "blocks" else { return one(name) }
        let layer = "encoder.layer.\(parts[1]).", rest = parts[2]
        if rest == "attn.qkv.weight" || rest == "attn.qkv.bias" {
            var each = shape
            each[0] /= 3
            let suffix = rest == "attn.qkv.weight" ? "weight" : "bias"
            return ParamSource(keys: ["query", "key", "value"].map { (layer + "attention.attention.\($0).\(suffix)", each) })
        }
        return one(layer + (huggingFaceBlock[rest] ?? rest))
    }
}

/// Hugging Face `Dinov2Model` names of the parameters outside the blocks.
private let huggingFaceTopLevel: [String: String] = [
    ViTKeys.classToken: "embeddings.cls_token", ViTKeys.registers: "embeddings.register_tokens",
    ViTKeys.posEmbed: "embeddings.position_embeddings",
    ViTKeys.patchWeight: "embeddings.patch_embeddings.projection.weight", ViTKeys.patchBias: "embeddings.patch_embeddings.projection.bias",
    ViTKeys.normWeight: "layernorm.weight", ViTKeys.normBias: "layernorm.bias"
]

/// Hugging Face names inside a block that differ from timm's (norm1, norm2, mlp.fc1, mlp.fc2 are the same).
private let huggingFaceBlock: [String: String] = [
    "attn.proj.weight": "attention.output.dense.weight", "attn.proj.bias": "attention.output.dense.bias",
    "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1"
]

/// Whether a key that real checkpoints carry is unused by feature extraction by design. Anything
/// else that the table does not consume is an error.
func ignoredByDesign(_ layout: ViTLayout, _ key: String) -> Bool {
    switch layout {
    case .timm: return ["head.weight", "head.bias"].contains(key)
    case .dinov2: return ["mask_token", "head.weight", "head.bias"].contains(key)
    case .huggingFace: return key == "embeddings.mask_token"
    case .eva: return evaIgnoredByDesign(key)
    }
}

// MARK: EVA-02

public enum EVAKeys {
    public static let fcNormWeight = "fc_norm.weight" // (C)
    public static let fcNormBias = "fc_norm.bias" // (C)
}

/// Canonical (timm `EvaBlock`) names of one EVA-02 block's parameters.
public struct EVABlockKeys: Sendable {
    public let norm1Weight, norm1Bias: String // (C)
    public let qkvWeight, qBias, vBias: String // (3C, C), (C), (C): fused layout
    public let qProjWeight, kProjWeight, vProjWeight, qProjBias, vProjBias: String // (C, C), (C): separate layout
    public let attnNormWeight, attnNormBias: String // (C) sub-LN of the attention output
    public let projWeight, projBias: String // (C, C), (C)
    public let norm2Weight, norm2Bias: String // (C)
    public let fc1Weight, fc1Bias: String // (2M, C), (2M): packed [gate; value]
    public let fc1gWeight, fc1gBias, fc1xWeight, fc1xBias: String // (M, C), (M): gate and value apart
    public let mlpNormWeight, mlpNormBias: String // (M) sub-LN of the SwiGLU output
    public let fc2Weight, fc2Bias: String // (C, M), (C)

    public init(block i: Int) {
        let p = "blocks.\(i)."
        norm1Weight = p + "norm1.weight"; norm1Bias = p + "norm1.bias"
        qkvWeight = p + "attn.qkv.weight"; qBias = p + "attn.q_bias"; vBias = p + "attn.v_bias"
        qProjWeight = p + "attn.q_proj.weight"; kProjWeight = p + "attn.k_proj.weight"; vProjWeight = p + "attn.v_proj.weight"
        qProjBias = p + "attn.q_proj.bias"; vProjBias = p + "attn.v_proj.bias"
        attnNormWeight = p + "attn.norm.weight"; attnNormBias = p + "attn.norm.bias"
        projWeight = p + "attn.proj.weight"; projBias = p + "attn.proj.bias"
        norm2Weight = p + "norm2.weight"; norm2Bias = p + "norm2.bias"
        fc1Weight = p + "mlp.fc1.weight"; fc1Bias = p + "mlp.fc1.bias"
        fc1gWeight = p + "mlp.fc1_g.weight"; fc1gBias = p + "mlp.fc1_g.bias"
        fc1xWeight = p + "mlp.fc1_x.weight"; fc1xBias = p + "mlp.fc1_x.bias"
        mlpNormWeight = p + "mlp.norm.weight"; mlpNormBias = p + "mlp.norm.bias"
        fc2Weight = p + "mlp.fc2.weight"; fc2Bias = p + "mlp.fc2.bias"
    }

    /// The block's parameters with their shapes, in model order, as the config's `EVAOptions` has them.
    public func shapes(_ c: ViTConfig) -> [(name: String, shape: [Int])] {
        let C = c.dim, M = c.mlpHidden
        let o = c.eva ?? ViTConfig.EVAOptions(ropeReferenceGrid: nil, qkvFused: true, mlpPacked: true, mlpNorm: false)
        var s: [(name: String, shape: [Int])] = [(norm1Weight, [C]), (norm1Bias, [C])]
        if o.qkvFused {
            s.append((qkvWeight, [3 * C, C]))
            if c.qkvBias { s += [(qBias, [C]), (vBias, [C])] }
        } else {
            s += [(qProjWeight, [C, C])]
            if c.qkvBias { s.append((qProjBias, [C])) }
            s += [(kProjWeight, [C, C]), (vProjWeight, [C, C])]
            if c.qkvBias { s.append((vProjBias, [C])) }
        }
        if o.attentionNorm { s += [(attnNormWeight, [C]), (attnNormBias, [C])] }
        s += [(projWeight, [C, C]), (projBias, [C]), (norm2Weight, [C]), (norm2Bias, [C])]
        if o.mlpPacked {
            s += [(fc1Weight, [2 * M, C]), (fc1Bias, [2 * M])]
        } else {
            s += [(fc1gWeight, [M, C]), (fc1gBias, [M]), (fc1xWeight, [M, C]), (fc1xBias, [M])]
        }
        if o.mlpNorm { s += [(mlpNormWeight, [M]), (mlpNormBias, [M])] }
        s += [(fc2Weight, [C, M]), (fc2Bias, [C])]
        return s
    }
}

/// EVA's original name of a canonical (timm) EVA-02 parameter: `mlp.fc1` ← `mlp.w12`,
/// `mlp.fc1_g` / `fc1_x` ← `mlp.w1` / `w2`, `mlp.fc2` ← `mlp.w3`, `mlp.norm` ← `mlp.ffn_ln`,
/// `attn.norm` ← `attn.inner_attn_ln`, `attn.q_proj.bias` / `v_proj.bias` ← `attn.q_bias` /
/// `v_bias`, and `fc_norm` ← the pretraining model's final `norm` (timm moves it there for MIM
/// checkpoints).
func evaOriginalName(_ name: String) -> String {
    if name == EVAKeys.fcNormWeight { return ViTKeys.normWeight }
    if name == EVAKeys.fcNormBias { return ViTKeys.normBias }
    let renames = [
        (".mlp.fc1_g.", ".mlp.w1."), (".mlp.fc1_x.", ".mlp.w2."), (".mlp.fc1.", ".mlp.w12."), (".mlp.fc2.", ".mlp.w3."),
        (".mlp.norm.", ".mlp.ffn_ln."), (".attn.norm.", ".attn.inner_attn_ln."),
        (".attn.q_proj.bias", ".attn.q_bias"), (".attn.v_proj.bias", ".attn.v_bias")
    ]
    for (timm, eva) in renames where name.contains(timm) {
        return name.replacingOccurrences(of: timm, with: eva)
    }
    return name
}

/// Keys of EVA's original checkpoints that feature extraction does not use, by design: the masked
/// image modelling extras and the rotary tables (recomputed, never loaded, as timm does).
func evaIgnoredByDesign(_ key: String) -> Bool {
    ["mask_token", "lm_head.weight", "lm_head.bias", "head.weight", "head.bias"].contains(key) || key.contains("rope")
}
