// Rows, labels, splits, groups and features for a recipe. N rows, D feature dimensions.
import Foundation
import XRTensor
import XRData
import XRModels
import XRPipeline

/// One classification task: a binary label (multilabel recipes) or the multiclass label.
public struct StudyTask: Sendable {
    public var name: String
    public var classes: [String]
    /// Class per row, −1 where the row has no label for this task.
    public var labels: [Int]
}

/// Everything a run needs, row for row.
public struct StudyData: Sendable {
    public var ids: [String]
    /// (N, D)
    public var features: [Float]
    public var dim: Int
    public var patients: [String]?
    /// true = test row, false = training pool; nil = in neither (e.g. a "val" split value).
    public var isTest: [Bool?]
    public var tasks: [StudyTask]
    /// Subgroup attribute → group name per row (nil = missing value).
    public var groups: [String: [String?]]
    /// Where features came from ("precomputed: …" or "encoded: …, n from cache").
    public var featureSource: String
}

public enum StudyLoader {
    /// Read the manifest, labels, split and groups (no features yet).
    public static func table(_ r: LoadedRecipe) throws -> (CSVTable, URL) {
        let url = r.resolve(r.recipe.data.manifest)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XRError("manifest not found", file: url.path, field: "data.manifest", hint: "paths are relative to the recipe file's folder")
        }
        return (try CSVTable(contentsOf: url), url)
    }

    /// Full load; `encode` supplies features for image manifests (the runner passes the ViT pipeline).
    public static func load(_ r: LoadedRecipe, quiet: Bool = true) throws -> StudyData {
        let spec = r.recipe.data
        var (table, url) = try table(r)
        // Row filter (applied to features too, which stay row for row with the manifest).
        var keep = Array(0..<table.rows.count)
        for (column, values) in spec.where.sorted(by: { $0.key < $1.key }) {
            let c: Int
            do { c = try table.column(column) } catch let e as XRError {
                throw XRError(e.message, file: url.path, field: "data.where.\(column)")
            }
            keep = keep.filter { values.contains(table.rows[$0][c]) }
        }
        let allRows = table.rows.count
        table.rows = keep.map { table.rows[$0] }
        let n = table.rows.count
        guard n > 0 else { throw XRError(allRows == 0 ? "manifest has no rows" : "no manifest row matches data.where", file: url.path) }
        func col(_ name: String, _ key: String) throws -> Int {
            do { return try table.column(name) } catch let e as XRError {
                throw XRError(e.message, file: url.path, field: key, hint: "set \(key) in the recipe to the manifest's column name")
            }
        }
        let idCol = try col(spec.image_column, "data.image_column")
        let ids = table.rows.map { $0[idCol] }

        // Tasks.
        var tasks: [StudyTask] = []
        if spec.task == "multiclass" {
            guard let lc = spec.label_column else { throw XRError("multiclass tasks need label_column", file: r.file.path, field: "data.label_column") }
            let c = try col(lc, "data.label_column")
            tasks = [StudyTask(name: spec.labels.joined(separator: "-vs-"), classes: spec.labels,
                               labels: table.rows.map { spec.labels.firstIndex(of: $0[c].trimmingCharacters(in: .whitespaces)) ?? -1 })]
        } else if let lc = spec.label_column {
            let c = try col(lc, "data.label_column")
            let sets = table.rows.map { Set($0[c].split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }) }
            for l in spec.labels {
                tasks.append(StudyTask(name: l, classes: ["not_\(l)", l], labels: sets.map { $0.contains(l) ? 1 : 0 }))
            }
        } else if let map = spec.label_columns {
            for l in spec.labels {
                let name = map[l] ?? l
                let c = try col(name, "data.label_columns.\(l)")
                var labels: [Int] = []
                for (i, row) in table.rows.enumerated() {
                    switch row[c].trimmingCharacters(in: .whitespaces).lowercased() {
                    case "1", "1.0", "true", "yes": labels.append(1)
                    case "0", "0.0", "false", "no": labels.append(0)
                    case "", "na", "nan", "-1", "unknown": labels.append(-1)
                    case let v: throw XRError("label value '\(v)' is not 0/1 (or empty for unknown)", file: url.path, field: "row \(i + 2), column \(name)")
                    }
                }
                tasks.append(StudyTask(name: l, classes: ["not_\(l)", l], labels: labels))
            }
        }

        // Patients and split.
        var patients: [String]? = nil
        if let pc = spec.patient_column { let c = try col(pc, "data.patient_column"); patients = table.rows.map { $0[c] } }
        var isTest: [Bool?]
        if let sc = spec.split_column {
            let c = try col(sc, "data.split_column")
            isTest = table.rows.map { row -> Bool? in
                switch row[c].lowercased() { case "test": return true; case "train": return false; default: return nil }
            }
        } else {
            // Seeded split by patient (or by row): the same patients are test for every cell.
            let keys = patients ?? ids
            var unique = Array(Set(keys)).sorted()
            var rng = XRRandom(seed: 0x5EED, stream: [])
            rng.shuffle(&unique)
            let test = Set(unique.prefix(Int((Double(unique.count) * spec.test_fraction).rounded())))
            isTest = keys.map { test.contains($0) }
        }

        // Subgroups.
        var groups: [String: [String?]] = [:]
        for (name, sg) in spec.subgroups {
            let c = try col(sg.column, "data.subgroups.\(name).column")
            groups[name] = table.rows.map { row -> String? in
                let v = row[c].trimmingCharacters(in: .whitespaces)
                if v.isEmpty { return nil }
                guard let bins = sg.bins else { return v }
                guard let x = Double(v) else { return nil }
                for i in 0..<(bins.count - 1) where x >= bins[i] && (x < bins[i + 1] || (i == bins.count - 2 && x == bins[i + 1])) {
                    return "\(fmt(bins[i]))-\(fmt(bins[i + 1]))"
                }
                return nil
            }
        }

        // Features.
        var features: [Float], dim: Int, source: String
        if let f = r.recipe.features {
            let m = r.resolve(f.matrix)
            guard FileManager.default.fileExists(atPath: m.path) else { throw XRError("feature matrix not found", file: m.path, field: "features.matrix") }
            let t: Tensor = m.pathExtension == "npy" ? try NPY.read(m) : try SafeTensorsFile(contentsOf: m).tensor(f.tensor)
            guard t.rank == 2 else { throw XRError("feature matrix has shape \(describeShape(t.shape)), expected (N, D)", file: m.path, field: f.tensor) }
            guard t.shape[0] == allRows else {
                throw XRError("feature matrix has \(t.shape[0]) rows but the manifest has \(allRows)", file: m.path, field: f.tensor,
                              hint: "features and manifest must be row for row")
            }
            dim = t.shape[1]
            features = keep.flatMap { t.scalars[($0 * dim)..<(($0 + 1) * dim)] }
            source = "precomputed: \(m.path) [\(f.tensor)]"
        } else if let model = r.recipe.model {
            (features, dim, source) = try encode(r, model: model, table: table, manifest: url, imageColumn: idCol, quiet: quiet)
        } else {
            throw XRError("the recipe has neither model nor features", file: r.file.path)
        }
        for i in 0..<n {
            for j in 0..<dim where !features[i * dim + j].isFinite {
                throw XRError("feature \(j) of row \(i + 2) ('\(ids[i])') is \(features[i * dim + j])", file: url.path,
                              field: "row \(i + 2)", hint: "remove or fix this row; features must be finite")
            }
        }
        return StudyData(ids: ids, features: features, dim: dim, patients: patients, isTest: isTest, tasks: tasks,
                         groups: groups, featureSource: source)
    }

    static func fmt(_ x: Double) -> String { x == x.rounded() ? String(Int(x)) : String(x) }

    /// Encode the manifest's images with the recipe's model (features cached across runs).
    static func encode(_ r: LoadedRecipe, model: Recipe.Model, table: CSVTable, manifest: URL, imageColumn: Int,
                       quiet: Bool) throws -> ([Float], Int, String) {
        let base = manifest.deletingLastPathComponent()
        var inputs: [ImageInput] = []
        for (i, row) in table.rows.enumerated() {
            let p = row[imageColumn]
            let u = p.hasPrefix("/") ? URL(fileURLWithPath: p) : base.appendingPathComponent(p)
            guard FileManager.default.fileExists(atPath: u.path) else {
                throw XRError("image not found: \(u.path)", file: manifest.path, field: "row \(i + 2), column \(r.recipe.data.image_column)")
            }
            inputs.append(ImageInput(url: u, id: p))
        }
        let preset = try model.preset.map { name -> ViTConfig in
            guard let p = ViTConfig.preset(named: name) else { throw XRError("unknown preset '\(name)'", file: r.file.path, field: "model.preset") }
            return p
        }
        let encoder = try Encoder.load(model: r.resolve(model.path), preset: preset, heads: model.heads)
        var options = EmbedOptions()
        options.batchSize = model.batch_size
        options.quiet = quiet
        options.lastBlocks = r.recipe.representation.compactMap { s in s.hasPrefix("last") ? Int(s.dropFirst(4).dropLast(4)) : nil }.max() ?? 0
        let res = try encoder.embed(inputs, options: options)
        let n = res.inputs.count
        var parts: [(Tensor, Int)] = []   // tensor and per-row width
        for rep in r.recipe.representation {
            if rep == "cls" || rep == "patch_mean", let t = res.tensors[rep] { parts.append((t, t.shape[1])) }
            else if let k = Int(rep.dropFirst(4).dropLast(4)), let t = res.tensors["last_blocks_cls"] {
                let nb = t.shape[1], c = t.shape[2]
                var s: [Float] = []
                for i in 0..<n { s += t.scalars[(i * nb + nb - k) * c ..< (i + 1) * nb * c] }
                parts.append((Tensor(shape: [n, k * c], scalars: s), k * c))
            }
        }
        let dim = parts.reduce(0) { $0 + $1.1 }
        var out = [Float](); out.reserveCapacity(n * dim)
        for i in 0..<n { for (t, w) in parts { out += t.scalars[i * w ..< (i + 1) * w] } }
        return (out, dim, "encoded with \(model.path) (\(res.encoded) encoded, \(res.cacheHits) from cache)")
    }
}
