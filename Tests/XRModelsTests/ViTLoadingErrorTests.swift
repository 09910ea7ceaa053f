import Foundation
import XCTest
import XRModels
import XRTensor
import TestSupport

/// Strict loading: missing keys, unused keys, shape mismatches and config mismatches are
/// errors that name the key, both shapes and the file.
final class ViTLoadingErrorTests: XCTestCase {
    func tensors(_ model: String) throws -> [(String, Tensor)] {
        let f = try SafeTensorsFile(contentsOf: Fixtures.url("vit/\(model)/model.safetensors"))
        return try f.names.map { ($0, try f.tensor($0)) }
    }

    func write(_ t: [(String, Tensor)]) throws -> URL {
        let u = Fixtures.tempDir().appendingPathComponent("model.safetensors")
        try SafeTensors.write(t, to: u)
        return u
    }

    func expect(
        _ url: URL, field: String, contains: [String], preset: ViTConfig? = nil,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertThrowsError(try ViTLoader.load(url, preset: preset, heads: 3), file: file, line: line) { e in
            guard let x = e as? XRError else { return XCTFail("not an XRError: \(e)", file: file, line: line) }
            XCTAssertEqual(x.field, field, "\(x)", file: file, line: line)
            XCTAssertNotNil(x.file, file: file, line: line)
            for c in contains { XCTAssertTrue(x.description.contains(c), "\(x) should mention \(c)", file: file, line: line) }
        }
    }

    func testMissingKey() throws {
        let t = try tensors("timm_vit").filter { $0.0 != "blocks.1.attn.proj.bias" }
        expect(try write(t), field: "blocks.1.attn.proj.bias", contains: ["missing", "(48)"])
    }

    func testUnusedKey() throws {
        var t = try tensors("timm_vit")
        t.append(("blocks.0.attn.extra.weight", Tensor(zeros: [2, 2])))
        expect(try write(t), field: "blocks.0.attn.extra.weight", contains: ["unused", "(2, 2)"])
    }

    func testShapeMismatch() throws {
        var t = try tensors("timm_vit")
        if let i = t.firstIndex(where: { $0.0 == "blocks.2.mlp.fc2.weight" }) { t[i].1 = Tensor(zeros: [48, 100]) }
        // fc1 says M = 192, so fc2 (48, 100) is a mismatch naming both shapes.
        expect(try write(t), field: "blocks.2.mlp.fc2.weight", contains: ["(48, 192)", "(48, 100)"])
    }

    func testCheckpointDoesNotMatchPreset() throws {
        expect(Fixtures.url("vit/timm_vit/model.safetensors"), field: "dim", contains: ["48", "768"], preset: .vitBase16)
    }

    func testHuggingFaceConfigDoesNotMatchWeights() throws {
        let dir = Fixtures.tempDir()
        let src = Fixtures.url("vit/hf_dinov2")
        for f in ["model.safetensors", "preprocessor_config.json"] {
            try FileManager.default.copyItem(at: src.appendingPathComponent(f), to: dir.appendingPathComponent(f))
        }
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: src.appendingPathComponent("config.json"))) as? [String: Any] ?? [:]
        cfg["hidden_size"] = 64
        try JSONSerialization.data(withJSONObject: cfg).write(to: dir.appendingPathComponent("config.json"))
        XCTAssertThrowsError(try ViTLoader.load(dir)) { e in
            let d = "\(e)"
            XCTAssertTrue(d.contains("shape mismatch") && d.contains("64") && d.contains("48"), d)
        }
    }

    func testImageSizeNotMultipleOfPatch() throws {
        let m = try ViTLoader.load(Fixtures.url("vit/timm_vit/model.safetensors"), heads: 3).model
        XCTAssertThrowsError(try m.forward(pixels: [Float](repeating: 0, count: 3 * 50 * 48), batch: 1, height: 50, width: 48)) { e in
            XCTAssertTrue("\(e)".contains("multiple of the patch size 16"), "\(e)")
        }
    }

    func testNotAViTCheckpoint() throws {
        let u = try write([("weight", Tensor(zeros: [3]))])
        expect(u, field: "patch embedding", contains: ["not a ViT checkpoint"])
    }
}
