// `xrlab predict` for segmentation and retrieval packages (detection: PredictDetection.swift): a
// mask PNG per image at its original size (and a CSV of foreground fractions), or each image's
// nearest gallery images (CSV). The
// same code as the study's: `LinearDecoder.predict` through the packaged geometry, and
// `Retrieval.nearest` on normalised features (ties to the earlier gallery row).
import Foundation
import XRTensor
import XRData
import XRHeads
import XRPipeline
import XRProbe
import XRRecipes
import XRTrain

/// A predicted mask of one image, written by `Prediction.writeMasks`.
public struct PredictedMask: Sendable {
    /// File name inside the masks folder.
    public var file: String
    public var mask: LabelMask
}

extension Prediction {
    /// Write the predicted masks into `dir` (created when missing): every PNG is written into a
    /// temporary sibling folder first and moved into place only once all are written, so a failure
    /// leaves no partial set behind.
    public func writeMasks(to dir: URL, classValues: [Int]?) throws {
        guard !masks.isEmpty else { return }
        let fm = FileManager.default
        let tmp = dir.deletingLastPathComponent().appendingPathComponent(".\(dir.lastPathComponent).tmp-\(UUID().uuidString)")
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: tmp) }
        for m in masks { try m.mask.write(to: tmp.appendingPathComponent(m.file), classValues: classValues) }
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        for m in masks {
            let target = dir.appendingPathComponent(m.file)
            if fm.fileExists(atPath: target.path) { try fm.removeItem(at: target) }
            try fm.moveItem(at: tmp.appendingPathComponent(m.file), to: target)
        }
    }
}

extension Predictor {
    /// Segmentation: each image's patch tokens → the packaged decoder → classes at the image's
    /// own size. CSV columns: path, mask (`masksFolder`/file), foreground_fraction (share of the
    /// image's pixels not of class 0).
    static func predictSegmentation(
        _ p: OpenedPackage, encoder enc: Encoder, inputs: [ImageInput], options: EmbedOptions, masksFolder: String?
    ) throws -> Prediction {
        guard let folder = masksFolder else {
            throw XRError("a segmentation package writes a mask per image: pass --masks DIR", field: "--masks")
        }
        guard let spec = p.manifest.segmentation, let head = p.heads.first, let w = head.tensors["weight"], let b = head.tensors["bias"] else {
            throw XRError("segmentation package without its decoder", file: p.url.path, field: "segmentation")
        }
        let grid = PatchGrid(gridHeight: spec.grid_height, gridWidth: spec.grid_width, inputHeight: spec.input_height, inputWidth: spec.input_width)
        var decoder = LinearDecoder(grid: grid, channels: p.manifest.base_encoder.dim, classes: head.info.classes.count)
        decoder.weight = w.scalars
        decoder.bias = b.scalars
        let (res, t) =
            head.isTuned
            ? try tunedPatchTokens(p, head: head, encoder: enc, inputs: inputs, options: options, grid: grid, field: "segmentation")
            : try patchTokens(p, encoder: enc, inputs: inputs, options: options, grid: grid, channels: decoder.channels, field: "segmentation")
        let per = grid.patches * decoder.channels
        var rows: [[String]] = [], masks: [PredictedMask] = [], owner: [String: String] = [:]
        for input in res.inputs {
            let file = TaskPackaging.maskFile(input.id)
            if let other = owner[file] {
                throw XRError(
                    "images '\(other)' and '\(input.id)' would both write mask \(file)", field: "inputs",
                    hint: "predict them in separate runs with different --masks folders")
            }
            owner[file] = input.id
        }
        for (i, input) in res.inputs.enumerated() {
            let image = try ImageDecoder.decode(try Data(contentsOf: input.url), source: input.url.path)
            let g = enc.preprocessing.geometry(height: image.height, width: image.width)
            guard g.inputHeight == grid.inputHeight, g.inputWidth == grid.inputWidth else {
                throw XRError(
                    "preprocessed to \(g.inputWidth)×\(g.inputHeight), the decoder reads \(grid.inputWidth)×\(grid.inputHeight)", file: input.url.path)
            }
            let labels = decoder.predict(Array(t.scalars[(i * per)..<((i + 1) * per)]), geometry: g)
            let file = TaskPackaging.maskFile(input.id)
            masks.append(PredictedMask(file: file, mask: LabelMask(width: image.width, height: image.height, labels: labels)))
            let foreground = labels.count(where: { $0 != 0 })
            rows.append([input.id, (folder as NSString).appendingPathComponent(file), String(format: "%.6f", Double(foreground) / Double(max(labels.count, 1)))]
            )
        }
        var out = Prediction(ids: res.inputs.map(\.id), header: ["path", "mask", "foreground_fraction"], rows: rows, failed: res.failed, warnings: res.warnings)
        out.masks = masks
        return out
    }

    /// Retrieval: features (n, D) in the package's representation → per head, projected when it
    /// has a projection, normalised, the `k` most similar gallery images. CSV columns: path, task,
    /// rank, neighbour, labels (`|`-separated), similarity.
    static func predictRetrieval(_ p: OpenedPackage, features x: [Float], ids: [String], k: Int?) throws -> Prediction {
        let d = p.manifest.base_encoder.dim
        let keep = k ?? p.manifest.retrieval?.neighbours ?? 10
        guard keep > 0 else { throw XRError("--top-k must be at least 1, got \(keep)", field: "--top-k") }
        var rows: [[String]] = []
        var perHead: [(indices: [Int], similarities: [Float], kk: Int)] = []
        for (h, gallery) in zip(p.heads, p.galleries) {
            guard let gx = h.tensors["gallery"] else { throw XRError("no gallery tensor", file: p.url.path, field: h.info.tensors + "gallery") }
            var q = x
            if let mean = h.tensors["projection.mean"] {
                let w = WithinClassWhitening(
                    mean: mean.scalars.map(Double.init), directions: (h.tensors["projection.directions"]?.scalars ?? []).map(Double.init),
                    factors: (h.tensors["projection.factors"]?.scalars ?? []).map(Double.init), shrinkage: .nan, dim: d)
                q = w.apply(q, d: d)
            }
            let found = Retrieval.nearest(queries: Probe.normalized(q, d: d), gallery: gx.scalars, dim: d, k: keep, unitRows: true)
            perHead.append((found.indices, found.similarities, min(keep, gallery.ids.count)))
        }
        for (qi, id) in ids.enumerated() {
            for ((h, gallery), found) in zip(zip(p.heads, p.galleries), perHead) {
                for r in 0..<found.kk {
                    let g = found.indices[qi * found.kk + r]
                    rows.append([
                        id, h.info.task, String(r + 1), gallery.ids[g], gallery.labels[g].joined(separator: "|"),
                        String(format: "%.6f", found.similarities[qi * found.kk + r])
                    ])
                }
            }
        }
        return Prediction(ids: ids, header: ["path", "task", "rank", "neighbour", "labels", "similarity"], rows: rows, failed: [], warnings: [])
    }

    /// The images encoded (in token order), those that could not be read, and notes.
    typealias EncodedImages = (inputs: [ImageInput], failed: [FailedInput], warnings: [String])

    /// The images' patch tokens (n, P, C) on the packaged grid, unreadable images stopping the
    /// prediction unless they are to be skipped; `field` names the manifest section of the grid.
    static func patchTokens(
        _ p: OpenedPackage, encoder enc: Encoder, inputs: [ImageInput], options: EmbedOptions, grid: PatchGrid, channels: Int, field: String
    ) throws -> (EncodedImages, Tensor) {
        var o = options
        o.patchTokens = true
        o.classTokenOnly = false
        o.lastBlocks = 0
        let res = try enc.embed(inputs, options: o)
        try stopOnFailures(res.failed, skipBad: o.skipBad)
        guard !res.inputs.isEmpty else { throw XRError("no readable images", field: "inputs") }
        guard let t = res.tensors["patch_tokens"], t.rank == 3, t.shape[1] == grid.patches, t.shape[2] == channels else {
            throw XRError(
                "the images do not give the packaged \(grid.gridWidth)×\(grid.gridHeight) grid of \(channels)-channel patch tokens",
                file: p.url.path, field: field, hint: "the package's preprocessing must crop every image to one model input")
        }
        return ((res.inputs, res.failed, res.warnings), t)
    }

    /// Tuned segmentation and detection packages: the patch tokens (n, P, C) of the base encoder
    /// with the head's tuned parameters, run on the packaged preprocessing at the tuned input size;
    /// `field` names the manifest section of the grid.
    static func tunedPatchTokens(
        _ p: OpenedPackage, head h: Head, encoder enc: Encoder, inputs: [ImageInput], options: EmbedOptions, grid: PatchGrid, field: String
    ) throws -> (EncodedImages, Tensor) {
        guard let S = p.manifest.base_encoder.input_size, grid.inputHeight == S, grid.inputWidth == S else {
            throw XRError("a tuned decoder needs a square model input of base_encoder.input_size", file: p.url.path, field: "base_encoder.input_size")
        }
        guard let set = p.manifest.recipe.methods.first(where: { $0.name == h.info.kind })?.tuning?.set else {
            throw XRError("the packaged recipe has no tuning method '\(h.info.kind)'", file: p.url.path, field: "recipe.methods")
        }
        let model = try TrainableViT(from: enc.loaded, size: S, classes: 2, source: p.url.path)
        try model.setTrainable(set)
        guard model.config.grid * model.config.grid == grid.patches else {
            throw XRError("the tuned encoder's patch grid does not match the head's", file: p.url.path, field: field)
        }
        for (name, t) in h.tensors where name != "weight" && name != "bias" {
            guard let param = model.parameter(name), param.count == t.count else {
                throw XRError("packaged tensor has no counterpart of that size in the base encoder", file: p.url.path, field: h.info.tensors + name)
            }
            param.assign(t.scalars)
        }
        model.training = false
        var ok: [ImageInput] = [], failed: [FailedInput] = [], tokens: [Float] = []
        let progress = ProgressReporter("predict", total: inputs.count, unit: "images", quiet: options.quiet)
        for input in inputs {
            do {
                let x = try enc.preprocessing.apply(contentsOf: input.url)
                guard x.count == 3 * S * S else { throw XRError("preprocessed to \(x.count) values, expected 3×\(S)×\(S)", file: input.url.path) }
                tokens += try model.forwardPatchTokens(pixels: x, batch: 1)
                ok.append(input)
            } catch let e as XRError {
                failed.append(FailedInput(id: input.id, reason: e.description))
            }
            progress.advance(by: 1)
        }
        progress.finish()
        try stopOnFailures(failed, skipBad: options.skipBad)
        guard !ok.isEmpty else { throw XRError("no readable images", field: "inputs") }
        return ((ok, failed, []), Tensor(shape: [ok.count, grid.patches, model.config.dim], scalars: tokens))
    }

    /// Stop with every unreadable image listed, unless they are to be skipped.
    static func stopOnFailures(_ failed: [FailedInput], skipBad: Bool) throws {
        guard !failed.isEmpty, !skipBad else { return }
        throw XRError(
            "\(failed.count) image(s) could not be read:\n" + failed.map { "  \($0.id): \($0.reason)" }.joined(separator: "\n"),
            hint: "fix or remove them, or pass --skip-bad to leave them out")
    }
}
