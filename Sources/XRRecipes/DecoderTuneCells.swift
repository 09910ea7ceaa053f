// Cells of the tuning methods (lora, adapter, last_k, bitfit, full) on the tasks whose head is a
// linear decoder on the patch tokens: segmentation (the decoder itself) and detection (the box
// head's decoder, trained on rasterised boxes). The decoder is first fitted on the frozen patch
// tokens of the cell's shots exactly as the task's decoder cell of the same draw fits it; encoder
// and decoder are then tuned together on the shots' pixels, the per-pixel loss backpropagated from
// the patch tokens, and the epoch with the lowest loss on a few held-out training images is kept —
// the frozen decoder (epoch 0) included, so tuning can only replace it when it does better on
// those images. The task's own evaluation then scores the test images with the tuned encoder.
import Foundation
import XRKernels
import XRTensor
import XRData
import XRHeads
import XRTrain

enum DecoderTuneCells {
    /// Compute the unfinished cells of a task on patch tokens (segmentation, detection) and write
    /// the run's outputs: the head and k-NN cells (`frozen`) run in parallel, one core each; the
    /// tuning cells (`tuned`) one after another, each on every core.
    static func run(
        _ r: LoadedRecipe, data: StudyData, directory dir: URL, options: RunOptions, label: String,
        frozen: @Sendable (Cell, Recipe.Method) throws -> CellResult?,
        tuned: (Cell, Recipe.Method, TuneContext) throws -> CellResult?
    ) throws -> RunSummary {
        let runner = CellRunner(cellsDirectory: dir.appendingPathComponent("cells"), quiet: options.quiet)
        let all = Runner.cells(r.recipe, tasks: data.tasks.map(\.name))
        let work = try runner.todo(all, recipe: r, options: options)
        let methods = Dictionary(uniqueKeysWithValues: r.recipe.methods.map { ($0.name, $0) })
        let (tuning, heads) = work.reduce(into: ([Cell](), [Cell]())) { acc, c in
            if methods[c.method]?.isTuning == true { acc.0.append(c) } else { acc.1.append(c) }
        }
        let workers = max(1, min(options.threads, heads.count))
        try BLAS.with(threads: 1) {
            try runner.run(heads, label: label, workers: workers) { cell in
                guard let method = methods[cell.method] else { return nil }
                return try frozen(cell, method)
            }
        }
        if !tuning.isEmpty {
            let context = try TuneContext(r, data: data)
            try runner.run(tuning, label: "\(label) tuning") { cell in
                guard let method = methods[cell.method] else { return nil }
                return try tuned(cell, method, context)
            }
        }
        return try runner.summary(all, computed: work.count, directory: dir, options: options) { results, complete in
            try Outputs.write(results, recipe: r, data: data, directory: dir, complete: complete)
        }
    }

    /// What a task gives a tuning cell: the frozen decoder to start from, the training targets at
    /// the model input, the decoder's loss settings, and its evaluation of the test images.
    struct Task {
        /// The decoder fitted on the frozen tokens of the shots.
        var frozen: LinearDecoder
        /// The model input the targets are at (the tuned encoder must read it).
        var grid: PatchGrid
        /// A training row's target at the model input (padding = `LinearDecoder.ignore`).
        var target: (Int) -> [UInt8]
        /// The decoder's L2 penalty and foreground weight.
        var l2: Double
        var positiveWeight: Double = 1
        /// Score the test images with the tuned decoder, given each row's tuned patch tokens.
        var evaluate: (_ decoder: LinearDecoder, _ tokens: (Int) throws -> [Float]) throws -> CellResult
    }

    /// A tuned cell: its result, and the tuned encoder and decoder (what a package holds).
    struct Tuned {
        var result: CellResult
        var model: TrainableViT
        var decoder: LinearDecoder

        /// The tuned encoder parameters (timm / PEFT names), without the classifier head the
        /// decoder replaces.
        var encoder: [String: Tensor] {
            var out: [String: Tensor] = [:]
            for prm in model.trainableParameters where !prm.name.hasPrefix("head") { out[prm.name] = prm.tensor }
            return out
        }
    }

    /// Tune the encoder with the task's decoder as its head on `shots`, keep the best epoch on
    /// `validation`, evaluate, and record the training; nil for a method that does not tune.
    static func run(
        _ cell: Cell, method: Recipe.Method, task t: Task, shots: [Int], validation: [Int], stream: UInt64, context ctx: TuneContext,
        _ r: LoadedRecipe, quiet: Bool
    ) throws -> Tuned? {
        guard let (set, training) = method.tuning else { return nil }
        guard t.grid.inputHeight == ctx.size, t.grid.inputWidth == ctx.size else {
            throw XRError(
                "tuning reads a \(ctx.size)×\(ctx.size) model input, the targets a \(t.grid.inputWidth)×\(t.grid.inputHeight) one", file: r.file.path,
                field: "model.preprocessing", hint: "give model.preprocessing a square crop")
        }
        let model = try ctx.model(classes: 2, r)
        try model.setTrainable(set, seed: UInt64(cell.seed))
        guard t.frozen.grid.patches == model.config.grid * model.config.grid, t.frozen.channels == model.config.dim else {
            throw XRError(
                "the tuned encoder's \(model.config.grid)×\(model.config.grid) patch grid does not match the targets' \(t.frozen.grid.gridWidth)×\(t.frozen.grid.gridHeight)",
                file: r.file.path, field: "model.preprocessing")
        }
        let tuner = DecoderTuner(model: model, decoder: t.frozen)
        func examples(_ rows: [Int]) throws -> [PixelExample] {
            try rows.map { PixelExample(pixels: try ctx.cache.pixels($0), target: t.target($0)) }
        }
        let options = DecoderTuneOptions(
            epochs: training.epochs, batchImages: training.batchSize, learningRate: training.lr, weightDecay: training.weightDecay,
            l2: t.l2, positiveWeight: t.positiveWeight, patience: training.patience, seed: UInt64(cell.seed) &* 0x9E37_79B9 &+ stream)
        try tuner.fit(try examples(shots), validation: try examples(validation), options: options)
        if !quiet {
            let v = tuner.history.last?.validation.map { String(format: ", validation %.4f", $0) } ?? ""
            FileHandle.standardError.write(
                Data("  \(cell.id): \(tuner.history.count) epochs, kept epoch \(tuner.bestEpoch)\(v)\n".utf8))
        }
        var result = try t.evaluate(tuner.decoder) { row in try tuner.tokens(try ctx.cache.pixels(row), batch: 1) }
        result.training = TrainingSummary(
            epochs: tuner.history.count, best_epoch: tuner.bestEpoch, stopped_early: tuner.history.count < training.epochs,
            n_validation: validation.count, trainable_parameters: model.trainableParameters.filter { !$0.name.hasPrefix("head") }.reduce(0) { $0 + $1.count },
            train_loss: tuner.history.map(\.train), validation_loss: validation.isEmpty ? nil : tuner.history.compactMap(\.validation))
        return Tuned(result: result, model: model, decoder: tuner.decoder)
    }
}

extension SegmentationCells {
    /// One tuning cell: draw the shots, then `tune` on them.
    static func tuneCell(
        _ cell: Cell, prepared p: Prepared, method: Recipe.Method, context ctx: TuneContext, _ r: LoadedRecipe, data: StudyData,
        directory dir: URL, quiet: Bool
    ) throws -> CellResult? {
        switch drawShots(cell, prepared: p, data: data) {
        case let .failure(skip):
            return CellResult(
                cell: cell, status: "skipped", reason: skip.reason, metrics: [:], primary_ci: nil, chosen_C: nil,
                n_train: 0, n_test: p.test.count, train_ids: [], subgroups: [])
        case let .success(shots):
            return try tune(cell, shots: shots, prepared: p, method: method, context: ctx, r, data: data, directory: dir, quiet: quiet)?.result
        }
    }

    /// Tuning cell `cell` on its drawn `shots`: draw the validation images, fit the decoder on
    /// frozen tokens (with the recipe's `linear_decoder` settings), tune, then predict and score
    /// every test image with the tuned encoder (seed 0 with `dir`: writing the sample's masks).
    static func tune(
        _ cell: Cell, shots: [Int], prepared p: Prepared, method: Recipe.Method, context ctx: TuneContext, _ r: LoadedRecipe, data: StudyData,
        directory dir: URL?, quiet: Bool
    ) throws -> DecoderTuneCells.Tuned? {
        guard let (_, training) = method.tuning else { return nil }
        let validation = validationImages(cell, prepared: p, data: data, excluding: shots, count: training.validation)
        let spec = decoderSpec(r.recipe)
        guard let frozen = fit(.linearDecoder(spec), shots: shots, cell: cell, prepared: p, data: data)?.decoder else { return nil }
        let task = DecoderTuneCells.Task(
            frozen: frozen, grid: p.grid, target: { p.targets[$0] ?? [] }, l2: spec.weightDecay,
            evaluate: { decoder, tokens in
                try evaluate(
                    cell, predict: { row, g in decoder.predict(try tokens(row), geometry: g) }, shots: shots, prepared: p, data: data, recipe: r.recipe,
                    masks: cell.seed == 0 ? dir : nil)
            })
        return try DecoderTuneCells.run(
            cell, method: method, task: task, shots: shots, validation: validation, stream: Runner.streamKey(p.task.name), context: ctx, r, quiet: quiet)
    }

    /// Up to `count` annotated training images, one per patient, of patients that neither the
    /// shots nor the test images have, in a seeded order.
    static func validationImages(_ cell: Cell, prepared p: Prepared, data: StudyData, excluding shots: [Int], count: Int) -> [Int] {
        let key = data.patients ?? data.ids
        let used = Set(shots.map { key[$0] }).union(p.test.map { key[$0] })
        var rest = p.pool.filter { !used.contains(key[$0]) }
        var rng = XRRandom(seed: UInt64(cell.seed), stream: [Runner.streamKey(p.task.name), UInt64(cell.shots), 0x7A11])
        rng.shuffle(&rest)
        var out: [Int] = [], seen = Set<String>()
        for i in rest where out.count < count && !seen.contains(key[i]) {
            out.append(i)
            seen.insert(key[i])
        }
        return out
    }
}

extension DetectionCells {
    /// One tuning cell: draw the shots (with a box and as many without), then `tune` on them.
    static func tuneCell(
        _ cell: Cell, prepared p: Prepared, method: Recipe.Method, context ctx: TuneContext, _ r: LoadedRecipe, data: StudyData,
        directory dir: URL, quiet: Bool
    ) throws -> CellResult? {
        switch drawShots(cell, prepared: p, data: data) {
        case let .failure(skip): return skipped(cell, prepared: p, reason: skip.reason)
        case let .success(shots):
            return try tune(cell, shots: shots, prepared: p, method: method, context: ctx, r, data: data, directory: dir, quiet: quiet)?.result
        }
    }

    /// Tuning cell `cell` on its drawn `shots`: draw the validation images (up to `validation` of
    /// each kind), fit the box head on frozen tokens (with the recipe's `box_head` settings), tune
    /// encoder and head on the rasterised boxes, then detect and score every test image with the
    /// tuned encoder exactly as `box_head` does (seed 0 with `dir`: writing the sample's heatmaps).
    static func tune(
        _ cell: Cell, shots: [Int], prepared p: Prepared, method: Recipe.Method, context ctx: TuneContext, _ r: LoadedRecipe, data: StudyData,
        directory dir: URL?, quiet: Bool
    ) throws -> DecoderTuneCells.Tuned? {
        guard let (_, training) = method.tuning else { return nil }
        let key = data.patients ?? data.ids
        var rng = XRRandom(seed: UInt64(cell.seed), stream: [Runner.streamKey(p.task.name), UInt64(cell.shots), 0x7A11])
        let validation = TuneContext.validation(
            pool: p.pool, task: p.task, keys: key, used: Set(shots.map { key[$0] }), testKeys: Set(p.test.map { key[$0] }),
            perClass: training.validation, rng: &rng)
        let spec = boxHeadSpec(r.recipe)
        guard let frozen = fit(.boxHead(spec), shots: shots, cell: cell, prepared: p, data: data)?.head?.decoder else { return nil }
        let task = DecoderTuneCells.Task(
            frozen: frozen, grid: p.grid, target: { p.targets[$0] ?? [] }, l2: spec.weightDecay, positiveWeight: spec.positiveWeight,
            evaluate: { decoder, tokens in
                try evaluate(
                    cell, detector: .boxHead(decoder, spec), tokens: tokens, shots: shots, prepared: p, data: data, recipe: r.recipe, directory: dir)
            })
        return try DecoderTuneCells.run(
            cell, method: method, task: task, shots: shots, validation: validation, stream: Runner.streamKey(p.task.name), context: ctx, r, quiet: quiet)
    }
}
