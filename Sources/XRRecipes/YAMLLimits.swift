// A bounded pre-scan of YAML text before it is composed into a tree. Composing is recursive, so a
// value nested thousands of levels deep (`x: [[[[…]]]]`) would overflow the stack; aliases can
// repeat a subtree exponentially ("billion laughs"). libyaml's event parser is iterative, so
// walking its events measures depth and size with constant stack and stops at the limit.
import Foundation
import CYaml
import XRTensor

enum YAMLLimits {
    /// Throw when `text` nests deeper than `Limits.yamlDepth` or holds more than
    /// `Limits.yamlNodes` nodes (an alias counts as the nodes it repeats). Syntax errors are left
    /// for the composer, which reports them with their position. `field` names where the text
    /// came from when it is not the file itself (a `--set` override).
    static func check(
        _ text: String, file: String, field: String? = nil,
        maxDepth: Int = Limits.yamlDepth, maxNodes: Int = Limits.yamlNodes
    ) throws {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { throw XRError("YAML parser: out of memory", file: file) }
        defer { yaml_parser_delete(&parser) }
        let bytes = Array(text.utf8)
        try bytes.withUnsafeBufferPointer { buf in
            yaml_parser_set_input_string(&parser, buf.baseAddress, buf.count)
            // Open collections: node count when each started, and its anchor.
            var open: [(start: Int, anchor: String?)] = []
            var anchored: [String: Int] = [:]
            var nodes = 0
            func position(_ m: yaml_mark_t) -> String { "line \(m.line + 1):\(m.column + 1)" }
            func fail(_ what: String, _ mark: yaml_mark_t, hint: String) -> XRError {
                XRError(what, file: file, field: field ?? position(mark), hint: hint)
            }
            func anchor(_ p: UnsafeMutablePointer<yaml_char_t>?) -> String? { p.map { String(cString: $0) } }
            while true {
                var event = yaml_event_t()
                guard yaml_parser_parse(&parser, &event) == 1 else { return }
                defer { yaml_event_delete(&event) }
                let mark = event.start_mark
                switch event.type {
                case YAML_STREAM_END_EVENT:
                    return
                case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
                    let a = event.type == YAML_SEQUENCE_START_EVENT ? anchor(event.data.sequence_start.anchor) : anchor(event.data.mapping_start.anchor)
                    nodes += 1
                    open.append((nodes, a))
                    if open.count > maxDepth {
                        throw fail(
                            "YAML nested deeper than the limit of \(maxDepth) levels", mark,
                            hint: "recipes nest a few levels; a value this deep is damaged or hostile")
                    }
                case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                    if let (start, a) = open.popLast(), let a { anchored[a] = nodes - start + 1 }
                case YAML_SCALAR_EVENT:
                    nodes += 1
                    if let a = anchor(event.data.scalar.anchor) { anchored[a] = 1 }
                case YAML_ALIAS_EVENT:
                    let (n, o) = nodes.addingReportingOverflow(anchor(event.data.alias.anchor).flatMap { anchored[$0] } ?? 1)
                    nodes = o ? .max : n
                default:
                    continue
                }
                if nodes > maxNodes {
                    throw fail(
                        "YAML holds more than the limit of \(maxNodes) values (aliases counted as what they repeat)", mark,
                        hint: "recipes hold at most a few hundred values")
                }
            }
        }
    }
}
