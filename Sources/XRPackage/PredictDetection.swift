// `xrlab predict` for detection packages: the packaged box head on each image's patch tokens →
// boxes in the image's own pixels with their scores (the --boxes CSV), the image score and heatmap
// peak per image (the main CSV), and on request the heatmaps and their overlays (--heatmaps DIR).
// The same code as the study's: `BoxHead.detect` through the packaged geometry.
import Foundation
import XRTensor
import XRData
import XRHeads
import XRPipeline
import XRRecipes

/// One image's heatmap, written with its overlay by `Prediction.writeHeatmaps`.
public struct PredictedHeatmap: Sendable {
    public var id: String
    /// The image the overlay is drawn on.
    public var image: URL
    /// File name inside the heatmaps folder (as the study's `heatmaps/` folders name it); the
    /// overlay is `overlayFile`.
    public var file: String
    /// 8-bit gray PNG at the image's size, 255 = probability 1.
    public var png: Data
    public var detection: BoxDetection

    /// The overlay's file name: the heatmap's stem, `_overlay.png`.
    public var overlayFile: String { String(file.dropLast(".png".count)) + "_overlay.png" }
}

extension Prediction {
    /// The columns of the boxes CSV: one row per predicted box, highest score first within an
    /// image; box is its rank from 0; x, y, width, height in the image's own pixels.
    public static let boxesHeader = ["path", "box", "x", "y", "width", "height", "score"]

    /// Write the boxes CSV (`boxesHeader`) atomically.
    public func writeBoxes(to url: URL) throws {
        try CSVTable(header: Self.boxesHeader, rows: boxes).write(to: url)
    }

    /// Write each image's heatmap PNG and overlay PNG into `dir` (created when missing): all are
    /// written into a temporary sibling folder first and moved into place only once all are
    /// written, so a failure leaves no partial set behind.
    public func writeHeatmaps(to dir: URL) throws {
        guard !heatmaps.isEmpty else { return }
        let fm = FileManager.default
        let tmp = dir.deletingLastPathComponent().appendingPathComponent(".\(dir.lastPathComponent).tmp-\(UUID().uuidString)")
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: tmp) }
        for h in heatmaps {
            let heat = tmp.appendingPathComponent(h.file)
            try h.png.write(to: heat)
            // Titled with the image's file name without its extension: a tile is narrow.
            let title = URL(fileURLWithPath: h.id).deletingPathExtension().lastPathComponent
            let overlay = try TaskPackaging.detectionOverlay(title: title, image: h.image, heatmap: heat, detection: h.detection, id: h.id)
            try overlay.write(to: tmp.appendingPathComponent(h.overlayFile))
        }
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        for name in heatmaps.flatMap({ [$0.file, $0.overlayFile] }) {
            let target = dir.appendingPathComponent(name)
            if fm.fileExists(atPath: target.path) { try fm.removeItem(at: target) }
            try fm.moveItem(at: tmp.appendingPathComponent(name), to: target)
        }
    }
}

extension Predictor {
    /// Detection: each image's patch tokens → the packaged box head → boxes in image pixels
    /// (`Prediction.boxes`), and with `heatmaps` the heatmaps to write. CSV columns: path,
    /// image_score (the heatmap's largest logit over the image), peak_x, peak_y (where it is, in
    /// image pixels), boxes (how many). Numbers in full precision, as the study's boxes.csv.
    static func predictDetection(
        _ p: OpenedPackage, encoder enc: Encoder, inputs: [ImageInput], options: EmbedOptions, boxes: String?, heatmaps: Bool
    ) throws -> Prediction {
        guard boxes != nil else {
            throw XRError("a detection package writes its boxes to a CSV: pass --boxes FILE.csv", field: "--boxes")
        }
        guard let spec = p.manifest.detection, let head = p.heads.first, let w = head.tensors["weight"], let b = head.tensors["bias"] else {
            throw XRError("detection package without its box head", file: p.url.path, field: "detection")
        }
        let grid = PatchGrid(gridHeight: spec.grid_height, gridWidth: spec.grid_width, inputHeight: spec.input_height, inputWidth: spec.input_width)
        var decoder = LinearDecoder(grid: grid, channels: p.manifest.base_encoder.dim, classes: 2)
        decoder.weight = w.scalars
        decoder.bias = b.scalars
        let boxHead = BoxHead(decoder: decoder, threshold: Float(spec.threshold), scoring: spec.scoring)
        let (res, t) =
            head.isTuned
            ? try tunedPatchTokens(p, head: head, encoder: enc, inputs: inputs, options: options, grid: grid, field: "detection")
            : try patchTokens(p, encoder: enc, inputs: inputs, options: options, grid: grid, channels: decoder.channels, field: "detection")
        if heatmaps {
            var owner: [String: String] = [:]
            for input in res.inputs {
                let file = TaskPackaging.heatmapFile(input.id)
                if let other = owner[file] {
                    throw XRError(
                        "images '\(other)' and '\(input.id)' would both write heatmap \(file)", field: "inputs",
                        hint: "predict them in separate runs with different --heatmaps folders")
                }
                owner[file] = input.id
            }
        }
        let per = grid.patches * decoder.channels
        var rows: [[String]] = [], boxRows: [[String]] = [], maps: [PredictedHeatmap] = []
        for (i, input) in res.inputs.enumerated() {
            let image = try ImageDecoder.decode(try Data(contentsOf: input.url), source: input.url.path)
            let g = enc.preprocessing.geometry(height: image.height, width: image.width)
            guard g.inputHeight == grid.inputHeight, g.inputWidth == grid.inputWidth else {
                throw XRError(
                    "preprocessed to \(g.inputWidth)×\(g.inputHeight), the box head reads \(grid.inputWidth)×\(grid.inputHeight)", file: input.url.path)
            }
            let tokens = Array(t.scalars[(i * per)..<((i + 1) * per)])
            let det = boxHead.detect(tokens, geometry: g, image: i)
            rows.append([input.id, String(det.imageScore), String(det.peak.x), String(det.peak.y), String(det.boxes.count)])
            for (r, s) in det.boxes.enumerated() {
                boxRows.append([
                    input.id, String(r), String(s.box.x), String(s.box.y), String(s.box.width), String(s.box.height), String(s.score)
                ])
            }
            if heatmaps {
                maps.append(
                    PredictedHeatmap(
                        id: input.id, image: input.url, file: TaskPackaging.heatmapFile(input.id),
                        png: try TaskPackaging.detectionHeatmap(boxHead, tokens: tokens, geometry: g), detection: det))
            }
        }
        var out = Prediction(
            ids: res.inputs.map(\.id), header: ["path", "image_score", "peak_x", "peak_y", "boxes"], rows: rows, failed: res.failed,
            warnings: res.warnings)
        out.boxes = boxRows
        out.heatmaps = maps
        return out
    }
}
