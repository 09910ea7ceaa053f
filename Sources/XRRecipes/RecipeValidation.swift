// The recipe schema: every key checked with the file's line:column (or the `--set` override) in
// the error, problems collected so `xrlab validate` reports all of them. Method entries:
// MethodParsing.swift; the report section: ReportParsing.swift; retrieval: RetrievalParsing.swift;
// segmentation: SegmentationParsing.swift; detection: DetectionParsing.swift.
import Foundation
import XRProbe
import Yams
import XRTensor
import XRTrain
import XRModels
import XRText

extension RecipeLoader {
    // MARK: schema

    static let topKeys = [
        "version", "name", "model", "data", "features", "representation", "methods",
        "shots", "seeds", "metrics", "primary_metric", "bootstrap", "subgroups", "budget", "selection", "output", "report",
        "retrieval"
    ]

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
                    throw v.error(
                        "recipe version \(n) is not supported (this xrlab reads version 1)",
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
            ctx.record(
                f.error(
                    "give either model or features, not both",
                    hint: "features are precomputed from the images; remove model (or features) from the recipe"))
        }
        var representation = ["cls"]
        if let r = top["representation"] {
            representation =
                ctx.attempt {
                    try r.listOrScalar().map { n in
                        let s = try n.string()
                        guard s == "cls" || s == "pooled" || s == "patch_mean" || Recipe.lastBlocks(s) != nil else {
                            throw n.error(
                                "unknown representation '\(s)'",
                                hint: "use cls, pooled, patch_mean, lastN_cls (e.g. last4_cls), or a list of them to concatenate")
                        }
                        return s
                    }
                } ?? representation
            if representation.isEmpty { ctx.record(r.error("list at least one representation")) }
            if Set(representation).count != representation.count { ctx.record(r.error("a representation is listed twice")) }
        }
        var methods: [Recipe.Method] = []
        if let mn = required(top, "methods", in: root), let list = ctx.attempt({ try mn.list() }) {
            methods = list.compactMap { parseMethod($0, task: data?.task ?? .multilabel) }
            if list.isEmpty { ctx.record(mn.error("list at least one method")) }
            var seen = Set<String>()
            for (m, node) in zip(methods, list) where !seen.insert(m.name).inserted {
                ctx.record(node.error("method '\(m.name)' is listed twice", hint: "put all its hyperparameters in one entry (grids are lists)"))
            }
            if top["model"].map({ !$0.isNull }) != true {
                for (m, node) in zip(methods, list) where m.isTuning {
                    ctx.record(
                        node.error(
                            "method \(m.name) tunes the encoder, so it needs model (images), not precomputed features",
                            hint: "give model and the image manifest, or use a probe method (logistic, knn, prototype)"))
                }
            }
        }
        let isReport = data?.task == .report
        let isRetrieval = data?.task == .retrieval
        var retrieval: Recipe.RetrievalSettings? = nil
        if let rn = top["retrieval"], !rn.isNull {
            if !isRetrieval { ctx.record(rn.error("the retrieval section applies to retrieval tasks only", hint: "set data.task: retrieval")) }
            retrieval = parseRetrieval(rn)
        } else if isRetrieval {
            retrieval = Recipe.RetrievalSettings()
        }
        if isReport, let f = top["features"], !f.isNull {
            ctx.record(f.error("a report task trains on images: give model, not features"))
        }
        let isSegmentation = data?.task == .segmentation
        if isSegmentation, let f = top["features"], !f.isNull {
            ctx.record(f.error("a segmentation task reads the encoder's patch tokens of each image: give model, not features"))
        }
        let isDetection = data?.task == .detection
        if isDetection, let f = top["features"], !f.isNull {
            ctx.record(f.error("a detection task reads the encoder's patch tokens of each image: give model, not features"))
        }
        var shots: [Int] = []
        // Retrieval recipes without a trained method need no shots.
        let needsShots = !isRetrieval || methods.contains { if case .linearProjection = $0 { return true } else { return false } }
        if let sn = needsShots ? required(top, "shots", in: root) : top["shots"] {
            shots =
                ctx.attempt {
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
        let seeds = top["seeds"].flatMap { v in
            ctx.attempt { () -> Int in
                let n = try v.int()
                if n < 1 { throw v.error("seeds must be at least 1, got \(n)") }
                return n
            }
        }
        let known =
            isReport
            ? Recipe.reportMetrics
            : isSegmentation
                ? Recipe.segmentationMetrics : isDetection ? Recipe.detectionMetrics : (retrieval?.metricNames ?? Recipe.knownMetrics)
        let kindNote = isReport || isRetrieval || isSegmentation || isDetection ? " for a \(data?.task.rawValue ?? "") task" : ""
        let metrics = top["metrics"].flatMap { v in
            ctx.attempt {
                try v.listOrScalar().compactMap { n -> String? in
                    let s = try n.string()
                    guard known.contains(s) else {
                        ctx.record(
                            n.error(
                                "unknown metric '\(s)'" + kindNote
                                    + (closest(s, in: known).map { " — did you mean '\($0)'?" } ?? ""),
                                hint: "metrics: " + known.joined(separator: ", ")))
                        return nil
                    }
                    return s
                }
            }
        }
        let primary = top["primary_metric"].flatMap { v in
            ctx.attempt { () -> String in
                let s = try v.string()
                guard known.contains(s) else {
                    throw v.error(
                        "unknown metric '\(s)'" + kindNote + (closest(s, in: known).map { " — did you mean '\($0)'?" } ?? ""),
                        hint: "metrics: " + known.joined(separator: ", "))
                }
                return s
            }
        }
        var report: Recipe.ReportSettings? = nil
        if let rn = top["report"], !rn.isNull {
            if !isReport { ctx.record(rn.error("the report section applies to report tasks only", hint: "set data.task: report")) }
            report = parseReport(rn)
        } else if isReport {
            report = Recipe.ReportSettings()
        }
        // bootstrap: 1000, or {resamples: 1000}.
        let bootstrap = top["bootstrap"].flatMap { v in
            ctx.attempt { () -> Int in
                var n = v
                if case .mapping = v.node {
                    guard let r = try v.mapping(allowed: ["resamples"])["resamples"] else { throw v.error("missing required key 'resamples'") }
                    n = r
                }
                let b = try n.int()
                if b < 0 { throw n.error("bootstrap resamples must be ≥ 0 (0 disables it), got \(b)") }
                return b
            }
        }
        let fdr = top["subgroups"].flatMap { v in
            ctx.attempt { () -> Double? in
                guard let n = try v.mapping(allowed: ["fdr"])["fdr"] else { return nil }
                let q = try n.double()
                if !(q > 0 && q < 1) {
                    throw n.error("subgroups.fdr must be between 0 and 1 (exclusive), got \(q)", hint: "the false discovery rate, e.g. 0.05")
                }
                return q
            } ?? nil
        }

        let budgetTargets = top["budget"].flatMap { v in
            ctx.attempt { () -> [String]? in
                guard let n = try v.mapping(allowed: ["targets"])["targets"] else { return nil }
                return try n.listOrScalar().map { t in
                    let s = try t.string()
                    do { _ = try BudgetTarget(parsing: s, field: "budget.targets") } catch let e as XRError {
                        throw t.error(e.message, hint: e.hint)
                    }
                    return s
                }
            } ?? nil
        }

        let selection = top["selection"].flatMap { v in ctx.attempt { try parseSelection(v) } ?? nil }

        guard let name, let output, let data else { return nil }
        var recipe = Recipe(
            name: name, model: model, data: data, features: features, representation: representation,
            methods: methods, shots: Array(Set(shots)).sorted(), output: output)
        if isReport {
            recipe.report = report
            recipe.metrics = ["bleu_4", "rouge_l", "cider_d", "ce_f1"]
            recipe.primary_metric = "cider_d"
            // "all" (0) last.
            recipe.shots = recipe.shots.filter { $0 > 0 } + (recipe.shots.contains(0) ? [0] : [])
        }
        if isRetrieval, let retrieval {
            recipe.retrieval = retrieval
            recipe.metrics = retrieval.metricNames
            recipe.primary_metric = "map_at_r"
        }
        if isSegmentation {
            recipe.metrics = Recipe.segmentationMetrics
            recipe.primary_metric = "dice"
        }
        if isDetection {
            recipe.metrics = Recipe.detectionMetrics
            recipe.primary_metric = "ap_30"
        }
        if let seeds { recipe.seeds = seeds }
        if let metrics { recipe.metrics = metrics }
        if let primary { recipe.primary_metric = primary }
        if !recipe.metrics.contains(recipe.primary_metric) { recipe.metrics.insert(recipe.primary_metric, at: 0) }
        if isReport, recipe.metrics.contains("meteor"), recipe.report?.meteor_data == nil, let n = top["metrics"] ?? top["primary_metric"] {
            ctx.record(
                n.error(
                    "the meteor metric needs report.meteor_data",
                    hint: "point report.meteor_data at pycocoevalcap's meteor/ directory, meteor-1.5.jar, or a directory with the jar's layout"))
        }
        if let bootstrap { recipe.bootstrap = bootstrap }
        if !isReport { recipe.subgroups = Recipe.SubgroupSettings(fdr: fdr ?? 0.05) }
        if let budgetTargets,
            let bad = budgetTargets.first(where: { t in
                (try? BudgetTarget(parsing: t, field: "budget.targets")).map { !recipe.metrics.contains($0.metric) } ?? false
            }), let n = top["budget"]
        {
            ctx.record(
                n.error(
                    "budget target '\(bad)' is on a metric the recipe does not compute",
                    hint: "add its metric to `metrics` (now \(recipe.metrics.joined(separator: ", ")))"))
        }
        if let budgetTargets, !budgetTargets.isEmpty {
            if isReport || isRetrieval || isSegmentation || isDetection {
                ctx.record(XRError("budget.targets is not supported for \(data.task.rawValue) tasks", file: ctx.file, field: "budget"))
            } else {
                recipe.budget = Recipe.BudgetSettings(targets: budgetTargets)
            }
        }
        if var selection, let n = top["selection"] {
            let tasks = StudyLoader.taskNames(recipe)
            if isReport || isRetrieval || isSegmentation || isDetection {
                ctx.record(n.error("selection is not supported for \(data.task.rawValue) tasks"))
            } else if let t = selection.task, !tasks.contains(t) {
                ctx.record(
                    n.error(
                        "selection.task '\(t)' is not a task of the recipe" + (closest(t, in: tasks).map { " — did you mean '\($0)'?" } ?? ""),
                        hint: "tasks: \(tasks.joined(separator: ", "))"))
                selection.task = nil
            } else {
                recipe.selection = selection
            }
        }
        return recipe
    }

    static func parseModel(_ m: YNode) -> Recipe.Model? {
        let ctx = m.ctx
        guard let mm = ctx.attempt({ try m.mapping(allowed: ["path", "preset", "heads", "batch_size", "preprocessing", "precision"]) }) else { return nil }
        guard let pathNode = mm["path"], !pathNode.isNull else { ctx.record(m.error("missing required key 'path'")); return nil }
        guard let path = ctx.attempt({ try pathNode.string() }) else { return nil }
        var model = Recipe.Model(path: path)
        if let v = mm["preset"], !v.isNull {
            model.preset = ctx.attempt {
                let s = try v.string()
                guard ViTPresets.names.contains(s) else {
                    throw v.error(
                        "unknown preset '\(s)'" + (closest(s, in: ViTPresets.names).map { " — did you mean '\($0)'?" } ?? ""),
                        hint: "presets: " + ViTPresets.names.joined(separator: ", "))
                }
                return s
            }
        }
        if let v = mm["heads"], !v.isNull {
            model.heads = ctx.attempt {
                let h = try v.int(); if h < 1 { throw v.error("heads must be at least 1") }; return h
            }
        }
        if let v = mm["precision"], !v.isNull {
            model.precision = ctx.attempt {
                let s = try v.string()
                guard let p = Precision(parsing: s) else {
                    throw v.error("unknown precision '\(s)'", hint: "model.precision is one of: \(Precision.spellings)")
                }
                return p
            }
        }
        if let v = mm["batch_size"] {
            model.batch_size =
                ctx.attempt {
                    let b = try v.int(); if b < 1 { throw v.error("batch_size must be at least 1, got \(b)") }; return b
                } ?? 8
        }
        if let p = mm["preprocessing"], !p.isNull {
            model.preprocessing =
                ctx.attempt { () -> Recipe.Preprocess? in
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
        guard
            let d = ctx.attempt({
                try dn.mapping(allowed: [
                    "manifest", "image_column", "label_column", "label_columns", "labels", "task",
                    "patient_column", "split_column", "test_fraction", "subgroups", "where", "mask_column", "mask_classes", "boxes",
                    "box_label_column", "other_box_images"
                ])
            })
        else { return nil }
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
                guard let kind = Recipe.TaskKind(rawValue: t) else {
                    throw v.error(
                        "task must be one of \(Recipe.knownTasks.joined(separator: ", ")), not '\(t)'"
                            + (closest(t, in: Recipe.knownTasks).map { " — did you mean '\($0)'?" } ?? ""))
                }
                data.task = kind
            }
        }
        if data.task == .report {
            // Paired reports: the manifest's findings / impression (or report) columns, no labels.
            data.labels = ctx.attempt { try d["labels"].map { $0.isNull ? [] : try $0.listOrScalar().map { try $0.string() } } ?? [] } ?? []
            if !data.labels.isEmpty, let n = d["labels"] {
                ctx.record(n.error("a report task has no labels (reports come from the findings / impression columns)"))
            }
            if data.split_column == nil { ctx.record(dn.error("a report task needs split_column (train and test rows of the paired manifest)")) }
            if let n = d["subgroups"], !n.isNull {
                ctx.record(n.error("subgroups are not supported for report tasks"))
            }
            return manifest == nil ? nil : data
        }
        parseMaskKeys(d, node: dn, into: &data)
        parseBoxKeys(d, node: dn, into: &data)
        if data.task == .retrieval {
            parseRetrievalLabels(d, node: dn, into: &data)
        } else if data.task == .segmentation || data.task == .detection {
            // Masks / boxes are the labels: nothing more to read.
        } else if let labelsNode = d["labels"], !labelsNode.isNull {
            data.labels = ctx.attempt { try labelsNode.listOrScalar().map { try $0.string() } } ?? []
            if data.labels.isEmpty, case .sequence = labelsNode.node { ctx.record(labelsNode.error("labels must list at least one label")) }
            if Set(data.labels).count != data.labels.count {
                ctx.record(labelsNode.error("a label is listed twice"))
            } else if Set(data.labels.map(safe)).count != data.labels.count {
                ctx.record(
                    labelsNode.error(
                        "labels differing only in punctuation or spaces would share result files",
                        hint: "rename them so that letters, digits, '-' and '_' tell them apart"))
            }
            if data.task == .multiclass && data.labels.count == 1 { ctx.record(labelsNode.error("a multiclass task needs at least two classes")) }
            if data.task == .binary && data.labels.count > 1 {
                ctx.record(
                    labelsNode.error(
                        "a binary task has one label (the positive finding); got \(data.labels.count)",
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
        if data.task != .retrieval && data.task != .segmentation && data.task != .detection && data.label_column == nil && data.label_columns == nil
            && (d["label_column"]?.isNull ?? true)
            && (d["label_columns"]?.isNull ?? true)
        {
            ctx.record(dn.error("give label_column (pipe-separated labels) or label_columns (label → 0/1 column)"))
        }
        if data.label_column != nil && data.label_columns != nil, let n = d["label_columns"] {
            ctx.record(n.error("give label_column or label_columns, not both"))
        }
        if data.task == .multiclass, data.label_columns != nil, let n = d["label_columns"] {
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
}

/// Preset names of the encoder architectures.
enum ViTPresets {
    static var names: [String] { ViTConfig.presetNames }
}
