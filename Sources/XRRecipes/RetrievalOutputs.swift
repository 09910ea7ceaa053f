// Retrieval outputs beside summary.csv and the curves: neighbours.csv (every cell's top
// neighbours per query), one contact sheet per method setting, and report.md's retrieval section.
import Foundation
import XRTensor
import XRData
import XRProbe

enum RetrievalOutputs {
    /// The columns of neighbours.csv: one row per cell × query × rank.
    static let neighboursHeader = [
        "method", "task", "shots", "seed", "query", "relevant_total", "rank", "neighbour", "similarity", "relevant"
    ]

    /// Write neighbours.csv and the contact sheets; return report.md's retrieval section.
    static func write(
        _ results: [CellResult], recipe r: LoadedRecipe, data: StudyData, rows summary: [[String]], directory dir: URL
    ) throws -> (text: String, sheets: [URL]) {
        let recipe = r.recipe
        let settings = recipe.retrieval ?? Recipe.RetrievalSettings()
        var rows: [[String]] = []
        for res in results {
            let c = res.cell
            for q in res.retrieval ?? [] {
                for (i, n) in q.neighbours.enumerated() {
                    rows.append([
                        c.method, c.task, String(c.shots), String(c.seed), q.query, String(q.relevant), String(i + 1), n,
                        String(format: "%.6f", q.similarity[i]), q.hits[i] ? "1" : "0"
                    ])
                }
            }
        }
        try CSVTable(header: neighboursHeader, rows: rows).write(to: dir.appendingPathComponent("neighbours.csv"))

        // One sheet per method setting and task: its cell with the most shots, seed 0.
        var sheets: [URL] = []
        let base = r.resolve(recipe.data.manifest).deletingLastPathComponent()
        if settings.sheet_queries > 0 {
            for task in data.tasks.map(\.name) {
                for m in methodLabels(recipe) {
                    let cells = results.filter { $0.cell.task == task && $0.cell.method == m && $0.cell.seed == 0 && $0.retrieval != nil }
                    guard let cell = cells.max(by: { $0.cell.shots < $1.cell.shots }), let queries = cell.retrieval, !queries.isEmpty else { continue }
                    let u = dir.appendingPathComponent("contact_\(safe(task))_\(safe(m)).png")
                    let title = "\(task) by \(m)" + (Runner.untrained(m) ? "" : ", \(cell.cell.shots) shots per value, seed 0")
                    try PNGCodec.write(try ContactSheet.render(title: title, queries: queries, count: settings.sheet_queries, base: base), to: u)
                    sheets.append(u)
                }
            }
        }
        return (section(results, recipe: recipe, data: data, summary: summary, sheets: sheets), sheets)
    }

    /// report.md's retrieval section: the setting, a table of every metric per method and shot
    /// count, the contact sheets and the files.
    static func section(_ results: [CellResult], recipe: Recipe, data: StudyData, summary: [[String]], sheets: [URL]) -> String {
        let settings = recipe.retrieval ?? Recipe.RetrievalSettings()
        var s = "\n## Retrieval\n\n"
        for task in data.tasks {
            let p = RetrievalCells.Prepared(task: task, data: data, settings: settings)
            let counts = task.classes.enumerated().map { c, name in "\(name) \((task.valueSets ?? []).filter { $0.contains(c) }.count)" }
            s += "Task `\(task.name)`: \(p.queries.count) queries (test images with a value) against a gallery of \(p.gallery.count) "
            s += settings.gallery == .all ? "images (every image with a value but the query itself); " : "training images; "
            s += "a gallery image is relevant when it shares \(settings.relevance == .any ? "any value" : "all values") of `\(task.name)` "
            s += "with the query. Values (images): \(counts.joined(separator: ", ")).\n\n"
        }
        s += "Per query: mAP@R (R = the query's relevant gallery images; Musgrave et al. 2020), reciprocal rank of the first relevant image, "
        s += "precision and recall at k ∈ {\(settings.k.map(String.init).joined(separator: ", "))}; exact ranking by cosine similarity, ties by "
        s += "gallery row order. Queries without a relevant gallery image are left out of the means. Mean over seeds ± std; "
        s += "[interval] = mean over seeds of the bootstrap 95% interval of \(recipe.primary_metric) over queries"
        s += data.patients != nil ? " (resampled by patient).\n\n" : ".\n\n"
        s += Outputs.metricTable(
            recipe: recipe, tasks: data.tasks.map(\.name), summary: summary, shots: { Runner.shotCounts(recipe, method: $0) },
            untrained: Runner.untrained)
        if !sheets.isEmpty {
            s += "\n### Contact sheets\n\nEach row: a query (blue frame) and its nearest gallery images in rank order, "
            s += "framed green when relevant and red when not; below each, the rank and cosine similarity. "
            s += "Images that cannot be read are drawn grey.\n\n"
            for u in sheets { s += "![\(u.lastPathComponent)](\(u.lastPathComponent))\n\n" }
        }
        s += "\nFiles: `neighbours.csv` (per cell, query and rank: the neighbour, its similarity, whether it is relevant, and the "
        s += "query's relevant total R; precision@k and recall@k, and with `retrieval.neighbours` ≥ R also mAP@R and the reciprocal "
        s += "rank, are recomputed from it exactly)"
        s += sheets.isEmpty ? ".\n" : ", `contact_<task>_<method>.png`.\n"
        return s
    }
}

/// Queries with their nearest neighbours as image tiles.
enum ContactSheet {
    static let tile = 96, pad = 8, label = 14, columns = 8

    /// An RGB PNG: one row per query (up to `count`, spread evenly over the queries), the query's
    /// image then its first neighbours; image paths are relative to `base` (or absolute).
    static func render(title: String, queries: [RankedQuery], count: Int, base: URL) throws -> Data {
        let n = min(count, queries.count)
        let chosen = (0..<n).map { queries[$0 * queries.count / n] }
        let cols = 1 + min(columns, chosen.map(\.neighbours.count).max() ?? 0)
        let rowHeight = tile + label + pad * 2, top = 34
        let width = pad + cols * (tile + pad) + pad, height = top + n * rowHeight
        var c = Canvas(width: width, height: height)
        c.text(String(title.prefix((width - 2 * pad) / 12)), x: pad, y: 10)
        for (i, q) in chosen.enumerated() {
            let y = top + i * rowHeight + pad
            draw(&c, path: q.query, base: base, x: pad, y: y, frame: (31, 119, 180))
            c.text(String(("query R=\(q.relevant)").prefix(tile / 6)), x: pad, y: y + tile + 4, scale: 1)
            for (j, id) in q.neighbours.prefix(cols - 1).enumerated() {
                let x = pad + (j + 1) * (tile + pad)
                draw(&c, path: id, base: base, x: x, y: y, frame: q.hits[j] ? (44, 160, 44) : (214, 39, 40))
                c.text(String(format: "#%d %.3f", j + 1, q.similarity[j]), x: x, y: y + tile + 4, scale: 1)
            }
        }
        return try PNGCodec.encodeRGB8(width: width, height: height, pixels: c.pixels)
    }

    /// The image at `path`, fitted into a tile (nearest sample, aspect kept, contrast stretched
    /// to its own range) with a 3-pixel frame; a grey tile when it cannot be read.
    static func draw(_ c: inout Canvas, path: String, base: URL, x: Int, y: Int, frame: (UInt8, UInt8, UInt8)) {
        let u = path.hasPrefix("/") ? URL(fileURLWithPath: path) : base.appendingPathComponent(path)
        c.rect(x, y, x + tile - 1, y + tile - 1, (200, 200, 200))
        if let data = try? Data(contentsOf: u), let img = try? ImageDecoder.decode(data, source: u.path) {
            let w = img.width, h = img.height, plane = w * h
            let gray = (0..<plane).map { i in (0..<img.channels).reduce(Float(0)) { $0 + img.pixels[$1 * plane + i] } / Float(img.channels) }
            let lo = gray.min() ?? 0, hi = gray.max() ?? 1
            let span = hi > lo ? hi - lo : 1
            let inner = tile - 6
            let scale = min(Double(inner) / Double(w), Double(inner) / Double(h))
            let dw = max(1, Int(Double(w) * scale)), dh = max(1, Int(Double(h) * scale))
            let ox = x + 3 + (inner - dw) / 2, oy = y + 3 + (inner - dh) / 2
            c.rect(x + 3, y + 3, x + tile - 4, y + tile - 4, (0, 0, 0))
            for ty in 0..<dh {
                let sy = min(h - 1, Int((Double(ty) + 0.5) / scale))
                for tx in 0..<dw {
                    let sx = min(w - 1, Int((Double(tx) + 0.5) / scale))
                    let v = UInt8(max(0, min(255, ((gray[sy * w + sx] - lo) / span * 255).rounded())))
                    c.blend(ox + tx, oy + ty, (v, v, v))
                }
            }
        } else {
            c.text("no image", x: x + 24, y: y + tile / 2 - 4, scale: 1, (90, 90, 90))
        }
        for t in 0..<3 {
            c.line(x + t, y + t, x + tile - 1 - t, y + t, frame)
            c.line(x + t, y + tile - 1 - t, x + tile - 1 - t, y + tile - 1 - t, frame)
            c.line(x + t, y + t, x + t, y + tile - 1 - t, frame)
            c.line(x + tile - 1 - t, y + t, x + tile - 1 - t, y + tile - 1 - t, frame)
        }
    }
}
