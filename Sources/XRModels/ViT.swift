// Vision Transformer encoder (ViT, DINOv2, RAD-DINO). Dimension letters: B batch, T tokens
// (prefix + patches), N patches, C channels, H heads, M MLP hidden, P patch size, R registers.
import Foundation
import XRTensor

/// Architecture of a ViT encoder. Codable, so it is written into every run output.
///
/// References: Dosovitskiy et al. 2021 (ViT); Oquab et al. 2024 (DINOv2); Darcet et al. 2024
/// (registers); Pérez-García et al. 2025 (RAD-DINO).
public struct ViTConfig: Codable, Sendable, Equatable {
    /// How learned position embeddings are resized to a new patch grid, following each
    /// reference implementation exactly.
    public enum PosEmbedResize: String, Codable, Sendable {
        /// timm `resample_abs_pos_embed`: bicubic to the new grid size, antialias=True.
        case timm
        /// transformers `Dinov2Embeddings.interpolate_pos_encoding`: bicubic to size, antialias=False.
        case huggingFace
        /// transformers `Dinov2WithRegistersEmbeddings.interpolate_pos_encoding`: bicubic to size, antialias=True.
        case huggingFaceAntialias
        /// facebookresearch/dinov2: bicubic with scale factor (new + 0.1) / old, antialias=False.
        case dinov2
    }

    /// The transformer block the encoder is built from. Each kind has one key list
    /// (`PreNormBlockKeys`, `EVABlockKeys`) and one forward (`PreNormBlock`, `EVABlock`); a new
    /// kind is a new case with its own keys and block beside them.
    public enum BlockKind: String, Codable, Sendable {
        /// timm `Block` / DINOv2 `NestedTensorBlock`: x += ls1 ⊙ proj(attn(LN1 x));
        /// x += ls2 ⊙ fc2(GELU(fc1(LN2 x))), fused qkv, optional LayerScale, exact (erf) GELU.
        case preNorm
        /// EVA-02 / EVA-X (timm `EvaBlock`, `EVAOptions` says which variant):
        /// x += proj(LN_a(attn(RoPE(q), RoPE(k), v)));  x += fc2(LN_m(SiLU(g) ⊙ v)), [g | v] = fc1(LN2 x),
        /// fused qkv with q / v biases only, 2-D rotary position embeddings on the patch tokens'
        /// queries and keys, SwiGLU MLP, optional sub-LayerNorms LN_a / LN_m, no LayerScale; pooled by
        /// `fc_norm` of the patch-token mean with no final norm. Keys: `EVABlockKeys`; block: `EVABlock`.
        case eva02
    }

    /// What varies among EVA-02 encoders (timm `Eva` arguments), for `BlockKind.eva02`.
    public struct EVAOptions: Codable, Sendable, Equatable {
        /// RoPE reference grid (timm / EVA `ref_feat_shape`): patch coordinates are rescaled so the
        /// grid spans this many positions per side; nil uses plain integer positions.
        public var ropeReferenceGrid: Int?
        /// One (3C, C) `attn.qkv` with `q_bias` / `v_bias` (EVA-X Ti / S), else separate
        /// `q_proj` / `k_proj` / `v_proj` with biases on q and v (EVA-X B).
        public var qkvFused: Bool
        /// One (2M, C) `mlp.fc1` (EVA `w12`), else `fc1_g` / `fc1_x` (EVA `w1` / `w2`).
        public var mlpPacked: Bool
        /// The sub-LayerNorm on the SwiGLU output before fc2 (timm `scale_mlp`, EVA `ffn_ln`).
        public var mlpNorm: Bool
        /// The sub-LayerNorm on the attention output before proj (timm `scale_attn_inner`, EVA `inner_attn_ln`).
        public var attentionNorm: Bool

        public init(ropeReferenceGrid: Int?, qkvFused: Bool, mlpPacked: Bool, mlpNorm: Bool, attentionNorm: Bool = false) {
            self.ropeReferenceGrid = ropeReferenceGrid
            self.qkvFused = qkvFused
            self.mlpPacked = mlpPacked
            self.mlpNorm = mlpNorm
            self.attentionNorm = attentionNorm
        }
    }

    /// Native image size (the position-embedding grid is imageSize / patchSize).
    public var imageSize: Int
    public var patchSize: Int
    public var dim: Int
    public var depth: Int
    public var heads: Int
    public var mlpHidden: Int
    public var qkvBias: Bool = true
    public var layerScale: Bool
    public var numRegisters: Int = 0
    /// Prefix tokens (CLS, registers) that carry a position embedding: 0, 1 (CLS) or 1 + R.
    public var posEmbedPrefix: Int = 1
    public var layerNormEps: Float = 1e-6
    public var posEmbedResize: PosEmbedResize
    /// The block kind; nil means `.preNorm` (optional, so configs written before it existed read
    /// unchanged and pre-norm configs are written as before).
    public var block: BlockKind? = nil
    /// The block kind, `.preNorm` unless set.
    public var blockKind: BlockKind { block ?? .preNorm }
    /// The EVA-02 variant, for `.eva02` (nil otherwise, and absent from configs written before it).
    public var eva: EVAOptions? = nil

    public init(
        imageSize: Int, patchSize: Int, dim: Int, depth: Int, heads: Int, mlpHidden: Int? = nil,
        qkvBias: Bool = true, layerScale: Bool = false, numRegisters: Int = 0, posEmbedPrefix: Int = 1,
        layerNormEps: Float = 1e-6, posEmbedResize: PosEmbedResize = .timm
    ) {
        self.imageSize = imageSize
        self.patchSize = patchSize
        self.dim = dim
        self.depth = depth
        self.heads = heads
        self.mlpHidden = mlpHidden ?? 4 * dim
        self.qkvBias = qkvBias
        self.layerScale = layerScale
        self.numRegisters = numRegisters
        self.posEmbedPrefix = posEmbedPrefix
        self.layerNormEps = layerNormEps
        self.posEmbedResize = posEmbedResize
    }

    /// The native patch grid side.
    public var grid: Int { imageSize / patchSize }
    /// Prefix tokens in the sequence: CLS + registers.
    public var prefixTokens: Int { 1 + numRegisters }
    /// Tokens at the native grid: prefix + grid².
    public var tokens: Int { prefixTokens + grid * grid }

    /// The same encoder for square inputs of `size` pixels (a multiple of the patch size): the
    /// configuration of the weights `ViT.timmTensors(size:)` exports, position embeddings at that grid.
    public func resized(to size: Int) -> ViTConfig {
        var c = self
        c.imageSize = size
        return c
    }

    // MARK: presets

    public static let vitTiny16 = ViTConfig(imageSize: 224, patchSize: 16, dim: 192, depth: 12, heads: 3)
    public static let vitSmall16 = ViTConfig(imageSize: 224, patchSize: 16, dim: 384, depth: 12, heads: 6)
    public static let vitBase16 = ViTConfig(imageSize: 224, patchSize: 16, dim: 768, depth: 12, heads: 12)
    public static let vitBase14at518 = ViTConfig(imageSize: 518, patchSize: 14, dim: 768, depth: 12, heads: 12)
    public static let dinov2Small14 = ViTConfig(
        imageSize: 518, patchSize: 14, dim: 384, depth: 12, heads: 6,
        layerScale: true, posEmbedResize: .dinov2)
    public static let dinov2Base14 = ViTConfig(
        imageSize: 518, patchSize: 14, dim: 768, depth: 12, heads: 12,
        layerScale: true, posEmbedResize: .dinov2)
    public static let dinov2Small14Reg4 = ViTConfig(
        imageSize: 518, patchSize: 14, dim: 384, depth: 12, heads: 6,
        layerScale: true, numRegisters: 4, posEmbedResize: .dinov2)
    public static let dinov2Base14Reg4 = ViTConfig(
        imageSize: 518, patchSize: 14, dim: 768, depth: 12, heads: 12,
        layerScale: true, numRegisters: 4, posEmbedResize: .dinov2)
    /// RAD-DINO (microsoft/rad-dino): DINOv2 ViT-B/14 at 518 px in the Hugging Face layout.
    public static let radDino = ViTConfig(
        imageSize: 518, patchSize: 14, dim: 768, depth: 12, heads: 12,
        layerScale: true, posEmbedResize: .huggingFace)

    /// EVA-X (hustvl/EVA-X `eva_x.py`): EVA-02 at 224 px, patch 16, mlp_ratio 4·2/3, RoPE reference grid 14.
    static func evaX(dim: Int, heads: Int, base: Bool) -> ViTConfig {
        var c = ViTConfig(imageSize: 224, patchSize: 16, dim: dim, depth: 12, heads: heads, mlpHidden: Int(Double(dim) * (4.0 * 2.0 / 3.0)))
        c.block = .eva02
        c.eva = EVAOptions(ropeReferenceGrid: 14, qkvFused: !base, mlpPacked: !base, mlpNorm: base)
        return c
    }
    /// EVA-X Ti/16 (`eva_x_tiny_patch16`): dim 192, 3 heads, fused qkv, packed SwiGLU.
    public static let evaXTiny16 = evaX(dim: 192, heads: 3, base: false)
    /// EVA-X S/16 (`eva_x_small_patch16`): dim 384, 6 heads, fused qkv, packed SwiGLU.
    public static let evaXSmall16 = evaX(dim: 384, heads: 6, base: false)
    /// EVA-X B/16 (`eva_x_base_patch16`): dim 768, 12 heads, separate q/k/v, SwiGLU with sub-LN.
    public static let evaXBase16 = evaX(dim: 768, heads: 12, base: true)

    public static let presets: [String: ViTConfig] = [
        "vitTiny16": .vitTiny16, "vitSmall16": .vitSmall16, "vitBase16": .vitBase16,
        "vitBase14at518": .vitBase14at518,
        "dinov2Small14": .dinov2Small14, "dinov2Base14": .dinov2Base14,
        "dinov2Small14Reg4": .dinov2Small14Reg4, "dinov2Base14Reg4": .dinov2Base14Reg4,
        "radDino": .radDino,
        "evaXTiny16": .evaXTiny16, "evaXSmall16": .evaXSmall16, "evaXBase16": .evaXBase16
    ]
    public static var presetNames: [String] { presets.keys.sorted() }
    public static func preset(named name: String) -> ViTConfig? { presets[name] }
}

/// Parameters of one pre-norm transformer block. Linear weights are (out, in), as in PyTorch.
struct ViTBlockWeights: Sendable {
    var norm1Weight, norm1Bias: [Float] // (C)
    var qkvWeight: [Float] // (3C, C), rows [q; k; v]
    var qkvBias: [Float]? // (3C)
    var projWeight, projBias: [Float] // (C, C), (C)
    var ls1: [Float]? // (C)
    var norm2Weight, norm2Bias: [Float] // (C)
    var fc1Weight, fc1Bias: [Float] // (M, C), (M)
    var fc2Weight, fc2Bias: [Float] // (C, M), (C)
    var ls2: [Float]? // (C)
}

/// All parameters of a ViT encoder.
struct ViTWeights: Sendable {
    var clsToken: [Float] // (C)
    var registers: [Float] // (R, C)
    var posEmbed: [Float] // (posEmbedPrefix + grid², C)
    var patchWeight, patchBias: [Float] // (C, 3·P·P), (C)
    var blocks: [ViTBlockWeights]
    /// The EVA-02 blocks (`BlockKind.eva02`; `blocks` is then empty).
    var evaBlocks: [EVABlockWeights] = []
    /// The final LayerNorm; for EVA-02 the `fc_norm` applied to the pooled patch mean.
    var normWeight, normBias: [Float] // (C)
}

/// Encoder outputs, all after the final LayerNorm (EVA-02, whose final norm is `fc_norm` on the
/// pooled mean: all before it, as timm's `forward_features` returns them); register tokens are
/// excluded from the patch tokens and their mean.
public struct ViTOutput: Sendable {
    /// (B, C)
    public var cls: Tensor
    /// (B, C) mean over patch tokens.
    public var patchMean: Tensor
    /// (B, N, C)
    public var patchTokens: Tensor
    /// CLS of each of the last n blocks, oldest first, each (B, C), normalised by the final
    /// LayerNorm (DINOv2's `get_intermediate_layers(n, norm=True)` / linear-probe protocol).
    public var lastBlocksCLS: [Tensor]

    /// (B, C) the model's own pre-logits feature, as timm's `forward_head(pre_logits=True)`
    /// computes it: the class token after the final LayerNorm for timm ViT, DINOv2 and Hugging
    /// Face Dinov2 (`global_pool='token'`, no `fc_norm`); `fc_norm` of the patch-token mean for
    /// EVA-02 / EVA-X (`global_pool='avg'`).
    public var pooled: Tensor
}
