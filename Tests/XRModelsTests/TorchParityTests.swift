import Foundation
import XCTest
import XRModels
import XRTensor
import TestSupport

/// Encoders loaded from PyTorch checkpoints (.pt / .pth / .bin) and timm hub folders against
/// timm 1.0.31 (fixtures/make_torch_fixtures.py): `pooled` is timm's
/// `forward_head(forward_features(x), pre_logits=True)`, patch tokens are `forward_features`
/// without the prefix tokens. Relative L2 ≤ 1e-5 per tensor, at the native size and another.
final class TorchParityTests: XCTestCase {
    let tol = 1e-5

    func check(_ loaded: LoadedViT, reference: String, label: String = "", file: StaticString = #filePath, line: UInt = #line) throws {
        let ref = try SafeTensorsFile(contentsOf: Fixtures.url("torch/\(reference)"))
        for tag in ["native", "other"] {
            let px = try ref.tensor("pixels_\(tag)")
            let (b, h, w) = (px.shape[0], px.shape[2], px.shape[3])
            let out = try loaded.model.forward(pixels: px.scalars, batch: b, height: h, width: w)
            let pooled = try ref.tensor("\(tag).pooled"), tokens = try ref.tensor("\(tag).patch_tokens")
            XCTAssertEqual(out.pooled.shape, pooled.shape, file: file, line: line)
            XCTAssertEqual(out.patchTokens.shape, tokens.shape, file: file, line: line)
            assertClose(out.pooled.scalars, pooled.scalars, rel: tol, "\(label)\(reference) \(tag) pooled", file: file, line: line)
            assertClose(out.patchTokens.scalars, tokens.scalars, rel: tol, "\(label)\(reference) \(tag) patch tokens", file: file, line: line)
        }
    }

    func testViTFromEveryPtLayout() throws {
        for name in ["vit_model.pt", "vit_module_fp16.pt", "vit_views.pth"] {
            let loaded = try ViTLoader.load(Fixtures.url("torch/\(name)"), heads: 2)
            XCTAssertEqual(loaded.layout, "timm")
            try check(loaded, reference: "vit_reference.safetensors", label: name + ": ")
        }
        // The state dict named explicitly gives the same encoder.
        try check(try ViTLoader.load(Fixtures.url("torch/vit_model.pt"), heads: 2, stateDictKey: "model"), reference: "vit_reference.safetensors")
    }

    func testDinov2WithRegistersFromABin() throws {
        let loaded = try ViTLoader.load(Fixtures.url("torch/dinov2_top.bin"), heads: 2)
        XCTAssertEqual(loaded.config.numRegisters, 4)
        XCTAssertTrue(loaded.config.layerScale)
        try check(loaded, reference: "dinov2_reference.safetensors")
    }

    func testTimmHubFolders() throws {
        let vit = try ViTLoader.load(Fixtures.url("torch/hub_vit"))
        XCTAssertEqual(vit.config.heads, 2, "heads from model_args.num_heads")
        XCTAssertEqual(vit.timmConfig?.lastPathComponent, "config.json")
        XCTAssertEqual(vit.weightFiles.first?.lastPathComponent, "model.safetensors")
        try check(vit, reference: "vit_reference.safetensors")
        let dino = try ViTLoader.load(Fixtures.url("torch/hub_dinov2"))
        XCTAssertEqual(dino.weightFiles.first?.lastPathComponent, "pytorch_model.bin")
        try check(dino, reference: "dinov2_reference.safetensors")
    }

    /// A copy of the ViT hub folder with its config.json edited.
    func hubFolder(_ edit: (inout [String: Any]) -> Void) throws -> URL {
        let dir = Fixtures.tempDir("hub")
        try FileManager.default.copyItem(at: Fixtures.url("torch/hub_vit/model.safetensors"), to: dir.appendingPathComponent("model.safetensors"))
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("torch/hub_vit/config.json"))) as? [String: Any] ?? [:]
        edit(&cfg)
        try JSONSerialization.data(withJSONObject: cfg).write(to: dir.appendingPathComponent("config.json"))
        return dir
    }

    func testHubFoldersXrlabDoesNotRunAreRefusedByName() throws {
        let cases: [(String, (inout [String: Any]) -> Void, String)] = [
            ("architecture", { $0["architecture"] = "resnet50" }, "'resnet50'"),
            ("architecture", { $0["architecture"] = "eva02_base_patch16_clip_224" }, "'eva02_base_patch16_clip_224'"),
            ("global_pool", { $0["architecture"] = "eva02_tiny_patch14_224" }, "global_pool 'token' is not supported for EVA-02"),
            (
                "blocks.0.attn",
                { c in
                    c["architecture"] = "eva02_tiny_patch14_224"; c["global_pool"] = "avg"
                    var a = c["model_args"] as? [String: Any] ?? [:]; a["global_pool"] = "avg"; c["model_args"] = a
                }, "not a timm EVA-02 checkpoint"
            ),
            ("global_pool", { $0["global_pool"] = "avg" }, "global_pool 'avg'"),
            (
                "model_args.act_layer",
                { c in
                    var a = c["model_args"] as? [String: Any] ?? [:]; a["act_layer"] = "quick_gelu"; c["model_args"] = a
                }, "'act_layer'"
            )
        ]
        for (field, edit, text) in cases {
            let dir = try hubFolder(edit)
            do {
                _ = try ViTLoader.load(dir)
                XCTFail("\(field) accepted")
            } catch let e as XRError {
                XCTAssertEqual(e.field, field)
                XCTAssertTrue(e.message.contains(text), e.description)
                if field == "architecture" { XCTAssertTrue(e.hint?.contains("vit_*_dinov2") == true, e.description) }
            }
        }
        // Without model_args.num_heads the size word in the architecture name gives it (tiny: 3).
        let byName = try ViTLoader.load(try hubFolder { $0["model_args"] = nil })
        XCTAssertEqual(byName.config.heads, 3)
    }

    func testStateDictKeyIsForPyTorchFilesOnly() {
        XCTAssertThrowsError(try ViTLoader.load(Fixtures.url("torch/hub_vit/model.safetensors"), heads: 2, stateDictKey: "model")) { e in
            XCTAssertEqual((e as? XRError)?.field, "--state-dict-key")
        }
        XCTAssertThrowsError(try ViTLoader.load(Fixtures.url("torch/hub_vit"), stateDictKey: "model")) { e in
            XCTAssertEqual((e as? XRError)?.field, "--state-dict-key")
        }
        XCTAssertEqual(try ViTLoader.load(Fixtures.url("torch/hub_dinov2"), stateDictKey: ".").config.numRegisters, 4)
    }
}
