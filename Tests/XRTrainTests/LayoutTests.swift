import XCTest
import XRTensor
import XRModels
import XRPipeline
@testable import XRTrain
import TestSupport

/// The training model built from any checkpoint layout computes what the encoder computes.
final class LayoutTests: XCTestCase {
    func testHuggingFaceDinov2WithLayerScaleMatchesTheEncoder() throws {
        let dir = Fixtures.tempDir("xrlab-layout")
        let demo = try DemoData.generate(in: dir, patients: 1)
        let loaded = try ViTLoader.load(demo.modelDir)
        let S = loaded.config.imageSize
        let m = try TrainableViT(from: loaded, size: S, classes: 2)
        XCTAssertTrue(m.config.layerScale)
        XCTAssertEqual(m.config.encoder, loaded.config, "the trainable encoder's configuration is the loaded one")
        var rng = XRRandom(seed: 4)
        let px = (0..<(2 * 3 * S * S)).map { _ in rng.nextGaussian() }
        _ = try m.forward(pixels: px, batch: 2)
        let ref = try loaded.model.forward(pixels: px, batch: 2, height: S, width: S)
        assertClose(m.lastPooled, ref.cls.scalars, rel: 1e-5, "CLS features, training model vs encoder")
        // Other sizes: position embeddings resized with the layout's own rule.
        let m2 = try TrainableViT(from: loaded, size: S / 2, classes: 2)
        let px2 = (0..<(3 * S * S / 4)).map { _ in rng.nextGaussian() }
        _ = try m2.forward(pixels: px2, batch: 1)
        assertClose(m2.lastPooled, try loaded.model.forward(pixels: px2, batch: 1, height: S / 2, width: S / 2).cls.scalars, rel: 1e-5, "CLS at half size")
    }

    /// Encoders with register tokens — timm (no position embedding on the prefix tokens),
    /// facebookresearch/dinov2 and Hugging Face (on the class token) — as trainable models give
    /// the reference framework's class token, patch tokens and patch mean: every block frozen
    /// (the encoder's own block forward), every block trainable, and the two mixed.
    func testEncodersWithRegistersMatchTheReference() throws {
        for (model, heads) in [("timm_dinov2_reg", 4), ("dinov2_reg", 4), ("hf_dinov2_reg", nil)] as [(String, Int?)] {
            let dir = Fixtures.url("vit/\(model)")
            let loaded = try ViTLoader.load(heads == nil ? dir : dir.appendingPathComponent("model.safetensors"), heads: heads)
            XCTAssertEqual(loaded.config.numRegisters, 4, model)
            let ref = try SafeTensorsFile(contentsOf: dir.appendingPathComponent("reference.safetensors"))
            for tag in ["native", "other"] {
                let px = try ref.tensor("pixels_\(tag)")
                let (B, S) = (px.shape[0], px.shape[2])
                guard px.shape[3] == S else { continue } // training takes square inputs
                for set in [nil, TrainableSet.full, .lastBlocks(1)] {
                    let what = "\(model) \(tag) \(set.map { "\($0)" } ?? "frozen")"
                    let m = try TrainableViT(from: loaded, size: S, classes: 2)
                    if let set { try m.setTrainable(set) }
                    _ = try m.forward(pixels: px.scalars, batch: B)
                    assertClose(m.lastPooled, try ref.tensor("\(tag).cls").scalars, rel: 1e-5, "\(what): class token")
                    let tokens = try m.forwardPatchTokens(pixels: px.scalars, batch: B)
                    assertClose(tokens, try ref.tensor("\(tag).patch_tokens").scalars, rel: 1e-5, "\(what): patch tokens")
                }
                let mean = try TrainableViT(
                    config: TrainConfig(encoder: loaded.config.resized(to: S), classes: 2, pooling: "mean"),
                    tensors: try loaded.model.timmTensors(size: S), source: model)
                _ = try mean.forward(pixels: px.scalars, batch: B)
                assertClose(mean.lastPooled, try ref.tensor("\(tag).patch_mean").scalars, rel: 1e-5, "\(model) \(tag): patch mean")
            }
        }
    }
}
