// Reading YAML nodes with positions, so every recipe error names file, line and column.
import Foundation
import Yams
import XRTensor

/// A YAML node with its dotted path in the recipe, for precise errors.
struct YNode {
    let node: Node
    let path: String
    let file: String

    var position: String {
        if let m = node.mark { return "line \(m.line):\(m.column)" }
        return "line ?"
    }

    func error(_ message: String, hint: String? = nil) -> XRError {
        XRError(message, file: file, field: "\(position) (\(path.isEmpty ? "top level" : path))", hint: hint)
    }

    var isNull: Bool {
        if case let .scalar(s) = node { return s.style == .plain && ["", "~", "null", "Null", "NULL"].contains(s.string) }
        return false
    }

    func mapping(allowed: [String]) throws -> [String: YNode] {
        guard case let .mapping(m) = node else { throw error("expected a mapping (key: value pairs), found \(kind)") }
        var out: [String: YNode] = [:]
        for (k, v) in m {
            guard case let .scalar(ks) = k else { throw error("mapping keys must be plain strings") }
            let key = ks.string
            let child = YNode(node: v, path: path.isEmpty ? key : "\(path).\(key)", file: file)
            guard allowed.contains(key) else {
                let keyNode = YNode(node: k, path: child.path, file: file)
                let suggestion = closest(key, in: allowed)
                throw keyNode.error("unknown key '\(key)'" + (suggestion.map { " — did you mean '\($0)'?" } ?? ""),
                                    hint: "allowed keys here: " + allowed.joined(separator: ", "))
            }
            if out[key] != nil { throw keyNode(k).error("duplicate key '\(key)'") }
            out[key] = child
        }
        return out
    }

    private func keyNode(_ k: Node) -> YNode { YNode(node: k, path: path, file: file) }

    var kind: String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case let .scalar(s): return "'\(s.string)'"
        }
    }

    func string() throws -> String {
        guard case let .scalar(s) = node, !isNull else { throw error("expected a string, found \(kind)") }
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

    func bool() throws -> Bool {
        guard case let .scalar(s) = node else { throw error("expected true or false, found \(kind)") }
        switch s.string.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error("expected true or false, found \(kind)")
        }
    }

    func list() throws -> [YNode] {
        if case let .sequence(seq) = node {
            return seq.enumerated().map { YNode(node: $1, path: "\(path)[\($0)]", file: file) }
        }
        throw error("expected a list, found \(kind)")
    }

    /// A list, or a single scalar read as a one-element list.
    func listOrScalar() throws -> [YNode] {
        if case .scalar = node { return [self] }
        return try list()
    }
}

/// The allowed key nearest to a typo (Levenshtein distance ≤ 3), for "did you mean".
func closest(_ key: String, in allowed: [String]) -> String? {
    func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var prev = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var cur = [i] + [Int](repeating: 0, count: b.count)
            for j in 1...max(b.count, 1) where !b.isEmpty {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            prev = cur
        }
        return a.isEmpty ? b.count : prev[b.count]
    }
    let scored = allowed.map { ($0, distance(key, $0)) }.filter { $0.1 <= 3 }.sorted { $0.1 < $1.1 }
    return scored.first?.0
}
