// Detection outputs beside summary.csv and the curves: boxes.csv (every cell's predicted boxes,
// image scores and heatmap peaks, from which every metric is recomputed), one heatmap overlay
// grid per method, and report.md's detection section.
import Foundation
import XRTensor
import XRData
import XRProbe

enum DetectionOutputs {
    /// The columns of boxes.csv: one row per cell × test image × predicted box (an image without
    /// a predicted box has one row with the box columns empty).
    static let boxesHeader = [
        "method", "task", "shots", "seed", "image", "image_score", "peak_x", "peak_y", "box", "x", "y", "width", "height", "score"
    ]

    /// Write boxes.csv and the overlay grids; return report.md's detection section.
    static func write(
        _ results: [CellResult], recipe r: LoadedRecipe, data: StudyData, rows summary: [[String]], directory dir: URL
    ) throws -> (text: String, grids: [URL]) {
        let recipe = r.recipe
        var rows: [[String]] = []
        for res in results {
            let c = res.cell
            for d in res.detection ?? [] {
                // Full precision (shortest round-trip form): the metrics recomputed from the file are exact.
                let head = [c.method, c.task, String(c.shots), String(c.seed), d.image, String(d.score), String(d.peak_x), String(d.peak_y)]
                if d.boxes.isEmpty { rows.append(head + ["", "", "", "", "", ""]) }
                for (i, (b, s)) in zip(d.boxes, d.scores).enumerated() {
                    rows.append(head + [String(i), String(b.x), String(b.y), String(b.width), String(b.height), String(s)])
                }
            }
        }
        try CSVTable(header: boxesHeader, rows: rows).write(to: dir.appendingPathComponent("boxes.csv"))

        // One grid per method setting and task: its cell with the most shots, seed 0.
        var grids: [URL] = []
        let base = r.resolve(recipe.data.manifest).deletingLastPathComponent()
        let truth = try trueBoxes(r, data: data)
        for task in data.tasks.map(\.name) {
            for m in methodLabels(recipe) {
                let cells = results.filter { $0.cell.task == task && $0.cell.method == m && $0.cell.seed == 0 && $0.status == "ok" }
                guard let cell = cells.max(by: { $0.cell.shots < $1.cell.shots }) else { continue }
                let folder = DetectionCells.heatmapsDirectory(cell.cell, in: dir)
                let shown = (cell.detection ?? []).filter {
                    FileManager.default.fileExists(atPath: folder.appendingPathComponent(DetectionCells.heatmapFile($0.image)).path)
                }
                guard !shown.isEmpty else { continue }
                let u = dir.appendingPathComponent("heatmaps_\(safe(task))_\(safe(m)).png")
                let tiles = shown.map { d in
                    HeatmapGrid.Tile(
                        image: d.image.hasPrefix("/") ? URL(fileURLWithPath: d.image) : base.appendingPathComponent(d.image),
                        heatmap: folder.appendingPathComponent(DetectionCells.heatmapFile(d.image)), truth: truth[d.image] ?? [], found: d)
                }
                let title = "\(task) by \(m), \(cell.cell.shots) images with a box, seed 0"
                try PNGCodec.write(try HeatmapGrid.render(title: title, tiles: tiles), to: u)
                grids.append(u)
            }
        }
        return (section(recipe: recipe, data: data, summary: summary, grids: grids), grids)
    }

    /// Image id → its true boxes (the task's labels), for the study's images with a box.
    static func trueBoxes(_ r: LoadedRecipe, data: StudyData) throws -> [String: [Box]] {
        let spec = r.recipe.data
        let table = try DetectionCells.boxesTable(r)
        let ci = try table.column(spec.image_column)
        let cx = try table.column("x"), cy = try table.column("y"), cw = try table.column("width"), ch = try table.column("height")
        let cl = try spec.box_label_column.map { try table.column($0) }
        let study = Set(data.ids)
        var out: [String: [Box]] = [:]
        for row in table.rows {
            let image = row[ci].trimmingCharacters(in: .whitespaces)
            guard study.contains(image) else { continue }
            if let cl, !spec.labels.isEmpty, !spec.labels.contains(row[cl].trimmingCharacters(in: .whitespaces)) { continue }
            let v = [cx, cy, cw, ch].map { Double(row[$0].trimmingCharacters(in: .whitespaces)) ?? .nan }
            out[image, default: []].append(Box(x: v[0], y: v[1], width: v[2], height: v[3]))
        }
        return out
    }

    /// report.md's detection section: the setting, a table of every metric per method and shot
    /// count (with bootstrap intervals), the heatmap grids and the files.
    static func section(recipe: Recipe, data: StudyData, summary: [[String]], grids: [URL]) -> String {
        var s = "\n## Detection\n\n"
        for task in data.tasks {
            let used = task.labels.indices.filter { task.labels[$0] >= 0 && data.isTest[$0] != nil }
            let test = used.filter { data.isTest[$0] == true }
            let pos = used.filter { task.labels[$0] == 1 }
            s += "Boxes `\(task.name)` from `\(recipe.data.boxes ?? "")`: \(used.count) images, \(pos.count) with a box "
            s += "(\(test.filter { task.labels[$0] == 1 }.count) of the \(test.count) test images). "
        }
        s += "Shots are training images with a box; each cell also draws as many training images without a box (negatives), "
        s += "both by the few-shot sampler with the cell's seed. Boxes are rasterised at the image's size (pixel centres inside a box) "
        s += "and go through the encoder's preprocessing like masks; predicted boxes are the bounding boxes of the connected "
        s += "components of the thresholded heatmap, mapped back to image pixels. Per cell over the test images: AP at IoU 0.1, 0.3 "
        s += "and 0.5 (all-points interpolation), FROC sensitivity at 0.5, 1, 2 and 4 false positives per image (a hit at IoU ≥ "
        s += "\(fmtNumber(DetectionCells.frocIoU))), the pointing game (share of images with a box whose heatmap maximum lies in "
        s += "one) and the image-level AUROC of the heatmap maximum (images with a box vs without). Mean over seeds ± std; "
        s += "[interval] = mean over seeds of each metric's bootstrap 95% interval over test images"
        s += data.patients != nil ? " (resampled by patient).\n\n" : ".\n\n"
        s += Outputs.metricTable(recipe: recipe, tasks: data.tasks.map(\.name), summary: summary, shots: { _ in recipe.shots })
        if !grids.isEmpty {
            s += "\n### Heatmaps\n\nEach tile: a test image with the heatmap (red, stronger = higher), its true boxes (green) and "
            s += "the predicted boxes (yellow), with the heatmap maximum and whether it lies in a true box; from each method's cell "
            s += "with the most annotated images, seed 0.\n\n"
            for u in grids { s += "![\(u.lastPathComponent)](\(u.lastPathComponent))\n\n" }
        }
        s += "\nFiles: `boxes.csv` (per cell and test image: the image score, the heatmap peak and every predicted box with its "
        s += "score, in image pixels; every metric above is recomputed from it and the boxes file), `heatmaps/<method>__k<shots>__s0/` "
        s += "(heatmaps of the sample, 8-bit PNG at the original size, 255 = probability 1)"
        s += grids.isEmpty ? ".\n" : ", `heatmaps_<task>_<method>.png`.\n"
        return s
    }
}

/// Test images with their heatmaps, true and predicted boxes drawn over them.
enum HeatmapGrid {
    /// One image with its heatmap file, true boxes and detections.
    struct Tile {
        var image: URL
        var heatmap: URL
        var truth: [Box]
        var found: ImageDetections
    }

    /// An RGB PNG of the tiles, `OverlayGrid.columns` per row: each image fitted into a tile
    /// (nearest sample, aspect kept, contrast stretched), the heatmap in red, true boxes green,
    /// predicted boxes yellow.
    static func render(title: String, tiles: [Tile]) throws -> Data {
        try OverlayGrid.layout(title: title, tiles: tiles, draw: draw) { t in
            let where_ = t.truth.isEmpty ? "no box" : t.truth.contains { $0.contains(x: t.found.peak_x, y: t.found.peak_y) } ? "in box" : "outside"
            return String(format: "max %.2f ", t.found.score) + where_
        }
    }

    static func draw(_ c: inout Canvas, _ t: Tile, x: Int, y: Int) {
        let tile = OverlayGrid.tile
        c.rect(x, y, x + tile - 1, y + tile - 1, (200, 200, 200))
        guard let data = try? Data(contentsOf: t.image), let img = try? ImageDecoder.decode(data, source: t.image.path) else {
            _ = c.text("no image", x: x + 40, y: y + tile / 2 - 4, scale: 1, (90, 90, 90))
            return
        }
        let w = img.width, h = img.height, plane = w * h
        let heat = (try? PNGCodec.read(t.heatmap)).flatMap { $0.width == w && $0.height == h && $0.channels == 1 ? $0.samples16 : nil }
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
                if let heat { c.blend(ox + tx, oy + ty, (230, 30, 30), alpha: 0.6 * Double(heat[i]) / 255) }
            }
        }
        func outline(_ b: Box, _ colour: (UInt8, UInt8, UInt8)) {
            let x0 = ox + Int(b.x * scale), y0 = oy + Int(b.y * scale)
            let x1 = ox + Int((b.x + b.width) * scale), y1 = oy + Int((b.y + b.height) * scale)
            c.line(x0, y0, x1, y0, colour)
            c.line(x1, y0, x1, y1, colour)
            c.line(x1, y1, x0, y1, colour)
            c.line(x0, y1, x0, y0, colour)
        }
        for b in t.found.boxes { outline(b, (250, 220, 30)) }
        for b in t.truth { outline(b, (40, 200, 60)) }
    }
}
