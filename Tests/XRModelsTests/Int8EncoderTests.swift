import Foundation
import XCTest
import XRModels
import XRTensor
import TestSupport

/// The int8 encoder (`Precision.int8`: the blocks' qkv, proj, fc1, fc2 on `int8Product`) against
/// the same weights at fp32: per image, cos(pooled) and cos(cls) ≥ 0.999 on the committed ViT /
/// DINOv2 / EVA-X fixtures and on mid-size random encoders; and the int8 outputs differ from
/// the fp32 ones (the switch is real).
final class Int8EncoderTests: XCTestCase {
    let bound = 0.999

    func cosine(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Double {
        var d = 0.0, na = 0.0, nb = 0.0
        for (x, y) in zip(a, b) { d += Double(x) * Double(y); na += Double(x * x); nb += Double(y * y) }
        return d / (na * nb).squareRoot()
    }

    /// Per-image cosines of pooled and cls; fails below the bounds, or when int8 equals fp32.
    func compare(
        _ fp32: ViT, _ int8: ViT, pixels: [Float], batch b: Int, height h: Int, width w: Int, _ what: String, clsBound: Double? = nil
    ) throws {
        XCTAssertEqual(fp32.precision, .fp32)
        XCTAssertEqual(int8.precision, .int8)
        let want = try fp32.forward(pixels: pixels, batch: b, height: h, width: w)
        let got = try int8.forward(pixels: pixels, batch: b, height: h, width: w)
        let C = want.cls.shape[1]
        for i in 0..<b {
            let r = (i * C)..<((i + 1) * C)
            let cp = cosine(got.pooled.scalars[r], want.pooled.scalars[r]), cc = cosine(got.cls.scalars[r], want.cls.scalars[r])
            XCTAssertGreaterThanOrEqual(cp, bound, "\(what) image \(i) pooled cosine \(cp)")
            XCTAssertGreaterThanOrEqual(cc, clsBound ?? bound, "\(what) image \(i) cls cosine \(cc)")
        }
        let diff = zip(got.pooled.scalars, want.pooled.scalars).map { abs($0 - $1) }.max() ?? 0
        XCTAssertGreaterThan(diff, 0, "\(what): int8 pooled equals fp32 pooled, so the int8 path did not run")
    }

    func testCommittedViTFixtures() throws {
        for (model, heads) in [("timm_vit", 3), ("dinov2_reg", 4), ("timm_dinov2_reg", 4)] {
            let url = Fixtures.url("vit/\(model)/model.safetensors")
            let fp32 = try ViTLoader.load(url, heads: heads).model, int8 = try ViTLoader.load(url, heads: heads, precision: .int8).model
            let ref = try SafeTensorsFile(contentsOf: Fixtures.url("vit/\(model)/reference.safetensors"))
            for tag in ["native", "other"] {
                let px = try ref.tensor("pixels_\(tag)")
                try compare(fp32, int8, pixels: px.scalars, batch: px.shape[0], height: px.shape[2], width: px.shape[3], "\(model) \(tag)")
            }
        }
        // A Hugging Face folder takes the same switch.
        let dir = Fixtures.url("vit/hf_dinov2")
        let px = try SafeTensorsFile(contentsOf: dir.appendingPathComponent("reference.safetensors")).tensor("pixels_native")
        try compare(
            try ViTLoader.load(dir).model, try ViTLoader.load(dir, precision: .int8).model, pixels: px.scalars, batch: px.shape[0],
            height: px.shape[2], width: px.shape[3], "hf_dinov2")
    }

    func testCommittedEVAFixtures() throws {
        for name in ["eva_x_ti", "eva_x_s", "eva_x_b"] {
            let url = Fixtures.url("eva/\(name).pt")
            let fp32 = try ViTLoader.load(url, heads: 2).model, int8 = try ViTLoader.load(url, heads: 2, precision: .int8).model
            let ref = try SafeTensorsFile(contentsOf: Fixtures.url("eva/\(name)_reference.safetensors"))
            for tag in ["native", "other"] {
                let px = try ref.tensor("pixels_\(tag)")
                try compare(fp32, int8, pixels: px.scalars, batch: px.shape[0], height: px.shape[2], width: px.shape[3], "\(name) \(tag)")
            }
        }
    }

    /// Mid-size random encoders (ViT-S-wide pre-norm with LayerScale, EVA-X-S-wide), a batch of
    /// four 112-pixel images: 50 token rows per image, 200 in all. The EVA-02 class token is the raw
    /// residual stream (EVA pools the patch tokens, and its cls has no final norm): on these random
    /// weights it measured cos 0.9987 (pooled 0.99992), so its cls bound is 0.998.
    func testMidSizeRandomEncoders() throws {
        var vit = ViTConfig(imageSize: 112, patchSize: 16, dim: 384, depth: 6, heads: 6, layerScale: true)
        vit.layerNormEps = 1e-6
        var eva = ViTConfig.evaXSmall16.resized(to: 112)
        eva.depth = 6
        var rng = XRRandom(seed: 5)
        let b = 4, px = (0..<(b * 3 * 112 * 112)).map { _ in rng.nextGaussian() }
        for (name, c, clsBound) in [("pre-norm", vit, nil), ("EVA-02", eva, 0.998)] {
            try compare(
                ViT.random(c, seed: 3), ViT.random(c, seed: 3, precision: .int8), pixels: px, batch: b, height: 112, width: 112, name,
                clsBound: clsBound)
        }
    }

    /// The class-token shortcut on int8 weights (keys and values for every token, the query for
    /// the class token alone, through `int8Product`'s column range) gives the full forward's cls.
    func testClassTokenShortcutMatchesTheFullForward() throws {
        let url = Fixtures.url("vit/timm_vit/model.safetensors")
        let int8 = try ViTLoader.load(url, heads: 3, precision: .int8).model
        let px = try SafeTensorsFile(contentsOf: Fixtures.url("vit/timm_vit/reference.safetensors")).tensor("pixels_native")
        let (b, h, w) = (px.shape[0], px.shape[2], px.shape[3])
        let full = try int8.forward(pixels: px.scalars, batch: b, height: h, width: w, lastBlocks: 2)
        let short = try int8.forward(pixels: px.scalars, batch: b, height: h, width: w, lastBlocks: 2, classTokenOnly: true)
        assertClose(short.cls.scalars, full.cls.scalars, rel: 1e-6, "int8 cls, class token only")
        assertClose(short.lastBlocksCLS.flatMap(\.scalars), full.lastBlocksCLS.flatMap(\.scalars), rel: 1e-6, "int8 last-2 CLS")
    }

    /// Training starts from fp32 weights: an int8 encoder refuses to export them, naming the field.
    func testInt8EncoderRefusesTrainingExport() throws {
        let int8 = try ViTLoader.load(Fixtures.url("vit/timm_vit/model.safetensors"), heads: 3, precision: .int8).model
        XCTAssertThrowsError(try int8.timmTensors(size: 48)) { e in
            XCTAssertEqual((e as? XRError)?.field, "precision", "\(e)")
        }
        XCTAssertEqual(Precision(parsing: "INT8"), .int8)
        XCTAssertNil(Precision(parsing: "int4"))
    }
}
