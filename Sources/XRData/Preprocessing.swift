import Foundation
import XRTensor
import XRKernels

/// How an X-ray becomes model input, following the model's own preprocessing config.
///
/// Pipeline (float throughout, so 16-bit values keep full precision):
/// 1. decode to [0, 1] by the full range of the bit depth (this is what a Hugging Face
///    `rescale_factor` of 1/255 means for 8-bit input);
/// 2. resize — shortest edge to `shortestEdge` (long edge `int(s · long / short)`, Hugging Face's
///    rule) or to an exact `height × width` — with `torch.nn.functional.interpolate(mode, align_corners=False,
///    antialias=true)` semantics;
/// 3. center crop as Hugging Face does it (`top = (h - ch) // 2`), zero-padding when the
///    image is smaller than the crop;
/// 4. gray replicated to 3 channels; 5. `(x - mean) / std` per channel.
///
/// Hugging Face's own processors resize 8-bit images in PIL with integer rounding; xrlab
/// resizes in float, so 8-bit results can differ from theirs by up to about 1/255 per pixel.
public struct Preprocessing: Codable, Equatable, Sendable, CustomStringConvertible {
    public enum Interpolation: String, Codable, Sendable { case bicubic, bilinear }

    /// Resize so the shorter side has this length (nil: see `resizeHeight`/`resizeWidth`).
    public var shortestEdge: Int?
    /// Exact resize (used when `shortestEdge` is nil and both are set).
    public var resizeHeight: Int?
    public var resizeWidth: Int?
    public var interpolation: Interpolation = .bicubic
    public var antialias: Bool = true
    public var cropHeight: Int?
    public var cropWidth: Int?
    public var mean: [Float]
    public var std: [Float]

    public init(shortestEdge: Int?, crop: Int?, interpolation: Interpolation = .bicubic,
                mean: [Float], std: [Float], antialias: Bool = true) {
        self.shortestEdge = shortestEdge
        self.cropHeight = crop
        self.cropWidth = crop
        self.interpolation = interpolation
        self.mean = mean
        self.std = std
        self.antialias = antialias
    }

    /// ImageNet statistics, shortest edge `size` then a `size` crop (timm / DINOv2 default).
    public static func imagenet(size: Int = 224) -> Preprocessing {
        Preprocessing(shortestEdge: size, crop: size, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])
    }

    /// RAD-DINO (microsoft/rad-dino): shortest edge 518, crop 518, bicubic, its own statistics.
    public static let radDino = Preprocessing(shortestEdge: 518, crop: 518, mean: [0.5307, 0.5307, 0.5307],
                                              std: [0.2583, 0.2583, 0.2583])

    public var description: String {
        var parts: [String] = []
        if let s = shortestEdge { parts.append("resize shortest edge to \(s) (\(interpolation.rawValue)\(antialias ? ", antialiased" : ""))") }
        else if let h = resizeHeight, let w = resizeWidth { parts.append("resize to \(h)×\(w) (\(interpolation.rawValue))") }
        if let h = cropHeight, let w = cropWidth { parts.append("center crop \(h)×\(w)") }
        parts.append("scale to [0, 1] by bit depth")
        parts.append("normalise mean \(mean) std \(std)")
        return parts.joined(separator: ", ")
    }

    /// Output (height, width) for an input image of the given size.
    public func outputSize(height h: Int, width w: Int) -> (Int, Int) {
        let (rh, rw) = resizedSize(height: h, width: w)
        return (cropHeight ?? rh, cropWidth ?? rw)
    }

    /// The size after the resize step.
    public func resizedSize(height h: Int, width w: Int) -> (Int, Int) {
        if let s = shortestEdge {
            if w <= h { return (Int(Double(s * h) / Double(w)), s) }
            return (s, Int(Double(s * w) / Double(h)))
        }
        if let rh = resizeHeight, let rw = resizeWidth { return (rh, rw) }
        return (h, w)
    }

    /// Check values once, with the field at fault named.
    public func validate(source: String? = nil) throws {
        guard mean.count == 3, std.count == 3 else {
            throw XRError("mean and std need 3 values each (got \(mean.count) and \(std.count))", file: source, field: "image_mean/image_std")
        }
        guard std.allSatisfy({ $0 > 0 && $0.isFinite }), mean.allSatisfy(\.isFinite) else {
            throw XRError("std must be positive and mean finite", file: source, field: "image_std")
        }
        for (name, v) in [("shortest_edge", shortestEdge), ("resize height", resizeHeight), ("resize width", resizeWidth),
                          ("crop height", cropHeight), ("crop width", cropWidth)] {
            if let v, v <= 0 || v > 16384 { throw XRError("size \(v) out of range 1…16384", file: source, field: name) }
        }
    }

    /// (3, H, W) model input for one image.
    public func apply(_ image: XRImage) throws -> [Float] {
        try validate()
        let (rh, rw) = resizedSize(height: image.height, width: image.width)
        guard rh > 0, rw > 0 else {
            throw XRError("image \(image.width)×\(image.height) resizes to an empty \(rw)×\(rh) image", field: "size")
        }
        let c = image.channels
        var resized = [Float](repeating: 0, count: c * rh * rw)
        if rh == image.height && rw == image.width && shortestEdge == nil {
            resized = image.pixels
        } else {
            resized.withUnsafeMutableBufferPointer { o in image.pixels.withUnsafeBufferPointer { i in
                resample(o.baseAddress!, i.baseAddress!, channels: c, inH: image.height, inW: image.width,
                         outH: rh, outW: rw, filter: interpolation == .bicubic ? .bicubic : .bilinear, antialias: antialias)
            } }
        }
        let oh = cropHeight ?? rh, ow = cropWidth ?? rw
        // Hugging Face center_crop: offsets (h - ch) // 2 (floor), zero padding split ceil on top/left.
        let padTop = oh > rh ? Int((Double(oh - rh) / 2).rounded(.up)) : 0
        let padLeft = ow > rw ? Int((Double(ow - rw) / 2).rounded(.up)) : 0
        let top = Int((Double(rh - oh) / 2).rounded(.down)) + padTop
        let left = Int((Double(rw - ow) / 2).rounded(.down)) + padLeft
        var out = [Float](repeating: 0, count: 3 * oh * ow)
        for k in 0..<3 {
            let src = c == 1 ? 0 : k
            let m = mean[k], inv = 1 / std[k]
            for y in 0..<oh {
                let sy = y + top - padTop
                for x in 0..<ow {
                    let sx = x + left - padLeft
                    let v: Float = (sy >= 0 && sy < rh && sx >= 0 && sx < rw) ? resized[(src * rh + sy) * rw + sx] : 0
                    out[(k * oh + y) * ow + x] = (v - m) * inv
                }
            }
        }
        return out
    }

    /// Read a Hugging Face `preprocessor_config.json`.
    public static func fromHuggingFace(_ url: URL) throws -> Preprocessing {
        guard let data = try? Data(contentsOf: url) else { throw XRError("cannot read preprocessing config", file: url.path) }
        guard let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw XRError("preprocessing config is not a JSON object", file: url.path)
        }
        func bool(_ k: String, _ d: Bool) -> Bool { (o[k] as? Bool) ?? d }
        func floats(_ k: String) throws -> [Float] {
            if let a = o[k] as? [NSNumber] { return a.map { $0.floatValue } }
            if let n = o[k] as? NSNumber { return [n.floatValue, n.floatValue, n.floatValue] }
            throw XRError("missing or malformed field", file: url.path, field: k)
        }
        func size(_ k: String) throws -> (short: Int?, h: Int?, w: Int?) {
            if let n = o[k] as? NSNumber { return (nil, n.intValue, n.intValue) }
            guard let d = o[k] as? [String: Any] else { throw XRError("missing or malformed field", file: url.path, field: k) }
            if let s = d["shortest_edge"] as? NSNumber { return (s.intValue, nil, nil) }
            if let h = d["height"] as? NSNumber, let w = d["width"] as? NSNumber { return (nil, h.intValue, w.intValue) }
            throw XRError("expected shortest_edge or height and width", file: url.path, field: k)
        }
        var p = Preprocessing(shortestEdge: nil, crop: nil, mean: [0, 0, 0], std: [1, 1, 1])
        if bool("do_resize", true) {
            let s = try size("size")
            p.shortestEdge = s.short; p.resizeHeight = s.h; p.resizeWidth = s.w
            switch (o["resample"] as? NSNumber)?.intValue ?? 3 {
            case 2: p.interpolation = .bilinear
            case 3: p.interpolation = .bicubic
            case let r: throw XRError("resampling filter \(r) is not supported (2 = bilinear, 3 = bicubic)", file: url.path, field: "resample")
            }
        }
        if bool("do_center_crop", false) {
            let c = try size("crop_size")
            guard let h = c.h, let w = c.w else { throw XRError("crop_size needs height and width", file: url.path, field: "crop_size") }
            p.cropHeight = h; p.cropWidth = w
        }
        if bool("do_rescale", true) {
            let f = (o["rescale_factor"] as? NSNumber)?.doubleValue ?? 1.0 / 255
            guard abs(f - 1.0 / 255) < 1e-9 else {
                throw XRError("rescale_factor \(f) is not 1/255; xrlab maps pixels to [0, 1] by their bit depth", file: url.path, field: "rescale_factor",
                              hint: "give the preprocessing explicitly (--size, --mean, --std) if this model expects another range")
            }
        } else {
            throw XRError("do_rescale is false: the model expects raw 0-255 values, which xrlab does not produce", file: url.path, field: "do_rescale")
        }
        if bool("do_normalize", true) {
            p.mean = try floats("image_mean"); p.std = try floats("image_std")
        }
        try p.validate(source: url.path)
        return p
    }
}
