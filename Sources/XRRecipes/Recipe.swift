// The recipe: one YAML file describing a few-shot study. Schema documented in docs/recipes.md.
//
// Resolution is layered: built-in defaults (the property initialisers and
// `Recipe.Method.withDefaults`) → the file → `--set key.path=value` overrides. The resolved value
// has every default filled in, so `resolved.yaml` says exactly what ran.
import Foundation
import Yams
import XRTensor
import XRTrain
import XRModels

/// A fully resolved recipe (built-in defaults → file → `--set` overrides). Paths are stored
/// as written; `LoadedRecipe.resolve` makes relative ones absolute (against the recipe's folder).
/// Property names are the YAML keys.
public struct Recipe: Codable, Equatable, Sendable {
    /// The encoder for image manifests.
    public struct Model: Codable, Equatable, Sendable {
        /// Hugging Face folder (`config.json` + weights) or a `.safetensors` file.
        public var path: String
        /// Named architecture for bare checkpoints (`ViTConfig.presetNames`).
        public var preset: String?
        /// Attention heads, for bare checkpoints without a preset.
        public var heads: Int?
        public var batch_size: Int = 8
        /// Explicit image preparation, for checkpoints without `preprocessor_config.json` (or to override it).
        public var preprocessing: Preprocess?
    }
    /// Resize the shorter side to `size`, centre-crop `crop`, normalise with `mean` / `std`.
    public struct Preprocess: Codable, Equatable, Sendable {
        public var size: Int
        public var crop: Int?
        public var mean: [Double]
        public var std: [Double]
        /// bicubic or bilinear.
        public var interpolation: String = "bicubic"
    }
    public struct Subgroup: Codable, Equatable, Sendable {
        public var column: String
        /// Numeric bin edges (e.g. age [0, 40, 60, 120] → "0-40", "40-60", "60-120"); nil = categorical.
        public var bins: [Double]?
    }
    public struct DataSpec: Codable, Equatable, Sendable {
        /// CSV, one row per image (or per feature row): ids, labels, patient, split, subgroup columns.
        public var manifest: String
        /// Image path column (relative to the manifest's folder); also the row id.
        public var image_column: String = "path"
        /// Pipe-separated labels in one column …
        public var label_column: String?
        /// … or one 0/1 column per label (label name → column).
        public var label_columns: [String: String]?
        /// Label names: the binary tasks (multilabel), the classes (multiclass), or the one positive label (binary).
        public var labels: [String]
        /// `multilabel` (one binary task per label), `multiclass` (one task over `labels`) or
        /// `binary` (one label, present or absent).
        public var task: String = "multilabel"
        public var patient_column: String?
        public var split_column: String?
        public var test_fraction: Double = 0.3
        public var subgroups: [String: Subgroup] = [:]
        /// Keep only rows whose column holds one of the listed values (column → values).
        public var `where`: [String: [String]] = [:]
    }
    /// Precomputed features instead of a model.
    public struct Features: Codable, Equatable, Sendable {
        /// A `.safetensors` file (tensors named by `representation`, or `tensor`), a `.npy` (N, D)
        /// matrix, or the `feats.npy` name given to `xrlab embed` (which writes `feats.<tensor>.npy`).
        /// Rows follow the embed sidecar (`feats.json`) when present, else the manifest row for row.
        public var matrix: String
        /// One tensor name to use as is, instead of the tensors `representation` names.
        public var tensor: String?
    }
    /// A probe and its hyperparameter grid. Resolved recipes carry every default.
    public struct Method: Codable, Equatable, Sendable {
        public var name: String
        public var C: [Double]?
        public var cv_min_shots: Int?
        public var default_C: Double?
        public var folds: Int?
        /// Logistic: where feature means and stds come from — `pool` (every training-pool row),
        /// `shots` or `none`.
        public var standardize: String?
        public var k: [Int]?
        public var temperature: Double?
        // Tuning methods (lora, adapter, last_k, bitfit, full).
        public var rank: Int?
        public var alpha: Double?
        public var targets: [String]?
        public var dropout: Double?
        public var adapter_dim: Int?
        public var placement: String?
        public var adapter_scale: Double?
        public var blocks: Int?
        public var epochs: Int?
        public var lr: Double?
        public var batch_size: Int?
        public var accumulate: Int?
        public var weight_decay: Double?
        public var warmup: Double?
        public var label_smoothing: Double?
        public var clip: Double?
        public var layer_decay: Double?
        public var balanced: Bool?
        public var augment: Bool?
        public var hflip: Bool?
        public var patience: Int?
        public var validation: Int?
        public var recompute: Bool?
        public var head_hidden: Int?
        /// Report recipes: the encoder's learning rate as a multiple of the decoder's.
        public var lr_scale: Double?

        public init(name: String) { self.name = name }

        /// Training keys shared by the tuning methods.
        public static let trainingKeys = ["epochs", "lr", "batch_size", "accumulate", "weight_decay", "warmup", "label_smoothing", "clip",
                                          "layer_decay", "balanced", "augment", "hflip", "patience", "validation", "recompute", "head_hidden"]
        /// Methods that tune the encoder (they need `model`, i.e. images).
        public static let tuningMethods = ["lora", "adapter", "last_k", "bitfit", "full"]
        public var isTuning: Bool { Self.tuningMethods.contains(name) }

        /// Encoder settings of report recipes: frozen, or tuned with the decoder.
        public static let reportMethods = ["frozen", "lora", "last_k"]
        public static let reportKeys: [String: [String]] = [
            "frozen": [], "lora": ["rank", "alpha", "targets", "dropout", "lr_scale"], "last_k": ["blocks", "lr_scale"],
        ]

        /// Report-recipe defaults: LoRA r=8, alpha 2r on qkv, encoder lr ×1; last 2 blocks at lr ×0.1.
        public func withReportDefaults() -> Method {
            var m = self
            switch name {
            case "lora": m.rank = rank ?? 8; m.alpha = alpha ?? Double(2 * (rank ?? 8)); m.targets = targets ?? ["qkv"]; m.dropout = dropout ?? 0; m.lr_scale = lr_scale ?? 1
            case "last_k": m.blocks = blocks ?? 2; m.lr_scale = lr_scale ?? 0.1
            default: break
            }
            return m
        }

        /// Values of `standardize` (`XRProbe.Standardization`).
        public static let standardizations = ["pool", "shots", "none"]

        /// Keys that apply to each method.
        public static let keys: [String: [String]] = [
            "logistic": ["C", "cv_min_shots", "default_C", "folds", "standardize"],
            "knn": ["k", "temperature"],
            "prototype": ["temperature"],
            "lora": ["rank", "alpha", "targets", "dropout"] + trainingKeys,
            "adapter": ["adapter_dim", "placement", "adapter_scale"] + trainingKeys,
            "last_k": ["blocks"] + trainingKeys,
            "bitfit": trainingKeys,
            "full": trainingKeys,
        ]

        /// The built-in defaults filled in where the recipe left a key out.
        public func withDefaults() -> Method {
            var m = self
            switch name {
            case "logistic":
                m.C = C ?? [0.01, 0.1, 1, 10]
                m.cv_min_shots = cv_min_shots ?? 4
                m.default_C = default_C ?? 1.0
                m.folds = folds ?? 3
                m.standardize = standardize ?? "pool"
            case "knn":
                m.k = k ?? [20]
                m.temperature = temperature ?? 0.07
            case "prototype":
                m.temperature = temperature ?? 0.07
            default:
                switch name {
                case "lora":
                    m.rank = rank ?? 8; m.alpha = alpha ?? Double(2 * (rank ?? 8)); m.targets = targets ?? ["qkv"]; m.dropout = dropout ?? 0
                case "adapter":
                    m.adapter_dim = adapter_dim ?? 32; m.placement = placement ?? "sequential"; m.adapter_scale = adapter_scale ?? 1
                case "last_k":
                    m.blocks = blocks ?? 2
                default: break
                }
                let fullish = name == "full" || name == "last_k"
                m.epochs = epochs ?? 30
                m.lr = lr ?? (fullish ? 1e-4 : 1e-3)
                m.batch_size = batch_size ?? 8
                m.accumulate = accumulate ?? 1
                m.weight_decay = weight_decay ?? 0.05
                m.warmup = warmup ?? 0.1
                m.label_smoothing = label_smoothing ?? 0.1
                m.clip = clip ?? 1.0
                m.layer_decay = layer_decay ?? (name == "full" ? 0.75 : 1.0)
                m.balanced = balanced ?? true
                m.augment = augment ?? true
                m.hflip = hflip ?? false
                m.patience = patience ?? 10
                m.validation = validation ?? 4
                m.recompute = recompute ?? false
            }
            return m
        }
    }

    public var version: Int = 1
    public var name: String
    public var model: Model?
    public var data: DataSpec
    public var features: Features?
    /// Concatenated image features: `cls`, `pooled` (the model's pre-logits feature), `patch_mean`, `lastN_cls`.
    public var representation: [String] = ["cls"]
    public var methods: [Method]
    /// Labelled examples per class (sorted, unique).
    public var shots: [Int]
    public var seeds: Int = 5
    public var metrics: [String] = ["auroc", "auprc", "balanced_accuracy"]
    public var primary_metric: String = "auroc"
    /// Bootstrap resamples over test images (0 disables).
    public var bootstrap: Int = 1000
    /// Subgroup gaps are flagged at Benjamini–Hochberg q ≤ `fdr` over the study's settings.
    /// Always set when parsed; nil only in recipes stored before the key existed.
    public var subgroups: SubgroupSettings? = nil
    public struct SubgroupSettings: Codable, Equatable, Sendable { public var fdr = 0.05; public init(fdr: Double = 0.05) { self.fdr = fdr } }
    /// `budget.targets` (`auroc=0.85`): report.md gains a "labels needed" table, as `xrlab budget`
    /// computes it. Nil when the key is absent.
    public var budget: BudgetSettings? = nil
    public struct BudgetSettings: Codable, Equatable, Sendable { public var targets: [String]; public init(targets: [String]) { self.targets = targets } }
    /// Run directory.
    public var output: String
    /// Report recipes (`data.task: report`): the decoder, its training and decoding. `shots`
    /// then counts paired training reports (0 = all of them).
    public var report: ReportSettings? = nil

    /// Paired reports instead of labels: a low-data sweep of report generation.
    public var isReport: Bool { data.task == "report" }

    /// Settings of report recipes.
    public struct ReportSettings: Codable, Equatable, Sendable {
        /// findings, impression or both.
        public var target = "both"
        /// Hugging Face tokenizer.json (nil: trained on each cell's training reports).
        public var tokenizer: String? = nil
        public var vocab_size = 2000
        public var dim = 256, layers = 4, heads = 4, max_tokens = 128, pool = 2
        /// cross_attention (every block attends to the visual tokens) or prefix (they precede the text).
        public var visual_input = "cross_attention"
        /// GPT-2-layout safetensors to start the decoder from.
        public var init_from: String? = nil
        /// METEOR 1.5 resources (pycocoevalcap's meteor/ directory, meteor-1.5.jar, or the jar's
        /// layout); needed for the `meteor` metric.
        public var meteor_data: String? = nil
        public var epochs = 10, batch_size = 8
        public var lr = 5e-4, weight_decay = 0.01, warmup = 0.1, label_smoothing = 0.1, clip = 1.0
        public var beams = 3, max_new_tokens = 128, no_repeat_ngram = 3
        public var length_penalty = 1.0
        /// Keep each cell's weights (decoder.safetensors, encoder_tuned.safetensors); drafts and
        /// model.json are always kept.
        public var keep_models = false
        public init() {}
        public static let keys = ["target", "tokenizer", "vocab_size", "dim", "layers", "heads", "max_tokens", "pool", "visual_input", "init_from", "meteor_data", "epochs", "batch_size",
                                  "lr", "weight_decay", "warmup", "label_smoothing", "clip", "beams", "max_new_tokens", "no_repeat_ngram", "length_penalty", "keep_models"]
    }

    public static let knownMetrics = ["auroc", "auprc", "accuracy", "balanced_accuracy", "f1_macro", "ece", "log_loss"]
    public static let knownMethods = ["logistic", "knn", "prototype", "lora", "adapter", "last_k", "bitfit", "full"]
    public static let knownTasks = ["multilabel", "multiclass", "binary", "report"]
    public static let reportMetrics = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d", "ce_precision", "ce_recall", "ce_f1"]
    /// Fields that only say where results go or how finished cells are summarised; they do not
    /// enter the fingerprint.
    public static let outputOnlyFields: Set<String> = ["output", "subgroups", "budget"]

    /// `lastN_cls` → N (nil for other names).
    public static func lastBlocks(_ representation: String) -> Int? {
        guard representation.hasPrefix("last"), representation.hasSuffix("_cls"),
              let n = Int(representation.dropFirst(4).dropLast(4)), n >= 1 else { return nil }
        return n
    }
}

/// A recipe file read and resolved, with where it came from.
public struct LoadedRecipe: Sendable {
    public var recipe: Recipe
    public var file: URL
    /// Folder relative paths are resolved against (the recipe's folder).
    public var baseDirectory: URL
    public var overrides: [String]

    /// A recipe path as a file URL: absolute paths and `~/…` as they are, others relative to the recipe's folder.
    public func resolve(_ path: String) -> URL {
        if path == "~" || path.hasPrefix("~/") { return URL(fileURLWithPath: NSString(string: path).expandingTildeInPath) }
        return path.hasPrefix("/") ? URL(fileURLWithPath: path) : baseDirectory.appendingPathComponent(path)
    }

    /// The recipe with its paths (model, manifest, features, output) made absolute, so it means
    /// the same thing wherever it is read from — what `resolved.yaml` holds and the fingerprint hashes.
    public var absolute: Recipe {
        var a = recipe
        a.model?.path = resolve(recipe.model?.path ?? "").standardizedFileURL.path
        a.data.manifest = resolve(recipe.data.manifest).standardizedFileURL.path
        a.features?.matrix = resolve(recipe.features?.matrix ?? "").standardizedFileURL.path
        a.output = resolve(recipe.output).standardizedFileURL.path
        if let t = recipe.report?.tokenizer { a.report?.tokenizer = resolve(t).standardizedFileURL.path }
        if let t = recipe.report?.init_from { a.report?.init_from = resolve(t).standardizedFileURL.path }
        if let t = recipe.report?.meteor_data { a.report?.meteor_data = resolve(t).standardizedFileURL.path }
        return a
    }

    /// The resolved recipe as YAML (what runs, defaults included): keys in schema order,
    /// numbers written plainly (`0.3`, not `3e-1`), lists of scalars on one line. With
    /// `absolutePaths` (as written to run directories) it can be run again from anywhere.
    public func resolvedYAML(absolutePaths: Bool = false) throws -> String {
        try Self.readableYAML(YAMLEncoder().encode(absolutePaths ? absolute : recipe))
    }

    static func readableYAML(_ yaml: String) throws -> String {
        try YAMLLimits.check(yaml, file: "resolved recipe")
        guard let node = try Yams.compose(yaml: yaml) else { return yaml }
        func tidy(_ n: Node) -> Node {
            switch n {
            case var .scalar(s):
                if s.style == .plain, s.string.contains("e"), let d = Double(s.string), d.isFinite {
                    s.string = d == d.rounded() && abs(d) < 1e15 ? String(format: "%.1f", d) : "\(d)"
                }
                return .scalar(s)
            case var .sequence(q):
                q = Node.Sequence(q.map(tidy), q.tag, q.allSatisfy { if case .scalar = $0 { return true } else { return false } } ? .flow : .block)
                return .sequence(q)
            case let .mapping(m):
                var out = Node.Mapping([], m.tag, .block)
                for (k, v) in m {
                    // Empty maps (no subgroups, no row filter) add nothing to read.
                    if case let .mapping(inner) = v, inner.count == 0 { continue }
                    out[k] = tidy(v)
                }
                return .mapping(out)
            }
        }
        return try Yams.serialize(node: tidy(node))
    }

    /// SHA-256 of the resolved recipe without output-only fields: two runs may share a run
    /// directory only if this matches.
    public var fingerprint: String {
        SHA256.hex(Data(Self.canonicalJSON(fingerprinted).utf8))
    }

    /// The fields that enter the fingerprint, as a JSON object (keys sorted).
    var fingerprinted: [String: Any] {
        var obj = (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(absolute))) as? [String: Any] ?? [:]
        for k in Recipe.outputOnlyFields { obj.removeValue(forKey: k) }
        return obj
    }

    static func canonicalJSON(_ value: Any) -> String {
        (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed]))
            .map { String(decoding: $0, as: UTF8.self) } ?? ""
    }
}

public enum RecipeLoader {
    /// Read, apply `--set key.path=value` overrides, and validate. Throws the first problem
    /// (errors name the file and `line:column`, or the override); `check` returns all of them.
    public static func load(_ url: URL, overrides: [String] = []) throws -> LoadedRecipe {
        let (recipe, problems) = check(url, overrides: overrides)
        if let first = problems.first { throw first }
        guard let recipe else { throw XRError("recipe could not be read", file: url.path) }
        return recipe
    }

    public static func load(text: String, file: URL, overrides: [String] = []) throws -> LoadedRecipe {
        let (recipe, problems) = check(text: text, file: file, overrides: overrides)
        if let first = problems.first { throw first }
        guard let recipe else { throw XRError("recipe could not be read", file: file.path) }
        return recipe
    }

    /// Every schema problem of a recipe file (empty when it is valid, and then the recipe).
    public static func check(_ url: URL, overrides: [String] = []) -> (LoadedRecipe?, [XRError]) {
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            let exists = FileManager.default.fileExists(atPath: url.path)
            return (nil, [XRError(exists ? "cannot read recipe (not UTF-8 text?)" : "recipe not found", file: url.path)])
        }
        return check(text: text, file: url, overrides: overrides)
    }

    public static func check(text: String, file: URL, overrides: [String] = []) -> (LoadedRecipe?, [XRError]) {
        let ctx = ParseContext(file: file.path)
        var root: Node
        do {
            try YAMLLimits.check(text, file: file.path)
        } catch {
            return (nil, [error as? XRError ?? XRError("\(error)", file: file.path)])
        }
        do {
            guard let n = try Yams.compose(yaml: text) else { return (nil, [XRError("recipe is empty", file: file.path)]) }
            root = n
        } catch let e as YamlError {
            return (nil, [XRError("not valid YAML: \(e)", file: file.path, field: yamlErrorPosition(e))])
        } catch {
            return (nil, [XRError("not valid YAML: \(error)", file: file.path)])
        }
        for o in overrides {
            guard let r = ctx.attempt({ try applyOverride(o, to: root, ctx: ctx) }) else { continue }
            root = r
        }
        let recipe = parse(YNode(node: root, path: "", ctx: ctx))
        if let recipe { checkBounds(recipe, root: YNode(node: root, path: "", ctx: ctx)) }
        guard ctx.issues.isEmpty, let recipe else { return (nil, ctx.issues) }
        return (LoadedRecipe(recipe: recipe, file: file, baseDirectory: file.deletingLastPathComponent(), overrides: overrides), [])
    }

    static func yamlErrorPosition(_ e: YamlError) -> String? {
        switch e {
        case let .scanner(_, _, mark, _), let .parser(_, _, mark, _), let .composer(_, _, mark, _):
            return "line \(mark.line):\(mark.column)"
        default: return nil
        }
    }

    /// `a.b.c=value`, `methods.0.k=[5, 10]`: set (or add) a key; the value is read as YAML
    /// (`shots=[1,2,4]` works). Errors name the override.
    static func applyOverride(_ o: String, to root: Node, ctx: ParseContext) throws -> Node {
        guard let eq = o.firstIndex(of: "=") else {
            throw XRError("override must look like key.path=value", file: ctx.file, field: "--set \(o)")
        }
        let keys = o[..<eq].split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        let valueText = String(o[o.index(after: eq)...])
        guard !keys.isEmpty, keys.allSatisfy({ !$0.isEmpty }) else {
            throw XRError("empty key in override", file: ctx.file, field: "--set \(o)")
        }
        var value: Node
        try YAMLLimits.check(valueText, file: ctx.file, field: "--set \(o)")
        do { value = try Yams.compose(yaml: valueText) ?? Node("") } catch {
            throw XRError("override value is not valid YAML", file: ctx.file, field: "--set \(o)")
        }
        value = stripMarks(value)
        var path = ""
        func set(_ node: Node?, _ rest: ArraySlice<String>) throws -> Node {
            guard let k = rest.first else { return value }
            if let node, case var .sequence(seq) = node {
                guard let i = Int(k), i >= 0, i < seq.count else {
                    throw XRError("'\(k)' is not an index of the list at '\(path)' (it has \(seq.count) items)", file: ctx.file, field: "--set \(o)")
                }
                path += "[\(i)]"
                seq[i] = try set(seq[i], rest.dropFirst())
                return .sequence(seq)
            }
            var m: Node.Mapping
            if let node {
                guard case let .mapping(existing) = node else {
                    throw XRError("'\(k)' is set inside '\(path)', which is not a mapping", file: ctx.file, field: "--set \(o)")
                }
                m = existing
            } else {
                m = Node.Mapping([])
            }
            path += path.isEmpty ? k : ".\(k)"
            m[Node(k)] = try set(m[Node(k)], rest.dropFirst())
            return .mapping(m)
        }
        let out = try set(root, keys[...])
        ctx.overrides.append((path, o))
        return out
    }

    /// Override values carry no position in the recipe file.
    static func stripMarks(_ n: Node) -> Node {
        switch n {
        case let .scalar(s): return .scalar(Node.Scalar(s.string, s.tag, s.style))
        case let .sequence(q): return .sequence(Node.Sequence(q.map(stripMarks), q.tag, q.style))
        case let .mapping(m):
            var out = Node.Mapping([], m.tag, m.style)
            for (k, v) in m { out[stripMarks(k)] = stripMarks(v) }
            return .mapping(out)
        }
    }

    // MARK: schema

    static let topKeys = ["version", "name", "model", "data", "features", "representation", "methods",
                          "shots", "seeds", "metrics", "primary_metric", "bootstrap", "subgroups", "budget", "output", "report"]

    /// Parse the whole document, recording every problem in the context; nil when a required
    /// part is missing or wrong.
    static func parse(_ root: YNode) -> Recipe? {
        let ctx = root.ctx
        guard let top = ctx.attempt({ try root.mapping(allowed: topKeys) }) else { return nil }
        func required(_ m: [String: YNode], _ k: String, in node: YNode) -> YNode? {
            guard let v = m[k], !v.isNull else { ctx.record(node.error("missing required key '\(k)'")); return nil }
            return v
        }
        if let v = top["version"] {
            _ = ctx.attempt {
                let n = try v.int()
                guard n == 1 else {
                    throw v.error("recipe version \(n) is not supported (this xrlab reads version 1)",
                                  hint: "upgrade xrlab (this is \(XRLabVersion.string))")
                }
            }
        }
        let name = required(top, "name", in: root).flatMap { n in ctx.attempt { try n.string() } }
        let output = required(top, "output", in: root).flatMap { n in ctx.attempt { try n.string() } }
        let model = top["model"].flatMap { $0.isNull ? nil : parseModel($0) }
        let data = required(top, "data", in: root).flatMap { parseData($0) }
        let features: Recipe.Features? = top["features"].flatMap { f in
            if f.isNull { return nil }
            return ctx.attempt {
                let fm = try f.mapping(allowed: ["matrix", "tensor"])
                guard let matrix = required(fm, "matrix", in: f) else { return nil }
                return Recipe.Features(matrix: try matrix.string(), tensor: try fm["tensor"].map { try $0.string() })
            } ?? nil
        }
        if top["model"].map({ !$0.isNull }) != true && top["features"].map({ !$0.isNull }) != true {
            ctx.record(root.error("the recipe needs either model (to encode the manifest's images) or features (a precomputed matrix)"))
        } else if model != nil && features != nil, let f = top["features"] {
            ctx.record(f.error("give either model or features, not both",
                               hint: "features are precomputed from the images; remove model (or features) from the recipe"))
        }
        var representation = ["cls"]
        if let r = top["representation"] {
            representation = ctx.attempt {
                try r.listOrScalar().map { n in
                    let s = try n.string()
                    guard s == "cls" || s == "pooled" || s == "patch_mean" || Recipe.lastBlocks(s) != nil else {
                        throw n.error("unknown representation '\(s)'", hint: "use cls, pooled, patch_mean, lastN_cls (e.g. last4_cls), or a list of them to concatenate")
                    }
                    return s
                }
            } ?? representation
            if representation.isEmpty { ctx.record(r.error("list at least one representation")) }
            if Set(representation).count != representation.count { ctx.record(r.error("a representation is listed twice")) }
        }
        var methods: [Recipe.Method] = []
        if let mn = required(top, "methods", in: root), let list = ctx.attempt({ try mn.list() }) {
            methods = list.compactMap { parseMethod($0, report: data?.task == "report") }
            if list.isEmpty { ctx.record(mn.error("list at least one method")) }
            var seen = Set<String>()
            for (m, node) in zip(methods, list) where !seen.insert(m.name).inserted {
                ctx.record(node.error("method '\(m.name)' is listed twice", hint: "put all its hyperparameters in one entry (grids are lists)"))
            }
            if top["model"].map({ !$0.isNull }) != true {
                for (m, node) in zip(methods, list) where m.isTuning {
                    ctx.record(node.error("method \(m.name) tunes the encoder, so it needs model (images), not precomputed features",
                                          hint: "give model and the image manifest, or use a probe method (logistic, knn, prototype)"))
                }
            }
        }
        let isReport = data?.task == "report"
        if isReport, let f = top["features"], !f.isNull {
            ctx.record(f.error("a report task trains on images: give model, not features"))
        }
        var shots: [Int] = []
        if let sn = required(top, "shots", in: root) {
            shots = ctx.attempt {
                try sn.listOrScalar().compactMap { n in
                    // Report tasks count paired training reports; `all` (0) uses every one.
                    if isReport, case let .scalar(sc) = n.node, sc.string == "all" { return 0 }
                    let k = try n.int()
                    if isReport {
                        if k < 1 { ctx.record(n.error("the number of training reports must be at least 1 (or all), got \(k)")); return nil }
                        return k
                    }
                    if k < 1 { ctx.record(n.error("shots must be at least 1, got \(k)")); return nil }
                    return k
                }
            } ?? []
            if case let .sequence(q) = sn.node, q.isEmpty { ctx.record(sn.error("list at least one shot count")) }
        }
        let seeds = top["seeds"].flatMap { v in ctx.attempt { () -> Int in
            let n = try v.int()
            if n < 1 { throw v.error("seeds must be at least 1, got \(n)") }
            return n
        } }
        let known = isReport ? Recipe.reportMetrics : Recipe.knownMetrics
        let metrics = top["metrics"].flatMap { v in ctx.attempt { try v.listOrScalar().compactMap { n -> String? in
            let s = try n.string()
            guard known.contains(s) else {
                ctx.record(n.error("unknown metric '\(s)'" + (isReport ? " for a report task" : "") + (closest(s, in: known).map { " — did you mean '\($0)'?" } ?? ""),
                                   hint: "metrics: " + known.joined(separator: ", ")))
                return nil
            }
            return s
        } } }
        let primary = top["primary_metric"].flatMap { v in ctx.attempt { () -> String in
            let s = try v.string()
            guard known.contains(s) else {
                throw v.error("unknown metric '\(s)'" + (isReport ? " for a report task" : "") + (closest(s, in: known).map { " — did you mean '\($0)'?" } ?? ""),
                              hint: "metrics: " + known.joined(separator: ", "))
            }
            return s
        } }
        var report: Recipe.ReportSettings? = nil
        if let rn = top["report"], !rn.isNull {
            if !isReport { ctx.record(rn.error("the report section applies to report tasks only", hint: "set data.task: report")) }
            report = parseReport(rn)
        } else if isReport {
            report = Recipe.ReportSettings()
        }
        // bootstrap: 1000, or {resamples: 1000}.
        let bootstrap = top["bootstrap"].flatMap { v in ctx.attempt { () -> Int in
            var n = v
            if case .mapping = v.node {
                guard let r = try v.mapping(allowed: ["resamples"])["resamples"] else { throw v.error("missing required key 'resamples'") }
                n = r
            }
            let b = try n.int()
            if b < 0 { throw n.error("bootstrap resamples must be ≥ 0 (0 disables it), got \(b)") }
            return b
        } }
        let fdr = top["subgroups"].flatMap { v in ctx.attempt { () -> Double? in
            guard let n = try v.mapping(allowed: ["fdr"])["fdr"] else { return nil }
            let q = try n.double()
            if !(q > 0 && q < 1) { throw n.error("subgroups.fdr must be between 0 and 1 (exclusive), got \(q)", hint: "the false discovery rate, e.g. 0.05") }
            return q
        } ?? nil }

        let budgetTargets = top["budget"].flatMap { v in ctx.attempt { () -> [String]? in
            guard let n = try v.mapping(allowed: ["targets"])["targets"] else { return nil }
            return try n.listOrScalar().map { t in
                let s = try t.string()
                do { _ = try BudgetTarget(parsing: s, field: "budget.targets") } catch let e as XRError {
                    throw t.error(e.message, hint: e.hint)
                }
                return s
            }
        } ?? nil }

        guard let name, let output, let data else { return nil }
        var recipe = Recipe(name: name, model: model, data: data, features: features, representation: representation,
                            methods: methods.map { isReport ? $0.withReportDefaults() : $0.withDefaults() }, shots: Array(Set(shots)).sorted(), output: output)
        if isReport {
            recipe.report = report
            recipe.metrics = ["bleu_4", "rouge_l", "cider_d", "ce_f1"]
            recipe.primary_metric = "cider_d"
            // "all" (0) last.
            recipe.shots = recipe.shots.filter { $0 > 0 } + (recipe.shots.contains(0) ? [0] : [])
        }
        if let seeds { recipe.seeds = seeds }
        if let metrics { recipe.metrics = metrics }
        if let primary { recipe.primary_metric = primary }
        if !recipe.metrics.contains(recipe.primary_metric) { recipe.metrics.insert(recipe.primary_metric, at: 0) }
        if isReport, recipe.metrics.contains("meteor"), recipe.report?.meteor_data == nil, let n = top["metrics"] ?? top["primary_metric"] {
            ctx.record(n.error("the meteor metric needs report.meteor_data",
                               hint: "point report.meteor_data at pycocoevalcap's meteor/ directory, meteor-1.5.jar, or a directory with the jar's layout"))
        }
        if let bootstrap { recipe.bootstrap = bootstrap }
        if !isReport { recipe.subgroups = Recipe.SubgroupSettings(fdr: fdr ?? 0.05) }
        if let budgetTargets, let bad = budgetTargets.first(where: { t in
            (try? BudgetTarget(parsing: t, field: "budget.targets")).map { !recipe.metrics.contains($0.metric) } ?? false }), let n = top["budget"] {
            ctx.record(n.error("budget target '\(bad)' is on a metric the recipe does not compute",
                               hint: "add its metric to `metrics` (now \(recipe.metrics.joined(separator: ", ")))"))
        }
        if let budgetTargets, !budgetTargets.isEmpty {
            if isReport { ctx.record(XRError("budget.targets is not supported for report tasks", file: ctx.file, field: "budget")) }
            else { recipe.budget = Recipe.BudgetSettings(targets: budgetTargets) }
        }
        return recipe
    }

    static func parseModel(_ m: YNode) -> Recipe.Model? {
        let ctx = m.ctx
        guard let mm = ctx.attempt({ try m.mapping(allowed: ["path", "preset", "heads", "batch_size", "preprocessing"]) }) else { return nil }
        guard let pathNode = mm["path"], !pathNode.isNull else { ctx.record(m.error("missing required key 'path'")); return nil }
        guard let path = ctx.attempt({ try pathNode.string() }) else { return nil }
        var model = Recipe.Model(path: path)
        if let v = mm["preset"], !v.isNull {
            model.preset = ctx.attempt {
                let s = try v.string()
                guard ViTPresets.names.contains(s) else {
                    throw v.error("unknown preset '\(s)'" + (closest(s, in: ViTPresets.names).map { " — did you mean '\($0)'?" } ?? ""),
                                  hint: "presets: " + ViTPresets.names.joined(separator: ", "))
                }
                return s
            }
        }
        if let v = mm["heads"], !v.isNull {
            model.heads = ctx.attempt { let h = try v.int(); if h < 1 { throw v.error("heads must be at least 1") }; return h }
        }
        if let v = mm["batch_size"] {
            model.batch_size = ctx.attempt { let b = try v.int(); if b < 1 { throw v.error("batch_size must be at least 1, got \(b)") }; return b } ?? 8
        }
        if let p = mm["preprocessing"], !p.isNull {
            model.preprocessing = ctx.attempt { () -> Recipe.Preprocess? in
                let pm = try p.mapping(allowed: ["size", "crop", "mean", "std", "interpolation"])
                func triple(_ key: String) throws -> [Double] {
                    guard let n = pm[key] else { throw p.error("missing required key '\(key)'") }
                    let v = try n.listOrScalar().map { try $0.double() }
                    guard v.count == 1 || v.count == 3 else { throw n.error("\(key) takes one or three numbers (one per channel)") }
                    if key == "std", v.contains(where: { $0 <= 0 }) { throw n.error("std must be positive") }
                    return v.count == 1 ? [v[0], v[0], v[0]] : v
                }
                guard let sizeNode = pm["size"] else { throw p.error("missing required key 'size'") }
                let size = try sizeNode.int()
                if size < 1 { throw sizeNode.error("size must be at least 1") }
                var out = Recipe.Preprocess(size: size, crop: try pm["crop"].map { try $0.int() }, mean: try triple("mean"), std: try triple("std"))
                if let c = out.crop, c < 1 { throw (pm["crop"] ?? p).error("crop must be at least 1") }
                if let i = pm["interpolation"] {
                    out.interpolation = try i.string()
                    guard ["bicubic", "bilinear"].contains(out.interpolation) else { throw i.error("interpolation must be bicubic or bilinear") }
                }
                return out
            } ?? nil
        }
        return model
    }

    static func parseData(_ dn: YNode) -> Recipe.DataSpec? {
        let ctx = dn.ctx
        guard let d = ctx.attempt({
            try dn.mapping(allowed: ["manifest", "image_column", "label_column", "label_columns", "labels", "task",
                                     "patient_column", "split_column", "test_fraction", "subgroups", "where"])
        }) else { return nil }
        func string(_ key: String) -> String? { d[key].flatMap { n in n.isNull ? nil : ctx.attempt { try n.string() } } }
        let manifest = string("manifest")
        if d["manifest"]?.isNull ?? true { ctx.record(dn.error("missing required key 'manifest'")) }
        var data = Recipe.DataSpec(manifest: manifest ?? "", labels: [])
        if let v = string("image_column") { data.image_column = v }
        data.label_column = string("label_column")
        data.patient_column = string("patient_column")
        data.split_column = string("split_column")
        if let v = d["label_columns"], !v.isNull {
            data.label_columns = ctx.attempt {
                var map: [String: String] = [:]
                for (k, c) in try v.entries() { map[k] = try c.string() }
                return map
            }
        }
        if let v = d["task"] {
            _ = ctx.attempt {
                let t = try v.string()
                guard Recipe.knownTasks.contains(t) else {
                    throw v.error("task must be one of \(Recipe.knownTasks.joined(separator: ", ")), not '\(t)'"
                                  + (closest(t, in: Recipe.knownTasks).map { " — did you mean '\($0)'?" } ?? ""))
                }
                data.task = t
            }
        }
        if data.task == "report" {
            // Paired reports: the manifest's findings / impression (or report) columns, no labels.
            data.labels = ctx.attempt { try d["labels"].map { $0.isNull ? [] : try $0.listOrScalar().map { try $0.string() } } ?? [] } ?? []
            if !data.labels.isEmpty, let n = d["labels"] { ctx.record(n.error("a report task has no labels (reports come from the findings / impression columns)")) }
            if data.split_column == nil { ctx.record(dn.error("a report task needs split_column (train and test rows of the paired manifest)")) }
            if let n = d["subgroups"], !n.isNull {
                ctx.record(n.error("subgroups are not supported for report tasks"))
            }
            return manifest == nil ? nil : data
        }
        if let labelsNode = d["labels"], !labelsNode.isNull {
            data.labels = ctx.attempt { try labelsNode.listOrScalar().map { try $0.string() } } ?? []
            if data.labels.isEmpty, case .sequence = labelsNode.node { ctx.record(labelsNode.error("labels must list at least one label")) }
            if Set(data.labels).count != data.labels.count {
                ctx.record(labelsNode.error("a label is listed twice"))
            } else if Set(data.labels.map(safe)).count != data.labels.count {
                ctx.record(labelsNode.error("labels differing only in punctuation or spaces would share result files",
                                            hint: "rename them so that letters, digits, '-' and '_' tell them apart"))
            }
            if data.task == "multiclass" && data.labels.count == 1 { ctx.record(labelsNode.error("a multiclass task needs at least two classes")) }
            if data.task == "binary" && data.labels.count > 1 {
                ctx.record(labelsNode.error("a binary task has one label (the positive finding); got \(data.labels.count)",
                                            hint: "use task: multilabel for one binary task per label"))
            }
            if let lc = data.label_columns {
                for l in data.labels where lc[l] == nil {
                    ctx.record(labelsNode.error("label '\(l)' has no entry in label_columns"))
                }
            }
        } else {
            ctx.record(dn.error("missing required key 'labels'"))
        }
        // (A key present with a wrong type has its own error already.)
        if data.label_column == nil && data.label_columns == nil && (d["label_column"]?.isNull ?? true) && (d["label_columns"]?.isNull ?? true) {
            ctx.record(dn.error("give label_column (pipe-separated labels) or label_columns (label → 0/1 column)"))
        }
        if data.label_column != nil && data.label_columns != nil, let n = d["label_columns"] {
            ctx.record(n.error("give label_column or label_columns, not both"))
        }
        if data.task == "multiclass", data.label_columns != nil, let n = d["label_columns"] {
            ctx.record(n.error("a multiclass task reads its class from label_column (one class name per row)"))
        }
        if let v = d["test_fraction"] {
            _ = ctx.attempt {
                let f = try v.double()
                guard f > 0 && f < 1 else { throw v.error("test_fraction must be between 0 and 1, got \(f)") }
                data.test_fraction = f
            }
        }
        if let sg = d["subgroups"], !sg.isNull {
            _ = ctx.attempt {
                for (name, node) in try sg.entries() {
                    _ = ctx.attempt {
                        let s = try node.mapping(allowed: ["column", "bins"])
                        guard let column = s["column"] else { throw node.error("missing required key 'column'") }
                        var bins: [Double]? = nil
                        if let b = s["bins"], !b.isNull {
                            let edges = try b.list().map { try $0.double() }
                            if edges.count < 2 || zip(edges, edges.dropFirst()).contains(where: { $0 >= $1 }) {
                                throw b.error("bins must be at least two strictly increasing numbers")
                            }
                            bins = edges
                        }
                        data.subgroups[name] = Recipe.Subgroup(column: try column.string(), bins: bins)
                    }
                }
            }
        }
        if let w = d["where"], !w.isNull {
            _ = ctx.attempt {
                for (column, node) in try w.entries() { data.where[column] = try node.listOrScalar().map { try $0.string() } }
            }
        }
        return manifest == nil ? nil : data
    }

    static func parseReport(_ rn: YNode) -> Recipe.ReportSettings? {
        let ctx = rn.ctx
        guard let m = ctx.attempt({ try rn.mapping(allowed: Recipe.ReportSettings.keys) }) else { return nil }
        var r = Recipe.ReportSettings()
        func int(_ k: String, min lo: Int, _ set: (Int) -> Void) {
            guard let v = m[k] else { return }
            if let x = ctx.attempt({ () -> Int in
                let x = try v.int()
                if x < lo { throw v.error("\(k) must be at least \(lo), got \(x)") }
                return x
            }) { set(x) }
        }
        func double(_ k: String, _ range: ClosedRange<Double>, _ set: (Double) -> Void) {
            guard let v = m[k] else { return }
            if let x = ctx.attempt({ () -> Double in
                let x = try v.double()
                if !range.contains(x) { throw v.error("\(k) must be between \(range.lowerBound) and \(range.upperBound), got \(x)") }
                return x
            }) { set(x) }
        }
        if let v = m["target"] {
            r.target = ctx.attempt {
                let t = try v.string()
                guard ["findings", "impression", "both"].contains(t) else { throw v.error("target must be findings, impression or both, got '\(t)'") }
                return t
            } ?? r.target
        }
        if let v = m["visual_input"] {
            r.visual_input = ctx.attempt { () throws -> String in
                let t = try v.string()
                guard DecoderConfig.visualInputs.contains(t) else {
                    throw v.error("visual_input must be \(DecoderConfig.visualInputs.joined(separator: " or ")), got '\(t)'")
                }
                return t
            } ?? r.visual_input
        }
        if let v = m["tokenizer"], !v.isNull { r.tokenizer = ctx.attempt { try v.string() } }
        if let v = m["init_from"], !v.isNull { r.init_from = ctx.attempt { try v.string() } }
        if let v = m["meteor_data"], !v.isNull { r.meteor_data = ctx.attempt { try v.string() } }
        if let v = m["keep_models"] { r.keep_models = ctx.attempt { try v.bool() } ?? false }
        int("vocab_size", min: 259) { r.vocab_size = $0 }
        int("dim", min: 8) { r.dim = $0 }
        int("layers", min: 1) { r.layers = $0 }
        int("heads", min: 1) { r.heads = $0 }
        int("max_tokens", min: 4) { r.max_tokens = $0 }
        int("pool", min: 1) { r.pool = $0 }
        int("epochs", min: 1) { r.epochs = $0 }
        int("batch_size", min: 1) { r.batch_size = $0 }
        int("beams", min: 1) { r.beams = $0 }
        int("max_new_tokens", min: 1) { r.max_new_tokens = $0 }
        int("no_repeat_ngram", min: 0) { r.no_repeat_ngram = $0 }
        double("lr", 1e-9...1) { r.lr = $0 }
        double("weight_decay", 0...1) { r.weight_decay = $0 }
        double("warmup", 0...1) { r.warmup = $0 }
        double("label_smoothing", 0...0.5) { r.label_smoothing = $0 }
        double("clip", 1e-9...1e9) { r.clip = $0 }
        double("length_penalty", 0...10) { r.length_penalty = $0 }
        if r.dim % r.heads != 0, let v = m["heads"] ?? m["dim"] { ctx.record(v.error("dim \(r.dim) is not divisible by heads \(r.heads)")) }
        return r
    }

    static func parseMethod(_ mn: YNode, report: Bool = false) -> Recipe.Method? {
        let ctx = mn.ctx
        let table = report ? Recipe.Method.reportKeys : Recipe.Method.keys
        let names = report ? Recipe.Method.reportMethods : Recipe.knownMethods
        let all = Array(Set(table.values.flatMap { $0 })).sorted()
        guard let m = ctx.attempt({ try mn.mapping(allowed: ["name"] + all) }) else { return nil }
        guard let nameNode = m["name"] else { ctx.record(mn.error("missing required key 'name'")); return nil }
        guard let name = ctx.attempt({ () -> String in
            let s = try nameNode.string()
            guard names.contains(s) else {
                throw nameNode.error("unknown method '\(s)'" + (report ? " for a report task" : "") + (closest(s, in: names).map { " — did you mean '\($0)'?" } ?? ""),
                                     hint: "methods: " + names.joined(separator: ", ") + (report ? " (how the encoder trains with the decoder)" : ""))
            }
            return s
        }) else { return nil }
        let applies = table[name] ?? []
        for (key, node) in m where key != "name" && !applies.contains(key) {
            ctx.record(node.error("'\(key)' does not apply to method \(name)", hint: "\(name) takes: " + applies.joined(separator: ", ")))
        }
        var method = Recipe.Method(name: name)
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
        if let v = m["C"] { method.C = ctx.attempt { try v.listOrScalar().map { try positive($0, "C") } } }
        if let v = m["default_C"] { method.default_C = ctx.attempt { try positive(v, "default_C") } }
        if let v = m["cv_min_shots"] { method.cv_min_shots = ctx.attempt { try atLeast(v, 2, "cv_min_shots") } }
        if let v = m["folds"] { method.folds = ctx.attempt { try atLeast(v, 2, "folds") } }
        if let v = m["standardize"] {
            method.standardize = ctx.attempt {
                let s = try v.string()
                guard Recipe.Method.standardizations.contains(s) else {
                    throw v.error("unknown standardize '\(s)'" + (closest(s, in: Recipe.Method.standardizations).map { " — did you mean '\($0)'?" } ?? ""),
                                  hint: "standardize: " + Recipe.Method.standardizations.joined(separator: ", "))
                }
                return s
            }
        }
        if let v = m["k"] { method.k = ctx.attempt { try v.listOrScalar().map { try atLeast($0, 1, "k") } } }
        if let v = m["temperature"] { method.temperature = ctx.attempt { try positive(v, "temperature") } }
        func unit(_ n: YNode, _ what: String, max hi: Double = 1) throws -> Double {
            let v = try n.double()
            if v < 0 || v > hi { throw n.error("\(what) must be between 0 and \(hi), got \(v)") }
            return v
        }
        if let v = m["rank"] { method.rank = ctx.attempt { try atLeast(v, 1, "rank") } }
        if let v = m["alpha"] { method.alpha = ctx.attempt { try positive(v, "alpha") } }
        if let v = m["targets"] {
            method.targets = ctx.attempt { try v.listOrScalar().map { try $0.string() } }
            if method.targets?.isEmpty == true { ctx.record(v.error("list at least one target layer pattern (qkv, proj, fc1, fc2, mlp.*)")) }
        }
        if let v = m["dropout"] {
            method.dropout = ctx.attempt {
                let x = try v.double()
                if x < 0 || x >= 1 { throw v.error("dropout must be in [0, 1), got \(x)") }
                return x
            }
        }
        if let v = m["adapter_dim"] { method.adapter_dim = ctx.attempt { try atLeast(v, 1, "adapter_dim") } }
        if let v = m["placement"] {
            method.placement = ctx.attempt {
                let p = try v.string()
                guard ["sequential", "parallel"].contains(p) else { throw v.error("placement must be sequential or parallel, got '\(p)'") }
                return p
            }
        }
        if let v = m["adapter_scale"] { method.adapter_scale = ctx.attempt { try positive(v, "adapter_scale") } }
        if let v = m["blocks"] { method.blocks = ctx.attempt { try atLeast(v, 1, "blocks") } }
        if let v = m["epochs"] { method.epochs = ctx.attempt { try atLeast(v, 1, "epochs") } }
        if let v = m["lr"] { method.lr = ctx.attempt { try positive(v, "lr") } }
        if let v = m["batch_size"] { method.batch_size = ctx.attempt { try atLeast(v, 1, "batch_size") } }
        if let v = m["accumulate"] { method.accumulate = ctx.attempt { try atLeast(v, 1, "accumulate") } }
        if let v = m["weight_decay"] { method.weight_decay = ctx.attempt { try unit(v, "weight_decay") } }
        if let v = m["warmup"] { method.warmup = ctx.attempt { try unit(v, "warmup (a share of all steps)") } }
        if let v = m["label_smoothing"] { method.label_smoothing = ctx.attempt { try unit(v, "label_smoothing", max: 0.5) } }
        if let v = m["clip"] { method.clip = ctx.attempt { try positive(v, "clip") } }
        if let v = m["layer_decay"] { method.layer_decay = ctx.attempt { try unit(v, "layer_decay") } }
        if let v = m["balanced"] { method.balanced = ctx.attempt { try v.bool() } }
        if let v = m["augment"] { method.augment = ctx.attempt { try v.bool() } }
        if let v = m["hflip"] { method.hflip = ctx.attempt { try v.bool() } }
        if let v = m["recompute"] { method.recompute = ctx.attempt { try v.bool() } }
        if let v = m["head_hidden"] { method.head_hidden = ctx.attempt { try atLeast(v, 1, "head_hidden") } }
        if let v = m["lr_scale"] { method.lr_scale = ctx.attempt { try positive(v, "lr_scale") } }
        if let v = m["patience"] { method.patience = ctx.attempt { try atLeast(v, 1, "patience") } }
        if let v = m["validation"] { method.validation = ctx.attempt { try atLeast(v, 0, "validation") } }
        if let c = method.C, c.isEmpty, let v = m["C"] { ctx.record(v.error("list at least one C")) }
        if let k = method.k, k.isEmpty, let v = m["k"] { ctx.record(v.error("list at least one k")) }
        return method
    }
}

/// Preset names of the encoder architectures.
enum ViTPresets {
    static var names: [String] { ViTConfig.presetNames }
}

/// A string key for encoding dictionaries in sorted order.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

extension KeyedEncodingContainer {
    /// Encode a dictionary with its keys in sorted order, so resolved recipes and fingerprints
    /// do not depend on hash seeds.
    mutating func encodeSorted<V: Encodable>(_ dict: [String: V], forKey key: Key) throws {
        var nested = nestedContainer(keyedBy: AnyKey.self, forKey: key)
        for k in dict.keys.sorted() { if let v = dict[k] { try nested.encode(v, forKey: AnyKey(k)) } }
    }
}

extension Recipe.DataSpec {
    enum CodingKeys: String, CodingKey {
        case manifest, image_column, label_column, label_columns, labels, task, patient_column, split_column,
             test_fraction, subgroups, `where`
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(manifest, forKey: .manifest)
        try c.encode(image_column, forKey: .image_column)
        try c.encodeIfPresent(label_column, forKey: .label_column)
        if let lc = label_columns { try c.encodeSorted(lc, forKey: .label_columns) }
        try c.encode(labels, forKey: .labels)
        try c.encode(task, forKey: .task)
        try c.encodeIfPresent(patient_column, forKey: .patient_column)
        try c.encodeIfPresent(split_column, forKey: .split_column)
        try c.encode(test_fraction, forKey: .test_fraction)
        try c.encodeSorted(subgroups, forKey: .subgroups)
        try c.encodeSorted(self.where, forKey: .where)
    }
}
