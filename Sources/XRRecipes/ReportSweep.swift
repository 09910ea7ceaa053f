// Report recipes (`data.task: report`): low-data sweeps of report generation. Each cell trains a
// decoder (with the encoder frozen or tuned, the method) on `shots` paired training reports
// (0 = all) drawn with its seed, drafts the test reports and scores them. Cells are written
// atomically to `cells/<id>.json`; a cell interrupted mid-training resumes from its epoch
// checkpoint (`cells/<id>/checkpoint.safetensors`). Outputs follow the probe runs: results.jsonl,
// summary.csv, a learning curve per target (PNG) and report.md.
import Foundation
import XRTensor
import XRData
import XRProbe
import XRPipeline
import XRTrain
import XRText
import XRReport

enum ReportSweep {
    /// The encoder setting of a report recipe's method (report recipes list only these).
    static func encoderSpec(_ m: Recipe.Method) -> ReportEncoderSpec {
        if case let .reportEncoder(e) = m { return e }
        return .frozen
    }

    static func trainOptions(_ r: LoadedRecipe, cell: Cell, method: Recipe.Method, encoder: Encoder, output: URL) -> ReportTrainOptions {
        let rs = r.recipe.report ?? Recipe.ReportSettings()
        var o = ReportTrainOptions(manifest: r.resolve(r.recipe.data.manifest), encoder: r.resolve(r.recipe.model?.path ?? ""), output: output)
        o.loadedEncoder = encoder
        o.imageColumn = r.recipe.data.image_column
        o.splitColumn = r.recipe.data.split_column ?? "split"
        o.tokenizer = rs.tokenizer.map { r.resolve($0) }
        o.vocabSize = rs.vocab_size; o.target = rs.target
        o.dim = rs.dim; o.layers = rs.layers; o.heads = rs.heads; o.maxTokens = rs.max_tokens; o.pool = rs.pool
        o.visualPrefix = rs.visual_input == "prefix"
        o.initFrom = rs.init_from.map { r.resolve($0) }
        o.epochs = rs.epochs; o.batchSize = rs.batch_size; o.lr = rs.lr; o.weightDecay = rs.weight_decay; o.warmup = rs.warmup
        o.labelSmoothing = rs.label_smoothing; o.clip = rs.clip
        o.trainLimit = cell.shots == 0 ? nil : cell.shots
        o.seed = UInt64(cell.seed)
        o.encoderSpec = encoderSpec(method)
        o.generation.beams = rs.beams; o.generation.maxNewTokens = rs.max_new_tokens
        o.generation.noRepeatNGram = rs.no_repeat_ngram; o.generation.lengthPenalty = rs.length_penalty
        o.quiet = true
        return o
    }

    /// A report metric on a subset of the test items (tokenised once by the caller). METEOR's
    /// per-item statistics are computed once per cell (`meteor`); a subset's score is METEOR's
    /// score of their sum, as pycocoevalcap's corpus score is.
    static func metric(
        _ name: String, candidates: [String], references: [String], rawCandidates: [String], rawReferences: [String],
        meteor: (scorer: Meteor, stats: [MeteorStats])? = nil, _ idx: [Int]
    ) -> Double? {
        guard !idx.isEmpty else { return nil }
        if name == "meteor" {
            guard let meteor else { return nil }
            var total = MeteorStats()
            for i in idx { total.add(meteor.stats[i]) }
            return meteor.scorer.score(total)
        }
        if name.hasPrefix("ce_") {
            let e = CheXpertLabeler.efficacy(generated: idx.map { rawCandidates[$0] }, references: idx.map { rawReferences[$0] })
            switch name {
            case "ce_precision": return e.micro.precision
            case "ce_recall": return e.micro.recall
            default: return e.micro.f1
            }
        }
        let s = CaptionMetrics.score(candidates: idx.map { candidates[$0] }, references: idx.map { [references[$0]] })
        switch name {
        case "rouge_l": return s.rougeL
        case "cider_d": return s.ciderD
        default:
            guard name.hasPrefix("bleu_"), let n = Int(name.dropFirst(5)), (1...4).contains(n) else { return nil }
            return s.bleu[n - 1]
        }
    }

    static func run(_ r: LoadedRecipe, options: RunOptions) throws -> RunSummary {
        let dir = Runner.outputDirectory(r)
        try Runner.checkRunDirectory(dir, r, force: options.force)
        let cellsDir = dir.appendingPathComponent("cells")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        // Inputs are read and checked before anything of the run is written.
        let manifest = r.resolve(r.recipe.data.manifest)
        let pairs = try PairedReports.load(manifest, imageColumn: r.recipe.data.image_column, splitColumn: r.recipe.data.split_column ?? "split")
        let nTrain = pairs.filter { ($0.split ?? "train").lowercased() == "train" }.count
        let nTest = pairs.filter { $0.split?.lowercased() == "test" }.count
        guard nTrain > 1, nTest > 0 else {
            throw XRError(
                "the paired manifest needs train and test rows (found \(nTrain) train, \(nTest) test)", file: manifest.path,
                field: r.recipe.data.split_column ?? "split")
        }
        let encoder = try EncoderFeatureSource().encoder(r)
        let target = r.recipe.report?.target ?? "both"
        // METEOR's resources, cut down to the words of the study's reports (more are read if drafts bring new words).
        let meteorSource =
            try r.recipe.metrics.contains("meteor")
            ? (r.recipe.report?.meteor_data).map { try MeteorSource(path: r.resolve($0).path, texts: pairs.map { PTBTokenizer.tokenize($0.target(target)) }) }
            : nil
        if options.force { try? FileManager.default.removeItem(at: cellsDir) }
        try FileManager.default.createDirectory(at: cellsDir, withIntermediateDirectories: true)
        try Runner.writeRunInfo(dir, r, options: options)
        let all = Runner.cells(r.recipe, tasks: [target])
        let runner = CellRunner(cellsDirectory: cellsDir, quiet: options.quiet)
        let work = try runner.todo(all, recipe: r, options: options)
        let methods = Dictionary(uniqueKeysWithValues: r.recipe.methods.map { ($0.name, $0) })
        // A finished (not skipped) cell's metrics, under the progress line.
        let announce = { (cell: Cell, result: CellResult) in
            guard !options.quiet, result.status == "ok" else { return }
            let shown = r.recipe.metrics.compactMap { k in result.metrics[k].map { "\(k) \(String(format: "%.3f", $0))" } }.joined(separator: ", ")
            FileHandle.standardError.write(Data("  \(cell.id): \(result.n_train) reports, \(shown)\n".utf8))
        }
        try runner.run(work, written: announce) { cell in
            guard let m = methods[cell.method] else { return nil }
            var result = CellResult(
                cell: cell, status: "ok", reason: nil, metrics: [:], primary_ci: nil, chosen_C: nil,
                n_train: 0, n_test: nTest, train_ids: [], subgroups: [])
            if cell.shots > nTrain {
                result.status = "skipped"
                result.reason = "the manifest has \(nTrain) training reports; \(cell.shots) requested"
                return result
            }
            let cellDir = cellsDir.appendingPathComponent(cell.id)
            let o = trainOptions(r, cell: cell, method: m, encoder: encoder, output: cellDir)
            let t = try ReportTraining.run(o)
            let tokC = t.generated.map(PTBTokenizer.tokenize), tokR = t.references.map(PTBTokenizer.tokenize)
            let everything = Array(0..<t.generated.count)
            let meteor = try meteorSource.map { src -> (scorer: Meteor, stats: [MeteorStats]) in
                let m = try src.meteor(covering: tokC + tokR)
                return (m, zip(tokC, tokR).map { m.stats(candidate: $0, references: [$1]) })
            }
            for name in r.recipe.metrics {
                if let v = metric(name, candidates: tokC, references: tokR, rawCandidates: t.generated, rawReferences: t.references, meteor: meteor, everything)
                {
                    result.metrics[name] = v
                }
            }
            if r.recipe.bootstrap > 0 {
                result.primary_ci = Bootstrap.interval(rows: t.generated.count, groups: nil, resamples: r.recipe.bootstrap, seed: UInt64(cell.seed)) {
                    metric(
                        r.recipe.primary_metric, candidates: tokC, references: tokR, rawCandidates: t.generated, rawReferences: t.references, meteor: meteor, $0
                    )
                }
            }
            result.n_train = t.trainReports + t.validationIDs.count
            result.n_test = t.testReports
            result.train_ids = t.trainIDs + t.validationIDs
            result.training = TrainingSummary(
                epochs: t.history.count, best_epoch: t.bestEpoch, stopped_early: false, n_validation: t.validationIDs.count,
                trainable_parameters: t.trainableEncoderParameters, train_loss: t.history.map(\.trainLoss),
                validation_loss: t.history.compactMap(\.validationLoss))
            if !(r.recipe.report?.keep_models ?? false) {
                for f in ["decoder.safetensors", "encoder_tuned.safetensors"] { try? FileManager.default.removeItem(at: cellDir.appendingPathComponent(f)) }
            }
            return result
        }
        return try runner.summary(all, computed: work.count, directory: dir, options: options) { results, complete in
            try ReportOutputs.write(results, recipe: r, directory: dir, complete: complete, trainReports: nTrain, testReports: nTest)
        }
    }
}

/// results.jsonl, summary.csv, the learning curve and report.md of a report sweep. The curve's x
/// axis is the number of training reports (`all` drawn at the manifest's count).
enum ReportOutputs {
    static func write(
        _ results: [CellResult], recipe r: LoadedRecipe, directory dir: URL, complete: Bool,
        trainReports: Int, testReports: Int
    ) throws -> Outputs.Written {
        let recipe = r.recipe
        try Outputs.writeResults(results, directory: dir)
        let task = recipe.report?.target ?? "both"
        func x(_ k: Int) -> Double { Double(k == 0 ? trainReports : k) }
        func label(_ k: Int) -> String { k == 0 ? "all" : String(k) }
        var rows: [[String]] = []
        var series: [Series] = []
        for m in methodLabels(recipe) {
            var points: [(x: Double, y: Double, low: Double, high: Double)] = []
            for k in recipe.shots {
                let cells = results.filter { $0.cell.method == m && $0.cell.shots == k }
                for (metric, s, row) in Outputs.summaryRows(cells, method: m, task: task, shots: label(k), recipe: recipe) {
                    if metric == recipe.primary_metric && s.n > 0 {
                        let bounded = metric != "cider_d"
                        points.append((x(k), s.mean, bounded ? max(s.low, 0) : max(s.low, 0), bounded ? min(s.high, 1) : s.high))
                    }
                    rows.append(row)
                }
            }
            if !points.isEmpty { series.append(Series(name: m, points: points)) }
        }
        try CSVTable(header: Outputs.summaryHeader, rows: rows).write(to: dir.appendingPathComponent("summary.csv"))
        let title = metricTitle(recipe.primary_metric)
        let plot = dir.appendingPathComponent("curve_\(safe(task)).png")
        let png = try LearningCurvePlot.render(
            title: "Report generation (\(task)): \(title) vs training reports", yLabel: title, series: series,
            note: "Mean over \(recipe.seeds) seeds; band = 95% t-interval over seeds. Recipe \(recipe.name), xrlab \(XRLabVersion.string)",
            ticks: recipe.shots.map(x), xLabel: "Paired training reports (log2 scale)")
        try PNGCodec.write(png, to: plot)
        let report = dir.appendingPathComponent("report.md")
        var s = "# \(recipe.name)\n\n"
        if !complete { s += "> **Incomplete run**: \(results.count) cells finished. Run the recipe again to finish the rest.\n\n" }
        s += "- Recipe: `\(r.file.path)`; xrlab \(XRLabVersion.string); fingerprint `\(r.fingerprint.prefix(12))`\n"
        s += "- Paired manifest: \(trainReports) training and \(testReports) test reports; target: \(task)\n"
        let rs = recipe.report ?? Recipe.ReportSettings()
        s +=
            "- Decoder: \(rs.layers) layers × \(rs.dim) wide, \(rs.heads) heads, \(rs.visual_input == "prefix" ? "a visual prefix of" : "cross-attention to") the patch grid pooled by \(rs.pool), at most \(rs.max_tokens) tokens; "
        s += "\(rs.epochs) epochs, AdamW lr \(rs.lr), batch \(rs.batch_size); beam \(rs.beams)\n"
        s += "- Encoder settings: \(methodSettings(recipe).map { "\($0.label) — \($0.description)" }.joined(separator: "; "))\n"
        s +=
            "- Training reports per cell: \(recipe.shots.map(label).joined(separator: ", ")) (a tenth held out for choosing the epoch); seeds: \(recipe.seeds); "
        s += "bootstrap resamples: \(recipe.bootstrap)\n\n"
        s += "## Learning curve (\(recipe.primary_metric))\n\n![\(plot.lastPathComponent)](\(plot.lastPathComponent))\n\n"
        s += "## Metrics (mean ± std over seeds [95% interval])\n\n| method | reports | " + recipe.metrics.joined(separator: " | ") + " |\n"
        s += "|---|---|" + recipe.metrics.map { _ in "---" }.joined(separator: "|") + "|\n"
        for m in methodLabels(recipe) {
            for k in recipe.shots {
                let cells = rows.filter { $0[0] == m && $0[2] == label(k) }
                guard cells.contains(where: { !$0[5].isEmpty }) else { continue }
                let vals = recipe.metrics.map { metric in cells.first { $0[3] == metric }.map { $0[5].isEmpty ? "" : "\($0[5]) ± \($0[6])" } ?? "" }
                s += "| \(m) | \(label(k)) | " + vals.joined(separator: " | ") + " |\n"
            }
        }
        let skipped = results.filter { $0.status != "ok" }
        if !skipped.isEmpty {
            s += "\n## Skipped cells (\(skipped.count))\n\n"
            for c in skipped { s += "- \(c.cell.id): \(c.reason ?? "")\n" }
        }
        s += "\n## Files\n\n- `results.jsonl`: one line per cell (metrics, bootstrap interval of \(recipe.primary_metric), training ids, losses)\n"
        s += "- `summary.csv`: every metric aggregated over seeds (`shots` = training reports)\n"
        s += "- `cells/<id>/generated.csv`: each cell's drafts beside the reference reports; `cells/<id>/model.json`: its settings and history\n"
        s += "- `resolved.yaml`, `run.json`: the recipe as run (defaults filled in), xrlab version, command line, fingerprint\n"
        try AtomicFile.write(s, to: report)
        return Outputs.Written(plots: [plot], report: report)
    }

    static func metricTitle(_ m: String) -> String {
        [
            "bleu_1": "BLEU-1", "bleu_2": "BLEU-2", "bleu_3": "BLEU-3", "bleu_4": "BLEU-4", "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider_d": "CIDEr-D",
            "ce_precision": "Clinical precision", "ce_recall": "Clinical recall", "ce_f1": "Clinical F1"
        ][m] ?? m
    }
}
