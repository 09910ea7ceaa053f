import Foundation
import XRTensor

extension Preprocessing {
    /// The eval transform timm builds from a hub `config.json`'s `pretrained_cfg`
    /// (`resolve_data_config` + `transforms_imagenet_eval`, timm 1.0): resize the shorter side to
    /// `floor(input_size / crop_pct)` (antialiased, `interpolation`), center crop `input_size`
    /// with torchvision's rounding, normalise by `mean` / `std`. Defaults as timm's: `input_size` (3, 224, 224), `crop_pct` 0.875, `interpolation` bicubic, ImageNet `mean` / `std`,
    /// `crop_mode` center. Square input sizes and `center` crops only; other
    /// modes and interpolations are refused by name rather than approximated.
    public static func fromTimm(_ url: URL) throws -> Preprocessing {
        guard let data = try? Data(contentsOf: url),
            let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        else {
            throw XRError("config.json is not a JSON object", file: url.path)
        }
        guard let cfg = o["pretrained_cfg"] as? [String: Any] else {
            throw XRError(
                "timm config has no pretrained_cfg, so its preprocessing is unknown", file: url.path, field: "pretrained_cfg",
                hint: "pass --size, --mean and --std (and --crop, --interpolation)")
        }
        let f = "pretrained_cfg."
        guard let size = cfg["input_size"] == nil ? [3, 224, 224] : cfg["input_size"] as? [NSNumber], size.count == 3, size[0].intValue == 3 else {
            throw XRError("expected [3, height, width]", file: url.path, field: f + "input_size")
        }
        let h = size[1].intValue, w = size[2].intValue
        guard h == w, h > 0 else {
            throw XRError(
                "non-square input size \(h)×\(w) is not supported (timm resizes those with ResizeKeepRatio)",
                file: url.path, field: f + "input_size")
        }
        let cropPct = (cfg["crop_pct"] as? NSNumber)?.doubleValue ?? 0.875
        guard cropPct > 0, cropPct <= 1 else { throw XRError("crop_pct \(cropPct) is outside (0, 1]", file: url.path, field: f + "crop_pct") }
        if let mode = cfg["crop_mode"], !(mode is NSNull) {
            guard (mode as? String) == "center" else {
                throw XRError("crop_mode '\(mode)' is not supported (only 'center')", file: url.path, field: f + "crop_mode")
            }
        }
        let interp = (cfg["interpolation"] as? String).flatMap { $0.isEmpty ? nil : $0 } ?? "bicubic"
        guard let interpolation = Interpolation(rawValue: interp) else {
            throw XRError("interpolation '\(interp)' is not supported (bicubic or bilinear)", file: url.path, field: f + "interpolation")
        }
        func triple(_ k: String, _ d: [Float]) throws -> [Float] {
            if cfg[k] == nil { return d }
            guard let v = cfg[k] as? [NSNumber], v.count == 3 else { throw XRError("expected 3 numbers", file: url.path, field: f + k) }
            return v.map(\.floatValue)
        }
        let scale = Int((Double(h) / cropPct).rounded(.down))
        var p = Preprocessing(
            shortestEdge: scale, crop: h, interpolation: interpolation, mean: try triple("mean", [0.485, 0.456, 0.406]),
            std: try triple("std", [0.229, 0.224, 0.225]))
        p.cropRounding = .halfEven
        try p.validate(source: url.path)
        return p
    }
}
