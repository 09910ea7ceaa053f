// The recipe: one YAML file describing a few-shot study. Schema documented in docs/recipes.md.
import Foundation
import Yams
import XRTensor
import XRProbe

/// A fully resolved recipe (built-in defaults → file → `--set` overrides). Paths are stored
/// as written; `baseDirectory` resolves relative ones.
public struct Recipe: Codable, Equatable, Sendable {
    public struct Model: Codable, Equatable, Sendable {
        public var path: String
        public var preset: String?
        public var heads: Int?
        public var batch_size: Int = 8
    }
    public struct Subgroup: Codable, Equatable, Sendable {
        public var column: String
        /// Numeric bin edges (e.g. age [0, 40, 60, 120] → "0-40", "40-60", "60-120"); nil = categorical.
        public var bins: [Double]?
    }
    public struct DataSpec: Codable, Equatable, Sendable {
        public var manifest: String
        public var image_column: String = "path"
        /// Pipe-separated labels in one column …
        public var label_column: String?
        /// … or one 0/1 column per label (label name → column).
        public var label_columns: [String: String]?
        /// Label names: the binary tasks (multilabel) or the classes (multiclass).
        public var labels: [String]
        /// multilabel (one binary task per label) or multiclass (one task over `labels`).
        public var task: String = "multilabel"
        public var patient_column: String?
        public var split_column: String?
        public var test_fraction: Double = 0.3
        public var subgroups: [String: Subgroup] = [:]
        /// Keep only rows whose column holds one of the listed values (column → values).
        public var `where`: [String: [String]] = [:]
    }
    public struct Features: Codable, Equatable, Sendable {
        /// A .safetensors or .npy matrix (N, D), row for row with the manifest.
        public var matrix: String
        /// Tensor name inside a safetensors file.
        public var tensor: String = "cls"
    }
    public struct Method: Codable, Equatable, Sendable {
        public var name: String
        public var C: [Double]?
        public var cv_min_shots: Int?
        public var default_C: Double?
        public var folds: Int?
        public var k: [Int]?
        public var temperature: Double?
    }

    public var version: Int = 1
    public var name: String
    public var model: Model?
    public var data: DataSpec
    public var features: Features?
    public var representation: [String] = ["cls"]
    public var methods: [Method]
    public var shots: [Int]
    public var seeds: Int = 5
    public var metrics: [String] = ["auroc", "auprc", "balanced_accuracy"]
    public var primary_metric: String = "auroc"
    public var bootstrap: Int = 1000
    public var output: String

    public static let knownMetrics = ["auroc", "auprc", "accuracy", "balanced_accuracy", "f1_macro", "ece", "log_loss"]
    public static let knownMethods = ["logistic", "knn", "prototype"]
}

/// A recipe file read and resolved, with where it came from.
public struct LoadedRecipe: Sendable {
    public var recipe: Recipe
    public var file: URL
    /// Folder relative paths are resolved against (the recipe's folder).
    public var baseDirectory: URL
    public var overrides: [String]

    public func resolve(_ path: String) -> URL {
        path.hasPrefix("/") ? URL(fileURLWithPath: path) : baseDirectory.appendingPathComponent(path)
    }

    /// The resolved recipe as YAML (what runs, defaults included).
    public func resolvedYAML() throws -> String { try YAMLEncoder().encode(recipe) }

    /// SHA-256 of the resolved recipe without output-only fields: two runs may share a run
    /// directory only if this matches.
    public var fingerprint: String {
        var r = recipe
        r.output = ""
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return SHA256.hex((try? e.encode(r)) ?? Data())
    }
}

public enum RecipeLoader {
    /// Read, apply `--set key.path=value` overrides, and validate. Errors name the file and
    /// `line:column`, or the override.
    public static func load(_ url: URL, overrides: [String] = []) throws -> LoadedRecipe {
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            throw XRError("cannot read recipe: \(error.localizedDescription)", file: url.path)
        }
        return try load(text: text, file: url, overrides: overrides)
    }

    public static func load(text: String, file: URL, overrides: [String] = []) throws -> LoadedRecipe {
        var root: Node
        do {
            guard let n = try Yams.compose(yaml: text) else { throw XRError("recipe is empty", file: file.path) }
            root = n
        } catch let e as XRError { throw e } catch let e as YamlError {
            throw XRError("not valid YAML: \(e)", file: file.path)
        } catch {
            throw XRError("not valid YAML: \(error)", file: file.path)
        }
        for o in overrides { root = try applyOverride(o, to: root, file: file.path) }
        let recipe = try parse(YNode(node: root, path: "", file: file.path))
        return LoadedRecipe(recipe: recipe, file: file, baseDirectory: file.deletingLastPathComponent(), overrides: overrides)
    }

    /// `a.b.c=value`: set (or add) a key; the value is read as YAML (`shots=[1,2,4]` works).
    static func applyOverride(_ o: String, to root: Node, file: String) throws -> Node {
        guard let eq = o.firstIndex(of: "=") else {
            throw XRError("override must look like key.path=value", file: file, field: "--set \(o)")
        }
        let path = o[..<eq].split(separator: ".").map(String.init)
        let valueText = String(o[o.index(after: eq)...])
        guard !path.isEmpty else { throw XRError("empty key in override", file: file, field: "--set \(o)") }
        let value: Node
        do { value = try Yams.compose(yaml: valueText) ?? Node("") } catch {
            throw XRError("override value is not valid YAML", file: file, field: "--set \(o)")
        }
        func set(_ node: Node, _ keys: ArraySlice<String>) throws -> Node {
            guard let k = keys.first else { return value }
            guard case var .mapping(m) = node else {
                throw XRError("'\(k)' is set inside a value that is not a mapping", file: file, field: "--set \(o)")
            }
            let child = m[Node(k)] ?? Node.mapping(Node.Mapping([]))
            m[Node(k)] = try set(child, keys.dropFirst())
            return .mapping(m)
        }
        return try set(root, path[...])
    }

    static func parse(_ root: YNode) throws -> Recipe {
        let top = try root.mapping(allowed: ["version", "name", "model", "data", "features", "representation", "methods",
                                             "shots", "seeds", "metrics", "primary_metric", "bootstrap", "output"])
        func req(_ m: [String: YNode], _ k: String, in node: YNode) throws -> YNode {
            guard let v = m[k], !v.isNull else { throw node.error("missing required key '\(k)'") }
            return v
        }
        if let v = top["version"] {
            let n = try v.int()
            guard n == 1 else {
                throw v.error("recipe version \(n) is not supported (this xrlab reads version 1)", hint: "upgrade xrlab (it is \(XRLabVersion.string))")
            }
        }
        var model: Recipe.Model?
        if let m = top["model"], !m.isNull {
            let mm = try m.mapping(allowed: ["path", "preset", "heads", "batch_size"])
            model = Recipe.Model(path: try req(mm, "path", in: m).string(), preset: try mm["preset"].map { try $0.string() },
                                 heads: try mm["heads"].map { try $0.int() }, batch_size: try mm["batch_size"]?.int() ?? 8)
            if model?.batch_size ?? 1 < 1 { throw (mm["batch_size"] ?? m).error("batch_size must be at least 1") }
        }
        let dn = try req(top, "data", in: root)
        let d = try dn.mapping(allowed: ["manifest", "image_column", "label_column", "label_columns", "labels", "task",
                                         "patient_column", "split_column", "test_fraction", "subgroups", "where"])
        var data = Recipe.DataSpec(manifest: try req(d, "manifest", in: dn).string(), labels: [])
        if let v = d["image_column"] { data.image_column = try v.string() }
        if let v = d["label_column"] { data.label_column = try v.string() }
        if let v = d["label_columns"] {
            var map: [String: String] = [:]
            guard case let .mapping(m) = v.node else { throw v.error("expected a mapping label → column") }
            for (k, c) in m { map[k.string ?? ""] = try YNode(node: c, path: "\(v.path).\(k.string ?? "")", file: v.file).string() }
            data.label_columns = map
        }
        let labelsNode = try req(d, "labels", in: dn)
        data.labels = try labelsNode.listOrScalar().map { try $0.string() }
        if data.labels.isEmpty { throw labelsNode.error("labels must list at least one label") }
        if Set(data.labels).count != data.labels.count { throw labelsNode.error("labels are listed twice") }
        if let v = d["task"] {
            data.task = try v.string()
            guard ["multilabel", "multiclass"].contains(data.task) else { throw v.error("task must be multilabel or multiclass") }
        }
        if data.task == "multiclass" && data.labels.count < 2 { throw labelsNode.error("a multiclass task needs at least two classes") }
        if data.label_column == nil && data.label_columns == nil { throw dn.error("give label_column (pipe-separated) or label_columns") }
        if let lc = data.label_columns {
            for l in data.labels where lc[l] == nil { throw labelsNode.error("label '\(l)' has no entry in label_columns") }
        }
        if let v = d["patient_column"] { data.patient_column = try v.string() }
        if let v = d["split_column"] { data.split_column = try v.string() }
        if let v = d["test_fraction"] {
            data.test_fraction = try v.double()
            guard data.test_fraction > 0 && data.test_fraction < 1 else { throw v.error("test_fraction must be between 0 and 1") }
        }
        if let sg = d["subgroups"], !sg.isNull {
            guard case let .mapping(m) = sg.node else { throw sg.error("expected a mapping name → {column, bins}") }
            for (k, v) in m {
                let name = k.string ?? ""
                let node = YNode(node: v, path: "\(sg.path).\(name)", file: sg.file)
                let s = try node.mapping(allowed: ["column", "bins"])
                var bins: [Double]? = nil
                if let b = s["bins"] {
                    bins = try b.list().map { try $0.double() }
                    if (bins?.count ?? 0) < 2 || bins != bins?.sorted() { throw b.error("bins must be at least two increasing numbers") }
                }
                data.subgroups[name] = Recipe.Subgroup(column: try req(s, "column", in: node).string(), bins: bins)
            }
        }
        if let w = d["where"], !w.isNull {
            guard case let .mapping(m) = w.node else { throw w.error("expected a mapping column → value or list of values") }
            for (k, v) in m {
                let node = YNode(node: v, path: "\(w.path).\(k.string ?? "")", file: w.file)
                data.where[k.string ?? ""] = try node.listOrScalar().map { try $0.string() }
            }
        }
        var features: Recipe.Features?
        if let f = top["features"], !f.isNull {
            let fm = try f.mapping(allowed: ["matrix", "tensor"])
            features = Recipe.Features(matrix: try req(fm, "matrix", in: f).string(), tensor: try fm["tensor"]?.string() ?? "cls")
        }
        if model == nil && features == nil {
            throw root.error("the recipe needs either model (to encode the manifest's images) or features (a precomputed matrix)")
        }
        var representation = ["cls"]
        if let r = top["representation"] {
            representation = try r.listOrScalar().map { n in
                let s = try n.string()
                guard s == "cls" || s == "patch_mean" || (s.hasPrefix("last") && s.hasSuffix("_cls") && Int(s.dropFirst(4).dropLast(4)) != nil) else {
                    throw n.error("unknown representation '\(s)'", hint: "use cls, patch_mean, lastN_cls (e.g. last4_cls), or a list of them to concatenate")
                }
                return s
            }
        }
        let methodsNode = try req(top, "methods", in: root)
        var methods: [Recipe.Method] = []
        for mn in try methodsNode.list() {
            let m = try mn.mapping(allowed: ["name", "C", "cv_min_shots", "default_C", "folds", "k", "temperature"])
            let nameNode = try req(m, "name", in: mn)
            let name = try nameNode.string()
            guard Recipe.knownMethods.contains(name) else {
                throw nameNode.error("unknown method '\(name)'" + (closest(name, in: Recipe.knownMethods).map { " — did you mean '\($0)'?" } ?? ""),
                                     hint: "methods: " + Recipe.knownMethods.joined(separator: ", "))
            }
            var method = Recipe.Method(name: name)
            if let v = m["C"] {
                method.C = try v.listOrScalar().map { n in let c = try n.double(); if c <= 0 { throw n.error("C must be positive") }; return c }
            }
            if let v = m["cv_min_shots"] { method.cv_min_shots = try v.int() }
            if let v = m["default_C"] { method.default_C = try v.double() }
            if let v = m["folds"] { method.folds = try v.int(); if (method.folds ?? 0) < 2 { throw v.error("folds must be at least 2") } }
            if let v = m["k"] {
                method.k = try v.listOrScalar().map { n in let k = try n.int(); if k < 1 { throw n.error("k must be at least 1") }; return k }
            }
            if let v = m["temperature"] { method.temperature = try v.double(); if (method.temperature ?? 0) <= 0 { throw v.error("temperature must be positive") } }
            let extra: [String]
            switch name {
            case "logistic": extra = ["k", "temperature"].filter { m[$0] != nil }
            case "knn": extra = ["C", "cv_min_shots", "default_C", "folds"].filter { m[$0] != nil }
            default: extra = ["C", "cv_min_shots", "default_C", "folds", "k"].filter { m[$0] != nil }
            }
            if let e = extra.first, let n = m[e] { throw n.error("'\(e)' does not apply to method \(name)") }
            methods.append(method)
        }
        if methods.isEmpty { throw methodsNode.error("list at least one method") }
        let shotsNode = try req(top, "shots", in: root)
        let shots = try shotsNode.listOrScalar().map { n in let k = try n.int(); if k < 1 { throw n.error("shots must be at least 1, got \(k)") }; return k }
        if shots.isEmpty { throw shotsNode.error("list at least one shot count") }
        var recipe = Recipe(name: try req(top, "name", in: root).string(), model: model, data: data, features: features,
                            representation: representation, methods: methods, shots: Array(Set(shots)).sorted(),
                            output: try req(top, "output", in: root).string())
        if let v = top["seeds"] { recipe.seeds = try v.int(); if recipe.seeds < 1 { throw v.error("seeds must be at least 1") } }
        if let v = top["metrics"] {
            recipe.metrics = try v.listOrScalar().map { n in
                let s = try n.string()
                guard Recipe.knownMetrics.contains(s) else {
                    throw n.error("unknown metric '\(s)'" + (closest(s, in: Recipe.knownMetrics).map { " — did you mean '\($0)'?" } ?? ""),
                                  hint: "metrics: " + Recipe.knownMetrics.joined(separator: ", "))
                }
                return s
            }
        }
        if let v = top["primary_metric"] {
            recipe.primary_metric = try v.string()
            guard Recipe.knownMetrics.contains(recipe.primary_metric) else { throw v.error("unknown metric '\(recipe.primary_metric)'") }
        }
        if !recipe.metrics.contains(recipe.primary_metric) { recipe.metrics.insert(recipe.primary_metric, at: 0) }
        if let v = top["bootstrap"] { recipe.bootstrap = try v.int(); if recipe.bootstrap < 0 { throw v.error("bootstrap must be ≥ 0 (0 disables it)") } }
        return recipe
    }
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
