// Learning-curve plots drawn into an RGB buffer and written as PNG (no Python needed).
import Foundation
import XRData
import XRTensor

/// An RGB8 raster with simple drawing primitives.
struct Canvas {
    let width: Int, height: Int
    var pixels: [UInt8]

    init(width: Int, height: Int) {
        self.width = width
        self.height = height
        pixels = [UInt8](repeating: 255, count: width * height * 3)
    }

    mutating func blend(_ x: Int, _ y: Int, _ c: (UInt8, UInt8, UInt8), alpha: Double = 1) {
        guard x >= 0, y >= 0, x < width, y < height else { return }
        let i = (y * width + x) * 3
        for (k, v) in [c.0, c.1, c.2].enumerated() {
            pixels[i + k] = UInt8((Double(pixels[i + k]) * (1 - alpha) + Double(v) * alpha).rounded())
        }
    }

    mutating func rect(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: (UInt8, UInt8, UInt8), alpha: Double = 1) {
        for y in min(y0, y1)...max(y0, y1) { for x in min(x0, x1)...max(x0, x1) { blend(x, y, c, alpha: alpha) } }
    }

    /// A one-pixel hairline (grid lines, axes): Bresenham, no smoothing, so it stays crisp.
    mutating func line(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: (UInt8, UInt8, UInt8), thickness: Int = 1) {
        var x = x0, y = y0
        let dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1
        var err = dx + dy
        let h = thickness / 2
        while true {
            rect(x - h, y - h, x - h + thickness - 1, y - h + thickness - 1, c)
            if x == x1 && y == y1 { break }
            let e2 = 2 * err
            if e2 >= dy { err += dy; x += sx }
            if e2 <= dx { err += dx; y += sy }
        }
    }

    /// An anti-aliased line `width` pixels wide with round caps: each pixel near the segment is
    /// blended by its coverage, approximated as clamp(lineWidth/2 + 0.5 − distance, 0, 1) where
    /// distance is from the pixel centre to the segment.
    mutating func smoothLine(_ x0: Double, _ y0: Double, _ x1: Double, _ y1: Double, _ c: (UInt8, UInt8, UInt8), lineWidth: Double) {
        let r = lineWidth / 2
        let vx = x1 - x0, vy = y1 - y0, len2 = vx * vx + vy * vy
        let xa = Int((min(x0, x1) - r - 1).rounded(.down)), xb = Int((max(x0, x1) + r + 1).rounded(.up))
        let ya = Int((min(y0, y1) - r - 1).rounded(.down)), yb = Int((max(y0, y1) + r + 1).rounded(.up))
        for y in max(ya, 0)...max(min(yb, height - 1), 0) {
            for x in max(xa, 0)...max(min(xb, width - 1), 0) {
                let px = Double(x) - x0, py = Double(y) - y0
                let t = len2 > 0 ? min(max((px * vx + py * vy) / len2, 0), 1) : 0
                let ex = px - t * vx, ey = py - t * vy
                let coverage = min(max(r + 0.5 - (ex * ex + ey * ey).squareRoot(), 0), 1)
                if coverage > 0 { blend(x, y, c, alpha: coverage) }
            }
        }
    }

    /// An anti-aliased filled disc (markers).
    mutating func disc(_ cx: Double, _ cy: Double, radius: Double, _ c: (UInt8, UInt8, UInt8)) {
        smoothLine(cx, cy, cx, cy, c, lineWidth: 2 * radius)
    }

    /// A polyline of `smoothLine` dashes, `dash` pixels on and `gap` off, the pattern running on
    /// across vertices (a dense fitted curve has segments shorter than one dash).
    mutating func dashedPolyline(_ pts: [(Double, Double)], _ c: (UInt8, UInt8, UInt8), lineWidth: Double, dash: Double = 9, gap: Double = 6) {
        var phase = 0.0 // distance into the current dash + gap period
        for (p, q) in zip(pts, pts.dropFirst()) {
            let len = ((q.0 - p.0) * (q.0 - p.0) + (q.1 - p.1) * (q.1 - p.1)).squareRoot()
            var t = 0.0
            while t < len {
                let inDash = phase < dash
                let step = min(len - t, inDash ? dash - phase : dash + gap - phase)
                if inDash {
                    smoothLine(
                        p.0 + (q.0 - p.0) * t / len, p.1 + (q.1 - p.1) * t / len,
                        p.0 + (q.0 - p.0) * (t + step) / len, p.1 + (q.1 - p.1) * (t + step) / len, c, lineWidth: lineWidth)
                }
                t += step
                phase = (phase + step).truncatingRemainder(dividingBy: dash + gap)
            }
        }
    }

    /// Text with the 5×7 font at `scale`; returns the width drawn.
    @discardableResult
    mutating func text(_ s: String, x: Int, y: Int, scale: Int = 2, _ c: (UInt8, UInt8, UInt8) = (30, 30, 30), vertical: Bool = false) -> Int {
        var cx = 0
        for ch in s {
            for (r, col) in glyph(ch) {
                for dy in 0..<scale {
                    for dx in 0..<scale {
                        let px = col * scale + dx + cx, py = r * scale + dy
                        if vertical { blend(x + py, y - px, c) } else { blend(x + px, y + py, c) }
                    }
                }
            }
            cx += 6 * scale
        }
        return cx
    }

    static func textWidth(_ s: String, scale: Int = 2) -> Int { s.count * 6 * scale }
}

/// One curve: points (shots, mean, low, high).
struct Series {
    /// How a series is drawn.
    enum Style {
        /// Measured means joined by lines, markers, interval band (learning curves).
        case curve
        /// Markers with vertical interval bars, no line or band (measured points beside a fit).
        case points
        /// A fitted line without markers, its band, dashed beyond `solidUntil` (extrapolation).
        case fit(solidUntil: Double)
    }
    var name: String
    var points: [(x: Double, y: Double, low: Double, high: Double)]
    var style: Style = .curve
    /// Palette index (default: the series' position); series sharing a colour share a legend entry
    /// when only the first has a name.
    var color: Int? = nil
}

enum LearningCurvePlot {
    static let palette: [(UInt8, UInt8, UInt8)] = [
        (31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14),
        (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127)
    ]

    /// Metric vs shots (log2 x axis), one line per series with its interval band.
    /// `ticks`: x values to label even without points (e.g. shot counts whose cells were all skipped).
    /// `reference`: horizontal dashed lines with a label (e.g. a target value).
    static func render(
        title: String, yLabel: String, series: [Series], note: String, ticks: [Double] = [], xLabel: String = "Shots per class (log2 scale)",
        reference: [(y: Double, label: String)] = []
    ) throws -> Data {
        let W = 1020, H = 620, left = 120, right = 250, top = 70, bottom = 90
        var c = Canvas(width: W, height: H)
        let pw = W - left - right, ph = H - top - bottom
        // Fitted lines set the x range but get no tick per point.
        let xs = Array(
            Set(
                series.flatMap { s -> [Double] in if case .fit = s.style { return [] } else { return s.points.map(\.x) } }
                    + ticks.filter { $0 > 0 })
        ).sorted()
        let fitX = series.flatMap { s -> [Double] in if case .fit = s.style { return s.points.map(\.x) } else { return [] } }.filter { $0 > 0 }
        let ys = (series.flatMap { $0.points.flatMap { [$0.low, $0.high, $0.y] } } + reference.map(\.y)).filter(\.isFinite)
        guard let xmin = (xs + fitX).min(), let xmax = (xs + fitX).max(), let ylo = ys.min(), let yhi = ys.max() else {
            c.text("No finished cells to plot", x: left, y: top + ph / 2)
            return try PNGCodec.encodeRGB8(width: W, height: H, pixels: c.pixels)
        }
        let step = (yhi - ylo) > 0.3 ? 0.1 : ((yhi - ylo) > 0.12 ? 0.05 : 0.02)
        let y0 = (ylo / step).rounded(.down) * step
        var y1 = max((yhi / step).rounded(.up) * step, y0 + step)
        if yhi <= 1 && y1 > 1 { y1 = max(1, y0 + step) }
        let lx0 = log2(xmin), lx1 = max(log2(xmax), lx0 + 1)
        func px(_ x: Double) -> Int { left + Int(((log2(x) - lx0) / (lx1 - lx0) * Double(pw - 40)).rounded()) + 20 }
        func py(_ y: Double) -> Int { top + ph - Int(((y - y0) / (y1 - y0) * Double(ph)).rounded()) }
        // Grid, ticks and labels.
        var t = y0
        while t <= y1 + 1e-9 {
            let yy = py(t)
            c.line(left, yy, left + pw, yy, (225, 225, 225))
            let label = String(format: step < 0.05 ? "%.2f" : (step < 0.1 ? "%.2f" : "%.1f"), t)
            c.text(label, x: left - 12 - Canvas.textWidth(label), y: yy - 7)
            t += step
        }
        for x in xs {
            let xx = px(x)
            c.line(xx, top, xx, top + ph, (235, 235, 235))
            let label = x == x.rounded() ? String(Int(x)) : String(x)
            c.text(label, x: xx - Canvas.textWidth(label) / 2, y: top + ph + 12)
        }
        c.line(left, top, left, top + ph, (60, 60, 60), thickness: 2)
        c.line(left, top + ph, left + pw, top + ph, (60, 60, 60), thickness: 2)
        c.text(title, x: left, y: 22)
        let xl = xLabel
        c.text(xl, x: left + pw / 2 - Canvas.textWidth(xl) / 2, y: H - 48)
        c.text(yLabel, x: 18, y: top + ph / 2 + Canvas.textWidth(yLabel) / 2, vertical: true)
        c.text(note, x: left, y: H - 22, scale: 1, (90, 90, 90))
        // Bands, then lines and markers.
        for (i, s) in series.enumerated() {
            if case .points = s.style { continue }
            let col = palette[(s.color ?? i) % palette.count]
            let pts = s.points.sorted { $0.x < $1.x }
            for (j, (a, b)) in zip(pts, pts.dropFirst()).enumerated() {
                // Each column once (a joint belongs to the segment it starts), so the band's
                // alpha does not double at the joints of a densely sampled curve.
                let xa = px(a.x), xb = px(b.x), end = j + 2 < pts.count ? xb - 1 : xb
                guard end >= xa else { continue }
                for x in xa...end {
                    let f = xb == xa ? 0 : Double(x - xa) / Double(xb - xa)
                    let lo = a.low + (b.low - a.low) * f, hi = a.high + (b.high - a.high) * f
                    if lo.isFinite && hi.isFinite { for y in min(py(hi), py(lo))...max(py(hi), py(lo)) { c.blend(x, y, col, alpha: 0.12) } }
                }
            }
        }
        for r in reference where r.y.isFinite {
            c.dashedPolyline([(Double(left), Double(py(r.y))), (Double(left + pw), Double(py(r.y)))], (60, 60, 60), lineWidth: 2)
            c.text(r.label, x: left + pw - Canvas.textWidth(r.label, scale: 1) - 4, y: py(r.y) - 12, scale: 1, (60, 60, 60))
        }
        var legendRow = 0
        for (i, s) in series.enumerated() {
            let col = palette[(s.color ?? i) % palette.count]
            let pts = s.points.sorted { $0.x < $1.x }
            switch s.style {
            case .curve:
                for (a, b) in zip(pts, pts.dropFirst()) {
                    c.smoothLine(Double(px(a.x)), Double(py(a.y)), Double(px(b.x)), Double(py(b.y)), col, lineWidth: 3)
                }
                for p in pts { c.disc(Double(px(p.x)), Double(py(p.y)), radius: 5, col) }
            case .points:
                for p in pts {
                    if p.low.isFinite && p.high.isFinite {
                        c.smoothLine(Double(px(p.x)), Double(py(p.low)), Double(px(p.x)), Double(py(p.high)), col, lineWidth: 2)
                    }
                    c.disc(Double(px(p.x)), Double(py(p.y)), radius: 5, col)
                }
            case let .fit(solidUntil):
                let solid = pts.filter { $0.x <= solidUntil }, dashed = pts.filter { $0.x >= (solid.last?.x ?? -Double.infinity) }
                for (a, b) in zip(solid, solid.dropFirst()) {
                    c.smoothLine(Double(px(a.x)), Double(py(a.y)), Double(px(b.x)), Double(py(b.y)), col, lineWidth: 3)
                }
                c.dashedPolyline(dashed.map { (Double(px($0.x)), Double(py($0.y))) }, col, lineWidth: 3)
            }
            guard !s.name.isEmpty else { continue }
            // Legend.
            let ly = top + 10 + legendRow * 30
            legendRow += 1
            c.rect(left + pw + 25, ly + 6, left + pw + 50, ly + 8, col)
            c.disc(Double(left + pw + 37), Double(ly + 7), radius: 5, col)
            c.text(s.name, x: left + pw + 60, y: ly)
        }
        return try PNGCodec.encodeRGB8(width: W, height: H, pixels: c.pixels)
    }
}
