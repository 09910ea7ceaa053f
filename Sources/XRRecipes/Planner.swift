// `xrlab plan`: what a run will do, what is already done, and roughly how long it takes.
import Foundation
import XRTensor
import XRModels
import XRPipeline
import XRData

public struct Plan: Sendable {
    public var cells: [Cell]
    public var finished: Set<String>
    public var tasks: [String]
    public var featureStatus: String
    public var estimatedSeconds: Double

    public var text: String {
        var s = "\(cells.count) cells (methods × tasks × shots × seeds), \(finished.count) already finished, \(cells.count - finished.count) to run\n"
        var byMethod: [String: Int] = [:]
        for c in cells where !finished.contains(c.id) { byMethod[c.method, default: 0] += 1 }
        for (m, n) in byMethod.sorted(by: { $0.key < $1.key }) { s += "  \(m): \(n) cells to run\n" }
        s += "tasks: \(tasks.joined(separator: ", "))\n"
        s += "features: \(featureStatus)\n"
        s += "estimated time: about \(ProgressReporter.clock(estimatedSeconds)) (rough)\n"
        return s
    }
}

public enum Planner {
    public static func plan(_ r: LoadedRecipe) throws -> Plan {
        let (table, manifest) = try StudyLoader.table(r)
        let spec = r.recipe.data
        let tasks = spec.task == "multiclass" ? [spec.labels.joined(separator: "-vs-")] : spec.labels
        let cells = Runner.cells(r.recipe, tasks: tasks)
        let cellsDir = Runner.outputDirectory(r).appendingPathComponent("cells")
        let finished = Set(cells.map(\.id).filter { FileManager.default.fileExists(atPath: cellsDir.appendingPathComponent($0 + ".json").path) })
        var status = "", encodeSeconds = 0.0
        if let f = r.recipe.features {
            status = "precomputed (\(f.matrix))"
        } else if let model = r.recipe.model {
            let col = try table.column(spec.image_column)
            let base = manifest.deletingLastPathComponent()
            let inputs = table.rows.map { row in
                ImageInput(url: row[col].hasPrefix("/") ? URL(fileURLWithPath: row[col]) : base.appendingPathComponent(row[col]), id: row[col])
            }
            let encoder = try Encoder.load(model: r.resolve(model.path), heads: model.heads)
            var o = EmbedOptions()
            o.lastBlocks = r.recipe.representation.compactMap { s in s.hasPrefix("last") ? Int(s.dropFirst(4).dropLast(4)) : nil }.max() ?? 0
            let cached = encoder.cachedCount(inputs, options: o)
            status = "\(cached) of \(inputs.count) images cached for this encoder and preprocessing"
            let c = encoder.loaded.config
            let params = Double(c.depth) * 12 * Double(c.dim * c.dim)
            let tokens = Double((c.imageSize / c.patchSize) * (c.imageSize / c.patchSize) + 1)
            encodeSeconds = Double(inputs.count - cached) * 2 * params * tokens / 100e9
        }
        var seconds = encodeSeconds
        for cell in cells where !finished.contains(cell.id) {
            seconds += cell.method == "logistic" ? 0.002 * (cell.shots >= 4 ? 13 : 1) * (1 + Double(cell.shots) / 16) : 0.001
            seconds += Double(r.recipe.bootstrap) * 2e-5
        }
        return Plan(cells: cells, finished: finished, tasks: tasks, featureStatus: status, estimatedSeconds: seconds)
    }

    /// Schema check plus referenced files; every problem found, not just the first.
    public static func validate(_ url: URL, overrides: [String] = [], checkFiles: Bool = true) -> [XRError] {
        let r: LoadedRecipe
        do { r = try RecipeLoader.load(url, overrides: overrides) } catch let e as XRError { return [e] } catch {
            return [XRError("\(error)", file: url.path)]
        }
        guard checkFiles else { return [] }
        var problems: [XRError] = []
        let manifest = r.resolve(r.recipe.data.manifest)
        if !FileManager.default.fileExists(atPath: manifest.path) {
            problems.append(XRError("manifest not found", file: manifest.path, field: "data.manifest"))
        } else if let table = try? XRData.CSVTable(contentsOf: manifest) {
            var cols = [r.recipe.data.image_column]
            if let c = r.recipe.data.label_column { cols.append(c) }
            cols += (r.recipe.data.label_columns ?? [:]).values.sorted()
            cols += [r.recipe.data.patient_column, r.recipe.data.split_column].compactMap { $0 }
            cols += r.recipe.data.subgroups.values.map(\.column)
            for c in cols where !table.header.contains(c) {
                problems.append(XRError("column '\(c)' not in the manifest (columns: \(table.header.joined(separator: ", ")))", file: manifest.path, field: c))
            }
        }
        if let m = r.recipe.model, !FileManager.default.fileExists(atPath: r.resolve(m.path).path) {
            problems.append(XRError("model not found", file: r.resolve(m.path).path, field: "model.path"))
        }
        if let f = r.recipe.features, !FileManager.default.fileExists(atPath: r.resolve(f.matrix).path) {
            problems.append(XRError("feature matrix not found", file: r.resolve(f.matrix).path, field: "features.matrix"))
        }
        return problems
    }
}
