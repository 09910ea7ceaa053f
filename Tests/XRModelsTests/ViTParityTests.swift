import Foundation
import XCTest
import XRModels
import XRTensor
import TestSupport

/// Golden parity with PyTorch (timm 1.0.31, transformers 5.23.0) on small random-initialised
/// encoders from fixtures/make_vit_fixtures.py. Tolerance: relative L2 error ≤ 1e-5 per tensor.
final class ViTParityTests: XCTestCase {
    let tol = 1e-5

    func check(_ model: String, tags: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = Fixtures.url("vit/\(model)")
        let isFolder = FileManager.default.fileExists(atPath: dir.appendingPathComponent("config.json").path)
        let loaded = try ViTLoader.load(isFolder ? dir : dir.appendingPathComponent("model.safetensors"), heads: isFolder ? nil : (model == "timm_vit" ? 3 : 4))
        let ref = try SafeTensorsFile(contentsOf: dir.appendingPathComponent("reference.safetensors"))
        for tag in tags {
            let px = try ref.tensor("pixels_\(tag)")
            let (b, h, w) = (px.shape[0], px.shape[2], px.shape[3])
            let out = try loaded.model.forward(pixels: px.scalars, batch: b, height: h, width: w, lastBlocks: 2)
            assertClose(out.cls.scalars, try ref.tensor("\(tag).cls").scalars, rel: tol, "\(model) \(tag) cls", file: file, line: line)
            let tokens = try ref.tensor("\(tag).patch_tokens")
            XCTAssertEqual(out.patchTokens.shape, tokens.shape, "\(model) \(tag) patch token shape", file: file, line: line)
            assertClose(out.patchTokens.scalars, tokens.scalars, rel: tol, "\(model) \(tag) patch tokens", file: file, line: line)
            assertClose(out.patchMean.scalars, try ref.tensor("\(tag).patch_mean").scalars, rel: tol, "\(model) \(tag) patch mean", file: file, line: line)
            let last = try ref.tensor("\(tag).last2_cls")
            assertClose(out.lastBlocksCLS.flatMap(\.scalars), last.scalars, rel: tol, "\(model) \(tag) last-2 CLS", file: file, line: line)
        }
    }

    func testTimmViT() throws { try check("timm_vit", tags: ["native", "other"]) }

    func testTimmDinov2WithRegisters() throws {
        try check("timm_dinov2_reg", tags: ["native", "other"])
        let c = try ViTLoader.load(Fixtures.url("vit/timm_dinov2_reg/model.safetensors"), heads: 4).config
        XCTAssertEqual(c.numRegisters, 4)
        XCTAssertEqual(c.posEmbedPrefix, 0, "timm DINOv2 with registers has no position embedding for prefix tokens")
    }

    func testOriginalDinov2LayoutWithRegisters() throws {
        try check("dinov2_reg", tags: ["native", "other", "nonsquare"])
        let l = try ViTLoader.load(Fixtures.url("vit/dinov2_reg/model.safetensors"), heads: 4)
        XCTAssertEqual(l.layout, "dinov2")
    }

    func testHuggingFaceDinov2Folder() throws {
        try check("hf_dinov2", tags: ["native", "other"])
        let l = try ViTLoader.load(Fixtures.url("vit/hf_dinov2"))
        XCTAssertEqual(l.layout, "huggingFace")
        XCTAssertNotNil(l.preprocessorConfig)
        XCTAssertEqual(l.config.heads, 4)
    }

    func testHuggingFaceDinov2WithRegisters() throws { try check("hf_dinov2_reg", tags: ["native", "other"]) }

    func testHeadsInferredAndNoted() throws {
        let l = try ViTLoader.load(Fixtures.url("vit/timm_vit/model.safetensors"))
        XCTAssertEqual(l.config.heads, 1, "48-d model: dim/64 rounds to 1 head")
        XCTAssertTrue(l.notes.contains { $0.contains("dim/64") })
    }

    func testConfigsRoundTripThroughJSON() throws {
        for (_, p) in ViTConfig.presets {
            let d = try JSONEncoder().encode(p)
            XCTAssertEqual(try JSONDecoder().decode(ViTConfig.self, from: d), p)
        }
    }
}
