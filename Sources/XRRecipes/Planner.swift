// `xrlab plan` and `xrlab validate`: what a run will do, what is already done, roughly how long
// it takes — and every problem a recipe has before anything runs.
import Foundation
import XRTensor
import XRData
import XRModels

/// The cells of a recipe and their state.
public struct Plan: Sendable {
    public var recipe: Recipe
    public var cells: [Cell]
    /// Ids of cells already finished in the run directory.
    public var finished: Set<String>
    public var tasks: [String]
    public var featureStatus: String
    public var estimatedSeconds: Double
    public var outputDirectory: URL
    /// Set when the output directory holds another recipe's results.
    public var directoryProblem: String?

    public var text: String {
        let variants = methodSettings(recipe)
        let untrained = variants.filter { Runner.untrained($0.label) }.count
        var s = "\(recipe.name): \(cells.count) cells = \(variants.count - untrained) method settings × \(tasks.count) tasks × "
        s += "\(recipe.shots.count) shot counts × \(recipe.seeds) seeds"
        s += untrained > 0 ? " + \(untrained) untrained method settings × \(tasks.count) tasks (one cell each)\n" : "\n"
        s += "\(finished.count) already finished, \(cells.count - finished.count) to run\n\n"
        s += "method settings:\n"
        let labelWidth = max(14, (variants.map(\.label.count).max() ?? 0) + 2)
        for v in variants { s += "  \(v.label.padding(toLength: labelWidth, withPad: " ", startingAt: 0)) \(v.description)\n" }
        s += "\ncells finished / total (\(recipe.seeds) seeds each):\n"
        let columns = (untrained > 0 ? [0] : []) + recipe.shots
        let shotsHeader = columns.map { ($0 == 0 ? "none" : "k=\($0)").padding(toLength: 8, withPad: " ", startingAt: 0) }.joined()
        let width = max(14, (tasks.map(\.count).max() ?? 0) + 2)
        s +=
            "  " + "method".padding(toLength: labelWidth, withPad: " ", startingAt: 0) + "task".padding(toLength: width, withPad: " ", startingAt: 0)
            + shotsHeader
            + "\n"
        for t in tasks {
            for v in variants {
                var line = "  " + v.label.padding(toLength: labelWidth, withPad: " ", startingAt: 0) + t.padding(toLength: width, withPad: " ", startingAt: 0)
                for k in columns {
                    let ids = cells.filter { $0.task == t && $0.method == v.label && $0.shots == k }.map(\.id)
                    let state = ids.isEmpty ? "-" : "\(ids.filter(finished.contains).count)/\(ids.count)"
                    line += state.padding(toLength: 8, withPad: " ", startingAt: 0)
                }
                while line.hasSuffix(" ") { line.removeLast() }
                s += line + "\n"
            }
        }
        s += "\nfeatures: \(featureStatus)\n"
        if let m = recipe.model { s += "encoder: \(m.path), \((m.precision ?? .fp32).rawValue) linear layers (model.precision)\n" }
        s += "estimated time: about \(ProgressReporter.clock(estimatedSeconds)) (rough)\n"
        s += "output: \(outputDirectory.path)\n"
        if let directoryProblem { s += "warning: \(directoryProblem)\n" }
        return s
    }
}

public enum Planner {
    /// The cells, what is finished, feature availability and a rough time estimate.
    public static func plan(_ r: LoadedRecipe, source: FeatureSource? = nil) throws -> Plan {
        let rows = try StudyLoader.rows(r)
        let tasks = StudyLoader.taskNames(r.recipe)
        let cells = Runner.cells(r.recipe, tasks: tasks)
        let dir = Runner.outputDirectory(r)
        let cellsDir = dir.appendingPathComponent("cells")
        var finished = Set<String>()
        var directoryProblem: String?
        // Finished cells count only in a run directory of this recipe.
        do {
            try Runner.checkRunDirectory(dir, r, force: false)
            finished = Set(cells.filter { CellWork.isFinished($0, cellsDirectory: cellsDir) }.map(\.id))
        } catch let e as XRError {
            directoryProblem = e.message + " — `run` would refuse it without --force"
        }
        let (status, encodeSeconds) = try (source ?? FeatureSources.default(for: r)).status(for: r, rows: rows)
        let costs = CellCosts(r, rows: rows)
        var seconds = encodeSeconds
        for cell in cells where !finished.contains(cell.id) { seconds += costs.seconds(cell) }
        return Plan(
            recipe: r.recipe, cells: cells, finished: finished, tasks: tasks, featureStatus: status,
            estimatedSeconds: seconds, outputDirectory: dir, directoryProblem: directoryProblem)
    }

    /// Every problem of a recipe: schema and values, then (with `checkFiles`) the files it
    /// references — the manifest and its columns, the model or feature matrix, and each image.
    public static func validate(_ url: URL, overrides: [String] = [], checkFiles: Bool = true) -> [XRError] {
        let (loaded, schema) = RecipeLoader.check(url, overrides: overrides)
        guard let r = loaded, schema.isEmpty else { return schema }
        guard checkFiles else { return [] }
        var problems: [XRError] = []
        let spec = r.recipe.data
        let manifest = r.resolve(spec.manifest)
        var rows: ManifestRows?
        if !FileManager.default.fileExists(atPath: manifest.path) {
            problems.append(XRError("manifest not found", file: manifest.path, field: "data.manifest", hint: "paths are relative to the recipe file's folder"))
        } else {
            do {
                let table = try CSVTable(contentsOf: manifest)
                var cols: [(String, String)] = [(spec.image_column, "data.image_column")]
                if let c = spec.label_column { cols.append((c, "data.label_column")) }
                for (l, c) in (spec.label_columns ?? [:]).sorted(by: { $0.key < $1.key }) { cols.append((c, "data.label_columns.\(l)")) }
                if let c = spec.patient_column { cols.append((c, "data.patient_column")) }
                if let c = spec.split_column { cols.append((c, "data.split_column")) }
                for (name, g) in spec.subgroups.sorted(by: { $0.key < $1.key }) { cols.append((g.column, "data.subgroups.\(name).column")) }
                for c in spec.where.keys.sorted() { cols.append((c, "data.where.\(c)")) }
                let missing = cols.filter { !table.header.contains($0.0) }
                for (c, key) in missing {
                    problems.append(
                        XRError(
                            "no column '\(c)' (columns: \(table.header.joined(separator: ", ")))", file: manifest.path, field: key,
                            hint: "set \(key) in the recipe to the manifest's column name"))
                }
                if missing.isEmpty { rows = try StudyLoader.rows(r) }
            } catch let e as XRError { problems.append(e) } catch { problems.append(XRError("\(error)", file: manifest.path)) }
        }
        if let m = r.recipe.model {
            let u = r.resolve(m.path)
            if !FileManager.default.fileExists(atPath: u.path) {
                problems.append(XRError("model not found", file: u.path, field: "model.path", hint: "paths are relative to the recipe file's folder"))
            }
            if let rows { problems += missingImages(r, rows: rows) }
        }
        if r.recipe.isDetection, let rows {
            // The boxes file: present, its columns, every image it names in the manifest.
            do { _ = try DetectionCells.task(r, rows: rows) } catch let e as XRError { problems.append(e) } catch {
                problems.append(XRError("\(error)", file: r.resolve(spec.boxes ?? "").path, field: "data.boxes"))
            }
        }
        if r.recipe.features != nil {
            if let rows {
                // Shapes, tensor names, sidecar and row counts — without loading the study.
                do { _ = try PrecomputedFeatureSource().status(for: r, rows: rows) } catch let e as XRError { problems.append(e) } catch {
                    problems.append(XRError("\(error)", file: r.resolve(r.recipe.features?.matrix ?? "").path, field: "features.matrix"))
                }
            } else if let f = r.recipe.features, !FileManager.default.fileExists(atPath: r.resolve(f.matrix).path),
                f.matrix.lowercased().hasSuffix(".safetensors")
            {
                problems.append(XRError("feature matrix not found", file: r.resolve(f.matrix).path, field: "features.matrix"))
            }
        }
        return problems
    }

    /// Each manifest row whose image file is missing (the first 20, then a count).
    static func missingImages(_ r: LoadedRecipe, rows: ManifestRows) -> [XRError] {
        guard let c = rows.header.firstIndex(of: r.recipe.data.image_column) else { return [] }
        let base = rows.url.deletingLastPathComponent()
        var out: [XRError] = []
        var count = 0
        for (row, number) in zip(rows.rows, rows.rowNumbers) {
            let p = row[c]
            let u = p.hasPrefix("/") ? URL(fileURLWithPath: p) : base.appendingPathComponent(p)
            if p.isEmpty || !FileManager.default.fileExists(atPath: u.path) {
                count += 1
                if count <= 20 {
                    out.append(
                        XRError(
                            "image not found: \(p.isEmpty ? "(empty path)" : u.path)", file: rows.url.path,
                            field: "row \(number), column \(r.recipe.data.image_column)"))
                }
            }
        }
        if count > 20 { out.append(XRError("\(count - 20) more rows point to missing images", file: rows.url.path, field: "data.image_column")) }
        return out
    }
}

/// A rough time estimate per cell, for `xrlab plan` and for balancing shards.
public struct CellCosts: Sendable {
    let recipe: Recipe
    let nTest: Double
    /// Manifest rows the recipe uses (retrieval: about the gallery plus the queries).
    let nRows: Double
    let cv: Double
    let cvMin: Int
    let flopsPerImage: Double
    let tunes: [String: TuneSpec]

    /// Estimates for a recipe's cells over its manifest rows.
    public init(_ r: LoadedRecipe, rows: ManifestRows) {
        recipe = r.recipe
        // Test rows (the bootstrap cost grows with them).
        var nTest = Double(rows.rows.count) * r.recipe.data.test_fraction
        if let sc = r.recipe.data.split_column, let c = rows.header.firstIndex(of: sc) {
            nTest = Double(rows.rows.filter { $0[c].trimmingCharacters(in: .whitespaces).lowercased() == "test" }.count)
        }
        self.nTest = nTest
        nRows = Double(rows.rows.count)
        let logistic = r.recipe.methods.lazy.compactMap { m -> LogisticSpec? in if case let .logistic(s) = m { return s } else { return nil } }.first
        cv = logistic.map { Double($0.C.count * $0.folds + 1) } ?? 1
        cvMin = logistic?.cvMinShots ?? LogisticSpec().cvMinShots
        // Tuning cells: forward + backward ≈ 3 forward passes per training image and epoch, one per
        // validation and test image, at ~100 GFLOP/s.
        var flops = 0.0
        if let m = r.recipe.model, r.recipe.isReport || r.recipe.methods.contains(where: \.isTuning) {
            let url = r.resolve(m.path)
            if let loaded = try? ViTLoader.load(url, preset: m.preset.flatMap { ViTConfig.preset(named: $0) }, heads: m.heads) {
                flops = loaded.model.flopsPerImage(height: loaded.config.imageSize, width: loaded.config.imageSize)
            }
        }
        flopsPerImage = flops
        tunes = r.recipe.isReport ? [:] : tuneVariants(r.recipe)
    }

    /// Estimated seconds of one cell.
    public func seconds(_ cell: Cell) -> Double {
        if recipe.isReport {
            // A decoder trained on the cell's reports (0 = all: counted as the test set's size
            // times ten), each epoch ~ one encoder pass per report.
            let reports = Double(cell.shots == 0 ? max(nTest, 1) * 10 : Double(cell.shots))
            return flopsPerImage * reports * Double(recipe.report?.epochs ?? 1) / 100e9 + 0.001 * reports
        }
        if recipe.isSegmentation {
            // Rough: a decoder step ~1 ms per image and epoch; predicting and scoring a test image
            // at its original size ~20 ms.
            let method = recipe.methods.first { $0.name == cell.method }
            if let t = tunes[cell.method] {
                // Tuning with the decoder head: as a classification tuning cell over the shots
                // (annotated images), plus the frozen decoder fitted first.
                let train = Double(cell.shots), val = Double(t.validationPerClass)
                return flopsPerImage * (3 * train * Double(t.options.epochs) + val * Double(t.options.epochs) + nTest) / 100e9 + 0.02 * nTest
            }
            let epochs: Int
            if case let .linearDecoder(s) = method { epochs = s.epochs } else { epochs = 1 }
            return 1e-3 * Double(cell.shots * epochs) + 0.02 * nTest
        }
        if recipe.isDetection {
            // Rough: a head step ~1 ms per image and epoch (shots with a box and as many without);
            // detecting on a test image ~10 ms; each bootstrap resample of the nine metrics ~0.2 µs
            // per test image.
            let method = recipe.methods.first { $0.name == cell.method }
            if let t = tunes[cell.method] {
                // Tuning with the box head: as a classification tuning cell over the shots (with
                // a box and as many without), plus the frozen head fitted first.
                let train = Double(cell.shots * 2), val = Double(t.validationPerClass * 2)
                return flopsPerImage * (3 * train * Double(t.options.epochs) + val * Double(t.options.epochs) + nTest) / 100e9 + 0.01 * nTest
            }
            let epochs: Int
            if case let .boxHead(s) = method { epochs = s.epochs } else { epochs = 1 }
            return 2e-3 * Double(cell.shots * epochs) + 0.01 * nTest + Double(recipe.bootstrap) * 9 * 2e-7 * nTest
        }
        if recipe.isRetrieval {
            // Ranking: each query sorts the gallery (~50 ns per comparison); the bootstrap and
            // subgroups average per-query values (~20 ns per query and resample).
            let g = max(nRows - nTest, 2)
            return 5e-8 * nTest * g * log2(g) + Double(recipe.bootstrap) * Double(1 + recipe.data.subgroups.count) * 2e-8 * nTest
        }
        if let t = tunes[cell.method] {
            let train = Double(cell.shots * 2), val = Double(t.validationPerClass * 2)
            return flopsPerImage * (3 * train * Double(t.options.epochs) + val * Double(t.options.epochs) + nTest) / 100e9
        }
        // Calibrated on a release build (2 shared cores, 2 cells in parallel): a probe fit takes
        // ~0.1-1 ms, and each bootstrap resample of an AUROC ~60 ns per test row, once for the
        // cell and once per subgroup attribute.
        var s = cell.method == "logistic" ? 0.0004 * (1 + Double(cell.shots) / 16) * (cell.shots >= cvMin ? cv : 1) : 0.0002
        s += Double(recipe.bootstrap) * Double(1 + recipe.data.subgroups.count) * 6e-8 * nTest
        return s
    }
}
