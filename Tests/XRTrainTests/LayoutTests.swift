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
        let t = try loaded.model.timmTensors(size: S)
        let c = try TrainableViT.config(of: t, heads: loaded.config.heads, classes: 2, source: "demo")
        XCTAssertTrue(c.layerScale)
        let m = try TrainableViT(config: c, tensors: t, source: "demo")
        var rng = XRRandom(seed: 4)
        let px = (0..<(2 * 3 * S * S)).map { _ in rng.nextGaussian() }
        _ = try m.forward(pixels: px, batch: 2)
        let ref = try loaded.model.forward(pixels: px, batch: 2, height: S, width: S)
        assertClose(m.lastPooled, ref.cls.scalars, rel: 1e-5, "CLS features, training model vs encoder")
        // Other sizes: position embeddings resized with the layout's own rule.
        let t2 = try loaded.model.timmTensors(size: S / 2)
        let m2 = try TrainableViT(config: try TrainableViT.config(of: t2, heads: loaded.config.heads, classes: 2, source: "demo"), tensors: t2, source: "demo")
        let px2 = (0..<(3 * S * S / 4)).map { _ in rng.nextGaussian() }
        _ = try m2.forward(pixels: px2, batch: 1)
        assertClose(m2.lastPooled, try loaded.model.forward(pixels: px2, batch: 1, height: S / 2, width: S / 2).cls.scalars, rel: 1e-5, "CLS at half size")
    }
}
