// Segmentation recipes (`data.task: segmentation`): a mask PNG per annotated image, predicted per
// pixel from the encoder's frozen patch tokens. Masks follow the encoder's preprocessing
// (`Preprocessing.geometry`: one transform for image and mask), predictions are mapped back to
// the original size and scored there. Each cell is a closure on the one cell runner:
// `linear_decoder` or `knn_patches` fitted on `shots` annotated training images drawn with the
// cell's seed. Letters: P patches, C token channels, K classes (0 = background).
import Foundation
import XRTensor
import XRData
import XRProbe
import XRHeads
import XRKernels
import XRPipeline

/// One test image's scores as a cell keeps them: per_image.csv, and the pooled metrics are
/// recomputed from these counts exactly.
public struct ImageMaskScore: Codable, Sendable, Equatable {
    /// The image's row id.
    public var image: String
    /// Mean over foreground classes of each class's Dice / IoU (1 when the class is absent from
    /// both truth and prediction).
    public var dice: Double
    public var iou: Double
    /// Mean over foreground classes where it is defined (both masks non-empty, or both empty
    /// = 0); nil when a class is empty in exactly one of them for every class.
    public var hd95: Double?
    /// Foreground pixels of the truth, of the prediction and of both (summed over classes).
    public var truth: Int
    public var predicted: Int
    public var overlap: Int
}

/// The encoder's patch tokens of every row, one (P·C) feature row per image: what a
/// segmentation task's `StudyData.features` holds.
struct PatchTokenSource: FeatureSource {
    func loadFeatures(for r: LoadedRecipe, rows: ManifestRows, quiet: Bool) throws -> FeatureSet {
        let inputs = try EncoderFeatureSource.images(r, rows: rows)
        let encoder = try EncoderFeatureSource().encoder(r)
        let res = try encoder.embed(inputs, options: options(r, quiet: quiet))
        guard let t = res.tensors["patch_tokens"], t.rank == 3 else {
            throw XRError(
                "the images do not all give the same patch grid after preprocessing", file: r.file.path, field: "model.preprocessing",
                hint: "a segmentation task needs a fixed model input: give model.preprocessing a crop")
        }
        let n = t.shape[0], per = t.shape[1] * t.shape[2]
        let what = "patch tokens (\(t.shape[1]) × \(t.shape[2])) encoded with \(r.recipe.model?.path ?? "?") (\(n) images)"
        return FeatureSet(ids: res.inputs.map(\.id), matrix: Tensor(shape: [n, per], scalars: t.scalars), description: what)
    }

    /// The recipe's embed options with every patch token kept.
    func options(_ r: LoadedRecipe, quiet: Bool) -> EmbedOptions {
        var o = EncoderFeatureSource().options(r, quiet: quiet)
        o.patchTokens = true
        o.classTokenOnly = false
        o.lastBlocks = 0
        return o
    }

    /// The images whose patch tokens are cached; the encoder source's time estimate unless all are.
    func status(for r: LoadedRecipe, rows: ManifestRows) throws -> (description: String, seconds: Double) {
        let plain = try EncoderFeatureSource().status(for: r, rows: rows)
        let inputs = try EncoderFeatureSource.images(r, rows: rows)
        let cached = try EncoderFeatureSource().encoder(r).cachedCount(inputs, options: options(r, quiet: true))
        return ("\(cached) of \(inputs.count) images' patch tokens cached for this encoder and preprocessing", cached == inputs.count ? 0 : plain.seconds)
    }
}

enum SegmentationCells {
    /// Test images whose predicted masks every seed-0 cell writes (spread evenly over the test rows).
    static let sampleImages = 8

    /// What every cell of the run shares: rows, geometry, training targets and test masks.
    struct Prepared: Sendable {
        var task: StudyTask
        var grid: PatchGrid
        var channels: Int
        var classes: Int
        /// Annotated test rows and annotated training rows (where shots are drawn from).
        var test: [Int]
        var pool: [Int]
        /// Training row → its mask at the model input (padding = `LinearDecoder.ignore`).
        var targets: [Int: [UInt8]]
        /// Test row → its geometry and its mask at the original size.
        var geometries: [Int: ImageGeometry]
        var truths: [Int: LabelMask]
        /// Test rows whose predicted masks are written.
        var sample: [Int]
    }

    /// Read every annotated row's image size and mask; a missing or unreadable mask, or one of
    /// another size than its image, is an error naming the file.
    static func prepare(_ r: LoadedRecipe, data: StudyData) throws -> Prepared {
        let spec = r.recipe.data
        guard let column = spec.mask_column, let task = data.tasks.first else {
            throw XRError("a segmentation task needs mask_column", file: r.file.path, field: "data.mask_column")
        }
        let m = try StudyLoader.rows(r)
        guard let c = m.header.firstIndex(of: column) else {
            throw XRError(
                "no column '\(column)' (columns: \(m.header.joined(separator: ", ")))", file: m.url.path, field: "data.mask_column",
                hint: "set data.mask_column in the recipe to the manifest's column of mask paths")
        }
        let encoder = try EncoderFeatureSource().encoder(r)
        let patch = encoder.loaded.config.patchSize
        let base = m.url.deletingLastPathComponent()
        let classes = spec.mask_classes?.count ?? 2
        var grid: PatchGrid? = nil
        var targets: [Int: [UInt8]] = [:], geometries: [Int: ImageGeometry] = [:], truths: [Int: LabelMask] = [:]
        for i in data.ids.indices where task.labels[i] >= 0 && data.isTest[i] != nil {
            let where_ = "row \(m.rowNumbers[i]), column \(column)"
            func url(_ p: String) -> URL { p.hasPrefix("/") ? URL(fileURLWithPath: p) : base.appendingPathComponent(p) }
            let imageURL = url(data.ids[i]), maskURL = url(m.rows[i][c].trimmingCharacters(in: .whitespaces))
            guard FileManager.default.fileExists(atPath: maskURL.path) else {
                throw XRError("mask not found: \(maskURL.path)", file: m.url.path, field: where_, hint: "paths are relative to the manifest's folder")
            }
            let image = try ImageDecoder.decode(try Data(contentsOf: imageURL), source: imageURL.path)
            let mask = try LabelMask.read(maskURL, width: image.width, height: image.height, classValues: spec.mask_classes, image: data.ids[i])
            let g = encoder.preprocessing.geometry(height: image.height, width: image.width)
            grid = try PatchGrid.of(g, patch: patch, image: data.ids[i], agreeingWith: grid, recipe: r.file.path, task: "segmentation")
            if data.isTest[i] == true {
                geometries[i] = g
                truths[i] = mask
            } else {
                targets[i] = mask.transformed(by: g, fill: LinearDecoder.ignore)
            }
        }
        let test = data.ids.indices.filter { task.labels[$0] >= 0 && data.isTest[$0] == true }
        let pool = data.ids.indices.filter { task.labels[$0] >= 0 && data.isTest[$0] == false }
        guard let grid, !test.isEmpty, !pool.isEmpty else {
            throw XRError(
                "the segmentation task has \(test.count) annotated test images and \(pool.count) annotated training images; both need some",
                file: r.file.path, field: "data.mask_column", hint: "check data.split_column / data.test_fraction, data.where and the mask column")
        }
        guard data.dim % grid.patches == 0 else {
            throw XRError("the patch tokens do not match the \(grid.gridWidth)×\(grid.gridHeight) patch grid", file: r.file.path, field: "model")
        }
        let n = min(sampleImages, test.count)
        return Prepared(
            task: task, grid: grid, channels: data.dim / grid.patches, classes: classes, test: test, pool: pool, targets: targets,
            geometries: geometries, truths: truths, sample: (0..<n).map { test[$0 * test.count / n] })
    }

    /// Compute the unfinished cells of a segmentation recipe and write the run's outputs.
    static func run(_ r: LoadedRecipe, data: StudyData, directory dir: URL, options: RunOptions) throws -> RunSummary {
        let prepared = try prepare(r, data: data)
        return try DecoderTuneCells.run(
            r, data: data, directory: dir, options: options, label: "segmentation",
            frozen: { cell, method in try runCell(cell, prepared: prepared, method: method, data: data, recipe: r.recipe, directory: dir) },
            tuned: { cell, method, context in
                try tuneCell(cell, prepared: prepared, method: method, context: context, r, data: data, directory: dir, quiet: options.quiet)
            })
    }

    /// The folder of a cell's predicted masks: `masks/<method>__k<shots>__s<seed>/`.
    static func masksDirectory(_ cell: Cell, in dir: URL) -> URL {
        dir.appendingPathComponent("masks").appendingPathComponent("\(safe(cell.method))__k\(cell.shots)__s\(cell.seed)")
    }

    /// A predicted mask's file name: the image id made safe, `.png`.
    static func maskFile(_ id: String) -> String { safe(id) + ".png" }

    /// One cell: draw the annotated shots, fit the method, predict every test image at its
    /// original size, score it; seed 0 writes the sample's predicted masks.
    static func runCell(
        _ cell: Cell, prepared p: Prepared, method: Recipe.Method, data: StudyData, recipe: Recipe, directory dir: URL
    ) throws -> CellResult {
        var result = CellResult(
            cell: cell, status: "ok", reason: nil, metrics: [:], primary_ci: nil, chosen_C: nil,
            n_train: 0, n_test: p.test.count, train_ids: [], subgroups: [])
        let shots: [Int]
        switch drawShots(cell, prepared: p, data: data) {
        case let .failure(skip):
            result.status = "skipped"
            result.reason = skip.reason
            return result
        case let .success(rows): shots = rows
        }
        guard let fitted = fit(method, shots: shots, cell: cell, prepared: p, data: data) else { return result }
        return try evaluate(
            cell, predict: { fitted.predict(tokens(data, $0), $1) }, shots: shots, prepared: p, data: data, recipe: recipe,
            masks: cell.seed == 0 ? dir : nil)
    }

    /// (P·C) frozen patch tokens of study row `row`.
    static func tokens(_ data: StudyData, _ row: Int) -> [Float] { Array(data.features[(row * data.dim)..<((row + 1) * data.dim)]) }

    /// The decoder settings of a recipe: its `linear_decoder` method's, else the defaults (the
    /// tuning methods start from the decoder fitted on frozen tokens with these).
    static func decoderSpec(_ recipe: Recipe) -> LinearDecoderSpec {
        for m in recipe.methods { if case let .linearDecoder(s) = m { return s } }
        return LinearDecoderSpec()
    }

    /// A cell's annotated training images, drawn with its seed (one per patient, none sharing a
    /// patient with the test set), or why the cell is skipped.
    static func drawShots(_ cell: Cell, prepared p: Prepared, data: StudyData) -> Result<[Int], Runner.Skip> {
        let drawn = FewShotSampler.sample(
            labels: p.task.labels, classes: 1, pool: p.pool, test: p.test, patients: data.patients, k: cell.shots, seed: UInt64(cell.seed),
            stream: [Runner.streamKey(p.task.name), UInt64(cell.shots)])
        switch drawn {
        case let .failure(e):
            return .failure(
                Runner.Skip(
                    reason:
                        "\(e.available) annotated training images are eligible (one per patient, none sharing a patient with the test set); \(e.requested) shots requested"
                ))
        case let .success(rows): return .success(rows)
        }
    }

    /// A fitted segmentation method: the class map of one image's tokens at its original size,
    /// and the decoder itself when the method is `linear_decoder`.
    struct Fitted {
        var predict: ([Float], ImageGeometry) -> [UInt8]
        var decoder: LinearDecoder?
    }

    /// Fit `method` on the training rows `shots` as cell `cell` fits it (the decoder's seed comes
    /// from the cell's seed and shot count); nil for a method that is not a segmentation method.
    static func fit(_ method: Recipe.Method, shots: [Int], cell: Cell, prepared p: Prepared, data: StudyData) -> Fitted? {
        let d = data.dim
        let examples = shots.map { PatchExample(tokens: Array(data.features[($0 * d)..<(($0 + 1) * d)]), target: p.targets[$0] ?? []) }
        switch method {
        case let .linearDecoder(s):
            let training = DecoderTraining(
                epochs: s.epochs, batchImages: s.batchSize, learningRate: s.lr, l2: s.weightDecay,
                seed: UInt64(cell.seed) &* 0x9E37_79B9 &+ UInt64(cell.shots))
            let decoder = LinearDecoder.fit(examples, grid: p.grid, channels: p.channels, classes: p.classes, options: training).decoder
            return Fitted(predict: { decoder.predict($0, geometry: $1) }, decoder: decoder)
        case let .knnPatches(s):
            let knn = PatchKNN(examples, grid: p.grid, channels: p.channels, classes: p.classes, k: s.k, temperature: s.temperature)
            return Fitted(predict: { knn.predict($0, geometry: $1) }, decoder: nil)
        default:
            return nil
        }
    }

    /// Predict and score every test image of a fitted method (`predict`: a study row and its
    /// geometry → classes at the original size); with `masks`, the sample's predicted masks are
    /// written under that run folder.
    static func evaluate(
        _ cell: Cell, predict: (Int, ImageGeometry) throws -> [UInt8], shots: [Int], prepared p: Prepared, data: StudyData, recipe: Recipe,
        masks dir: URL?
    ) throws -> CellResult {
        var result = CellResult(
            cell: cell, status: "ok", reason: nil, metrics: [:], primary_ci: nil, chosen_C: nil,
            n_train: 0, n_test: p.test.count, train_ids: [], subgroups: [])
        result.n_train = shots.count
        result.train_ids = shots.map { data.ids[$0] }
        let sample = dir == nil ? [] : Set(p.sample)
        let masks = dir.map { masksDirectory(cell, in: $0) }
        if let masks, !sample.isEmpty { try FileManager.default.createDirectory(at: masks, withIntermediateDirectories: true) }
        var scores: [ImageMaskScore] = []
        for row in p.test {
            guard let g = p.geometries[row], let truth = p.truths[row] else { continue }
            let predicted = try predict(row, g)
            scores.append(score(predicted, truth: truth, classes: p.classes, image: data.ids[row]))
            if let masks, sample.contains(row) {
                try LabelMask(width: truth.width, height: truth.height, labels: predicted)
                    .write(to: masks.appendingPathComponent(maskFile(data.ids[row])), classValues: recipe.data.mask_classes)
            }
        }
        result.segmentation = scores
        func mean(_ name: String, _ idx: [Int]) -> Double? { metric(name, scores, idx) }
        let everything = Array(scores.indices)
        for name in recipe.metrics { result.metrics[name] = mean(name, everything) }
        let patients = data.patients.map { pt in p.test.map { pt[$0] } }
        if recipe.bootstrap > 0 {
            result.primary_ci = Bootstrap.interval(rows: scores.count, groups: patients, resamples: recipe.bootstrap, seed: UInt64(cell.seed)) {
                mean(recipe.primary_metric, $0)
            }
        }
        for (attr, g) in data.groups.sorted(by: { $0.key < $1.key }) {
            result.subgroups.append(
                SubgroupResult.analyse(
                    attribute: attr, group: p.test.map { g[$0] }, patients: patients, resamples: recipe.bootstrap, seed: UInt64(cell.seed)
                ) { mean(recipe.primary_metric, $0) })
        }
        return result
    }

    /// Scores of one predicted class map against the truth (both at the original size).
    static func score(_ predicted: [UInt8], truth: LabelMask, classes k: Int, image: String) -> ImageMaskScore {
        var dice = 0.0, iou = 0.0, hd: [Double] = []
        var t = 0, pr = 0, both = 0
        for c in 1..<k {
            let a = predicted.map { $0 == UInt8(c) }, b = truth.isClass(UInt8(c))
            let s = MaskMetrics.scores(prediction: a, truth: b, width: truth.width, height: truth.height)
            dice += s.dice
            iou += s.iou
            if let h = s.hd95 { hd.append(h) }
            for i in a.indices {
                if a[i] { pr += 1 }
                if b[i] { t += 1 }
                if a[i] && b[i] { both += 1 }
            }
        }
        let f = Double(k - 1)
        return ImageMaskScore(
            image: image, dice: dice / f, iou: iou / f, hd95: hd.isEmpty ? nil : hd.reduce(0, +) / Double(hd.count), truth: t, predicted: pr,
            overlap: both)
    }

    /// A segmentation metric over the images `idx` of `scores`: the mean per-image dice, iou,
    /// hd95 (images where it is defined), or dice / iou pooled over their pixels (1 when no image
    /// has a foreground pixel in truth or prediction).
    static func metric(_ name: String, _ scores: [ImageMaskScore], _ idx: [Int]) -> Double? {
        guard !idx.isEmpty else { return nil }
        func mean(_ v: [Double]) -> Double? { v.isEmpty ? nil : v.reduce(0, +) / Double(v.count) }
        let t = idx.reduce(0) { $0 + scores[$1].truth }, p = idx.reduce(0) { $0 + scores[$1].predicted }
        let o = idx.reduce(0) { $0 + scores[$1].overlap }
        switch name {
        case "dice": return mean(idx.map { scores[$0].dice })
        case "iou": return mean(idx.map { scores[$0].iou })
        case "hd95": return mean(idx.compactMap { scores[$0].hd95 })
        case "dice_pooled": return t + p == 0 ? 1 : 2 * Double(o) / Double(t + p)
        case "iou_pooled": return t + p - o == 0 ? 1 : Double(o) / Double(t + p - o)
        default: return nil
        }
    }
}
