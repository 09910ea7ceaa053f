import Foundation
import XCTest
import XRData
import XRTensor
import TestSupport

/// timm `pretrained_cfg` → preprocessing, and torchvision's centre-crop rounding. End-to-end
/// parity with timm's eval transform is in EmbedParityTests (timm hub folders).
final class TimmPreprocessingTests: XCTestCase {
    func config(_ cfg: [String: Any]) throws -> URL {
        let u = Fixtures.tempDir("timm-cfg").appendingPathComponent("config.json")
        try JSONSerialization.data(withJSONObject: ["architecture": "vit_base_patch16_224", "pretrained_cfg": cfg]).write(to: u)
        return u
    }

    func testPretrainedCfgGivesTimmsEvalTransform() throws {
        let p = try Preprocessing.fromTimm(
            try config([
                "input_size": [3, 224, 224], "crop_pct": 0.9, "interpolation": "bicubic",
                "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "crop_mode": "center"
            ]))
        XCTAssertEqual(p.shortestEdge, 248, "floor(224 / 0.9)")
        XCTAssertEqual(p.cropHeight, 224)
        XCTAssertEqual(p.cropRounding, .halfEven)
        XCTAssertEqual(p.interpolation, .bicubic)
        XCTAssertTrue(p.antialias)
        // timm's defaults for what a config leaves out.
        let d = try Preprocessing.fromTimm(try config([:]))
        XCTAssertEqual(d.shortestEdge, 256)
        XCTAssertEqual(d.cropHeight, 224)
        XCTAssertEqual(d.interpolation, .bicubic)
        XCTAssertEqual(d.mean, [0.485, 0.456, 0.406])
    }

    func testWhatCannotBeDoneExactlyIsRefusedByName() throws {
        let cases: [([String: Any], String)] = [
            (["crop_mode": "squash"], "pretrained_cfg.crop_mode"),
            (["interpolation": "bilinear_pil"], "pretrained_cfg.interpolation"),
            (["input_size": [3, 224, 256]], "pretrained_cfg.input_size"),
            (["crop_pct": 1.2], "pretrained_cfg.crop_pct"),
            (["mean": [0.5]], "pretrained_cfg.mean")
        ]
        for (cfg, field) in cases {
            XCTAssertThrowsError(try Preprocessing.fromTimm(try config(cfg))) { e in XCTAssertEqual((e as? XRError)?.field, field) }
        }
    }

    /// torchvision CenterCrop: top = int(round((h - ch) / 2)), halves to even; Hugging Face floors.
    func testCropRoundingFollowsTorchvision() throws {
        // A 1×7 ramp cropped to 4 columns: margin 3, so torchvision starts at round(1.5) = 2, Hugging Face at 1.
        let img = XRImage(width: 7, height: 1, channels: 1, bitDepth: 8, pixels: (0..<7).map(Float.init))
        var p = Preprocessing(height: 1, width: 7, cropHeight: 1, cropWidth: 4, mean: [0, 0, 0], std: [1, 1, 1])
        XCTAssertEqual(Array(try p.apply(img).prefix(4)), [1, 2, 3, 4])
        p.cropRounding = .halfEven
        XCTAssertEqual(Array(try p.apply(img).prefix(4)), [2, 3, 4, 5])
        // Margin 5: round(2.5) = 2, the same as the floor.
        let wide = XRImage(width: 9, height: 1, channels: 1, bitDepth: 8, pixels: (0..<9).map(Float.init))
        p.resizeWidth = 9
        XCTAssertEqual(Array(try p.apply(wide).prefix(4)), [2, 3, 4, 5])
        // Stored only when not the default, so existing preprocessing JSON (and cache keys) is unchanged.
        XCTAssertTrue(String(decoding: try JSONEncoder().encode(p), as: UTF8.self).contains("halfEven"))
        XCTAssertFalse(String(decoding: try JSONEncoder().encode(Preprocessing.radDino), as: UTF8.self).contains("cropRounding"))
        XCTAssertEqual(try JSONDecoder().decode(Preprocessing.self, from: JSONEncoder().encode(p)), p)
    }
}
