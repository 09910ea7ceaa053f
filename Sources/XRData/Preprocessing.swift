import Foundation
import XRTensor
import XRKernels

// Dimension letters: C channels of the decoded image (1 or 3), H × W its size,
// rh × rw the size after resizing, oh × ow the model input size (after the crop).

/// How an X-ray becomes model input, following the model's own preprocessing config.
///
/// Pipeline (float throughout, so 16-bit values keep full precision):
/// 1. decode to [0, 1] by the full range of the bit depth (this is what a Hugging Face
///    `rescale_factor` of 1/255 means for 8-bit input);
/// 2. resize — shortest edge to `shortestEdge` (long edge `int(s · long / short)`, Hugging Face's
///    `get_resize_output_image_size`) or to an exact `resizeHeight × resizeWidth` — with
///    `torch.nn.functional.interpolate(mode, align_corners=False, antialias=antialias)` semantics
///    (bicubic may overshoot [0, 1]; nothing is clamped, as in torch);
/// 3. center crop as Hugging Face's default (torchvision) image processors do it:
///    `top = (h - ch) // 2`, `left = (w - cw) // 2` — or, with `cropRounding = .halfEven`, as
///    torchvision's `CenterCrop` (timm's eval transform) does: `int(round((h - ch) / 2))`, which
///    differs when the margin is odd; when the crop is larger than the image,
///    zeros are padded, `(ch - h) // 2` rows on top and the rest at the bottom (likewise for
///    columns), so a 1×1 image or a small exact resize still gives the model its input size;
///    (`geometry(height:width:)` gives steps 2–3 for one image size as an `ImageGeometry`, which
///    masks, boxes and predictions use to follow the image);
/// 4. gray replicated to 3 channels (after resizing: cheaper, same result);
/// 5. `(x - mean) / std` per channel.
///
/// Hugging Face's own processors resize 8-bit images as 8-bit (with rounding); xrlab resizes in
/// float, so 8-bit results can differ from theirs by up to about 1/255 per pixel before normalising.
///
/// `maxPixels` bounds every image the pipeline allocates (the resized image, before the crop):
/// a 1 × 10000 strip resized to a 518 shortest edge would otherwise need 518 × 5,180,000 pixels.
public struct Preprocessing: Codable, Equatable, Sendable, CustomStringConvertible {
    public enum Interpolation: String, Codable, Sendable, CaseIterable { case bicubic, bilinear }
    /// How an odd crop margin's half is rounded: down (Hugging Face) or half to even (torchvision `CenterCrop`).
    public enum CropRounding: String, Codable, Sendable { case floor, halfEven }

    /// The default bound on image sizes (pixels per channel).
    public static let defaultMaxPixels = 64_000_000

    /// Resize so the shorter side has this length (nil: see `resizeHeight`/`resizeWidth`).
    public var shortestEdge: Int?
    /// Exact resize (used when `shortestEdge` is nil and both are set).
    public var resizeHeight: Int?
    public var resizeWidth: Int?
    public var interpolation: Interpolation = .bicubic
    /// torch's `antialias` flag; true is what Hugging Face's processors use.
    public var antialias: Bool = true
    public var cropHeight: Int?
    public var cropWidth: Int?
    public var cropRounding: CropRounding = .floor
    /// Per-channel (R, G, B) statistics; gray input is replicated to 3 channels first.
    public var mean: [Float]
    public var std: [Float]
    /// Largest resized image (height × width) the pipeline will allocate.
    public var maxPixels: Int = Preprocessing.defaultMaxPixels

    public init(
        shortestEdge: Int?, crop: Int?, interpolation: Interpolation = .bicubic,
        mean: [Float], std: [Float], antialias: Bool = true, maxPixels: Int = Preprocessing.defaultMaxPixels
    ) {
        self.shortestEdge = shortestEdge
        self.cropHeight = crop
        self.cropWidth = crop
        self.interpolation = interpolation
        self.mean = mean
        self.std = std
        self.antialias = antialias
        self.maxPixels = maxPixels
    }

    /// Exact resize to `height × width`, optional crop.
    public init(
        height: Int, width: Int, cropHeight: Int? = nil, cropWidth: Int? = nil, interpolation: Interpolation = .bicubic,
        mean: [Float], std: [Float], antialias: Bool = true, maxPixels: Int = Preprocessing.defaultMaxPixels
    ) {
        self.init(
            shortestEdge: nil, crop: nil, interpolation: interpolation, mean: mean, std: std,
            antialias: antialias, maxPixels: maxPixels)
        self.resizeHeight = height
        self.resizeWidth = width
        self.cropHeight = cropHeight
        self.cropWidth = cropWidth
    }

    /// ImageNet statistics, shortest edge `size` then a `size` crop (timm / DINOv2 default).
    public static func imagenet(size: Int = 224) -> Preprocessing {
        Preprocessing(shortestEdge: size, crop: size, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])
    }

    /// RAD-DINO (microsoft/rad-dino): shortest edge 518, crop 518, bicubic, its own statistics.
    public static let radDino = Preprocessing(
        shortestEdge: 518, crop: 518, mean: [0.5307, 0.5307, 0.5307],
        std: [0.2583, 0.2583, 0.2583])

    /// EVA-X's evaluation transform (hustvl/EVA-X `classification/utils/datasets.py`): resize the
    /// shorter side to int(size / crop_pct) with crop_pct 224/256 up to 224 px (1 above), bicubic,
    /// centre crop `size` (torchvision's rounding), mean 0.49185243 and std 0.28509309 on every channel.
    public static func evaX(size: Int = 224) -> Preprocessing {
        let cropPct = size <= 224 ? 224.0 / 256.0 : 1.0
        var p = Preprocessing(
            shortestEdge: Int(Double(size) / cropPct), crop: size, interpolation: .bicubic,
            mean: [0.491_852_43, 0.491_852_43, 0.491_852_43], std: [0.285_093_09, 0.285_093_09, 0.285_093_09])
        p.cropRounding = .halfEven
        return p
    }

    // MARK: Codable — fields added after the first release decode with their defaults, and
    // `maxPixels` is written only when it differs from the default (it never changes values, so
    // the JSON, which feature-cache keys hash, stays what it was).

    enum CodingKeys: String, CodingKey {
        case shortestEdge, resizeHeight, resizeWidth, interpolation, antialias, cropHeight, cropWidth, cropRounding, mean, std, maxPixels
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        shortestEdge = try c.decodeIfPresent(Int.self, forKey: .shortestEdge)
        resizeHeight = try c.decodeIfPresent(Int.self, forKey: .resizeHeight)
        resizeWidth = try c.decodeIfPresent(Int.self, forKey: .resizeWidth)
        interpolation = try c.decodeIfPresent(Interpolation.self, forKey: .interpolation) ?? .bicubic
        antialias = try c.decodeIfPresent(Bool.self, forKey: .antialias) ?? true
        cropHeight = try c.decodeIfPresent(Int.self, forKey: .cropHeight)
        cropWidth = try c.decodeIfPresent(Int.self, forKey: .cropWidth)
        cropRounding = try c.decodeIfPresent(CropRounding.self, forKey: .cropRounding) ?? .floor
        mean = try c.decode([Float].self, forKey: .mean)
        std = try c.decode([Float].self, forKey: .std)
        maxPixels = try c.decodeIfPresent(Int.self, forKey: .maxPixels) ?? Preprocessing.defaultMaxPixels
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(shortestEdge, forKey: .shortestEdge)
        try c.encodeIfPresent(resizeHeight, forKey: .resizeHeight)
        try c.encodeIfPresent(resizeWidth, forKey: .resizeWidth)
        try c.encode(interpolation, forKey: .interpolation)
        try c.encode(antialias, forKey: .antialias)
        try c.encodeIfPresent(cropHeight, forKey: .cropHeight)
        try c.encodeIfPresent(cropWidth, forKey: .cropWidth)
        // Written only when not the default, so existing configurations keep their JSON (and cache keys).
        if cropRounding != .floor { try c.encode(cropRounding, forKey: .cropRounding) }
        try c.encode(mean, forKey: .mean)
        try c.encode(std, forKey: .std)
        if maxPixels != Preprocessing.defaultMaxPixels { try c.encode(maxPixels, forKey: .maxPixels) }
    }

    public var description: String {
        var parts: [String] = []
        let how = "\(interpolation.rawValue)\(antialias ? ", antialiased" : "")"
        if let s = shortestEdge {
            parts.append("resize shortest edge to \(s) (\(how))")
        } else if let h = resizeHeight, let w = resizeWidth {
            parts.append("resize to \(h)×\(w) (\(how))")
        }
        if let h = cropHeight, let w = cropWidth {
            parts.append("center crop \(h)×\(w)\(cropRounding == .halfEven ? " (offsets rounded half to even, as torchvision)" : "")")
        }
        parts.append("scale to [0, 1] by bit depth")
        parts.append("normalise mean \(mean) std \(std)")
        return parts.joined(separator: ", ")
    }

    // MARK: Sizes

    /// Output (height, width) for an input image of the given size.
    public func outputSize(height h: Int, width w: Int) -> (Int, Int) {
        let (rh, rw) = resizedSize(height: h, width: w)
        return (cropHeight ?? rh, cropWidth ?? rw)
    }

    /// The size after the resize step: Hugging Face's rule, `int(s · long / short)` for the long
    /// edge (Python's `int` truncates; the quotient is the correctly rounded double, as in Python).
    public func resizedSize(height h: Int, width w: Int) -> (Int, Int) {
        if let s = shortestEdge {
            if w <= h { return (Int(Double(s) * Double(h) / Double(w)), s) }
            return (s, Int(Double(s) * Double(w) / Double(h)))
        }
        if let rh = resizeHeight, let rw = resizeWidth { return (rh, rw) }
        return (h, w)
    }

    /// Check values once, with the field at fault named.
    public func validate(source: String? = nil) throws {
        guard mean.count == 3, std.count == 3 else {
            throw XRError("mean and std need 3 values each (got \(mean.count) and \(std.count))", file: source, field: "image_mean/image_std")
        }
        guard std.allSatisfy({ $0 > 0 && $0.isFinite }) else {
            throw XRError("std must be positive and finite (got \(std))", file: source, field: "image_std")
        }
        guard mean.allSatisfy(\.isFinite) else {
            throw XRError("mean must be finite (got \(mean))", file: source, field: "image_mean")
        }
        for (name, v) in [
            ("shortest_edge", shortestEdge), ("resize height", resizeHeight), ("resize width", resizeWidth),
            ("crop height", cropHeight), ("crop width", cropWidth)
        ] {
            if let v, v <= 0 || v > 16384 { throw XRError("size \(v) out of range 1…16384", file: source, field: name) }
        }
        if (resizeHeight == nil) != (resizeWidth == nil) {
            throw XRError("an exact resize needs both height and width", file: source, field: "size")
        }
        if (cropHeight == nil) != (cropWidth == nil) {
            throw XRError("a center crop needs both height and width", file: source, field: "crop_size")
        }
        guard maxPixels > 0 else { throw XRError("maxPixels must be positive (got \(maxPixels))", file: source, field: "maxPixels") }
    }

    // MARK: Apply

    /// (3, oh, ow) model input for one image.
    /// - Throws: `XRError` for an invalid configuration, an empty image or a resize beyond
    ///   `maxPixels` (the caller adds the file name).
    public func apply(_ image: XRImage) throws -> [Float] {
        let (oh, ow) = outputSize(height: image.height, width: image.width)
        var out = [Float](repeating: 0, count: 3 * max(oh, 0) * max(ow, 0))
        try out.withUnsafeMutableBufferPointer { try apply(image, into: $0) }
        return out
    }

    /// Writes the (3, oh, ow) model input into `out`, which must hold exactly 3 · oh · ow
    /// floats (`outputSize`); use it to fill one slot of a batch buffer without a copy.
    public func apply(_ image: XRImage, into out: UnsafeMutableBufferPointer<Float>) throws {
        try validate()
        let c = image.channels, h = image.height, w = image.width
        guard c == 1 || c == 3, h > 0, w > 0, image.pixels.count == c * h * w else {
            throw XRError(
                "image is \(c)×\(h)×\(w) with \(image.pixels.count) values; need 1 or 3 channels and a non-empty size",
                field: "pixels")
        }
        let (rh, rw) = resizedSize(height: h, width: w)
        guard rh > 0, rw > 0 else {
            throw XRError("image \(w)×\(h) resizes to an empty \(rw)×\(rh) image", field: "size")
        }
        guard rh.multipliedReportingOverflow(by: rw).partialValue <= maxPixels, rh <= maxPixels, rw <= maxPixels else {
            throw XRError(
                "image \(w)×\(h) would resize to \(rw)×\(rh), more than the limit of \(maxPixels) pixels", field: "size",
                hint: "the aspect ratio is extreme; crop the image or raise maxPixels")
        }
        let g = geometry(height: h, width: w)
        let oh = g.inputHeight, ow = g.inputWidth, top = g.top, left = g.left
        precondition(out.count == 3 * oh * ow, "apply(into:) needs \(3 * oh * ow) floats, got \(out.count)")
        guard let dst = out.baseAddress else { return }

        // Resize (C, h, w) → (C, rh, rw); an identity resize is skipped, as torch skips it.
        var resizedStorage: [Float] = []
        let needsResize = rh != h || rw != w
        if needsResize {
            resizedStorage = [Float](repeating: 0, count: c * rh * rw)
            resizedStorage.withUnsafeMutableBufferPointer { o in
                image.pixels.withUnsafeBufferPointer { i in
                    guard let op = o.baseAddress, let ip = i.baseAddress else { return }
                    resample(
                        op, ip, channels: c, inH: h, inW: w, outH: rh, outW: rw,
                        filter: interpolation == .bicubic ? .bicubic : .bilinear, antialias: antialias)
                }
            }
        }
        // The crop (or pad) window comes from `geometry`, the one definition masks and boxes share.
        let x0 = max(0, -left), x1 = min(ow, rw - left) // output columns that see the image

        func fill(_ resized: UnsafeBufferPointer<Float>) {
            guard let src = resized.baseAddress else { return }
            for k in 0..<3 {
                let plane = src + (c == 1 ? 0 : k) * rh * rw
                let m = mean[k], s = std[k]
                let padValue = (0 - m) / s
                for y in 0..<oh {
                    let row = dst + (k * oh + y) * ow
                    let sy = y + top
                    guard sy >= 0, sy < rh, x0 < x1 else {
                        for x in 0..<ow { row[x] = padValue }
                        continue
                    }
                    for x in 0..<x0 { row[x] = padValue }
                    for x in x1..<max(x1, ow) { row[x] = padValue }
                    let srow = plane + sy * rw + left
                    var x = x0
                    let mv = SIMD8<Float>(repeating: m), sv = SIMD8<Float>(repeating: s)
                    while x + 8 <= x1 {
                        let v = UnsafeRawPointer(srow + x).loadUnaligned(as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(row + x).storeBytes(of: (v - mv) / sv, as: SIMD8<Float>.self)
                        x += 8
                    }
                    while x < x1 { row[x] = (srow[x] - m) / s; x += 1 }
                }
            }
        }
        if needsResize { resizedStorage.withUnsafeBufferPointer(fill) } else { image.pixels.withUnsafeBufferPointer(fill) }
    }

    /// Preprocess images that share one output size into a (B, 3, oh, ow) buffer.
    /// - Throws: the first image's error, naming its index as the field; or when sizes differ.
    public func applyBatch(_ images: [XRImage], into out: UnsafeMutableBufferPointer<Float>) throws {
        guard let first = images.first else { return }
        let (oh, ow) = outputSize(height: first.height, width: first.width)
        let per = 3 * oh * ow
        precondition(out.count == images.count * per, "applyBatch needs \(images.count * per) floats, got \(out.count)")
        guard let base = out.baseAddress else { return }
        for (b, img) in images.enumerated() {
            let size = outputSize(height: img.height, width: img.width)
            guard size == (oh, ow) else {
                throw XRError("image \(b) preprocesses to \(size.0)×\(size.1), the batch to \(oh)×\(ow)", field: "image \(b)")
            }
            try apply(img, into: UnsafeMutableBufferPointer(start: base + b * per, count: per))
        }
    }
}

extension Preprocessing {
    /// Decode an X-ray file (PNG or DICOM, by content) within `maxPixels` and preprocess it:
    /// (3, oh, ow). Errors name the file.
    public func apply(contentsOf url: URL) throws -> [Float] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw XRError("cannot read file: \(error.localizedDescription)", file: url.path)
        }
        let image = try ImageDecoder.decode(data, source: url.path, maxPixels: maxPixels)
        do { return try apply(image) } catch let e as XRError where e.file == nil {
            throw XRError(e.message, file: url.path, field: e.field, hint: e.hint)
        }
    }
}
