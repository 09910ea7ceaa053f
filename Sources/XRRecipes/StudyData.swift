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
    /// Class per row, −1 where the row has no label for this task. Retrieval tasks: the row's
    /// first value (in `classes` order), −1 without a value.
    public var labels: [Int]
    /// Retrieval tasks: every value of the row (indices into `classes`, sorted); nil otherwise.
    public var valueSets: [[Int]]? = nil
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
    /// Where features came from ("precomputed: …" or "encoded with …").
    public var featureSource: String
}

public enum StudyLoader {
    /// Read the manifest (no filtering).
    public static func table(_ r: LoadedRecipe) throws -> (CSVTable, URL) {
        let url = r.resolve(r.recipe.data.manifest)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XRError("manifest not found", file: url.path, field: "data.manifest", hint: "paths are relative to the recipe file's folder")
        }
        return (try CSVTable(contentsOf: url), url)
    }

    /// The manifest rows the recipe uses (after `data.where`), with CSV row numbers and ids.
    public static func rows(_ r: LoadedRecipe) throws -> ManifestRows {
        let spec = r.recipe.data
        let (table, url) = try table(r)
        var keep = Array(0..<table.rows.count)
        for (column, values) in spec.where.sorted(by: { $0.key < $1.key }) {
            guard let c = table.header.firstIndex(of: column) else {
                throw XRError("no column '\(column)' (columns: \(table.header.joined(separator: ", ")))", file: url.path, field: "data.where.\(column)")
            }
            keep = keep.filter { values.contains(table.rows[$0][c]) }
        }
        guard !keep.isEmpty else {
            throw XRError(table.rows.isEmpty ? "manifest has no rows" : "no manifest row matches data.where", file: url.path, field: "data.where")
        }
        guard let idCol = table.header.firstIndex(of: spec.image_column) else {
            throw XRError(
                "no column '\(spec.image_column)' (columns: \(table.header.joined(separator: ", ")))", file: url.path,
                field: "data.image_column", hint: "set data.image_column in the recipe to the manifest's column name")
        }
        let rows = keep.map { table.rows[$0] }
        return ManifestRows(
            url: url, header: table.header, rows: rows, rowNumbers: keep.map { $0 + 2 }, indices: keep,
            totalRows: table.rows.count, ids: rows.map { $0[idCol] })
    }

    /// Task names of a recipe, in order (one per label; one for a multiclass task).
    public static func taskNames(_ recipe: Recipe) -> [String] {
        switch recipe.data.task {
        case .multiclass: return [recipe.data.labels.joined(separator: "-vs-")]
        case .retrieval: return [recipe.data.label_column ?? "label"]
        case .segmentation: return [recipe.data.mask_column ?? "mask"]
        case .detection: return [DetectionCells.taskName(recipe)]
        default: return recipe.data.labels
        }
    }

    /// Full load: rows, labels, split, groups, and features from `source` (default: the recipe's own).
    public static func load(_ r: LoadedRecipe, source: FeatureSource? = nil, quiet: Bool = true) throws -> StudyData {
        let spec = r.recipe.data
        let m = try rows(r)
        let url = m.url
        let n = m.rows.count
        func col(_ name: String, _ key: String) throws -> Int {
            guard let c = m.header.firstIndex(of: name) else {
                throw XRError(
                    "no column '\(name)' (columns: \(m.header.joined(separator: ", ")))", file: url.path, field: key,
                    hint: "set \(key) in the recipe to the manifest's column name")
            }
            return c
        }
        let ids = m.ids

        // Tasks.
        var tasks: [StudyTask] = []
        if spec.task == .detection {
            // One task: images with a box are 1, without 0 (boxes read in DetectionCells).
            tasks = [try DetectionCells.task(r, rows: m)]
        } else if spec.task == .segmentation {
            // One task: the annotated rows (a mask path) are class 0, the others unlabelled.
            guard let mc = spec.mask_column else { throw XRError("segmentation tasks need mask_column", file: r.file.path, field: "data.mask_column") }
            let c = try col(mc, "data.mask_column")
            let classes = spec.mask_classes.map { $0.map { "value_\($0)" } } ?? ["background", "foreground"]
            tasks = [
                StudyTask(name: mc, classes: classes, labels: m.rows.map { $0[c].trimmingCharacters(in: .whitespaces).isEmpty ? -1 : 0 })
            ]
        } else if spec.task == .retrieval {
            guard let lc = spec.label_column else { throw XRError("retrieval tasks need label_column", file: r.file.path, field: "data.label_column") }
            tasks = [try retrievalTask(column: lc, at: try col(lc, "data.label_column"), rows: m, keep: spec.labels)]
        } else if spec.task == .multiclass {
            guard let lc = spec.label_column else { throw XRError("multiclass tasks need label_column", file: r.file.path, field: "data.label_column") }
            let c = try col(lc, "data.label_column")
            tasks = [
                StudyTask(
                    name: spec.labels.joined(separator: "-vs-"), classes: spec.labels,
                    labels: m.rows.map { spec.labels.firstIndex(of: $0[c].trimmingCharacters(in: .whitespaces)) ?? -1 })
            ]
        } else if let lc = spec.label_column {
            let c = try col(lc, "data.label_column")
            let sets = m.rows.map { Set($0[c].split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }) }
            for l in spec.labels {
                tasks.append(StudyTask(name: l, classes: ["not_\(l)", l], labels: sets.map { $0.contains(l) ? 1 : 0 }))
            }
        } else if let map = spec.label_columns {
            for l in spec.labels {
                let name = map[l] ?? l
                let c = try col(name, "data.label_columns.\(l)")
                var labels: [Int] = []
                for (row, number) in zip(m.rows, m.rowNumbers) {
                    switch row[c].trimmingCharacters(in: .whitespaces).lowercased() {
                    case "1", "1.0", "true", "yes": labels.append(1)
                    case "0", "0.0", "false", "no": labels.append(0)
                    case "", "na", "nan", "-1", "unknown": labels.append(-1)
                    case let v: throw XRError("label value '\(v)' is not 0/1 (or empty for unknown)", file: url.path, field: "row \(number), column \(name)")
                    }
                }
                tasks.append(StudyTask(name: l, classes: ["not_\(l)", l], labels: labels))
            }
        }

        // Patients and split.
        var patients: [String]? = nil
        if let pc = spec.patient_column {
            let c = try col(pc, "data.patient_column")
            patients = m.rows.map { $0[c] }
            if let i = patients?.firstIndex(where: { $0.trimmingCharacters(in: .whitespaces).isEmpty }) {
                throw XRError(
                    "empty patient id", file: url.path, field: "row \(m.rowNumbers[i]), column \(pc)",
                    hint: "every row needs a patient id when data.patient_column is set")
            }
        }
        var isTest: [Bool?]
        if let sc = spec.split_column {
            let c = try col(sc, "data.split_column")
            isTest = m.rows.map { row -> Bool? in
                switch row[c].trimmingCharacters(in: .whitespaces).lowercased() {
                case "test": return true;
                case "train": return false;
                default: return nil
                }
            }
            if !isTest.contains(where: { $0 == true }) || !isTest.contains(where: { $0 == false }) {
                throw XRError(
                    "the split column needs both 'train' and 'test' rows", file: url.path, field: "data.split_column (\(sc))",
                    hint: "or leave split_column out for a seeded split by patient (data.test_fraction)")
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
            groups[name] = m.rows.map { row -> String? in
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

        // Features, aligned to the rows by id.
        let set = try (source ?? FeatureSources.default(for: r)).loadFeatures(for: r, rows: m, quiet: quiet)
        let dim = set.matrix.shape[1]
        var features: [Float]
        if set.ids == ids {
            features = set.matrix.scalars
        } else {
            var index: [String: Int] = [:]
            for (i, id) in set.ids.enumerated() where index[id] == nil { index[id] = i }
            features = []
            features.reserveCapacity(n * dim)
            for (i, id) in ids.enumerated() {
                guard let j = index[id] else {
                    throw XRError(
                        "no features for '\(id)'", file: url.path, field: "row \(m.rowNumbers[i]), column \(spec.image_column)",
                        hint: "the features (\(set.description)) do not cover this manifest row; embed it, or filter it out with data.where")
                }
                features += set.matrix.scalars[(j * dim)..<((j + 1) * dim)]
            }
        }
        for i in 0..<n {
            for j in 0..<dim where !features[i * dim + j].isFinite {
                throw XRError(
                    "feature \(j) of row \(m.rowNumbers[i]) ('\(ids[i])') is \(features[i * dim + j])", file: url.path,
                    field: "row \(m.rowNumbers[i])", hint: "remove or fix this row; features must be finite")
            }
        }
        return StudyData(
            ids: ids, features: features, dim: dim, patients: patients, isTest: isTest, tasks: tasks,
            groups: groups, featureSource: set.description)
    }

    /// The retrieval task of `column`: each row's values (pipe-separated; only those in `keep`
    /// when it is not empty), classes = the values in sorted order. Fewer than two values among
    /// the rows is an error naming the column: every image would be relevant to every other.
    static func retrievalTask(column: String, at c: Int, rows m: ManifestRows, keep: [String]) throws -> StudyTask {
        let kept = Set(keep)
        let sets = m.rows.map { row in
            Set(row[c].split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && (kept.isEmpty || kept.contains($0)) })
        }
        let classes = Array(sets.reduce(into: Set<String>()) { $0.formUnion($1) }).sorted()
        guard classes.count >= 2 else {
            throw XRError(
                "column '\(column)' has \(classes.isEmpty ? "no value" : "one value only ('\(classes[0])')") among the rows the recipe uses; retrieval by it is trivial",
                file: m.url.path, field: "data.label_column",
                hint: "choose a column with at least two values, or widen data.where / data.labels")
        }
        let index = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
        let valueSets = sets.map { $0.compactMap { index[$0] }.sorted() }
        return StudyTask(name: column, classes: classes, labels: valueSets.map { $0.first ?? -1 }, valueSets: valueSets)
    }

    static func fmt(_ x: Double) -> String { x == x.rounded() ? String(Int(x)) : String(x) }
}
