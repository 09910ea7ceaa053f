// The fitted heads of segmentation, detection and retrieval recipes, for packaging: fitted and
// evaluated by the same code a study cell runs (`SegmentationCells`, `DetectionCells`,
// `RetrievalCells`), on a cell's draw of shots or on every annotated / labelled training row. Letters: G gallery rows, D feature
// dimensions, P patches, C token channels.
import Foundation
import XRTensor
import XRData
import XRProbe
import XRHeads
import XRTrain

/// A segmentation recipe's linear decoder (with the tuned encoder for the tuning methods), fitted
/// as a study cell fits it, with its evaluation on the test images.
public struct SegmentationFit: Sendable {
    /// The method setting (`linear_decoder`, or a tuning method: `lora`, `last_k`, …).
    public var method: String
    public var decoder: LinearDecoder
    /// Tuning methods: the tuned encoder parameters (timm / PEFT names; the classifier head, which
    /// the decoder replaces, left out) and the square input size they were tuned at.
    public var encoder: [String: Tensor] = [:]
    public var inputSize: Int? = nil
    /// Training rows (annotated images) the decoder was fitted on, and the annotated test rows.
    public var trainRows: [Int]
    public var testRows: [Int]
    /// The evaluation: `metrics`, `primary_ci`, `subgroups` and per-image `segmentation` scores,
    /// exactly as the cell (method, shots, seed) of the run computes them.
    public var result: CellResult
}

/// A detection recipe's box head (with the tuned encoder for the tuning methods), fitted as a
/// study cell fits it, with its evaluation on the test images.
public struct DetectionFit: Sendable {
    /// The method setting (`box_head`, or a tuning method: `lora`, `last_k`, …).
    public var method: String
    public var head: BoxHead
    /// Tuning methods: the tuned encoder parameters (timm / PEFT names; the classifier head, which
    /// the box head replaces, left out) and the square input size they were tuned at.
    public var encoder: [String: Tensor] = [:]
    public var inputSize: Int? = nil
    /// The task (classes `no_box`, `box`; named by the kept box labels, or `boxes`).
    public var task: StudyTask
    /// Training rows (images with and without a box) the head was fitted on, and the test rows.
    public var trainRows: [Int]
    public var testRows: [Int]
    /// The evaluation: `metrics`, `metric_ci`, `subgroups` and per-image `detection`, exactly as
    /// the cell (method, shots, seed) of the run computes them.
    public var result: CellResult
}

/// A retrieval recipe's gallery for one task: the method's features of the gallery rows,
/// L2-normalised, and the projection queries go through first (`linear_projection`).
public struct RetrievalFit: Sendable {
    public var method: String
    public var task: StudyTask
    /// Gallery rows (row indices of the study) and their features (G, D), normalised.
    public var galleryRows: [Int]
    public var gallery: [Float]
    /// `linear_projection`: the within-class whitening fitted on `shotRows`.
    public var projection: WithinClassWhitening?
    public var shotRows: [Int]
    /// Query (test) rows and the evaluation, as the cell (method, shots, seed) computes it.
    public var queryRows: [Int]
    public var result: CellResult
}

/// Fitting the heads of segmentation, detection and retrieval recipes for `xrlab pack`.
public enum TaskPackaging {
    /// Fit the recipe's `linear_decoder` (the requested setting, else the first) on the draw of
    /// study cell (`shots`, `seed`), or on every annotated training image that shares no patient
    /// with the test images when `shots` is nil, and evaluate it on the test images.
    public static func segmentation(_ r: LoadedRecipe, data: StudyData, method requested: String?, shots: Int?, seed: Int) throws -> SegmentationFit {
        let names = r.recipe.methods.map(\.name)
        let chosen = try chosenMethod(r, requested) { if case .linearDecoder = $0 { return true } else { return false } }
        if let method = chosen, method.tuning != nil { return try tunedSegmentation(r, data: data, method: method, shots: shots, seed: seed) }
        guard let method = chosen, case .linearDecoder = method else {
            throw XRError(
                "a segmentation package holds a linear decoder; the run's method '\(requested ?? names.joined(separator: ", "))' is not one",
                field: "--method", hint: "pack a linear_decoder or a tuning method (knn_patches is not packaged)")
        }
        let p = try SegmentationCells.prepare(r, data: data)
        let rows = try fitRows(shots: shots, test: p.test, pool: p.pool, data: data) {
            SegmentationCells.drawShots(Cell(method: method.name, task: p.task.name, shots: $0, seed: seed), prepared: p, data: data)
        }
        let cell = Cell(method: method.name, task: p.task.name, shots: shots ?? rows.count, seed: seed)
        guard let fitted = SegmentationCells.fit(method, shots: rows, cell: cell, prepared: p, data: data), let decoder = fitted.decoder else {
            throw XRError("method '\(method.name)' cannot be packaged", field: "--method")
        }
        let result = try SegmentationCells.evaluate(
            cell, predict: { decoder.predict(SegmentationCells.tokens(data, $0), geometry: $1) }, shots: rows, prepared: p, data: data, recipe: r.recipe,
            masks: nil)
        return SegmentationFit(method: method.name, decoder: decoder, trainRows: rows, testRows: p.test, result: result)
    }

    /// A tuning method's segmentation cell (`shots`, `seed`) as the study runs it
    /// (`SegmentationCells.tune`): the decoder fitted on the frozen tokens of the draw, then
    /// encoder and decoder tuned together, the best epoch on the held-out images kept; evaluated
    /// with the tuned encoder's tokens.
    static func tunedSegmentation(_ r: LoadedRecipe, data: StudyData, method: Recipe.Method, shots: Int?, seed: Int) throws -> SegmentationFit {
        let p = try SegmentationCells.prepare(r, data: data)
        let cell = try tunedCell(method, task: p.task.name, shots: shots, seed: seed)
        let rows: [Int]
        switch SegmentationCells.drawShots(cell, prepared: p, data: data) {
        case let .failure(skip): throw XRError(skip.reason, field: "--shots", hint: "choose a shot count the run's cells could draw")
        case let .success(drawn): rows = drawn
        }
        let ctx = try TuneContext(r, data: data)
        guard let tuned = try SegmentationCells.tune(cell, shots: rows, prepared: p, method: method, context: ctx, r, data: data, directory: nil, quiet: true)
        else { throw XRError("method '\(method.name)' cannot be packaged", field: "--method") }
        return SegmentationFit(
            method: method.name, decoder: tuned.decoder, encoder: tuned.encoder, inputSize: ctx.size, trainRows: rows, testRows: p.test,
            result: tuned.result)
    }

    /// The run's method a package is made from: `requested`, which the run must have, else the
    /// first method `isDefault` accepts (nil when there is none).
    static func chosenMethod(_ r: LoadedRecipe, _ requested: String?, default isDefault: (Recipe.Method) -> Bool) throws -> Recipe.Method? {
        guard let requested else { return r.recipe.methods.first(where: isDefault) }
        guard let method = r.recipe.methods.first(where: { $0.name == requested }) else {
            let names = r.recipe.methods.map(\.name)
            throw XRError("the run has no method '\(requested)' (it has \(names.joined(separator: ", ")))", field: "--method")
        }
        return method
    }

    /// The training rows a packaged head is fitted on: the draw of the study cell with `shots`
    /// (`draw`), or every row of `pool` that shares no patient with the test images when `shots`
    /// is nil.
    static func fitRows(shots: Int?, test: [Int], pool: [Int], data: StudyData, draw: (Int) -> Result<[Int], Runner.Skip>) throws -> [Int] {
        guard let shots else {
            let testPatients = Set(test.map { data.patients?[$0] ?? data.ids[$0] })
            return pool.filter { !testPatients.contains(data.patients?[$0] ?? data.ids[$0]) }
        }
        switch draw(shots) {
        case let .failure(skip): throw XRError(skip.reason, field: "--shots", hint: "choose fewer shots, or train on all rows (leave --shots out)")
        case let .success(drawn): return drawn
        }
    }

    /// The study cell a tuning method is packaged from: tuned heads come from a cell of the run.
    static func tunedCell(_ method: Recipe.Method, task: String, shots: Int?, seed: Int) throws -> Cell {
        guard method.tuning != nil else { throw XRError("method '\(method.name)' tunes nothing", field: "--method") }
        guard let shots else {
            throw XRError("a tuned head is packaged from its study cell", field: "--shots", hint: "pass --shots k (and --seed s) of a cell of the run")
        }
        return Cell(method: method.name, task: task, shots: shots, seed: seed)
    }

    /// Fit the recipe's `box_head` (the requested setting, else the first) on the draw of study
    /// cell (`shots`, `seed`: `shots` images with a box and as many without), or on every training
    /// image that shares no patient with the test images when `shots` is nil, and evaluate it on
    /// the test images. A tuning method (`lora`, `last_k`, …) is its study cell: the box head
    /// fitted on frozen tokens, then tuned with the encoder (`DetectionCells.tune`).
    public static func detection(_ r: LoadedRecipe, data: StudyData, method requested: String?, shots: Int?, seed: Int) throws -> DetectionFit {
        let names = r.recipe.methods.map(\.name)
        let chosen = try chosenMethod(r, requested) { if case .boxHead = $0 { return true } else { return false } }
        if let method = chosen, method.tuning != nil { return try tunedDetection(r, data: data, method: method, shots: shots, seed: seed) }
        guard let method = chosen, case .boxHead = method else {
            throw XRError(
                "a detection package holds a box head; the run's method '\(requested ?? names.joined(separator: ", "))' is not one",
                field: "--method", hint: "pack a box_head or a tuning method (knn_patches is not packaged)")
        }
        let p = try DetectionCells.prepare(r, data: data)
        let rows = try fitRows(shots: shots, test: p.test, pool: p.pool, data: data) {
            DetectionCells.drawShots(Cell(method: method.name, task: p.task.name, shots: $0, seed: seed), prepared: p, data: data)
        }
        let cell = Cell(method: method.name, task: p.task.name, shots: shots ?? rows.count, seed: seed)
        guard let detector = DetectionCells.fit(method, shots: rows, cell: cell, prepared: p, data: data), let head = detector.head else {
            throw XRError("method '\(method.name)' cannot be packaged", field: "--method")
        }
        let result = try DetectionCells.evaluate(
            cell, detector: detector, tokens: { SegmentationCells.tokens(data, $0) }, shots: rows, prepared: p, data: data, recipe: r.recipe,
            directory: nil)
        return DetectionFit(method: method.name, head: head, task: p.task, trainRows: rows, testRows: p.test, result: result)
    }

    /// A tuning method's detection cell (`shots`, `seed`) as the study runs it, with its tuned
    /// encoder parameters.
    static func tunedDetection(_ r: LoadedRecipe, data: StudyData, method: Recipe.Method, shots: Int?, seed: Int) throws -> DetectionFit {
        let p = try DetectionCells.prepare(r, data: data)
        let cell = try tunedCell(method, task: p.task.name, shots: shots, seed: seed)
        let rows: [Int]
        switch DetectionCells.drawShots(cell, prepared: p, data: data) {
        case let .failure(skip): throw XRError(skip.reason, field: "--shots", hint: "choose a shot count the run's cells could draw")
        case let .success(drawn): rows = drawn
        }
        let ctx = try TuneContext(r, data: data)
        guard let tuned = try DetectionCells.tune(cell, shots: rows, prepared: p, method: method, context: ctx, r, data: data, directory: nil, quiet: true)
        else { throw XRError("method '\(method.name)' cannot be packaged", field: "--method") }
        let spec = DetectionCells.boxHeadSpec(r.recipe)
        return DetectionFit(
            method: method.name, head: BoxHead(decoder: tuned.decoder, threshold: Float(spec.threshold), scoring: spec.scoring), encoder: tuned.encoder,
            inputSize: ctx.size, task: p.task, trainRows: rows, testRows: p.test, result: tuned.result)
    }

    /// A detection heatmap PNG as the study writes it (`heatmaps/<cell>/`): the head's probability
    /// at the image's size, 8-bit gray, 255 = 1.
    public static func detectionHeatmap(_ head: BoxHead, tokens: [Float], geometry g: ImageGeometry) throws -> Data {
        try DetectionCells.heatmapPNG(DetectionCells.probabilities(head, tokens: tokens, geometry: g), geometry: g)
    }

    /// The file name of an image's heatmap, as the study's `heatmaps/` folders name it.
    public static func heatmapFile(_ id: String) -> String { DetectionCells.heatmapFile(id) }

    /// An overlay PNG of one image as the study's heatmap grids draw it: the image, its heatmap
    /// (read from `heatmap`, a PNG written by `detectionHeatmap`) in red, the detected boxes in
    /// yellow, captioned with the image score (the heatmap's largest logit) and the box count.
    public static func detectionOverlay(title: String, image: URL, heatmap: URL, detection d: BoxDetection, id: String) throws -> Data {
        let found = ImageDetections(
            image: id, score: d.imageScore, peak_x: d.peak.x, peak_y: d.peak.y, boxes: d.boxes.map(\.box), scores: d.boxes.map(\.score))
        let tile = HeatmapGrid.Tile(image: image, heatmap: heatmap, truth: [], found: found)
        return try OverlayGrid.layout(title: title, tiles: [tile], draw: HeatmapGrid.draw) { t in
            String(format: "max %.2f, ", t.found.score) + "\(t.found.boxes.count) box\(t.found.boxes.count == 1 ? "" : "es")"
        }
    }

    /// The file name of an image's predicted mask, as the study's `masks/` folders name it.
    public static func maskFile(_ id: String) -> String { SegmentationCells.maskFile(id) }

    /// A segmentation metric (`dice`, `iou`, `hd95`, `dice_pooled`, `iou_pooled`) over the images
    /// `idx` of `scores`, as the study computes it.
    public static func segmentationMetric(_ name: String, _ scores: [ImageMaskScore], _ idx: [Int]) -> Double? {
        SegmentationCells.metric(name, scores, idx)
    }

    /// A retrieval recipe's gallery per task for the method setting `requested` (else the only
    /// method, else `linear_projection` when the recipe has it): with `linear_projection`, the
    /// projection is fitted on the draw of study cell (`shots`, `seed`), or on every labelled
    /// training row when `shots` is nil. Evaluated on the test rows as the cell is.
    public static func retrieval(_ r: LoadedRecipe, data: StudyData, method requested: String?, shots: Int?, seed: Int) throws -> [RetrievalFit] {
        let names = r.recipe.methods.map(\.name)
        let chosen: Recipe.Method
        if let requested {
            guard let m = r.recipe.methods.first(where: { $0.name == requested }) else {
                throw XRError("the run has no method '\(requested)' (it has \(names.joined(separator: ", ")))", field: "--method")
            }
            chosen = m
        } else if let m = r.recipe.methods.first(where: { if case .linearProjection = $0 { return true } else { return false } }) {
            chosen = m
        } else if let m = r.recipe.methods.first {
            chosen = m
        } else {
            throw XRError("the recipe has no methods", field: "methods")
        }
        let settings = r.recipe.retrieval ?? Recipe.RetrievalSettings()
        let d = data.dim
        var out: [RetrievalFit] = []
        for task in data.tasks {
            let p = RetrievalCells.Prepared(task: task, data: data, settings: settings)
            guard !p.queries.isEmpty, !p.gallery.isEmpty else {
                throw XRError(
                    "retrieval by '\(task.name)' has \(p.queries.count) queries and \(p.gallery.count) gallery rows", file: r.file.path,
                    field: "data.label_column")
            }
            var projection: WithinClassWhitening? = nil, shotRows: [Int] = [], cellShots = 0
            if case let .linearProjection(spec) = chosen {
                var fitRows: [(row: Int, value: Int)]
                if let shots {
                    cellShots = shots
                    switch RetrievalCells.drawShots(Cell(method: chosen.name, task: task.name, shots: shots, seed: seed), prepared: p, data: data) {
                    case let .failure(skip): throw XRError(skip.reason, field: "--shots", hint: "choose fewer shots, or fit on all rows (leave --shots out)")
                    case let .success(rows): fitRows = rows
                    }
                } else {
                    let sets = task.valueSets ?? task.labels.map { [$0] }
                    fitRows = p.pool.flatMap { row in sets[row].map { (row: row, value: $0) } }
                    cellShots = Set(fitRows.map(\.row)).count
                }
                projection = WithinClassWhitening(
                    fit: RetrievalCells.gather(data.features, rows: fitRows.map(\.row), d: d), labels: fitRows.map(\.value), d: d,
                    shrinkage: spec.shrinkage, center: p.poolMean)
                shotRows = fitRows.map(\.row)
            } else if shots != nil {
                throw XRError("method '\(chosen.name)' trains nothing; --shots applies to linear_projection", field: "--shots")
            }
            var gallery = RetrievalCells.gather(data.features, rows: p.gallery, d: d)
            if let projection { gallery = projection.apply(gallery, d: d) }
            let cell = Cell(method: chosen.name, task: task.name, shots: cellShots, seed: projection == nil ? 0 : seed)
            let result = RetrievalCells.evaluate(cell, prepared: p, projection: projection, shots: shotRows, data: data, recipe: r.recipe, settings: settings)
            out.append(
                RetrievalFit(
                    method: chosen.name, task: task, galleryRows: p.gallery, gallery: Probe.normalized(gallery, d: d), projection: projection,
                    shotRows: shotRows, queryRows: p.queries, result: result))
        }
        return out
    }
}
