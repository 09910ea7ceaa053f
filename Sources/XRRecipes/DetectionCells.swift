// Detection recipes (`data.task: detection`): true boxes from `data.boxes` (images without rows
// are negatives), predicted from a patch-level heatmap on the encoder's frozen patch tokens. Boxes
// follow the encoder's preprocessing (`Preprocessing.geometry`: rasterised at the image's size,
// then the mask transform), predicted boxes are mapped back to image pixels and scored there.
// Each cell is a closure on the one cell runner: `box_head` or `knn_patches` fitted on `shots`
// annotated (positive) training images and as many negatives, or a tuning method with the box
// head (DecoderTuneCells.swift). Letters: P patches, C channels.
import Foundation
import XRTensor
import XRData
import XRProbe
import XRHeads
import XRKernels
import XRPipeline

/// One test image's detections as a cell keeps them (boxes.csv): every metric is recomputed
/// from these and the true boxes.
public struct ImageDetections: Codable, Sendable, Equatable {
    /// The image's row id.
    public var image: String
    /// Image-level score: the heatmap's maximum over the image (AUROC against "has a box").
    public var score: Double
    /// Where that maximum is, in image pixels (the pointing game).
    public var peak_x: Double
    public var peak_y: Double
    /// Predicted boxes in image pixels, highest score first, and their scores.
    public var boxes: [Box]
    public var scores: [Double]
}

enum DetectionCells {
    /// Test images whose heatmaps every seed-0 cell writes: positives, then negatives.
    static let samplePositives = 6, sampleNegatives = 2
    /// IoU at which a predicted box finds a true box in the FROC sensitivities.
    static let frocIoU = 0.3

    /// The boxes CSV of the recipe (resolved against the recipe's folder); a missing file is an
    /// error naming `data.boxes`.
    static func boxesTable(_ r: LoadedRecipe) throws -> CSVTable {
        guard let path = r.recipe.data.boxes else { throw XRError("a detection task needs boxes", file: r.file.path, field: "data.boxes") }
        let url = r.resolve(path)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XRError("boxes file not found: \(url.path)", file: r.file.path, field: "data.boxes", hint: "paths are relative to the recipe file's folder")
        }
        return try CSVTable(contentsOf: url)
    }

    /// The detection task of the manifest rows: 1 = the image has a box (of the kept labels), 0 =
    /// no box; only boxes of other labels: −1 (left out), or 0 with `other_box_images: negative`.
    /// The CSV's columns and that every image it names is in the manifest are checked here, before
    /// any image is encoded.
    static func task(_ r: LoadedRecipe, rows m: ManifestRows) throws -> StudyTask {
        let spec = r.recipe.data
        let table = try boxesTable(r)
        let src = table.source ?? spec.boxes ?? "boxes"
        let ci = try table.column(spec.image_column)
        for c in ["x", "y", "width", "height"] { _ = try table.column(c) }
        let cl = try spec.box_label_column.map { try table.column($0) }
        let (manifest, _) = try StudyLoader.table(r)
        let known = Set(try manifest.values(spec.image_column).map { $0.trimmingCharacters(in: .whitespaces) })
        var kept = Set<String>(), other = Set<String>()
        for (n, row) in table.rows.enumerated() {
            let image = row[ci].trimmingCharacters(in: .whitespaces)
            guard known.contains(image) else {
                throw XRError(
                    "image '\(image)' is not in the manifest", file: src, field: "row \(n + 2), column \(spec.image_column)",
                    hint: "the boxes CSV names images exactly as the manifest's \(spec.image_column) column does")
            }
            if let cl, !spec.labels.isEmpty, !spec.labels.contains(row[cl].trimmingCharacters(in: .whitespaces)) {
                other.insert(image)
            } else {
                kept.insert(image)
            }
        }
        return StudyTask(
            name: taskName(r.recipe), classes: ["no_box", "box"],
            labels: m.ids.map { kept.contains($0) ? 1 : other.contains($0) && spec.other_box_images != .negative ? -1 : 0 })
    }

    /// The task's name: the kept box labels, or `boxes`.
    static func taskName(_ recipe: Recipe) -> String { recipe.data.labels.isEmpty ? "boxes" : recipe.data.labels.joined(separator: "+") }

    /// What every cell of the run shares: rows, geometry, training targets and test boxes.
    struct Prepared: Sendable {
        var task: StudyTask
        var grid: PatchGrid
        var channels: Int
        /// Test rows and training rows (where shots are drawn from), positives and negatives.
        var test: [Int]
        var pool: [Int]
        /// Training row → its boxes rasterised and taken to the model input.
        var targets: [Int: [UInt8]]
        /// Test row → its geometry and its true boxes (image pixels).
        var geometries: [Int: ImageGeometry]
        var truths: [Int: [Box]]
        /// Test rows whose heatmaps are written.
        var sample: [Int]
    }

    /// Read every row's image size and boxes; a box outside its image, a width or height that
    /// is not positive, a value that is not a number are errors naming the boxes file, row and column.
    static func prepare(_ r: LoadedRecipe, data: StudyData) throws -> Prepared {
        let spec = r.recipe.data
        guard let task = data.tasks.first else { throw XRError("a detection task needs boxes", file: r.file.path, field: "data.boxes") }
        let m = try StudyLoader.rows(r)
        let encoder = try EncoderFeatureSource().encoder(r)
        let patch = encoder.loaded.config.patchSize
        let base = m.url.deletingLastPathComponent()
        var grid: PatchGrid? = nil
        var sizes: [String: (width: Int, height: Int)] = [:], geometries: [Int: ImageGeometry] = [:]
        let used = data.ids.indices.filter { task.labels[$0] >= 0 && data.isTest[$0] != nil }
        for i in used {
            let imageURL = data.ids[i].hasPrefix("/") ? URL(fileURLWithPath: data.ids[i]) : base.appendingPathComponent(data.ids[i])
            let image = try ImageDecoder.decode(try Data(contentsOf: imageURL), source: imageURL.path)
            sizes[data.ids[i]] = (image.width, image.height)
            let g = encoder.preprocessing.geometry(height: image.height, width: image.width)
            grid = try PatchGrid.of(g, patch: patch, image: data.ids[i], agreeingWith: grid, recipe: r.file.path, task: "detection")
            geometries[i] = g
        }
        // Boxes of images the recipe leaves out (data.where, other splits, other labels) are not read.
        let (manifest, _) = try StudyLoader.table(r)
        let skipped = Set(try manifest.values(spec.image_column).map { $0.trimmingCharacters(in: .whitespaces) }).subtracting(sizes.keys)
        let annotations = try BoxAnnotations.parse(
            try boxesTable(r), images: sizes, imageColumn: spec.image_column, labelColumn: spec.box_label_column, skipping: skipped)
        func boxes(_ i: Int) -> [Box] {
            (annotations[data.ids[i]] ?? []).filter { spec.labels.isEmpty || spec.labels.contains($0.label?.trimmingCharacters(in: .whitespaces) ?? "") }
                .map(\.box)
        }
        let test = used.filter { data.isTest[$0] == true }, pool = used.filter { data.isTest[$0] == false }
        let positives = Set(used.filter { task.labels[$0] == 1 })
        guard let grid, test.contains(where: positives.contains), pool.contains(where: positives.contains) else {
            throw XRError(
                "the detection task has \(test.filter(positives.contains).count) test and \(pool.filter(positives.contains).count) training images with a box; both need some",
                file: r.file.path, field: "data.boxes", hint: "check data.split_column / data.test_fraction, data.where and the boxes file")
        }
        guard data.dim % grid.patches == 0 else {
            throw XRError("the patch tokens do not match the \(grid.gridWidth)×\(grid.gridHeight) patch grid", file: r.file.path, field: "model")
        }
        var targets: [Int: [UInt8]] = [:], truths: [Int: [Box]] = [:], testGeometries: [Int: ImageGeometry] = [:]
        for i in pool {
            guard let g = geometries[i] else { continue }
            targets[i] = BoxHead.example(tokens: [], boxes: boxes(i), geometry: g).target
        }
        for i in test {
            truths[i] = boxes(i)
            testGeometries[i] = geometries[i]
        }
        func spread(_ rows: [Int], _ n: Int) -> [Int] { (0..<min(n, rows.count)).map { rows[$0 * rows.count / min(n, rows.count)] } }
        let sample = spread(test.filter(positives.contains), samplePositives) + spread(test.filter { !positives.contains($0) }, sampleNegatives)
        return Prepared(
            task: task, grid: grid, channels: data.dim / grid.patches, test: test, pool: pool, targets: targets, geometries: testGeometries,
            truths: truths, sample: sample)
    }

    /// Compute the unfinished cells of a detection recipe and write the run's outputs.
    static func run(_ r: LoadedRecipe, data: StudyData, directory dir: URL, options: RunOptions) throws -> RunSummary {
        let prepared = try prepare(r, data: data)
        return try DecoderTuneCells.run(
            r, data: data, directory: dir, options: options, label: "detection",
            frozen: { cell, method in try runCell(cell, prepared: prepared, method: method, data: data, recipe: r.recipe, directory: dir) },
            tuned: { cell, method, context in
                try tuneCell(cell, prepared: prepared, method: method, context: context, r, data: data, directory: dir, quiet: options.quiet)
            })
    }

    /// The folder of a cell's heatmaps: `heatmaps/<method>__k<shots>__s<seed>/`.
    static func heatmapsDirectory(_ cell: Cell, in dir: URL) -> URL {
        dir.appendingPathComponent("heatmaps").appendingPathComponent("\(safe(cell.method))__k\(cell.shots)__s\(cell.seed)")
    }

    /// One cell: draw `shots` images with a box and as many without, fit the method, detect on
    /// every test image, score; seed 0 writes the sample's heatmaps.
    static func runCell(
        _ cell: Cell, prepared p: Prepared, method: Recipe.Method, data: StudyData, recipe: Recipe, directory dir: URL
    ) throws -> CellResult {
        let shots: [Int]
        switch drawShots(cell, prepared: p, data: data) {
        case let .failure(skip): return skipped(cell, prepared: p, reason: skip.reason)
        case let .success(rows): shots = rows
        }
        guard let detector = fit(method, shots: shots, cell: cell, prepared: p, data: data) else {
            return skipped(cell, prepared: p, reason: nil, status: "ok")
        }
        return try evaluate(
            cell, detector: detector, tokens: { SegmentationCells.tokens(data, $0) }, shots: shots, prepared: p, data: data, recipe: recipe, directory: dir)
    }

    /// A cell without results: skipped (with the reason), or a method that is not a detection method.
    static func skipped(_ cell: Cell, prepared p: Prepared, reason: String?, status: String = "skipped") -> CellResult {
        CellResult(
            cell: cell, status: status, reason: reason, metrics: [:], primary_ci: nil, chosen_C: nil,
            n_train: 0, n_test: p.test.count, train_ids: [], subgroups: [])
    }

    /// A cell's training images, drawn with its seed: `shots` with a box and as many without (one
    /// per patient, none sharing a patient with the test set), or why the cell is skipped.
    static func drawShots(_ cell: Cell, prepared p: Prepared, data: StudyData) -> Result<[Int], Runner.Skip> {
        let drawn = FewShotSampler.sample(
            labels: p.task.labels, classes: 2, pool: p.pool, test: p.test, patients: data.patients, k: cell.shots, seed: UInt64(cell.seed),
            stream: [Runner.streamKey(p.task.name), UInt64(cell.shots)])
        switch drawn {
        case let .failure(e):
            return .failure(
                Runner.Skip(
                    reason:
                        "\(e.available) training images \(e.classIndex == 1 ? "with" : "without") a box are eligible (one per patient, none sharing a patient with the test set); \(e.requested) requested"
                ))
        case let .success(rows): return .success(rows)
        }
    }

    /// The box head settings of a recipe: its `box_head` method's, else the defaults (the tuning
    /// methods start from the box head fitted on frozen tokens with these).
    static func boxHeadSpec(_ recipe: Recipe) -> BoxHeadSpec {
        for m in recipe.methods { if case let .boxHead(s) = m { return s } }
        return BoxHeadSpec()
    }

    /// A fitted detection method: the detections of one image's tokens (its geometry, its index
    /// among the test images) with its heatmap at the original size in [0, 1], and the box head
    /// when the method is `box_head` (what a package holds).
    struct Detector {
        var detect: ([Float], ImageGeometry, Int) -> (BoxDetection, () -> [Float])
        var head: BoxHead?

        /// The box head of `decoder` with the settings `s` (threshold, scoring).
        static func boxHead(_ decoder: LinearDecoder, _ s: BoxHeadSpec) -> Detector {
            let head = BoxHead(decoder: decoder, threshold: Float(s.threshold), scoring: s.scoring)
            return Detector(detect: { t, g, i in (head.detect(t, geometry: g, image: i), { probabilities(head, tokens: t, geometry: g) }) }, head: head)
        }
    }

    /// A box head's heatmap: its probability at the image's size (NaN where the crop cut away).
    static func probabilities(_ head: BoxHead, tokens: [Float], geometry g: ImageGeometry) -> [Float] {
        head.decoder.imageLogits(tokens, geometry: g).map { 1 / (1 + exp(-$0)) }
    }

    /// A heatmap as the study writes it: the probability at the original size as 8-bit gray
    /// (255 = 1; pixels the crop cut away are 0).
    static func heatmapPNG(_ probabilities: [Float], geometry g: ImageGeometry) throws -> Data {
        let pixels = probabilities.map { $0.isNaN ? UInt8(0) : UInt8(max(0, min(255, ($0 * 255).rounded()))) }
        return try PNGCodec.encodeGray8(width: g.imageWidth, height: g.imageHeight, pixels: pixels)
    }

    /// Fit `method` on the training rows `shots` as cell `cell` fits it (the head's seed comes from
    /// the cell's seed and shot count); nil for a method that is not a detection method.
    static func fit(_ method: Recipe.Method, shots: [Int], cell: Cell, prepared p: Prepared, data: StudyData) -> Detector? {
        let examples = shots.map { PatchExample(tokens: SegmentationCells.tokens(data, $0), target: p.targets[$0] ?? []) }
        switch method {
        case let .boxHead(s):
            let training = DecoderTraining(
                epochs: s.epochs, batchImages: s.batchSize, learningRate: s.lr, l2: s.weightDecay, positiveWeight: s.positiveWeight,
                seed: UInt64(cell.seed) &* 0x9E37_79B9 &+ UInt64(cell.shots))
            return .boxHead(LinearDecoder.fit(examples, grid: p.grid, channels: p.channels, classes: 2, options: training).decoder, s)
        case let .knnPatches(s):
            let knn = PatchKNN(examples, grid: p.grid, channels: p.channels, classes: 2, k: s.k, temperature: s.temperature)
            return Detector(
                detect: { t, g, i in
                    (
                        BoxHead.detect(inputMap: knn.inputForeground(t), geometry: g, threshold: 0.5, scoring: .max, image: i),
                        { knn.imageForeground(t, geometry: g) }
                    )
                }, head: nil)
        default:
            return nil
        }
    }

    /// Detect on every test image with a fitted method (`tokens`: a study row's patch tokens) and
    /// score; with `dir` and seed 0, the sample's heatmaps are written under that run folder.
    static func evaluate(
        _ cell: Cell, detector: Detector, tokens: (Int) throws -> [Float], shots: [Int], prepared p: Prepared, data: StudyData, recipe: Recipe,
        directory dir: URL?
    ) throws -> CellResult {
        var result = skipped(cell, prepared: p, reason: nil, status: "ok")
        result.n_train = shots.count
        result.train_ids = shots.map { data.ids[$0] }
        let sample = cell.seed == 0 && dir != nil ? Set(p.sample) : []
        let heatmaps = dir.map { heatmapsDirectory(cell, in: $0) }
        if let heatmaps, !sample.isEmpty { try FileManager.default.createDirectory(at: heatmaps, withIntermediateDirectories: true) }
        var found: [ImageDetections] = []
        for (j, row) in p.test.enumerated() {
            guard let g = p.geometries[row] else { continue }
            let (det, heat) = detector.detect(try tokens(row), g, j)
            found.append(
                ImageDetections(
                    image: data.ids[row], score: det.imageScore, peak_x: det.peak.x, peak_y: det.peak.y, boxes: det.boxes.map(\.box),
                    scores: det.boxes.map(\.score)))
            if let heatmaps, sample.contains(row) {
                try PNGCodec.write(try heatmapPNG(heat(), geometry: g), to: heatmaps.appendingPathComponent(heatmapFile(data.ids[row])))
            }
        }
        result.detection = found
        let truth = p.test.map { p.truths[$0] ?? [] }
        let everything = Array(found.indices)
        for name in recipe.metrics { result.metrics[name] = metric(name, found, truth, everything) }
        let patients = data.patients.map { pt in p.test.map { pt[$0] } }
        if recipe.bootstrap > 0 {
            var intervals: [String: Interval] = [:]
            for name in recipe.metrics {
                intervals[name] = Bootstrap.interval(rows: found.count, groups: patients, resamples: recipe.bootstrap, seed: UInt64(cell.seed)) {
                    metric(name, found, truth, $0)
                }
            }
            result.primary_ci = intervals[recipe.primary_metric]
            result.metric_ci = intervals
        }
        for (attr, g) in data.groups.sorted(by: { $0.key < $1.key }) {
            result.subgroups.append(
                SubgroupResult.analyse(
                    attribute: attr, group: p.test.map { g[$0] }, patients: patients, resamples: recipe.bootstrap, seed: UInt64(cell.seed)
                ) { metric(recipe.primary_metric, found, truth, $0) })
        }
        return result
    }

    /// A heatmap's file name: the image id made safe, `.png`.
    static func heatmapFile(_ id: String) -> String { safe(id) + ".png" }

    /// A detection metric over the images `idx` of `found` (an index may repeat: a bootstrap
    /// resample), `truth` the true boxes of each: ap_<IoU×100>, froc_<false positives per image>
    /// (hits at IoU ≥ `frocIoU`), pointing_game, auroc (image score vs "has a box"). Nil when
    /// undefined (no true box; one class only for auroc).
    static func metric(_ name: String, _ found: [ImageDetections], _ truth: [[Box]], _ idx: [Int]) -> Double? {
        guard !idx.isEmpty else { return nil }
        let t = idx.map { truth[$0] }
        var predictions: [ScoredBox] = []
        for (j, i) in idx.enumerated() {
            for (b, s) in zip(found[i].boxes, found[i].scores) { predictions.append(ScoredBox(image: j, box: b, score: s)) }
        }
        switch name {
        case "pointing_game": return DetectionMetrics.pointingGame(points: idx.map { (found[$0].peak_x, found[$0].peak_y) }, truth: t)
        case "auroc": return Metrics.auroc(idx.map { found[$0].score }, t.map { !$0.isEmpty })
        default:
            if name.hasPrefix("ap_"), let iou = Int(name.dropFirst(3)) {
                return DetectionMetrics.averagePrecision(predictions, truth: t, threshold: Double(iou) / 100)
            }
            if name.hasPrefix("froc_"), let rate = Double(name.dropFirst(5)) {
                return DetectionMetrics.froc(predictions, truth: t, images: idx.count, threshold: frocIoU, rates: [rate])?[rate]
            }
            return nil
        }
    }
}
