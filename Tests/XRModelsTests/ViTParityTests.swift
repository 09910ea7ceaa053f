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
            // Class-token outputs only: the last block runs past its keys and values on the class
            // token alone; the same numbers, and no patch outputs.
            let short = try loaded.model.forward(pixels: px.scalars, batch: b, height: h, width: w, lastBlocks: 2, classTokenOnly: true)
            assertClose(short.cls.scalars, try ref.tensor("\(tag).cls").scalars, rel: tol, "\(model) \(tag) cls, class token only", file: file, line: line)
            assertClose(short.lastBlocksCLS.flatMap(\.scalars), last.scalars, rel: tol, "\(model) \(tag) last-2 CLS, class token only", file: file, line: line)
            XCTAssertEqual(short.patchMean.shape, [b, 0], file: file, line: line)
            XCTAssertEqual(short.patchTokens.shape, [b, 0, out.cls.shape[1]], file: file, line: line)
        }
    }

    func testTimmViT() throws { try check("timm_vit", tags: ["native", "other"]) }

    /// A batch large enough that the linear layers split rows across the cores (more than 256
    /// token rows) instead of output features: the same numbers as the reference, image by image.
    func testRowSplitBatchMatchesTheReference() throws {
        let dir = Fixtures.url("vit/timm_vit")
        let loaded = try ViTLoader.load(dir.appendingPathComponent("model.safetensors"), heads: 3)
        let ref = try SafeTensorsFile(contentsOf: dir.appendingPathComponent("reference.safetensors"))
        let px = try ref.tensor("pixels_native")
        let (b, h, w) = (px.shape[0], px.shape[2], px.shape[3])
        let small = try loaded.model.forward(pixels: px.scalars, batch: b, height: h, width: w, lastBlocks: 2)
        let tokens = small.patchTokens.shape[1] + 1
        let copies = 256 / (b * tokens) + 1
        XCTAssertGreaterThan(copies * b * tokens, 256)
        let big = try loaded.model.forward(
            pixels: Array([[Float]](repeating: px.scalars, count: copies).joined()), batch: b * copies,
            height: h, width: w, lastBlocks: 2)
        let cls = try ref.tensor("native.cls").scalars, patches = try ref.tensor("native.patch_tokens").scalars
        assertClose(big.cls.scalars, Array([[Float]](repeating: cls, count: copies).joined()), rel: tol, "CLS over \(copies * b * tokens) rows")
        assertClose(
            big.patchTokens.scalars, Array([[Float]](repeating: patches, count: copies).joined()), rel: tol, "patch tokens over \(copies * b * tokens) rows")
        let bigShort = try loaded.model.forward(
            pixels: Array([[Float]](repeating: px.scalars, count: copies).joined()), batch: b * copies,
            height: h, width: w, classTokenOnly: true)
        assertClose(
            bigShort.cls.scalars, Array([[Float]](repeating: cls, count: copies).joined()), rel: tol, "CLS over \(copies * b * tokens) rows, class token only")
    }

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
