import Foundation
import XRTensor

extension Preprocessing {
    /// Class defaults of the Hugging Face image processors xrlab knows (transformers 5.x), used for
    /// keys a `preprocessor_config.json` leaves out. Other processor types must state every key.
    struct HFDefaults {
        var resample: Int
        var size: [String: Int]
        var doCenterCrop: Bool
        /// How a bare-number `size` reads: a square (ViT) or a shortest edge (Bit, CLIP).
        var defaultToSquare: Bool
        var cropSize: [String: Int]?
        var mean: [Float]
        var std: [Float]

        static let openAIMean: [Float] = [0.48145466, 0.4578275, 0.40821073]
        static let openAIStd: [Float] = [0.26862954, 0.26130258, 0.27577711]
        static let known: [String: HFDefaults] = [
            "BitImageProcessor": HFDefaults(
                resample: 3, size: ["shortest_edge": 224], doCenterCrop: true, defaultToSquare: false,
                cropSize: ["height": 224, "width": 224], mean: openAIMean, std: openAIStd),
            "CLIPImageProcessor": HFDefaults(
                resample: 3, size: ["shortest_edge": 224], doCenterCrop: true, defaultToSquare: false,
                cropSize: ["height": 224, "width": 224], mean: openAIMean, std: openAIStd),
            "ViTImageProcessor": HFDefaults(
                resample: 2, size: ["height": 224, "width": 224], doCenterCrop: false, defaultToSquare: true,
                cropSize: nil, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5])
        ]
    }

    /// Read a Hugging Face `preprocessor_config.json`.
    ///
    /// Keys: `do_resize`, `size` (`{shortest_edge}` or `{height, width}`), `resample` (PIL codes:
    /// 2 bilinear, 3 bicubic), `do_center_crop`, `crop_size`, `do_rescale` + `rescale_factor` (must be
    /// 1/255, which xrlab reads as "the full range of the bit depth"), `do_normalize`, `image_mean`,
    /// `image_std`. Keys left out take the class default for `BitImageProcessor` (DINOv2,
    /// RAD-DINO), `CLIPImageProcessor` and `ViTImageProcessor` (also their `…Fast` names); for other
    /// processor types a missing essential key is an error naming it.
    public static func fromHuggingFace(_ url: URL) throws -> Preprocessing {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw XRError("cannot read preprocessing config: \(error.localizedDescription)", file: url.path)
        }
        guard let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw XRError("preprocessing config is not a JSON object", file: url.path)
        }
        return try fromHuggingFace(o, source: url.path)
    }

    /// Parse an already-decoded `preprocessor_config.json` object (see `fromHuggingFace(_ url:)`).
    public static func fromHuggingFace(_ o: [String: Any], source: String) throws -> Preprocessing {
        // Older configs name a feature extractor (ViTFeatureExtractor) instead of a processor.
        var type =
            (o["image_processor_type"] as? String)
            ?? ((o["feature_extractor_type"] as? String)?.replacingOccurrences(of: "FeatureExtractor", with: "ImageProcessor")) ?? ""
        if type.hasSuffix("Fast") { type.removeLast(4) }
        let defaults = HFDefaults.known[type]
        let typeNote = type.isEmpty ? "no image_processor_type" : "image_processor_type \(type) has no known defaults"

        func missing(_ k: String) -> XRError {
            XRError("missing field (\(typeNote))", file: source, field: k)
        }
        // JSON booleans arrive as NSNumber with objCType "c"; numbers never do.
        func isBoolean(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }
        func bool(_ k: String, _ d: Bool?) throws -> Bool {
            if let v = o[k] {
                guard let n = v as? NSNumber, isBoolean(n) else { throw XRError("expected true or false, got \(v)", file: source, field: k) }
                return n.boolValue
            }
            if let d { return d }
            throw missing(k)
        }
        func number(_ v: Any) -> NSNumber? {
            guard let n = v as? NSNumber, !isBoolean(n) else { return nil }
            return n
        }
        func int(_ v: Any, _ k: String) throws -> Int {
            guard let n = number(v), n.doubleValue == n.doubleValue.rounded(), n.doubleValue > 0, n.doubleValue <= 16384 else {
                throw XRError("expected a positive whole number of pixels, got \(v)", file: source, field: k)
            }
            return n.intValue
        }
        func floats(_ k: String, _ d: [Float]?) throws -> [Float] {
            guard let v = o[k] else { if let d { return d }; throw missing(k) }
            if let n = number(v) { return [Float](repeating: n.floatValue, count: 3) }
            if let a = v as? [Any], a.count == 3 {
                let ns = a.compactMap(number)
                if ns.count == 3 { return ns.map(\.floatValue) }
            }
            throw XRError("expected 3 numbers (or one for all channels), got \(v)", file: source, field: k)
        }
        /// (shortest edge, height, width)
        func size(_ k: String, _ d: [String: Int]?) throws -> (Int?, Int?, Int?) {
            guard let v = o[k] ?? d else { throw missing(k) }
            if number(v) != nil {
                // A bare number is a square crop; as `size` it is a square for ViT-style processors
                // and a shortest edge for Bit/CLIP ones (Hugging Face's default_to_square).
                let n = try int(v, k)
                if k == "crop_size" { return (nil, n, n) }
                if let d = defaults { return d.defaultToSquare ? (nil, n, n) : (n, nil, nil) }
                throw XRError(
                    "a bare number is ambiguous for \(type.isEmpty ? "an unnamed processor" : type) (square or shortest edge)",
                    file: source, field: k,
                    hint: "write {\"shortest_edge\": \(n)} or {\"height\": \(n), \"width\": \(n)}")
            }
            guard let dict = v as? [String: Any] else { throw XRError("expected an object, got \(v)", file: source, field: k) }
            if dict["longest_edge"] != nil || dict["max_height"] != nil || dict["max_width"] != nil {
                throw XRError("longest_edge / max_height / max_width resizing is not supported", file: source, field: k)
            }
            if let s = dict["shortest_edge"] { return (try int(s, "\(k).shortest_edge"), nil, nil) }
            if let h = dict["height"], let w = dict["width"] {
                return (nil, try int(h, "\(k).height"), try int(w, "\(k).width"))
            }
            throw XRError("expected shortest_edge, or height and width", file: source, field: k)
        }

        var p = Preprocessing(shortestEdge: nil, crop: nil, mean: [0, 0, 0], std: [1, 1, 1])
        if try bool("do_resize", true) {
            let (s, h, w) = try size("size", defaults?.size)
            p.shortestEdge = s; p.resizeHeight = h; p.resizeWidth = w
            let r: Int
            if let v = o["resample"] {
                guard let n = number(v) else { throw XRError("expected a PIL resampling code, got \(v)", file: source, field: "resample") }
                r = n.intValue
            } else if let d = defaults?.resample {
                r = d
            } else {
                throw missing("resample")
            }
            switch r {
            case 2: p.interpolation = .bilinear
            case 3: p.interpolation = .bicubic
            default: throw XRError("resampling filter \(r) is not supported (2 = bilinear, 3 = bicubic)", file: source, field: "resample")
            }
        }
        if try bool("do_center_crop", defaults?.doCenterCrop ?? false) {
            let (_, h, w) = try size("crop_size", defaults?.cropSize)
            guard let h, let w else { throw XRError("crop_size needs height and width", file: source, field: "crop_size") }
            p.cropHeight = h; p.cropWidth = w
        }
        guard try bool("do_rescale", true) else {
            throw XRError(
                "do_rescale is false: the model expects raw 0-255 values, which xrlab does not produce",
                file: source, field: "do_rescale")
        }
        if let v = o["rescale_factor"] {
            guard let f = number(v)?.doubleValue, abs(f - 1.0 / 255) < 1e-9 else {
                throw XRError(
                    "rescale_factor \(v) is not 1/255; xrlab maps pixels to [0, 1] by their bit depth",
                    file: source, field: "rescale_factor",
                    hint: "give the preprocessing explicitly (--size, --mean, --std) if this model expects another range")
            }
        }
        if try bool("do_normalize", true) {
            p.mean = try floats("image_mean", defaults?.mean)
            p.std = try floats("image_std", defaults?.std)
        }
        try p.validate(source: source)
        return p
    }
}
