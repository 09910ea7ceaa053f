// Upper bounds on every count a recipe can ask for (limits in `XRTensor.Limits.Recipe`), checked
// at validation time so `xrlab validate` and `plan` refuse a recipe that would run without end
// (a billion seeds, a 100,000-long shots list) instantly, naming the key and the limit.
import Foundation
import XRTensor
import XRTrain

extension RecipeLoader {
    typealias L = Limits.Recipe

    /// Record a problem for every count in `recipe` (parsed from `root`) over its limit.
    static func checkBounds(_ recipe: Recipe, root: YNode) {
        let ctx = root.ctx
        var over = false
        func node(_ keys: [Any]) -> YNode {
            var n = root
            for k in keys {
                if let i = k as? Int, case let .sequence(q) = n.node, i < q.count {
                    n = YNode(node: q[i], path: "\(n.path)[\(i)]", ctx: ctx)
                } else if let s = k as? String, case let .mapping(m) = n.node,
                    let v = m.first(where: { if case let .scalar(ks) = $0.key { return ks.string == s } else { return false } })?.value
                {
                    n = n.child(v, s)
                } else {
                    return n
                }
            }
            return n
        }
        func bound(_ value: Int?, _ limit: Int, _ keys: [Any], _ what: String, list: Bool = false) {
            guard let value, value > limit else { return }
            over = true
            let n = node(keys)
            let key = n.path.isEmpty ? what : n.path
            ctx.record(
                n.error(
                    list ? "\(key) lists \(value) \(what), over the limit of \(limit)" : "\(key) is \(value), over the limit of \(limit) \(what)",
                    hint: "xrlab bounds every count a recipe asks for (docs/reliability.md lists the limits)"))
        }
        func bound<T>(list: [T]?, _ limit: Int, _ keys: [Any], _ what: String) {
            bound(list?.count, limit, keys, what, list: true)
        }
        bound(recipe.seeds, L.seeds, ["seeds"], "seeds")
        bound(list: recipe.shots, L.shotCounts, ["shots"], "shot counts")
        bound(recipe.shots.max(), L.shotValue, ["shots"], "examples per shot count")
        bound(recipe.bootstrap, L.bootstrap, ["bootstrap"], "bootstrap resamples")
        bound(list: recipe.methods, L.listEntries, ["methods"], "methods")
        bound(list: recipe.representation, L.listEntries, ["representation"], "representations")
        bound(recipe.representation.compactMap(Recipe.lastBlocks).max(), L.smallCount, ["representation"], "blocks (lastN_cls)")
        bound(list: recipe.metrics, L.listEntries, ["metrics"], "metrics")
        bound(list: recipe.data.labels, L.listEntries, ["data", "labels"], "labels")
        bound(recipe.data.subgroups.count, L.listEntries, ["data", "subgroups"], "subgroups", list: true)
        bound(recipe.data.subgroups.values.map { $0.bins?.count ?? 0 }.max(), L.listEntries, ["data", "subgroups"], "bin edges", list: true)
        bound(recipe.data.where.values.map(\.count).max(), L.listEntries, ["data", "where"], "values", list: true)
        if let m = recipe.model {
            bound(m.batch_size, L.width, ["model", "batch_size"], "images per batch")
            bound(m.heads, L.smallCount, ["model", "heads"], "attention heads")
            bound(m.preprocessing?.size, L.imageSide, ["model", "preprocessing", "size"], "pixels")
            bound(m.preprocessing?.crop, L.imageSide, ["model", "preprocessing", "crop"], "pixels")
        }
        for (i, m) in recipe.methods.enumerated() {
            let at: [Any] = ["methods", i]
            var counts: [(String, Int?)] = [], widths: [(String, Int?)] = []
            var lora: LoRASettings? = nil
            switch m {
            case let .logistic(s):
                bound(list: s.C, L.gridValues, at + ["C"], "grid values")
                counts += [("folds", s.folds), ("cv_min_shots", s.cvMinShots)]
            case let .knn(s):
                bound(list: s.k, L.gridValues, at + ["k"], "grid values")
                bound(s.k.max(), L.knnK, at + ["k"], "neighbours")
            case let .lora(s): lora = s.lora
            case let .adapter(s): widths.append(("adapter_dim", s.dim))
            case let .lastK(s): counts.append(("blocks", s.blocks))
            case let .reportEncoder(.lora(s)): lora = s.lora
            case let .reportEncoder(.lastK(s)): counts.append(("blocks", s.blocks))
            case let .linearDecoder(s):
                bound(s.epochs, L.epochs, at + ["epochs"], "epochs")
                widths.append(("batch_size", s.batchSize))
            case let .knnPatches(s): bound(s.k, L.knnK, at + ["k"], "neighbours")
            case let .boxHead(s):
                bound(s.epochs, L.epochs, at + ["epochs"], "epochs")
                widths.append(("batch_size", s.batchSize))
            case .prototype, .bitfit, .full, .reportEncoder(.frozen), .cosine, .linearProjection: break
            }
            if let lora {
                bound(list: lora.targets, L.listEntries, at + ["targets"], "target patterns")
                widths.append(("rank", lora.rank))
            }
            if let t = m.tuning?.training {
                bound(t.epochs, L.epochs, at + ["epochs"], "epochs")
                counts += [("patience", t.patience), ("validation", t.validation), ("accumulate", t.accumulate)]
                widths += [("batch_size", t.batchSize), ("head_hidden", t.headHidden)]
            }
            for (key, v) in counts { bound(v, L.smallCount, at + [key], key) }
            for (key, v) in widths { bound(v, L.width, at + [key], key) }
        }
        if let r = recipe.retrieval {
            bound(list: r.k, L.gridValues, ["retrieval", "k"], "cut-offs")
            bound(r.k.max(), L.knnK, ["retrieval", "k"], "neighbours")
            bound(r.neighbours, L.knnK, ["retrieval", "neighbours"], "neighbours per query")
            bound(r.sheet_queries, L.gridValues, ["retrieval", "sheet_queries"], "queries per contact sheet")
        }
        if let r = recipe.report {
            bound(r.epochs, L.epochs, ["report", "epochs"], "epochs")
            for (key, v) in [
                ("vocab_size", r.vocab_size), ("dim", r.dim), ("max_tokens", r.max_tokens), ("max_new_tokens", r.max_new_tokens),
                ("batch_size", r.batch_size)
            ] {
                bound(v, L.width, ["report", key], key)
            }
            for (key, v) in [("layers", r.layers), ("heads", r.heads), ("pool", r.pool), ("beams", r.beams), ("no_repeat_ngram", r.no_repeat_ngram)] {
                bound(v, L.smallCount, ["report", key], key)
            }
        }
        // What multiplies into the plan: method settings × tasks × shot counts × seeds (each
        // factor within its own limit).
        guard !over else { return }
        let settings = methodLabels(recipe).count
        let tasks = max(1, StudyLoader.taskNames(recipe).count)
        var cells = 1
        for f in [settings, tasks, max(1, recipe.shots.count), recipe.seeds] {
            let (p, o) = cells.multipliedReportingOverflow(by: max(0, f))
            cells = o ? .max : p
        }
        if cells > L.planCells {
            ctx.record(
                root.error(
                    "the plan has \(cells) cells (\(settings) method settings × \(tasks) tasks × \(recipe.shots.count) shot counts × \(recipe.seeds) seeds), over the limit of \(L.planCells) cells",
                    hint: "fewer seeds, shot counts or grid values"))
        }
    }
}
