// Reading YAML nodes with positions, so every recipe error names file and line:column (or the
// `--set` override a value came from). Problems are collected, not thrown one at a time, so
// `xrlab validate` can report all of them.
import Foundation
import Yams
import XRTensor

/// Shared state of one recipe parse: the file, which paths came from `--set`, and the problems found.
final class ParseContext: @unchecked Sendable {
    let file: String
    /// Recipe path (`data.labels`, `methods[0].k`) → the override text that set it.
    var overrides: [(path: String, text: String)] = []
    private(set) var issues: [XRError] = []

    init(file: String) { self.file = file }

    func record(_ e: XRError) { if !issues.contains(e) { issues.append(e) } }

    /// Run `body`; an `XRError` it throws is recorded and nil returned, so parsing goes on.
    func attempt<T>(_ body: () throws -> T) -> T? {
        do { return try body() } catch let e as XRError { record(e); return nil } catch {
            record(XRError("\(error)", file: file)); return nil
        }
    }

    /// The override that set `path` (or one of its parents), if any.
    func override(for path: String) -> String? {
        overrides.last { o in path == o.path || path.hasPrefix(o.path + ".") || path.hasPrefix(o.path + "[") }?.text
    }
}

/// A YAML node with its dotted path in the recipe, for precise errors.
struct YNode {
    let node: Node
    let path: String
    let ctx: ParseContext

    var file: String { ctx.file }

    /// `line 12:3`, or `--set key=value` when the value came from an override.
    var position: String {
        if let o = ctx.override(for: path) { return "--set \(o)" }
        if let m = node.mark { return "line \(m.line):\(m.column)" }
        return "line ?"
    }

    func error(_ message: String, hint: String? = nil) -> XRError {
        XRError(message, file: file, field: "\(position) (\(path.isEmpty ? "top level" : path))", hint: hint)
    }

    func child(_ node: Node, _ key: String) -> YNode {
        YNode(node: node, path: path.isEmpty ? key : "\(path).\(key)", ctx: ctx)
    }

    var isNull: Bool {
        if case let .scalar(s) = node { return s.style == .plain && ["", "~", "null", "Null", "NULL"].contains(s.string) }
        return false
    }

    /// The entries of a mapping. Unknown keys (with a "did you mean") and duplicates are recorded
    /// as problems and left out; a non-mapping throws.
    func mapping(allowed: [String]) throws -> [String: YNode] {
        guard case let .mapping(m) = node else { throw error("expected a mapping (key: value pairs), found \(kind)") }
        var out: [String: YNode] = [:]
        for (k, v) in m {
            guard case let .scalar(ks) = k else { ctx.record(error("mapping keys must be plain strings")); continue }
            let key = ks.string
            let c = child(v, key)
            let keyNode = YNode(node: k, path: c.path, ctx: ctx)
            guard allowed.contains(key) else {
                let suggestion = closest(key, in: allowed)
                ctx.record(
                    keyNode.error(
                        "unknown key '\(key)'" + (suggestion.map { " — did you mean '\($0)'?" } ?? ""),
                        hint: "allowed keys here: " + allowed.joined(separator: ", ")))
                continue
            }
            if out[key] != nil { ctx.record(keyNode.error("duplicate key '\(key)'")); continue }
            out[key] = c
        }
        return out
    }

    /// Entries of a mapping with free-form keys (label → column, subgroup name → spec).
    func entries() throws -> [(String, YNode)] {
        guard case let .mapping(m) = node else { throw error("expected a mapping (key: value pairs), found \(kind)") }
        return try m.map { k, v in
            guard case let .scalar(ks) = k, !ks.string.isEmpty else { throw YNode(node: k, path: path, ctx: ctx).error("keys must be non-empty strings") }
            return (ks.string, child(v, ks.string))
        }
    }

    var kind: String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case let .scalar(s): return "'\(s.string)'"
        }
    }

    func string() throws -> String {
        guard case let .scalar(s) = node, !isNull else { throw error("expected a string, found \(isNull ? "nothing" : kind)") }
        return s.string
    }

    func int() throws -> Int {
        guard case let .scalar(s) = node, let v = Int(s.string) else { throw error("expected a whole number, found \(kind)") }
        return v
    }

    func double() throws -> Double {
        guard case let .scalar(s) = node, let v = Double(s.string), v.isFinite else { throw error("expected a number, found \(kind)") }
        return v
    }

    /// true / false (YAML 1.2 core schema spellings).
    func bool() throws -> Bool {
        guard case let .scalar(s) = node else { throw error("expected true or false, found \(kind)") }
        switch s.string {
        case "true", "True", "TRUE": return true;
        case "false", "False", "FALSE": return false
        default: throw error("expected true or false, found '\(s.string)'")
        }
    }

    func list() throws -> [YNode] {
        if case let .sequence(seq) = node {
            return seq.enumerated().map { YNode(node: $1, path: "\(path)[\($0)]", ctx: ctx) }
        }
        throw error("expected a list, found \(kind)")
    }

    /// A list, or a single scalar read as a one-element list.
    func listOrScalar() throws -> [YNode] {
        if case .scalar = node { return [self] }
        return try list()
    }
}

/// The allowed key nearest to a typo (Levenshtein distance ≤ 3, and less than the key's length),
/// for "did you mean".
func closest(_ key: String, in allowed: [String]) -> String? {
    func distance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev = Array(0...b.count)
        for i in 1...a.count {
            var cur = [i] + [Int](repeating: 0, count: b.count)
            for j in 1...b.count {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            prev = cur
        }
        return prev[b.count]
    }
    let k = Array(key.lowercased())
    let scored = allowed.map { ($0, distance(k, Array($0.lowercased()))) }
        .filter { $0.1 <= 3 && $0.1 < max(k.count, 2) }
        .sorted { $0.1 < $1.1 }
    return scored.first?.0
}
