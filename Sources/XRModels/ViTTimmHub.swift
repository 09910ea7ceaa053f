// timm hub folders (what `timm.models.save_for_hf` / the Hugging Face hub ship): config.json with
// `architecture`, `model_args`, `global_pool` and `pretrained_cfg`, beside model.safetensors or
// pytorch_model.bin. The architecture name picks the family; tensor shapes give the sizes.
import Foundation
import XRTensor
import XRTorch

/// The parts of a timm hub `config.json` that decide the encoder.
public struct TimmHubConfig: Sendable {
    public var url: URL
    public var architecture: String
    /// `model_args.num_heads`, when stated.
    public var heads: Int?
    /// An EVA-02 architecture (`eva02_*`), with its RoPE reference grid: `model_args.ref_feat_shape`,
    /// else the (16, 16) every timm EVA-02 architecture is registered with. nil for ViTs.
    public var evaRopeGrid: Int? = nil

    /// The architectures xrlab runs, described for error messages.
    public static let supported =
        "vit_* (timm VisionTransformer: class token, GELU, global_pool 'token'), vit_*_dinov2 / vit_*_reg4_dinov2 and eva02_* (timm Eva: EVA-02 / EVA-X, global_pool 'avg' with fc_norm; not the CLIP towers)"

    /// `model_args` honoured exactly (sizes are read off the tensors and checked against these);
    /// any other argument changes the network in a way xrlab does not follow, and is refused.
    static let knownArgs: Set<String> = [
        "num_classes", "img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "init_values",
        "reg_tokens", "no_embed_class", "dynamic_img_size", "dynamic_img_pad", "in_chans", "global_pool", "class_token",
        "drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate", "pretrained_strict"
    ]

    /// `model_args` of an `eva02_*` architecture honoured exactly; the variant itself is read off the keys.
    static let knownEVAArgs: Set<String> = [
        "num_classes", "img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "qkv_fused",
        "swiglu_mlp", "scale_mlp", "scale_attn_inner", "use_rot_pos_emb", "ref_feat_shape", "dynamic_img_size", "in_chans",
        "global_pool", "class_token", "drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate", "attn_drop_rate",
        "drop_path_rate", "pretrained_strict"
    ]

    /// Heads of the standard sizes, by the size word in the architecture name.
    static let headsBySize: [String: Int] = ["tiny": 3, "small": 6, "base": 12, "large": 16, "huge": 16]

    /// Read `config.json`; nil when it is not a timm config (no `architecture`, e.g. Hugging Face).
    /// - Throws: `XRError` naming the field for an architecture or option xrlab does not run.
    public static func read(_ url: URL) throws -> TimmHubConfig? {
        guard let data = try? Data(contentsOf: url),
            let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        else {
            throw XRError("config.json is not a JSON object", file: url.path)
        }
        guard let arch = o["architecture"] as? String else { return nil }
        let eva = arch.hasPrefix("eva02_") && !arch.contains("clip")
        guard eva || (arch.hasPrefix("vit_") && !arch.contains("quickgelu") && !arch.contains("siglip")) else {
            throw XRError(
                "architecture '\(arch)' is not one xrlab runs", file: url.path, field: "architecture",
                hint: "xrlab runs " + supported)
        }
        let args = o["model_args"] as? [String: Any] ?? [:]
        if eva { return try readEVA(url, o, args, architecture: arch) }
        for k in args.keys.sorted() where !knownArgs.contains(k) {
            throw XRError(
                "model argument '\(k)' is not one xrlab follows", file: url.path, field: "model_args.\(k)",
                hint: "xrlab runs " + supported + " with their default layers")
        }
        for (field, value) in [("global_pool", o["global_pool"]), ("model_args.global_pool", args["global_pool"])] {
            if let v = value, (v as? String) != "token" {
                throw XRError("global_pool '\(v)' is not supported (xrlab pools with the class token, 'token')", file: url.path, field: field)
            }
        }
        if let c = args["class_token"] as? Bool, !c {
            throw XRError("encoders without a class token are not supported", file: url.path, field: "model_args.class_token")
        }
        if let n = args["in_chans"] as? NSNumber, n.intValue != 3 {
            throw XRError("\(n) input channels; xrlab feeds 3", file: url.path, field: "model_args.in_chans")
        }
        var heads = (args["num_heads"] as? NSNumber)?.intValue
        if heads == nil {
            heads = headsBySize.first { arch.contains("_\($0.key)_") }?.value
        }
        return TimmHubConfig(url: url, architecture: arch, heads: heads)
    }

    /// An `eva02_*` config: pooling must be timm Eva's default ('avg', with fc_norm).
    static func readEVA(_ url: URL, _ o: [String: Any], _ args: [String: Any], architecture arch: String) throws -> TimmHubConfig {
        for k in args.keys.sorted() where !knownEVAArgs.contains(k) {
            throw XRError(
                "model argument '\(k)' is not one xrlab follows", file: url.path, field: "model_args.\(k)",
                hint: "xrlab runs " + supported + " with their default layers")
        }
        for (field, value) in [("global_pool", o["global_pool"]), ("model_args.global_pool", args["global_pool"])] {
            if let v = value, (v as? String) != "avg" {
                throw XRError("global_pool '\(v)' is not supported for EVA-02 (xrlab pools the patch tokens with fc_norm, 'avg')", file: url.path, field: field)
            }
        }
        for flag in ["use_rot_pos_emb", "swiglu_mlp", "class_token"] {
            if let v = args[flag] as? Bool, !v {
                throw XRError("EVA-02 encoders without \(flag) are not supported", file: url.path, field: "model_args.\(flag)")
            }
        }
        if let n = args["in_chans"] as? NSNumber, n.intValue != 3 {
            throw XRError("\(n) input channels; xrlab feeds 3", file: url.path, field: "model_args.in_chans")
        }
        var grid = 16
        if let r = args["ref_feat_shape"] {
            let v = (r as? [NSNumber])?.map(\.intValue) ?? (r as? NSNumber).map { [$0.intValue, $0.intValue] }
            guard let v, v.count == 2, v[0] == v[1], v[0] > 0 else {
                throw XRError("expected a square reference grid such as [16, 16]", file: url.path, field: "model_args.ref_feat_shape")
            }
            grid = v[0]
        }
        let heads = (args["num_heads"] as? NSNumber)?.intValue ?? headsBySize.first { arch.contains("_\($0.key)_") }?.value
        return TimmHubConfig(url: url, architecture: arch, heads: heads, evaRopeGrid: grid)
    }
}

extension ViTLoader {
    /// A timm hub folder: weights from `model.safetensors`, else `pytorch_model.bin`; the
    /// architecture read off the tensor shapes in timm names, strictly, with the head count from
    /// `heads`, `model_args.num_heads` or the size in the architecture name.
    static func loadTimmFolder(
        _ dir: URL, config: TimmHubConfig, heads: Int?, stateDictKey: String?, precision: Precision = .fp32
    ) throws -> LoadedViT {
        let st = dir.appendingPathComponent("model.safetensors"), bin = dir.appendingPathComponent("pytorch_model.bin")
        let fm = FileManager.default
        guard let weights = [st, bin].first(where: { fm.fileExists(atPath: $0.path) }) else {
            throw XRError("timm model folder has neither model.safetensors nor pytorch_model.bin", file: dir.path)
        }
        let src = try WeightSource([weights], stateDictKey: stateDictKey)
        guard src.owner["patch_embed.proj.weight"] != nil else {
            throw XRError("not a timm ViT checkpoint: no 'patch_embed.proj.weight'", file: weights.path, field: "patch_embed.proj.weight")
        }
        var notes = ["timm architecture \(config.architecture)"]
        let config2: ViTConfig
        if let grid = config.evaRopeGrid {
            guard evaLayout(src) == .timm else {
                throw XRError(
                    "not a timm EVA-02 checkpoint: no 'blocks.0.attn.q_bias', 'blocks.0.attn.q_proj.weight' or 'blocks.0.mlp.fc1_g.weight'",
                    file: weights.path, field: "blocks.0.attn")
            }
            config2 = try inferEVAConfig(src, layout: .timm, heads: heads ?? config.heads, ropeGrid: grid, notes: &notes, file: weights.path)
        } else {
            config2 = try inferConfig(src, layout: .timm, heads: heads ?? config.heads, notes: &notes, file: weights.path)
        }
        let model = try build(src, layout: .timm, config: config2, file: weights.path, precision: precision)
        return LoadedViT(
            model: model, config: config2, layout: ViTLayout.timm.rawValue, weightFiles: [weights, config.url],
            preprocessorConfig: nil, notes: notes, timmConfig: config.url)
    }
}
