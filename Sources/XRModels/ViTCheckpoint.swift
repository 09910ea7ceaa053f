// Checkpoint layouts for the ViT encoder: one key table per layout, strict loading.
import Foundation
import XRTensor
import XRTorch

/// Checkpoint naming schemes xrlab reads.
public enum ViTLayout: String, Codable, Sendable {
    /// timm `vit_*` and timm DINOv2 (`blocks.i.attn.qkv`, `ls1.gamma`, `reg_token`).
    case timm
    /// facebookresearch/dinov2 (`register_tokens`, `mask_token`, `blocks.i.ls1.gamma`).
    case dinov2
    /// Hugging Face `Dinov2Model` / `Dinov2WithRegistersModel` (e.g. RAD-DINO).
    case huggingFace
    /// EVA-02 / EVA-X original names (`mlp.w12`, `mlp.w3`, `mlp.ffn_ln`, `attn.q_bias`, …), as
    /// hustvl/EVA-X saves its checkpoints; timm-named EVA-02 checkpoints are `.timm`.
    case eva
}

/// A loaded encoder and where it came from.
public struct LoadedViT: @unchecked Sendable {
    public var model: ViT
    public var config: ViTConfig
    public var layout: String
    /// The files the weights were read from (for fingerprinting), sorted.
    public var weightFiles: [URL]
    /// `preprocessor_config.json` beside the weights, when present.
    public var preprocessorConfig: URL?
    /// Facts inferred rather than read (e.g. head count), shown to the user.
    public var notes: [String]
    /// A timm hub `config.json` (its `pretrained_cfg` gives the preprocessing), when loaded from one.
    public var timmConfig: URL? = nil
}

/// A set of checkpoint files (safetensors, or PyTorch `.pt` / `.pth` / `.bin` by extension)
/// read as one name space.
struct WeightSource {
    var files: [any TensorStore]
    var owner: [String: any TensorStore] = [:]

    init(_ urls: [URL], stateDictKey: String? = nil) throws {
        files = try urls.map { try ViTLoader.open($0, stateDictKey: stateDictKey) }
        for f in files {
            for n in f.names {
                if let other = owner[n] {
                    throw XRError("tensor appears in two shards (also in \(other.url.lastPathComponent))", file: f.url.path, field: n)
                }
                owner[n] = f
            }
        }
    }

    var names: [String] { owner.keys.sorted() }
    func shape(_ n: String) -> [Int]? { owner[n]?.shape(n) }
    var description: String { files.map(\.url.path).joined(separator: ", ") }
}

/// Reads ViT checkpoints in any supported layout.
public enum ViTLoader {
    /// Open one checkpoint file: PyTorch (`.pt`, `.pth`, `.bin`, read without executing its
    /// pickle; the state dict under `stateDictKey`, else found as `TorchCheckpoint` describes)
    /// or safetensors (anything else).
    public static func open(_ url: URL, stateDictKey: String? = nil) throws -> any TensorStore {
        if TorchCheckpoint.isTorchFile(url) { return try TorchCheckpoint(contentsOf: url, stateDictKey: stateDictKey) }
        if stateDictKey != nil {
            throw XRError("a state-dict key applies to PyTorch checkpoints (.pt, .pth, .bin) only", file: url.path, field: "--state-dict-key")
        }
        return try SafeTensorsFile(contentsOf: url)
    }

    /// Load from a model folder — Hugging Face (`config.json` + `model.safetensors` or a sharded
    /// index) or timm hub (`config.json` with `architecture` + `model.safetensors` or
    /// `pytorch_model.bin`) — or a bare checkpoint file, `.safetensors` or PyTorch `.pt` / `.pth` /
    /// `.bin` (timm or DINOv2 names; the architecture is read off the tensor shapes, the head count
    /// from `preset`, `heads`, or dim / 64; `stateDictKey` chooses a PyTorch file's state dict).
    /// The blocks' linear layers are packed for `precision` (int8: quantised here, once).
    public static func load(
        _ url: URL, preset: ViTConfig? = nil, heads: Int? = nil, stateDictKey: String? = nil, precision: Precision = .fp32
    ) throws -> LoadedViT {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw XRError(
                "model not found", file: url.path, hint: "pass a Hugging Face or timm model folder, a .safetensors file or a PyTorch .pt / .pth / .bin file")
        }
        if isDir.boolValue { return try loadFolder(url, heads: heads, stateDictKey: stateDictKey, precision: precision) }
        let src = try WeightSource([url], stateDictKey: stateDictKey)
        var notes: [String] = []
        let layout: ViTLayout
        if let eva = evaLayout(src) {
            layout = eva
        } else if src.owner["embeddings.patch_embeddings.projection.weight"] != nil {
            layout = .huggingFace
        } else if src.owner["patch_embed.proj.weight"] != nil {
            layout = (src.owner["register_tokens"] != nil || src.owner["mask_token"] != nil) ? .dinov2 : .timm
        } else {
            throw XRError(
                "not a ViT checkpoint: neither 'patch_embed.proj.weight' (timm / DINOv2) nor 'embeddings.patch_embeddings.projection.weight' (Hugging Face) is present",
                file: url.path, field: "patch embedding")
        }
        var config: ViTConfig
        if evaLayout(src) != nil {
            config = try inferEVAConfig(
                src, layout: layout, heads: heads ?? preset?.heads, ropeGrid: preset?.eva?.ropeReferenceGrid, notes: &notes, file: url.path)
        } else {
            config = try inferConfig(src, layout: layout, heads: heads ?? preset?.heads, notes: &notes, file: url.path)
        }
        if let preset { try checkAgainstPreset(config, preset, file: url.path); config.layerNormEps = preset.layerNormEps }
        let model = try build(src, layout: layout, config: config, file: url.path, precision: precision)
        return LoadedViT(
            model: model, config: config, layout: layout.rawValue, weightFiles: [url],
            preprocessorConfig: nil, notes: notes)
    }

    static func loadFolder(_ dir: URL, heads: Int?, stateDictKey: String?, precision: Precision = .fp32) throws -> LoadedViT {
        let cfgURL = dir.appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: cfgURL.path) else {
            throw XRError(
                "model folder has no config.json", file: dir.path, hint: "a Hugging Face or timm model folder holds config.json and model.safetensors")
        }
        if let timm = try TimmHubConfig.read(cfgURL) {
            return try loadTimmFolder(dir, config: timm, heads: heads, stateDictKey: stateDictKey, precision: precision)
        }
        var files: [URL] = []
        let single = dir.appendingPathComponent("model.safetensors")
        let index = dir.appendingPathComponent("model.safetensors.index.json")
        if FileManager.default.fileExists(atPath: single.path) {
            files = [single]
        } else if FileManager.default.fileExists(atPath: index.path) {
            struct Index: Decodable { var weight_map: [String: String] }
            guard let idx = try? JSONDecoder().decode(Index.self, from: Data(contentsOf: index)) else {
                throw XRError("malformed shard index", file: index.path, field: "weight_map")
            }
            files = Set(idx.weight_map.values).sorted().map { dir.appendingPathComponent($0) }
        } else if FileManager.default.fileExists(atPath: dir.appendingPathComponent("pytorch_model.bin").path) {
            files = [dir.appendingPathComponent("pytorch_model.bin")]
        } else {
            throw XRError("model folder has no model.safetensors (or pytorch_model.bin)", file: dir.path)
        }
        let src = try WeightSource(files, stateDictKey: stateDictKey)
        let config = try parseHFConfig(cfgURL, heads: heads)
        let model = try build(src, layout: .huggingFace, config: config, file: src.description, precision: precision)
        let pre = dir.appendingPathComponent("preprocessor_config.json")
        return LoadedViT(
            model: model, config: config, layout: ViTLayout.huggingFace.rawValue, weightFiles: files + [cfgURL],
            preprocessorConfig: FileManager.default.fileExists(atPath: pre.path) ? pre : nil, notes: [])
    }

    /// Hugging Face `Dinov2Config` → ViTConfig.
    static func parseHFConfig(_ url: URL, heads: Int?) throws -> ViTConfig {
        guard let data = try? Data(contentsOf: url),
            let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        else {
            throw XRError("config.json is not a JSON object", file: url.path)
        }
        func int(_ k: String, _ d: Int? = nil) throws -> Int {
            if let v = obj[k] as? NSNumber { return v.intValue }
            if let d { return d }
            throw XRError("missing or non-numeric field", file: url.path, field: k)
        }
        let type = obj["model_type"] as? String ?? ""
        guard type == "dinov2" || type == "dinov2_with_registers" else {
            throw XRError(
                "model_type '\(type)' is not a DINOv2 encoder", file: url.path, field: "model_type",
                hint: "Hugging Face folders are read for Dinov2Model / Dinov2WithRegistersModel (e.g. RAD-DINO)")
        }
        if (obj["use_swiglu_ffn"] as? Bool) == true {
            throw XRError("SwiGLU MLPs (DINOv2 giant) are not supported", file: url.path, field: "use_swiglu_ffn")
        }
        if let act = obj["hidden_act"] as? String, act != "gelu" {
            throw XRError("activation '\(act)' is not supported (only exact GELU)", file: url.path, field: "hidden_act")
        }
        let C = try int("hidden_size")
        let ratio = (obj["mlp_ratio"] as? NSNumber)?.doubleValue ?? 4
        return ViTConfig(
            imageSize: try int("image_size"), patchSize: try int("patch_size"), dim: C,
            depth: try int("num_hidden_layers"), heads: try heads ?? int("num_attention_heads"),
            mlpHidden: Int(Double(C) * ratio), qkvBias: (obj["qkv_bias"] as? Bool) ?? true,
            layerScale: true,
            numRegisters: try int("num_register_tokens", 0), posEmbedPrefix: 1,
            layerNormEps: Float((obj["layer_norm_eps"] as? NSNumber)?.doubleValue ?? 1e-6),
            posEmbedResize: type == "dinov2_with_registers" ? .huggingFaceAntialias : .huggingFace)
    }

    /// Architecture from tensor shapes (bare safetensors files).
    static func inferConfig(_ src: WeightSource, layout: ViTLayout, heads: Int?, notes: inout [String], file: String) throws -> ViTConfig {
        let hf = layout == .huggingFace
        /// The layout's key for a canonical name (the first, for q/k/v stored separately).
        func key(_ canonical: String) -> String { checkpointKeys(layout, canonical, [0]).keys[0].name }
        func shape(_ k: String) throws -> [Int] {
            guard let s = src.shape(k) else { throw XRError("missing key", file: file, field: k) }
            return s
        }
        let pw = try shape(key(ViTKeys.patchWeight))
        guard pw.count == 4, pw[1] == 3, pw[2] == pw[3] else {
            throw XRError("patch embedding weight has shape \(describeShape(pw)), expected (C, 3, P, P)", file: file, field: key(ViTKeys.patchWeight))
        }
        let C = pw[0], P = pw[2]
        let blockPrefix = hf ? "encoder.layer." : "blocks."
        var depth = 0
        for n in src.names where n.hasPrefix(blockPrefix) {
            let rest = n.dropFirst(blockPrefix.count)
            if let i = Int(rest.prefix { $0.isNumber }) { depth = max(depth, i + 1) }
        }
        guard depth > 0 else { throw XRError("no transformer blocks found", file: file, field: blockPrefix + "0") }
        let first = PreNormBlockKeys(block: 0)
        let fc1 = try shape(key(first.fc1Weight))
        let R = src.shape(key(ViTKeys.registers)).map { $0.count == 3 ? $0[1] : 0 } ?? 0
        let pos = try shape(key(ViTKeys.posEmbed))
        guard pos.count == 3 else { throw XRError("position embedding is not (1, T, C)", file: file, field: "pos_embed") }
        var prefix = -1, grid = 0
        for p in (layout == .timm ? [1 + R, 1, 0] : [1]) where pos[1] - p > 0 {
            let g = Int(Double(pos[1] - p).squareRoot().rounded())
            if g * g == pos[1] - p { prefix = p; grid = g; break }
        }
        guard prefix >= 0 else {
            throw XRError("position embedding length \(pos[1]) is not prefix + a square grid", file: file, field: "pos_embed")
        }
        let qkvBias = src.owner[key(first.qkvBias)] != nil
        let ls = src.owner[key(first.ls1)] != nil
        let H = headCount(heads, dim: C, notes: &notes)
        guard C % H == 0 else {
            throw XRError("dim \(C) is not divisible by \(H) heads", file: file, field: "heads")
        }
        return ViTConfig(
            imageSize: grid * P, patchSize: P, dim: C, depth: depth, heads: H, mlpHidden: fc1[0],
            qkvBias: qkvBias, layerScale: ls, numRegisters: R, posEmbedPrefix: prefix,
            posEmbedResize: layout == .timm ? .timm : (hf ? (R > 0 ? .huggingFaceAntialias : .huggingFace) : .dinov2))
    }

    /// The attention heads: as given, else dim / 64 (the ViT-S/B/L and EVA convention), with a note
    /// saying so, since bare checkpoints do not store them.
    static func headCount(_ heads: Int?, dim C: Int, notes: inout [String]) -> Int {
        if let heads { return heads }
        let H = max(1, C / 64)
        notes.append("attention heads not stored in the checkpoint: using dim/64 = \(H) (pass --heads or --preset to set it)")
        return H
    }

    static func checkAgainstPreset(_ c: ViTConfig, _ p: ViTConfig, file: String) throws {
        let pairs: [(String, Int, Int)] = [
            ("dim", p.dim, c.dim), ("depth", p.depth, c.depth), ("patchSize", p.patchSize, c.patchSize),
            ("mlpHidden", p.mlpHidden, c.mlpHidden), ("numRegisters", p.numRegisters, c.numRegisters),
            ("grid", p.grid, c.grid), ("layerScale", p.layerScale ? 1 : 0, c.layerScale ? 1 : 0),
            ("block kind (0 pre-norm ViT, 1 EVA-02)", p.blockKind == .eva02 ? 1 : 0, c.blockKind == .eva02 ? 1 : 0)
        ]
        for (name, want, got) in pairs where want != got {
            throw XRError(
                "checkpoint does not match the preset: \(name) is \(got) in the checkpoint but \(want) in the preset",
                file: file, field: name)
        }
    }

    /// Strict load: every table key present with its exact shape, every checkpoint key used.
    static func build(_ src: WeightSource, layout: ViTLayout, config c: ViTConfig, file: String, precision: Precision = .fp32) throws -> ViT {
        let table = keyTable(layout, c)
        var used = Set<String>()
        var params: [String: [Float]] = [:]
        for (canonical, source) in table {
            var values: [Float] = []
            for (key, shape) in source.keys {
                guard let f = src.owner[key], let keyShape = f.shape(key) else {
                    throw XRError(
                        "missing key (expected shape \(describeShape(shape)))", file: file, field: key,
                        hint: "the checkpoint does not match a \(layout.rawValue)-layout ViT with this config")
                }
                guard keyShape == shape else {
                    throw XRError(
                        "shape mismatch: expected \(describeShape(shape)), checkpoint has \(describeShape(keyShape))",
                        file: f.url.path, field: key, hint: "the checkpoint does not match its config")
                }
                values += try f.tensor(key).scalars
                used.insert(key)
            }
            params[canonical] = values
        }
        let unused = src.names.filter { !used.contains($0) && !ignoredByDesign(layout, $0) }
        if let first = unused.first {
            let shape = src.shape(first).map(describeShape) ?? "?"
            throw XRError(
                "unused key with shape \(shape) (\(unused.count) unused in all: \(unused.prefix(5).joined(separator: ", "))\(unused.count > 5 ? ", …" : ""))",
                file: file, field: first,
                hint: "the checkpoint has parameters this \(layout.rawValue)-layout ViT config does not use; check the layout, depth and options")
        }
        if c.blockKind == .eva02 { return evaModel(&params, config: c, precision: precision) }
        func p(_ k: String) -> [Float] { params[k] ?? [] }
        func opt(_ k: String) -> [Float]? { params[k] }
        let blocks = (0..<c.depth).map { i -> ViTBlockWeights in
            let k = PreNormBlockKeys(block: i)
            return ViTBlockWeights(
                norm1Weight: p(k.norm1Weight), norm1Bias: p(k.norm1Bias), qkvWeight: p(k.qkvWeight), qkvBias: opt(k.qkvBias),
                projWeight: p(k.projWeight), projBias: p(k.projBias), ls1: opt(k.ls1),
                norm2Weight: p(k.norm2Weight), norm2Bias: p(k.norm2Bias), fc1Weight: p(k.fc1Weight), fc1Bias: p(k.fc1Bias),
                fc2Weight: p(k.fc2Weight), fc2Bias: p(k.fc2Bias), ls2: opt(k.ls2))
        }
        let w = ViTWeights(
            clsToken: p(ViTKeys.classToken), registers: p(ViTKeys.registers), posEmbed: p(ViTKeys.posEmbed),
            patchWeight: p(ViTKeys.patchWeight), patchBias: p(ViTKeys.patchBias), blocks: blocks,
            normWeight: p(ViTKeys.normWeight), normBias: p(ViTKeys.normBias))
        return ViT(config: c, weights: w, precision: precision)
    }
}
