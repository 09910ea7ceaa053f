import Foundation
import XCTest
import XRModels
import XRTensor
import XRTorch
import TestSupport

/// EVA-02 / EVA-X encoders against timm 1.0.31's `Eva` configured as hustvl/EVA-X's eva_x.py
/// configures it (fixtures/make_eva_fixtures.py): `pooled` is timm's
/// `forward_head(forward_features(x), pre_logits=True)` (fc_norm of the patch-token mean), patch
/// tokens, class token and patch mean are `forward_features` (no final norm). Relative L2 ≤ 1e-5
/// per tensor at the native size and a non-native one (position embeddings resampled, RoPE grid
/// rescaled to the reference grid), from every loading path.
final class EVAParityTests: XCTestCase {
    let tol = 1e-5

    func check(_ loaded: LoadedViT, reference: String, label: String = "", file: StaticString = #filePath, line: UInt = #line) throws {
        let ref = try SafeTensorsFile(contentsOf: Fixtures.url("eva/\(reference)_reference.safetensors"))
        for tag in ["native", "other"] {
            let px = try ref.tensor("pixels_\(tag)")
            let (b, h, w) = (px.shape[0], px.shape[2], px.shape[3])
            // The class-token shortcut does not apply to an encoder that pools the patch tokens.
            for classTokenOnly in [false, true] {
                let out = try loaded.model.forward(pixels: px.scalars, batch: b, height: h, width: w, classTokenOnly: classTokenOnly)
                let what = "\(label)\(reference) \(tag)\(classTokenOnly ? " (class-token-only)" : "")"
                for (name, got) in [("pooled", out.pooled), ("patch_tokens", out.patchTokens), ("cls", out.cls), ("patch_mean", out.patchMean)] {
                    let want = try ref.tensor("\(tag).\(name)")
                    XCTAssertEqual(got.shape, want.shape, "\(what) \(name)", file: file, line: line)
                    assertClose(got.scalars, want.scalars, rel: tol, "\(what) \(name)", file: file, line: line)
                }
            }
        }
    }

    func testEVAXCheckpointsAsEVAXSavesThem() throws {
        for (name, fused) in [("eva_x_ti", true), ("eva_x_s", true), ("eva_x_b", false)] {
            let loaded = try ViTLoader.load(Fixtures.url("eva/\(name).pt"), heads: 2)
            XCTAssertEqual(loaded.layout, "eva")
            XCTAssertEqual(loaded.config.blockKind, .eva02)
            XCTAssertEqual(loaded.config.eva?.qkvFused, fused, name)
            XCTAssertEqual(loaded.config.eva?.mlpPacked, fused, name)
            XCTAssertEqual(loaded.config.eva?.mlpNorm, !fused, name)
            XCTAssertEqual(loaded.config.eva?.ropeReferenceGrid, 28, "224 / patch 8")
            XCTAssertTrue(loaded.notes.contains { $0.contains("RoPE reference grid 28×28") }, "\(loaded.notes)")
            try check(loaded, reference: name, label: "\(name).pt: ")
        }
        // The state dict named explicitly gives the same encoder.
        try check(try ViTLoader.load(Fixtures.url("eva/eva_x_ti.pt"), heads: 2, stateDictKey: "module"), reference: "eva_x_ti")
    }

    func testTimmNamedCheckpoints() throws {
        for (file, reference) in [("eva_x_ti_timm", "eva_x_ti"), ("eva_x_b_timm", "eva_x_b"), ("eva02_inner_norm", "eva02_inner_norm")] {
            let loaded = try ViTLoader.load(Fixtures.url("eva/\(file).safetensors"), heads: 2)
            XCTAssertEqual(loaded.layout, "timm")
            XCTAssertEqual(loaded.config.blockKind, .eva02)
            try check(loaded, reference: reference, label: "\(file): ")
        }
        let inner = try ViTLoader.load(Fixtures.url("eva/eva02_inner_norm.safetensors"), heads: 2)
        XCTAssertEqual(inner.config.eva?.attentionNorm, true)
        XCTAssertEqual(inner.config.eva?.mlpNorm, true)
        XCTAssertEqual(inner.config.eva?.mlpPacked, false)
    }

    func testTimmHubFolder() throws {
        let hub = try ViTLoader.load(Fixtures.url("eva/hub_eva_s"))
        XCTAssertEqual(hub.config.heads, 2, "heads from model_args.num_heads")
        XCTAssertEqual(hub.config.eva?.ropeReferenceGrid, 28, "model_args.ref_feat_shape")
        XCTAssertEqual(hub.timmConfig?.lastPathComponent, "config.json")
        XCTAssertTrue(hub.notes.contains("timm architecture eva02_small_patch14_224"), "\(hub.notes)")
        try check(hub, reference: "eva_x_s")
    }

    func testPresetsAndTheirShapes() throws {
        XCTAssertEqual(ViTConfig.evaXTiny16.mlpHidden, 512)
        XCTAssertEqual(ViTConfig.evaXSmall16.mlpHidden, 1024)
        XCTAssertEqual(ViTConfig.evaXBase16.mlpHidden, 2048)
        XCTAssertEqual(ViTConfig.evaXBase16.eva?.qkvFused, false)
        XCTAssertEqual(ViTConfig.preset(named: "evaXSmall16"), .evaXSmall16)
        // A random encoder of a preset runs (what `xrlab bench encoder --preset evaXSmall16` times).
        var c = ViTConfig.evaXBase16
        c.depth = 1
        let out = try ViT.random(c).forward(pixels: [Float](repeating: 0.1, count: 3 * 32 * 48), batch: 1, height: 32, width: 48)
        XCTAssertEqual(out.patchTokens.shape, [1, 6, 768])
        XCTAssertTrue(out.pooled.scalars.allSatisfy(\.isFinite))
        // A checkpoint that is not the preset's size is refused by the field that differs.
        XCTAssertThrowsError(try ViTLoader.load(Fixtures.url("eva/eva_x_ti.pt"), preset: .evaXTiny16, heads: 2)) { e in
            XCTAssertEqual((e as? XRError)?.field, "dim")
        }
        // A pre-norm ViT checkpoint with an EVA preset is refused by its block kind.
        var vitLike = ViTConfig.evaXTiny16
        vitLike.dim = 24; vitLike.depth = 2; vitLike.imageSize = 32; vitLike.patchSize = 16; vitLike.mlpHidden = 48
        XCTAssertThrowsError(try ViTLoader.load(Fixtures.url("torch/vit_model.pt"), preset: vitLike)) { e in
            XCTAssertEqual((e as? XRError)?.field, "block kind (0 pre-norm ViT, 1 EVA-02)")
        }
    }

    func testConfigRoundTripsAndOldConfigsReadUnchanged() throws {
        let c = try ViTLoader.load(Fixtures.url("eva/eva_x_b.pt"), heads: 2).config
        XCTAssertEqual(try JSONDecoder().decode(ViTConfig.self, from: JSONEncoder().encode(c)), c)
        let plain = String(decoding: try JSONEncoder().encode(ViTConfig.vitTiny16), as: UTF8.self)
        XCTAssertFalse(plain.contains("eva"), plain)
    }

    /// The weights exported for training are the checkpoint's, under timm's names, in the
    /// layout the config names (q / v biases split back out of the fused bias, q / k / v and the
    /// SwiGLU halves split out of the packed products).
    func testEVAEncodersExportTheirWeightsForTraining() throws {
        for (pt, timm) in [("eva_x_ti.pt", "eva_x_ti_timm.safetensors"), ("eva_x_b.pt", "eva_x_b_timm.safetensors")] {
            let loaded = try ViTLoader.load(Fixtures.url("eva/\(pt)"), heads: 2)
            let exported = try loaded.model.timmTensors(size: 32)
            let ref = try SafeTensorsFile(contentsOf: Fixtures.url("eva/\(timm)"))
            XCTAssertEqual(Set(exported.keys), Set(ref.names.filter { !$0.contains("rope") }), pt)
            for (k, t) in exported { XCTAssertEqual(t.scalars, try ref.tensor(k).scalars, "\(pt) \(k)") }
        }
    }
}

/// Strict loading of EVA-02 checkpoints: a missing key, an unused key and a wrong shape are
/// refused with the key named, in timm's names and in EVA's original ones.
final class EVALoadingErrorTests: XCTestCase {
    func tensors(_ url: URL) throws -> [(String, Tensor)] {
        let f = try ViTLoader.open(url)
        return try f.names.map { ($0, try f.tensor($0)) }
    }

    func write(_ t: [(String, Tensor)]) throws -> URL {
        let u = Fixtures.tempDir().appendingPathComponent("model.safetensors")
        try SafeTensors.write(t, to: u)
        return u
    }

    func expect(_ t: [(String, Tensor)], field: String, contains: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertThrowsError(try ViTLoader.load(try write(t), heads: 2), file: file, line: line) { e in
            guard let x = e as? XRError else { return XCTFail("not an XRError: \(e)", file: file, line: line) }
            XCTAssertEqual(x.field, field, "\(x)", file: file, line: line)
            XCTAssertNotNil(x.file, file: file, line: line)
            for c in contains { XCTAssertTrue(x.description.contains(c), "\(x) should mention \(c)", file: file, line: line) }
        }
    }

    func testTimmNames() throws {
        let t = try tensors(Fixtures.url("eva/eva_x_ti_timm.safetensors"))
        try expect(t.filter { $0.0 != "blocks.1.mlp.fc2.bias" }, field: "blocks.1.mlp.fc2.bias", contains: ["missing", "(32)"])
        try expect(t + [("blocks.0.attn.extra.weight", Tensor(zeros: [2, 2]))], field: "blocks.0.attn.extra.weight", contains: ["unused", "(2, 2)"])
        try expect(
            t.map { $0.0 == "blocks.0.attn.proj.weight" ? ($0.0, Tensor(zeros: [32, 30])) : $0 }, field: "blocks.0.attn.proj.weight",
            contains: ["(32, 32)", "(32, 30)"])
        try expect(t.filter { $0.0 != EVAKeys.fcNormWeight }, field: EVAKeys.fcNormWeight, contains: ["missing"])
    }

    func testEVAOriginalNames() throws {
        // The EVA-X file's tensors (fp16 → f32) under their original names, written as safetensors.
        let t = try tensors(Fixtures.url("eva/eva_x_b.pt"))
        XCTAssertTrue(t.contains { $0.0 == "blocks.0.mlp.ffn_ln.weight" } && t.contains { $0.0 == "lm_head.weight" })
        XCTAssertEqual(try ViTLoader.load(try write(t), heads: 2).layout, "eva", "the MIM extras and rope buffers are ignored by design")
        try expect(t.filter { $0.0 != "blocks.1.mlp.w3.bias" }, field: "blocks.1.mlp.w3.bias", contains: ["missing", "(32)"])
        try expect(t.filter { $0.0 != "norm.weight" }, field: "norm.weight", contains: ["missing"])
        try expect(t + [("decoder.weight", Tensor(zeros: [3]))], field: "decoder.weight", contains: ["unused", "(3)"])
        try expect(
            t.map { $0.0 == "blocks.0.attn.q_bias" ? ($0.0, Tensor(zeros: [31])) : $0 }, field: "blocks.0.attn.q_bias", contains: ["(32)", "(31)"])
    }
}
