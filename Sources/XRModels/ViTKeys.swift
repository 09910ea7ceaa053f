// The encoder's parameters by name: canonical (timm) names and shapes, written once here, and
// the table of each checkpoint layout that maps them to its own keys. The loader, the export
// for training and the trainable encoder all read these.
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
            }
        }
        s += [(ViTKeys.normWeight, [C]), (ViTKeys.normBias, [C])]
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

/// Keys that real checkpoints carry but feature extraction does not use, by design. Anything
/// else that the table does not consume is an error.
func ignoredByDesign(_ layout: ViTLayout) -> Set<String> {
    switch layout {
    case .timm: return ["head.weight", "head.bias"]
    case .dinov2: return ["mask_token", "head.weight", "head.bias"]
    case .huggingFace: return ["embeddings.mask_token"]
    }
}
