// Box annotations from a CSV file.
import Foundation
import XRData
import XRProbe
import XRTensor

/// A true box of one image, with its optional label (finding).
public struct AnnotatedBox: Sendable, Equatable {
    public var box: Box
    public var label: String?

    public init(box: Box, label: String? = nil) {
        self.box = box
        self.label = label
    }
}

/// Boxes per image read from a CSV: one row per box with an image column and `x`, `y`, `width`,
/// `height` in pixels of that image (top-left origin), and optionally a label column. Images
/// without rows are negatives (no box).
public enum BoxAnnotations {
    /// Read `url` for the images in `images` (image key as written in the image column → its
    /// width and height in pixels). Every known image is in the result, with no boxes when it
    /// has no row.
    ///
    /// - Throws: `XRError` naming the file, the row and the column: a missing column, a value that
    ///   is not a finite number, a width or height that is not positive, a box that reaches
    ///   outside its image, an image that is not in `images`.
    public static func read(
        _ url: URL, images: [String: (width: Int, height: Int)], imageColumn: String = "path", labelColumn: String? = nil
    ) throws -> [String: [AnnotatedBox]] {
        try parse(CSVTable(contentsOf: url), images: images, imageColumn: imageColumn, labelColumn: labelColumn)
    }

    /// As `read`, from a parsed table (its `source` names the file in errors).
    ///
    /// Rows of the images in `skipping` (known images the caller leaves out) are passed over.
    public static func parse(
        _ table: CSVTable, images: [String: (width: Int, height: Int)], imageColumn: String = "path", labelColumn: String? = nil,
        skipping: Set<String> = []
    ) throws -> [String: [AnnotatedBox]] {
        let src = table.source
        let ci = try table.column(imageColumn)
        let cx = try table.column("x"), cy = try table.column("y"), cw = try table.column("width"), ch = try table.column("height")
        let cl = try labelColumn.map { try table.column($0) }
        var out: [String: [AnnotatedBox]] = [:]
        for key in images.keys { out[key] = [] }
        for (n, row) in table.rows.enumerated() {
            let at = "row \(n + 2)" // the header is row 1
            func number(_ c: Int, _ name: String) throws -> Double {
                let s = row[c].trimmingCharacters(in: .whitespaces)
                guard let v = Double(s), v.isFinite else {
                    throw XRError("\(name) '\(row[c])' is not a number", file: src, field: "\(at), column \(name)")
                }
                return v
            }
            let image = row[ci].trimmingCharacters(in: .whitespaces)
            if skipping.contains(image) { continue }
            guard let size = images[image] else {
                throw XRError(
                    "unknown image '\(image)'", file: src, field: "\(at), column \(imageColumn)",
                    hint: "the image column must name an image of the data set exactly as its manifest does")
            }
            let b = Box(x: try number(cx, "x"), y: try number(cy, "y"), width: try number(cw, "width"), height: try number(ch, "height"))
            guard b.width > 0 else { throw XRError("width \(b.width) is not positive", file: src, field: "\(at), column width") }
            guard b.height > 0 else { throw XRError("height \(b.height) is not positive", file: src, field: "\(at), column height") }
            guard b.x >= 0, b.y >= 0, b.x + b.width <= Double(size.width), b.y + b.height <= Double(size.height) else {
                throw XRError(
                    "box x \(b.x), y \(b.y), width \(b.width), height \(b.height) reaches outside the \(size.width)×\(size.height) image '\(image)'",
                    file: src, field: at, hint: "boxes are in pixels of the image as stored, top-left origin")
            }
            out[image, default: []].append(AnnotatedBox(box: b, label: cl.map { row[$0] }))
        }
        return out
    }
}
