// LoRA adapters in the Hugging Face PEFT layout: a folder with adapter_config.json and
// adapter_model.safetensors whose names are `base_model.model.<module>.lora_A.weight` /
// `.lora_B.weight`, plus trained `modules_to_save` (the head) as `base_model.model.head.*`.
// A model tuned here loads in PEFT (`PeftModel.from_pretrained(timm_vit, folder)`), and a PEFT
// adapter trained on the same timm ViT loads here.
import Foundation
import XRTensor

public struct PEFTAdapter: Sendable {
    public var rank: Int
    public var alpha: Double
    public var targets: [String]
    public var modulesToSave: [String]
    public var useRSLoRA: Bool
    /// Tensors without the `base_model.model.` prefix.
    public var tensors: [String: Tensor]
    public var metadata: [String: String]

    static let prefix = "base_model.model."

    /// Read and validate a PEFT LoRA folder.
    public static func load(_ dir: URL) throws -> PEFTAdapter {
        let cfgURL = dir.appendingPathComponent("adapter_config.json"), wURL = dir.appendingPathComponent("adapter_model.safetensors")
        guard FileManager.default.fileExists(atPath: cfgURL.path) else { throw XRError("no adapter_config.json (not a PEFT adapter folder)", file: dir.path) }
        guard let obj = (try? JSONSerialization.jsonObject(with: Data(contentsOf: cfgURL))) as? [String: Any] else {
            throw XRError("not a JSON object", file: cfgURL.path)
        }
        func field<T>(_ k: String, _ type: T.Type) throws -> T {
            guard let v = obj[k] as? T else { throw XRError("missing or wrong type", file: cfgURL.path, field: k) }
            return v
        }
        let type = try field("peft_type", String.self)
        guard type == "LORA" else { throw XRError("adapter type '\(type)' is not supported (only LORA)", file: cfgURL.path, field: "peft_type") }
        if obj["use_dora"] as? Bool == true { throw XRError("DoRA adapters are not supported", file: cfgURL.path, field: "use_dora") }
        for k in ["rank_pattern", "alpha_pattern"] {
            if let d = obj[k] as? [String: Any], !d.isEmpty { throw XRError("per-layer ranks / alphas are not supported", file: cfgURL.path, field: k) }
        }
        if let b = obj["bias"] as? String, b != "none" { throw XRError("trained LoRA biases ('\(b)') are not supported", file: cfgURL.path, field: "bias") }
        let rank = try field("r", Int.self)
        let alpha = (obj["lora_alpha"] as? NSNumber)?.doubleValue ?? Double(rank)
        guard let targets = obj["target_modules"] as? [String] else {
            throw XRError(
                "target_modules must be a list of module names (regular-expression strings are not supported)", file: cfgURL.path, field: "target_modules")
        }
        let save = obj["modules_to_save"] as? [String] ?? []
        guard FileManager.default.fileExists(atPath: wURL.path) else { throw XRError("no adapter_model.safetensors", file: dir.path) }
        let f = try SafeTensorsFile(contentsOf: wURL)
        var t: [String: Tensor] = [:]
        for n in f.names {
            guard n.hasPrefix(prefix) else { throw XRError("tensor name does not start with '\(prefix)'", file: wURL.path, field: n) }
            t[String(n.dropFirst(prefix.count))] = try f.tensor(n)
        }
        return PEFTAdapter(
            rank: rank, alpha: alpha, targets: targets, modulesToSave: save, useRSLoRA: obj["use_rslora"] as? Bool ?? false,
            tensors: t, metadata: f.metadata)
    }

    /// Write `model`'s LoRA (and head) as a PEFT folder, atomically per file.
    public static func export(_ model: TrainableViT, to dir: URL, baseSHA256: String? = nil) throws {
        let loras = model.loraLayers
        guard let first = loras.first?.lora else { throw XRError("the model has no LoRA layers to export", field: "method") }
        guard model.config.headHidden == nil else {
            throw XRError(
                "PEFT export needs a linear head (the timm model's `head`); this model has an MLP head", field: "head_hidden",
                hint: "use model.safetensors (merged weights with the MLP head) instead")
        }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var tensors: [(String, Tensor)] = []
        for l in loras { tensors += [(prefix + l.lora!.a.name, l.lora!.a.tensor), (prefix + l.lora!.b.name, l.lora!.b.tensor)] }
        tensors += [(prefix + "head.weight", model.headW.tensor), (prefix + "head.bias", model.headB.tensor)]
        var meta = ["format": "pt"]
        if let baseSHA256 { meta["xrlab_base_sha256"] = baseSHA256 }
        try SafeTensors.write(tensors, metadata: meta, to: dir.appendingPathComponent("adapter_model.safetensors"))
        // Targets as PEFT matches them: the last name component of each adapted layer.
        let targets = Array(Set(loras.map { String($0.name.split(separator: ".").last!) })).sorted()
        let config: [String: Any] = [
            "peft_type": "LORA", "r": first.rank, "lora_alpha": first.alpha, "lora_dropout": 0.0, "target_modules": targets,
            "modules_to_save": ["head"], "bias": "none", "fan_in_fan_out": false, "init_lora_weights": true, "inference_mode": true,
            "use_dora": false, "use_rslora": false, "rank_pattern": [String: Any](), "alpha_pattern": [String: Any](),
            "base_model_name_or_path": NSNull(), "task_type": NSNull(), "revision": NSNull(),
            "layers_to_transform": NSNull(), "layers_pattern": NSNull(),
            "auto_mapping": model.config.encoder.blockKind == .eva02
                ? ["base_model_class": "Eva", "parent_library": "timm.models.eva"]
                : ["base_model_class": "VisionTransformer", "parent_library": "timm.models.vision_transformer"]
        ]
        try AtomicFile.write(
            try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .prettyPrinted]),
            to: dir.appendingPathComponent("adapter_config.json"))
    }
}

extension TrainableViT {
    public var loraLayers: [Linear] { blocks.flatMap(\.linears).filter { $0.lora != nil } }

    /// Load a PEFT LoRA adapter into this model (LoRA layers set up from its config, values
    /// copied, head replaced when the adapter saved it). Names or shapes that do not fit this
    /// model mean the adapter was trained on a different base model.
    public func apply(_ adapter: PEFTAdapter, source: String) throws {
        guard !adapter.useRSLoRA else { throw XRError("rsLoRA scaling is not supported", file: source, field: "use_rslora") }
        let layerNames = Set(blocks.flatMap(\.linears).map(\.name))
        for k in adapter.tensors.keys.sorted() {
            let isHead = k == "head.weight" || k == "head.bias"
            let layer = k.replacingOccurrences(of: ".lora_A.weight", with: "").replacingOccurrences(of: ".lora_B.weight", with: "")
            guard isHead || layerNames.contains(layer) else {
                throw XRError(
                    "adapter tensor has no counterpart in this base model — the adapter was trained on a different base model",
                    file: source, field: k, hint: "this model's adapted layers are named like blocks.0.attn.qkv")
            }
        }
        var initA: [String: Tensor] = [:]
        for (k, v) in adapter.tensors where k.hasSuffix(".lora_A.weight") {
            let layer = blocks.flatMap(\.linears).first { $0.name + ".lora_A.weight" == k }!
            guard v.shape == [adapter.rank, layer.inFeatures] else {
                throw XRError(
                    "shape \(v.shape), this base model needs \([adapter.rank, layer.inFeatures]) — the adapter was trained on a different base model",
                    file: source, field: k)
            }
            initA[k] = v
        }
        try setTrainable(.lora(rank: adapter.rank, alpha: adapter.alpha, targets: adapter.targets), loraInit: initA)
        for l in loraLayers {
            guard let a = adapter.tensors[l.name + ".lora_A.weight"], let b = adapter.tensors[l.name + ".lora_B.weight"] else {
                throw XRError("the adapter targets \(adapter.targets) but has no weights for \(l.name)", file: source, field: l.name + ".lora_A.weight")
            }
            guard b.shape == [l.outFeatures, adapter.rank] else {
                throw XRError(
                    "shape \(b.shape), this base model needs \([l.outFeatures, adapter.rank]) — the adapter was trained on a different base model",
                    file: source, field: l.name + ".lora_B.weight")
            }
            l.lora!.a.assign(a.scalars)
            l.lora!.b.assign(b.scalars)
        }
        if let w = adapter.tensors["head.weight"], let b = adapter.tensors["head.bias"] {
            guard w.shape == headW.shape, b.shape == headB.shape else {
                throw XRError(
                    "head shape \(w.shape), this model's head is \(headW.shape)", file: source, field: "head.weight",
                    hint: "the adapter was trained for a different number of classes")
            }
            headW.assign(w.scalars)
            headB.assign(b.scalars)
        }
    }
}
