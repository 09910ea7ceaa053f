import Foundation
import XRTensor

/// A per-pixel class map of one image: (H, W) row-major class indices, 0 = background.
///
/// Read from a gray PNG either as a binary mask (0 → class 0, any other value → class 1) or with
/// a list of label values (`classValues[k]` → class k; any other value is an error).
public struct LabelMask: Sendable, Equatable {
    public var width: Int
    public var height: Int
    /// (H, W) class indices.
    public var labels: [UInt8]

    public init(width: Int, height: Int, labels: [UInt8]) {
        precondition(labels.count == width * height, "LabelMask: \(labels.count) labels for \(height)×\(width)")
        self.width = width
        self.height = height
        self.labels = labels
    }

    /// Read a mask PNG (8- or 16-bit gray) for an image of `width × height`.
    ///
    /// - Parameters:
    ///   - classValues: the pixel value of each class (class k has value `classValues[k]`, at
    ///     most 255 classes); nil reads 0 / non-zero as classes 0 / 1.
    ///   - image: the image the mask belongs to, named in the size error.
    /// - Throws: `XRError` naming the mask file: unreadable or not a PNG, not gray, another size
    ///   than its image, or (with `classValues`) a value that is not a class.
    public static func read(_ url: URL, width: Int, height: Int, classValues: [Int]? = nil, image: String? = nil) throws -> LabelMask {
        let img = try PNGCodec.read(url)
        guard img.channels == 1 else {
            throw XRError(
                "mask has \(img.channels) channels; a mask is a gray PNG", file: url.path, field: "channels",
                hint: "save the mask as 8-bit gray (0 background, non-zero or a class value elsewhere)")
        }
        guard img.width == width, img.height == height else {
            let of = image.map { " of its image \($0)" } ?? " of its image"
            throw XRError(
                "mask is \(img.width)×\(img.height), not the \(width)×\(height)\(of)", file: url.path, field: "size",
                hint: "masks must have their image's size in pixels")
        }
        return try LabelMask(decoded: img, classValues: classValues, source: url.path)
    }

    /// Labels from a decoded gray image (see `read`); `source` names it in errors.
    public init(decoded img: XRImage, classValues: [Int]?, source: String) throws {
        precondition(img.channels == 1, "LabelMask: gray images only")
        let samples = img.samples16
        var labels = [UInt8](repeating: 0, count: samples.count)
        if let classValues {
            guard !classValues.isEmpty, classValues.count <= 255, Set(classValues).count == classValues.count else {
                throw XRError("mask classes must be 1 to 255 distinct values (got \(classValues))", file: source, field: "mask_classes")
            }
            var lookup: [UInt16: UInt8] = [:]
            for (k, v) in classValues.enumerated() { lookup[UInt16(clamping: v)] = UInt8(k) }
            for (i, v) in samples.enumerated() {
                guard let k = lookup[v] else {
                    throw XRError(
                        "pixel (x \(i % img.width), y \(i / img.width)) has value \(v), which is not one of the classes \(classValues)",
                        file: source, field: "mask_classes")
                }
                labels[i] = k
            }
        } else {
            for (i, v) in samples.enumerated() where v != 0 { labels[i] = 1 }
        }
        self.init(width: img.width, height: img.height, labels: labels)
    }

    /// The mask as model input: `geometry.forward` (nearest at pixel centres, padding = `fill`).
    public func transformed(by geometry: ImageGeometry, fill: UInt8 = 0) -> [UInt8] {
        precondition(geometry.imageWidth == width && geometry.imageHeight == height, "mask \(width)×\(height) vs geometry \(geometry)")
        return geometry.forward(labels: labels, fill: fill)
    }

    /// Whether each pixel is of class `k` (H, W).
    public func isClass(_ k: UInt8) -> [Bool] { labels.map { $0 == k } }

    /// Write as an 8-bit gray PNG, atomically: class k as `classValues[k]` (nil: 0 background,
    /// 255 foreground, so `read` without classes gives the mask back).
    public func write(to url: URL, classValues: [Int]? = nil) throws {
        let values = classValues ?? [0, 255]
        guard values.allSatisfy({ (0...255).contains($0) }) else {
            throw XRError("8-bit masks hold values 0…255 (classes \(values))", file: url.path, field: "mask_classes")
        }
        var pixels = [UInt8](repeating: 0, count: labels.count)
        for (i, k) in labels.enumerated() {
            guard Int(k) < values.count else {
                throw XRError("class \(k) has no value (classes \(values))", file: url.path, field: "mask_classes")
            }
            pixels[i] = UInt8(values[Int(k)])
        }
        try PNGCodec.write(PNGCodec.encodeGray8(width: width, height: height, pixels: pixels), to: url)
    }
}
