// Reading a recipe file: YAML limits, `--set key.path=value` overrides, then the schema
// (RecipeValidation.swift); and the resolved recipe as YAML and as a fingerprint.
import Foundation
import Yams
import XRTensor
import XRTrain
import XRModels

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

    /// The recipe with its paths (model, manifest, features, boxes, output) made absolute, so it means
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
        if let b = recipe.data.boxes { a.data.boxes = resolve(b).standardizedFileURL.path }
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
}
