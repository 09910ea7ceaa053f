// Segmentation outputs beside summary.csv and the curves: per_image.csv (every cell's per-image
// scores), one overlay grid per method (its predicted masks on the sample of test images), and
// report.md's segmentation section.
import Foundation
import XRTensor
import XRData
import XRProbe

enum SegmentationOutputs {
    /// The columns of per_image.csv: one row per cell × test image.
    static let perImageHeader = [
        "method", "task", "shots", "seed", "image", "dice", "iou", "hd95", "truth_pixels", "predicted_pixels", "overlap_pixels"
    ]

    /// Write per_image.csv and the overlay grids; return report.md's segmentation section.
    static func write(
        _ results: [CellResult], recipe r: LoadedRecipe, data: StudyData, rows summary: [[String]], directory dir: URL
    ) throws -> (text: String, grids: [URL]) {
        let recipe = r.recipe
        var rows: [[String]] = []
        for res in results {
            let c = res.cell
            for s in res.segmentation ?? [] {
                rows.append([
                    c.method, c.task, String(c.shots), String(c.seed), s.image, Outputs.f(s.dice), Outputs.f(s.iou), s.hd95.map(Outputs.f) ?? "",
                    String(s.truth), String(s.predicted), String(s.overlap)
                ])
            }
        }
        try CSVTable(header: perImageHeader, rows: rows).write(to: dir.appendingPathComponent("per_image.csv"))

        // One grid per method setting and task: its cell with the most shots, seed 0.
        var grids: [URL] = []
        let base = r.resolve(recipe.data.manifest).deletingLastPathComponent()
        let masks = try maskPaths(r)
        for task in data.tasks.map(\.name) {
            for m in methodLabels(recipe) {
                let cells = results.filter { $0.cell.task == task && $0.cell.method == m && $0.cell.seed == 0 && $0.status == "ok" }
                guard let cell = cells.max(by: { $0.cell.shots < $1.cell.shots }) else { continue }
                let folder = SegmentationCells.masksDirectory(cell.cell, in: dir)
                let shown = (cell.segmentation ?? []).filter {
                    FileManager.default.fileExists(atPath: folder.appendingPathComponent(SegmentationCells.maskFile($0.image)).path)
                }
                guard !shown.isEmpty else { continue }
                let u = dir.appendingPathComponent("overlays_\(safe(task))_\(safe(m)).png")
                let tiles = shown.map { s in
                    OverlayGrid.Tile(
                        image: s.image.hasPrefix("/") ? URL(fileURLWithPath: s.image) : base.appendingPathComponent(s.image),
                        truth: masks[s.image].map { $0.hasPrefix("/") ? URL(fileURLWithPath: $0) : base.appendingPathComponent($0) },
                        predicted: folder.appendingPathComponent(SegmentationCells.maskFile(s.image)), dice: s.dice)
                }
                let title = "\(task) by \(m), \(cell.cell.shots) annotated images, seed 0"
                try PNGCodec.write(try OverlayGrid.render(title: title, tiles: tiles), to: u)
                grids.append(u)
            }
        }
        return (section(recipe: recipe, data: data, summary: summary, grids: grids), grids)
    }

    /// Image id → mask path (as written in the manifest) of the annotated rows.
    static func maskPaths(_ r: LoadedRecipe) throws -> [String: String] {
        guard let column = r.recipe.data.mask_column else { return [:] }
        let m = try StudyLoader.rows(r)
        guard let c = m.header.firstIndex(of: column) else { return [:] }
        var out: [String: String] = [:]
        for (id, row) in zip(m.ids, m.rows) where !row[c].trimmingCharacters(in: .whitespaces).isEmpty {
            out[id] = row[c].trimmingCharacters(in: .whitespaces)
        }
        return out
    }

    /// report.md's segmentation section: the setting, a table of every metric per method and
    /// annotated-image count, the overlay grids and the files.
    static func section(recipe: Recipe, data: StudyData, summary: [[String]], grids: [URL]) -> String {
        var s = "\n## Segmentation\n\n"
        for task in data.tasks {
            let annotated = task.labels.indices.filter { task.labels[$0] >= 0 }
            let test = annotated.filter { data.isTest[$0] == true }.count
            s += "Masks from column `\(task.name)`: \(annotated.count) annotated images (\(test) test, \(annotated.count - test) training); "
            s += "classes \(task.classes.joined(separator: ", ")). "
        }
        s += "Shots are annotated training images. Masks go through the encoder's preprocessing (nearest-neighbour resize and crop, "
        s += "the image's own geometry); predictions are read at the original image size and scored there. "
        s += "Per test image: Dice and IoU (1 when truth and prediction are both empty), HD95 in pixels (95th percentile of the "
        s += "surface distances, the larger direction; left out of the mean when exactly one mask is empty); with several classes, "
        s += "the mean over foreground classes. `dice_pooled` / `iou_pooled` count pixels over every test image. Mean over seeds ± std; "
        s += "[interval] = mean over seeds of the bootstrap 95% interval of \(recipe.primary_metric) over test images"
        s += data.patients != nil ? " (resampled by patient).\n\n" : ".\n\n"
        s += Outputs.metricTable(recipe: recipe, tasks: data.tasks.map(\.name), summary: summary, shots: { _ in recipe.shots })
        if !grids.isEmpty {
            s += "\n### Overlays\n\nEach tile: a test image with its true mask (green), the prediction (red) and both (yellow), "
            s += "and the image's Dice; from each method's cell with the most annotated images, seed 0.\n\n"
            for u in grids { s += "![\(u.lastPathComponent)](\(u.lastPathComponent))\n\n" }
        }
        s += "\nFiles: `per_image.csv` (per cell and test image: Dice, IoU, HD95 and the truth / predicted / overlapping "
        s += "foreground pixel counts, from which the pooled metrics are recomputed exactly), `masks/<method>__k<shots>__s0/` "
        s += "(predicted masks of the sample, PNG at the original size)"
        s += grids.isEmpty ? ".\n" : ", `overlays_<task>_<method>.png`.\n"
        return s
    }
}

/// Test images with their true and predicted masks drawn over them.
enum OverlayGrid {
    static let tile = 160, pad = 8, label = 14, columns = 4

    /// One image with its masks (files), and its Dice.
    struct Tile {
        var image: URL
        var truth: URL?
        var predicted: URL
        var dice: Double
    }

    /// An RGB PNG of the tiles, `columns` per row: each image fitted into a tile (nearest sample,
    /// aspect kept, contrast stretched), truth green, prediction red, both yellow.
    static func render(title: String, tiles: [Tile]) throws -> Data {
        try layout(title: title, tiles: tiles, draw: draw) { String(format: "Dice %.3f", $0.dice) }
    }

    /// The grid both task kinds draw: a title, then `columns` tiles per row, each drawn by `draw`
    /// at its corner with `caption` under it.
    static func layout<T>(title: String, tiles: [T], draw: (inout Canvas, T, Int, Int) -> Void, caption: (T) -> String) throws -> Data {
        let cols = min(columns, tiles.count), rowsCount = (tiles.count + cols - 1) / cols
        let top = 34, cell = tile + label + pad
        let width = pad + cols * (tile + pad), height = top + rowsCount * cell + pad
        var c = Canvas(width: width, height: height)
        _ = c.text(String(title.prefix((width - 2 * pad) / 12)), x: pad, y: 10)
        for (i, t) in tiles.enumerated() {
            let x = pad + (i % cols) * (tile + pad), y = top + (i / cols) * cell
            draw(&c, t, x, y)
            _ = c.text(caption(t), x: x, y: y + tile + 3, scale: 1)
        }
        return try PNGCodec.encodeRGB8(width: width, height: height, pixels: c.pixels)
    }

    static func draw(_ c: inout Canvas, _ t: Tile, x: Int, y: Int) {
        c.rect(x, y, x + tile - 1, y + tile - 1, (200, 200, 200))
        guard let data = try? Data(contentsOf: t.image), let img = try? ImageDecoder.decode(data, source: t.image.path) else {
            _ = c.text("no image", x: x + 40, y: y + tile / 2 - 4, scale: 1, (90, 90, 90))
            return
        }
        let w = img.width, h = img.height, plane = w * h
        func mask(_ u: URL?) -> [Bool]? {
            guard let u, let m = try? LabelMask.read(u, width: w, height: h) else { return nil }
            return m.labels.map { $0 != 0 }
        }
        let truth = mask(t.truth), predicted = mask(t.predicted)
        let gray = (0..<plane).map { i in (0..<img.channels).reduce(Float(0)) { $0 + img.pixels[$1 * plane + i] } / Float(img.channels) }
        let lo = gray.min() ?? 0, hi = gray.max() ?? 1
        let span = hi > lo ? hi - lo : 1
        let scale = min(Double(tile) / Double(w), Double(tile) / Double(h))
        let dw = max(1, Int(Double(w) * scale)), dh = max(1, Int(Double(h) * scale))
        let ox = x + (tile - dw) / 2, oy = y + (tile - dh) / 2
        for ty in 0..<dh {
            let sy = min(h - 1, Int((Double(ty) + 0.5) / scale))
            for tx in 0..<dw {
                let sx = min(w - 1, Int((Double(tx) + 0.5) / scale))
                let i = sy * w + sx
                let v = UInt8(max(0, min(255, ((gray[i] - lo) / span * 255).rounded())))
                c.blend(ox + tx, oy + ty, (v, v, v))
                let a = truth?[i] ?? false, b = predicted?[i] ?? false
                if a && b {
                    c.blend(ox + tx, oy + ty, (240, 220, 40), alpha: 0.55)
                } else if a {
                    c.blend(ox + tx, oy + ty, (44, 160, 44), alpha: 0.5)
                } else if b {
                    c.blend(ox + tx, oy + ty, (214, 39, 40), alpha: 0.5)
                }
            }
        }
    }
}
