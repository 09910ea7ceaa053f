// Reading a recipe's `methods` entries into typed specs, every default filled in here. Each key is
// checked against the method it is given to ("'k' does not apply to method logistic") and each
// value against its range, with the file's line:column (or the `--set` override) in the error.
import Foundation
import XRProbe
import XRTrain
import XRReport

/// One method entry's keys, read with range checks; a bad value is recorded and its default kept.
struct MethodFields {
    let m: [String: YNode]
    var ctx: ParseContext { node.ctx }
    let node: YNode

    private func read<T>(_ key: String, _ body: (YNode) throws -> T) -> T? {
        guard let v = m[key] else { return nil }
        return ctx.attempt { try body(v) }
    }
    func positive(_ n: YNode, _ what: String) throws -> Double {
        let v = try n.double()
        if v <= 0 { throw n.error("\(what) must be positive, got \(v)") }
        return v
    }
    func atLeast(_ n: YNode, _ lo: Int, _ what: String) throws -> Int {
        let v = try n.int()
        if v < lo { throw n.error("\(what) must be at least \(lo), got \(v)") }
        return v
    }
    func positive(_ key: String) -> Double? { read(key) { try positive($0, key) } }
    func atLeast(_ key: String, _ lo: Int) -> Int? { read(key) { try atLeast($0, lo, key) } }
    func bool(_ key: String) -> Bool? { read(key) { try $0.bool() } }
    /// A number in [0, hi]; `what` names it in the error.
    func unit(_ key: String, _ what: String? = nil, max hi: Double = 1) -> Double? {
        read(key) { n in
            let v = try n.double()
            if v < 0 || v > hi { throw n.error("\(what ?? key) must be between 0 and \(hi), got \(v)") }
            return v
        }
    }
    /// A non-empty grid (a list, or one value).
    func grid<T>(_ key: String, _ what: String, _ item: (YNode) throws -> T) -> [T]? {
        guard let v = m[key], let g = ctx.attempt({ try v.listOrScalar().map(item) }) else { return nil }
        if g.isEmpty { ctx.record(v.error("list at least one \(what)")); return nil }
        return g
    }
    /// One of `choices` (with a "did you mean").
    func choice<T: RawRepresentable & CaseIterable>(_ key: String, _: T.Type) -> T? where T.RawValue == String {
        read(key) { n in
            let s = try n.string()
            let names = T.allCases.map(\.rawValue)
            guard let t = T(rawValue: s) else {
                throw n.error(
                    "unknown \(key) '\(s)'" + (closest(s, in: names).map { " — did you mean '\($0)'?" } ?? ""), hint: "\(key): " + names.joined(separator: ", ")
                )
            }
            return t
        }
    }
}

extension RecipeLoader {
    /// One `methods` entry of a recipe of kind `task` (report recipes list report encoders),
    /// defaults filled in.
    static func parseMethod(_ mn: YNode, task: Recipe.TaskKind = .multilabel) -> Recipe.Method? {
        let ctx = mn.ctx
        let report = task == .report
        let names = report ? ReportEncoderSpec.Kind.allCases.map(\.rawValue) : Recipe.MethodName.names(for: task).map(\.rawValue)
        let keys: (String) -> [String] = { name in
            report ? ReportEncoderSpec.Kind(rawValue: name)?.keys ?? [] : Recipe.MethodName(rawValue: name)?.keys ?? []
        }
        let all = Array(Set(names.flatMap(keys))).sorted()
        guard let m = ctx.attempt({ try mn.mapping(allowed: ["name"] + all) }) else { return nil }
        guard let nameNode = m["name"] else { ctx.record(mn.error("missing required key 'name'")); return nil }
        guard
            let name = ctx.attempt({ () -> String in
                let s = try nameNode.string()
                guard names.contains(s) else {
                    let kind = report || task == .retrieval || task == .segmentation || task == .detection ? " for a \(task.rawValue) task" : ""
                    throw nameNode.error(
                        "unknown method '\(s)'" + kind + (closest(s, in: names).map { " — did you mean '\($0)'?" } ?? ""),
                        hint: "methods: " + names.joined(separator: ", ") + (report ? " (how the encoder trains with the decoder)" : ""))
                }
                return s
            })
        else { return nil }
        let applies = keys(name)
        for (key, node) in m where key != "name" && !applies.contains(key) {
            ctx.record(node.error("'\(key)' does not apply to method \(name)", hint: "\(name) takes: " + applies.joined(separator: ", ")))
        }
        let f = MethodFields(m: m.filter { applies.contains($0.key) }, node: mn)
        if report, let kind = ReportEncoderSpec.Kind(rawValue: name) { return .reportEncoder(reportEncoder(kind, f)) }
        guard let method = Recipe.MethodName(rawValue: name) else { return nil }
        switch method {
        case .logistic:
            var s = LogisticSpec()
            s.C = f.grid("C", "C") { try f.positive($0, "C") } ?? s.C
            s.defaultC = f.positive("default_C") ?? s.defaultC
            s.cvMinShots = f.atLeast("cv_min_shots", 2) ?? s.cvMinShots
            s.folds = f.atLeast("folds", 2) ?? s.folds
            s.standardize = f.choice("standardize", Standardization.self) ?? s.standardize
            return .logistic(s)
        case .knn:
            var s = KNNSpec()
            s.k = f.grid("k", "k") { try f.atLeast($0, 1, "k") } ?? s.k
            s.temperature = f.positive("temperature") ?? s.temperature
            return .knn(s)
        case .prototype:
            var s = PrototypeSpec()
            s.temperature = f.positive("temperature") ?? s.temperature
            return .prototype(s)
        case .lora: return .lora(LoRASpec(lora: lora(f), training: training(f, method)))
        case .adapter:
            var s = AdapterSpec()
            s.dim = f.atLeast("adapter_dim", 1) ?? s.dim
            if let v = m["placement"], applies.contains("placement") {
                s.placement =
                    ctx.attempt {
                        let p = try v.string()
                        guard let placement = AdapterPlacement(rawValue: p) else { throw v.error("placement must be sequential or parallel, got '\(p)'") }
                        return placement
                    } ?? s.placement
            }
            s.scale = f.positive("adapter_scale") ?? s.scale
            s.training = training(f, method)
            return .adapter(s)
        case .last_k:
            var s = LastKSpec()
            s.blocks = f.atLeast("blocks", 1) ?? s.blocks
            s.training = training(f, method)
            return .lastK(s)
        case .bitfit: return .bitfit(BitFitSpec(training: training(f, method)))
        case .full: return .full(FullSpec(training: training(f, method)))
        case .cosine: return .cosine(CosineSpec())
        case .linear_projection:
            var s = LinearProjectionSpec()
            if let v = m["shrinkage"] {
                s.shrinkage =
                    ctx.attempt { () -> Double? in
                        if case let .scalar(sc) = v.node, sc.string == "auto" { return nil }
                        let x = try v.double()
                        if !(x >= 0 && x <= 1) { throw v.error("shrinkage must be between 0 and 1 (or auto), got \(x)") }
                        return x
                    } ?? nil
            }
            return .linearProjection(s)
        case .linear_decoder:
            var s = LinearDecoderSpec()
            s.epochs = f.atLeast("epochs", 1) ?? s.epochs
            s.lr = f.positive("lr") ?? s.lr
            s.weightDecay = f.unit("weight_decay") ?? s.weightDecay
            s.batchSize = f.atLeast("batch_size", 1) ?? s.batchSize
            return .linearDecoder(s)
        case .knn_patches:
            var s = KNNPatchesSpec()
            s.k = f.atLeast("k", 1) ?? s.k
            s.temperature = f.positive("temperature") ?? s.temperature
            return .knnPatches(s)
        case .box_head: return .boxHead(parseBoxHead(f))
        }
    }

    static func lora(_ f: MethodFields) -> LoRASettings {
        let d = LoRASettings()
        let rank = f.atLeast("rank", 1) ?? d.rank
        var targets = d.targets
        if let v = f.m["targets"], let t = f.ctx.attempt({ try v.listOrScalar().map { try $0.string() } }) {
            if t.isEmpty { f.ctx.record(v.error("list at least one target layer pattern (qkv, proj, fc1, fc2, mlp.*)")) } else { targets = t }
        }
        var dropout = d.dropout
        if let v = f.m["dropout"] {
            dropout =
                f.ctx.attempt {
                    let x = try v.double()
                    if x < 0 || x >= 1 { throw v.error("dropout must be in [0, 1), got \(x)") }
                    return x
                } ?? dropout
        }
        return LoRASettings(rank: rank, alpha: f.positive("alpha"), targets: targets, dropout: dropout)
    }

    static func training(_ f: MethodFields, _ method: Recipe.MethodName) -> TrainingSpec {
        var t = TrainingSpec(for: method)
        t.epochs = f.atLeast("epochs", 1) ?? t.epochs
        t.lr = f.positive("lr") ?? t.lr
        t.batchSize = f.atLeast("batch_size", 1) ?? t.batchSize
        t.accumulate = f.atLeast("accumulate", 1) ?? t.accumulate
        t.weightDecay = f.unit("weight_decay") ?? t.weightDecay
        t.warmup = f.unit("warmup", "warmup (a share of all steps)") ?? t.warmup
        t.labelSmoothing = f.unit("label_smoothing", max: 0.5) ?? t.labelSmoothing
        t.clip = f.positive("clip") ?? t.clip
        t.layerDecay = f.unit("layer_decay") ?? t.layerDecay
        t.balanced = f.bool("balanced") ?? t.balanced
        t.augment = f.bool("augment") ?? t.augment
        t.hflip = f.bool("hflip") ?? t.hflip
        t.recompute = f.bool("recompute") ?? t.recompute
        t.headHidden = f.atLeast("head_hidden", 1)
        t.patience = f.atLeast("patience", 1) ?? t.patience
        t.validation = f.atLeast("validation", 0) ?? t.validation
        return t
    }

    static func reportEncoder(_ kind: ReportEncoderSpec.Kind, _ f: MethodFields) -> ReportEncoderSpec {
        switch kind {
        case .frozen: return .frozen
        case .lora: return .lora(ReportLoRASpec(lora: lora(f), lrScale: f.positive("lr_scale") ?? ReportLoRASpec().lrScale))
        case .last_k:
            let d = ReportLastKSpec()
            return .lastK(ReportLastKSpec(blocks: f.atLeast("blocks", 1) ?? d.blocks, lrScale: f.positive("lr_scale") ?? d.lrScale))
        }
    }
}
