// Segmentation cells of the tuning methods (lora, adapter, last_k, bitfit, full): the encoder is
// tuned with the linear decoder as its head. The decoder is first fitted on the frozen patch tokens
// of the cell's shots exactly as the `linear_decoder` cell of the same draw fits it; encoder and
// decoder are then tuned together on the shots' pixels, the per-pixel loss backpropagated from the
// patch tokens, and the epoch with the lowest loss on a few held-out annotated training images is
// kept — the frozen decoder (epoch 0) included, so tuning can only replace it when it does better
// on those images.
import Foundation
import XRTensor
import XRData
import XRHeads
import XRTrain

extension SegmentationCells {
    /// One tuning cell: draw the shots and the validation images, fit the decoder on frozen tokens,
    /// tune, then predict and score every test image with the tuned encoder.
    static func tuneCell(
        _ cell: Cell, prepared p: Prepared, method: Recipe.Method, context ctx: TuneContext, _ r: LoadedRecipe, data: StudyData,
        directory dir: URL, quiet: Bool
    ) throws -> CellResult? {
        guard let (set, training) = method.tuning else { return nil }
        let shots: [Int]
        switch drawShots(cell, prepared: p, data: data) {
        case let .failure(skip):
            return CellResult(
                cell: cell, status: "skipped", reason: skip.reason, metrics: [:], primary_ci: nil, chosen_C: nil,
                n_train: 0, n_test: p.test.count, train_ids: [], subgroups: [])
        case let .success(rows): shots = rows
        }
        guard p.grid.inputHeight == ctx.size, p.grid.inputWidth == ctx.size else {
            throw XRError(
                "tuning reads a \(ctx.size)×\(ctx.size) model input, the masks a \(p.grid.inputWidth)×\(p.grid.inputHeight) one", file: r.file.path,
                field: "model.preprocessing", hint: "give model.preprocessing a square crop")
        }
        let validation = validationImages(cell, prepared: p, data: data, excluding: shots, count: training.validation)
        let spec = decoderSpec(r.recipe)
        guard let frozen = fit(.linearDecoder(spec), shots: shots, cell: cell, prepared: p, data: data)?.decoder else { return nil }
        let model = try ctx.model(classes: 2, r)
        try model.setTrainable(set, seed: UInt64(cell.seed))
        guard frozen.grid.patches == model.config.grid * model.config.grid, frozen.channels == model.config.dim else {
            throw XRError(
                "the tuned encoder's \(model.config.grid)×\(model.config.grid) patch grid does not match the masks' \(frozen.grid.gridWidth)×\(frozen.grid.gridHeight)",
                file: r.file.path, field: "model.preprocessing")
        }
        let tuner = DecoderTuner(model: model, decoder: frozen)
        func examples(_ rows: [Int]) throws -> [PixelExample] {
            try rows.map { PixelExample(pixels: try ctx.cache.pixels($0), target: p.targets[$0] ?? []) }
        }
        let options = DecoderTuneOptions(
            epochs: training.epochs, batchImages: training.batchSize, learningRate: training.lr, weightDecay: training.weightDecay,
            l2: spec.weightDecay, patience: training.patience, seed: UInt64(cell.seed) &* 0x9E37_79B9 &+ Runner.streamKey(p.task.name))
        try tuner.fit(try examples(shots), validation: try examples(validation), options: options)
        if !quiet {
            let v = tuner.history.last?.validation.map { String(format: ", validation %.4f", $0) } ?? ""
            FileHandle.standardError.write(
                Data("  \(cell.id): \(tuner.history.count) epochs, kept epoch \(tuner.bestEpoch)\(v)\n".utf8))
        }
        var result = try evaluate(
            cell, predict: { row, g in tuner.decoder.predict(try tuner.tokens(try ctx.cache.pixels(row), batch: 1), geometry: g) }, shots: shots,
            prepared: p, data: data, recipe: r.recipe, masks: cell.seed == 0 ? dir : nil)
        result.training = TrainingSummary(
            epochs: tuner.history.count, best_epoch: tuner.bestEpoch, stopped_early: tuner.history.count < training.epochs,
            n_validation: validation.count, trainable_parameters: model.trainableParameters.filter { !$0.name.hasPrefix("head") }.reduce(0) { $0 + $1.count },
            train_loss: tuner.history.map(\.train), validation_loss: validation.isEmpty ? nil : tuner.history.compactMap(\.validation))
        return result
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
