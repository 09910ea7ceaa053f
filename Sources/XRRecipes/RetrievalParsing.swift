// The retrieval keys of a recipe: `data` for `task: retrieval` (relevance comes from the values
// of `label_column`) and the `retrieval:` section. Errors name the key with its line:column.
import Foundation
import XRProbe

extension RecipeLoader {
    /// `data.label_column` (required), `data.labels` (optional: the values kept; every value
    /// when absent) of a retrieval task; `label_columns` does not apply.
    static func parseRetrievalLabels(_ d: [String: YNode], node dn: YNode, into data: inout Recipe.DataSpec) {
        let ctx = dn.ctx
        if data.label_column == nil, d["label_column"]?.isNull ?? true {
            ctx.record(
                dn.error(
                    "a retrieval task needs label_column: the column whose values make images relevant to each other",
                    hint: "e.g. label_column: anatomy (pipe-separated values for several per image)"))
        }
        if let n = d["label_columns"], !n.isNull {
            ctx.record(n.error("label_columns does not apply to a retrieval task", hint: "give label_column (one column of values, pipe-separated)"))
        }
        if let labelsNode = d["labels"], !labelsNode.isNull {
            data.labels = ctx.attempt { try labelsNode.listOrScalar().map { try $0.string() } } ?? []
            if Set(data.labels).count != data.labels.count { ctx.record(labelsNode.error("a label is listed twice")) }
            if data.labels.count == 1 {
                ctx.record(
                    labelsNode.error(
                        "retrieval by one label value only is trivial (every image is relevant to every other)",
                        hint: "list at least two values, or leave labels out to use every value of the column"))
            }
        }
    }

    /// The `retrieval:` section, every default filled in; unknown keys and values out of range
    /// are errors naming the key.
    static func parseRetrieval(_ rn: YNode) -> Recipe.RetrievalSettings? {
        let ctx = rn.ctx
        guard let m = ctx.attempt({ try rn.mapping(allowed: Recipe.RetrievalSettings.keys) }) else { return nil }
        var r = Recipe.RetrievalSettings()
        let f = MethodFields(m: m, node: rn)
        r.gallery = f.choice("gallery", Recipe.RetrievalSettings.Gallery.self) ?? r.gallery
        r.relevance = f.choice("relevance", RetrievalRelevance.self) ?? r.relevance
        if let ks = f.grid("k", "cut-off k", { try f.atLeast($0, 1, "k") }) { r.k = Array(Set(ks)).sorted() }
        r.neighbours = f.atLeast("neighbours", 1) ?? r.k.max() ?? r.neighbours
        r.sheet_queries = f.atLeast("sheet_queries", 0) ?? r.sheet_queries
        return r
    }
}
