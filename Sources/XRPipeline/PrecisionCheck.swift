// The accuracy guard of a reduced-precision encoder: the same images encoded at fp32 and at the
// encoder's precision, compared feature by feature with cosine similarity.
import Foundation
import XRTensor
import XRModels

/// Per-image agreement of an encoder's features with the same encoder at fp32
/// (`xrlab embed --check-against-fp32 N`): cosine similarity cos(a, b) = a·b / (‖a‖ ‖b‖) of
/// `pooled` and of `cls`, the worst image and the mean. Written as JSON (snake_case keys).
public struct PrecisionCheck: Codable, Sendable {
    /// One image's agreement.
    public struct Image: Codable, Sendable, Equatable {
        public var path: String
        public var pooled_cosine: Double
        public var cls_cosine: Double
    }

    public var format = "xrlab-precision-check"
    public var format_version = 1
    /// The precision checked (the reference is fp32).
    public var precision: Precision
    public var images: [Image]
    /// Mean over the images.
    public var mean_pooled_cosine: Double
    public var mean_cls_cosine: Double
    /// The image with the lowest pooled (cls) cosine.
    public var worst_pooled: Image
    public var worst_cls: Image

    /// Encodes the first `count` of `inputs` with `encoder` and with `reference` (the same weights
    /// at fp32), neither through the feature cache, and compares them. Images that cannot be read
    /// fail as `Encoder.embed` fails (or are left out with `options.skipBad`).
    public static func measure(
        _ encoder: Encoder, reference: Encoder, inputs: [ImageInput], count: Int, options: EmbedOptions
    ) throws -> PrecisionCheck {
        guard count > 0 else { throw XRError("the check needs at least one image, got \(count)", field: "--check-against-fp32") }
        guard reference.precision == .fp32 else {
            throw XRError("the reference encoder runs at \(reference.precision.rawValue), not fp32", field: "--check-against-fp32")
        }
        var o = options
        o.cache = nil
        o.patchTokens = false
        o.lastBlocks = 0
        o.quiet = true
        let subset = Array(inputs.prefix(count))
        let got = try encoder.embed(subset, options: o), want = try reference.embed(subset, options: o)
        guard got.inputs.map(\.id) == want.inputs.map(\.id), let gp = got.tensors["pooled"], let gc = got.tensors["cls"],
            let wp = want.tensors["pooled"], let wc = want.tensors["cls"], !got.inputs.isEmpty
        else { throw XRError("no image of the first \(count) could be encoded both ways", field: "--check-against-fp32") }
        let c = gp.shape.last ?? 0
        var images: [Image] = []
        for (i, input) in got.inputs.enumerated() {
            let r = (i * c)..<((i + 1) * c)
            images.append(
                Image(
                    path: input.id, pooled_cosine: cosine(gp.scalars[r], wp.scalars[r]),
                    cls_cosine: cosine(gc.scalars[r], wc.scalars[r])))
        }
        return PrecisionCheck(images: images, precision: encoder.precision)
    }

    init(images: [Image], precision: Precision) {
        self.precision = precision
        self.images = images
        let n = Double(max(1, images.count))
        mean_pooled_cosine = images.map(\.pooled_cosine).reduce(0, +) / n
        mean_cls_cosine = images.map(\.cls_cosine).reduce(0, +) / n
        worst_pooled = images.min { $0.pooled_cosine < $1.pooled_cosine } ?? Image(path: "", pooled_cosine: .nan, cls_cosine: .nan)
        worst_cls = images.min { $0.cls_cosine < $1.cls_cosine } ?? Image(path: "", pooled_cosine: .nan, cls_cosine: .nan)
    }

    /// cos(a, b) in Double; 1 when both are zero, 0 when one is.
    public static func cosine(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Double {
        var dot = 0.0, na = 0.0, nb = 0.0
        for (x, y) in zip(a, b) {
            dot += Double(x) * Double(y)
            na += Double(x) * Double(x)
            nb += Double(y) * Double(y)
        }
        if na == 0 && nb == 0 { return 1 }
        return na == 0 || nb == 0 ? 0 : dot / (na.squareRoot() * nb.squareRoot())
    }

    /// The report's path beside an output: `feats.safetensors` → `feats.precision-check.json`.
    public static func url(for output: URL) -> URL {
        output.deletingPathExtension().appendingPathExtension("precision-check.json")
    }

    /// Writes the report atomically.
    public func write(to url: URL) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        try AtomicFile.write(try e.encode(self), to: url)
    }

    /// A few lines for the terminal: per-image cosines (the first 20), the mean and the worst image.
    public var summary: String {
        func f(_ v: Double) -> String { String(format: "%.6f", v) }
        var lines = ["\(precision.rawValue) vs fp32 on \(images.count) image\(images.count == 1 ? "" : "s"): cosine of pooled / cls"]
        for i in images.prefix(20) { lines.append("  \(i.path)  pooled \(f(i.pooled_cosine))  cls \(f(i.cls_cosine))") }
        if images.count > 20 { lines.append("  … \(images.count - 20) more in the JSON report") }
        lines.append("mean: pooled \(f(mean_pooled_cosine))  cls \(f(mean_cls_cosine))")
        lines.append("worst pooled: \(f(worst_pooled.pooled_cosine)) (\(worst_pooled.path));  worst cls: \(f(worst_cls.cls_cosine)) (\(worst_cls.path))")
        return lines.joined(separator: "\n")
    }
}
