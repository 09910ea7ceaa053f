import XCTest
import XRTensor
@testable import XRTrain
import TestSupport

/// PEFT adapter folders: one saved by PEFT loads here and predicts as PEFT did; one written
/// here has PEFT's names, shapes and config, and the same values after the same training.
final class PEFTTests: XCTestCase {
    let parity = TrainFixture()

    func testPEFTAdapterLoadsAndPredictsAsPEFT() throws {
        let m = try parity.model(), d = try parity.data(), ref = try parity.load("lora")
        let adapter = try PEFTAdapter.load(Fixtures.url("train/peft_adapter"))
        XCTAssertEqual(adapter.rank, 8)
        XCTAssertEqual(adapter.alpha, 16)
        XCTAssertEqual(adapter.targets, ["qkv"])
        try m.apply(adapter, source: "peft_adapter")
        let logits = try m.forward(pixels: d.pixels, batch: 8)
        assertClose(logits, ref["final_logits"]!.scalars, rel: 1e-5, "logits of the PEFT-trained adapter")
    }

    func testExportedAdapterHasPEFTLayoutAndValues() throws {
        let m = try parity.model(), ref = try parity.load("lora")
        var initA: [String: Tensor] = [:]
        for (k, v) in ref where k.hasPrefix("init.") { initA[String(k.dropFirst(5))] = v }
        try m.setTrainable(.lora(rank: 8, alpha: 16, targets: ["qkv"]), loraInit: initA)
        try parity.trajectory(m, ref, "LoRA for export")
        let dir = Fixtures.tempDir("xrlab-peft")
        try PEFTAdapter.export(m, to: dir, baseSHA256: "abc")
        let ours = try SafeTensorsFile(contentsOf: dir.appendingPathComponent("adapter_model.safetensors"))
        let theirs = try SafeTensorsFile(contentsOf: Fixtures.url("train/peft_adapter/adapter_model.safetensors"))
        XCTAssertEqual(ours.names.sorted(), theirs.names.sorted())
        for n in theirs.names {
            XCTAssertEqual(ours.info(n)?.shape, theirs.info(n)?.shape, n)
            XCTAssertEqual(ours.info(n)?.dtype, theirs.info(n)?.dtype, n)
            let (rel, _, _) = relativeL2(try ours.tensor(n).scalars, try theirs.tensor(n).scalars)
            XCTAssertLessThan(rel, 1e-3, n)
        }
        XCTAssertEqual(ours.metadata["xrlab_base_sha256"], "abc")
        let cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("adapter_config.json"))) as! [String: Any]
        let peft = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("train/peft_adapter/adapter_config.json"))) as! [String: Any]
        for k in ["peft_type", "r", "lora_alpha", "target_modules", "modules_to_save", "bias", "fan_in_fan_out", "use_dora", "use_rslora"] {
            XCTAssertEqual("\(cfg[k]!)", "\(peft[k]!)", k)
        }
        // And it loads back.
        let back = try parity.model()
        try back.apply(try PEFTAdapter.load(dir), source: dir.path)
        let d = try parity.data()
        assertClose(try back.forward(pixels: d.pixels, batch: 8), try m.forward(pixels: d.pixels, batch: 8), rel: 1e-6, "round trip")
    }

    func testAdapterForADifferentBaseModelIsRefused() throws {
        let adapter = try PEFTAdapter.load(Fixtures.url("train/peft_adapter"))
        let wider = try TrainableViT.random(TrainConfig(dim: 64, depth: 3, heads: 4, patch: 8, imageSize: 32, mlpHidden: 256, classes: 3, layerScale: false))
        XCTAssertThrowsError(try wider.apply(adapter, source: "peft_adapter")) { e in
            XCTAssertTrue("\(e)".contains("different base model") && "\(e)".contains("lora_A.weight"), "\(e)")
        }
        let shallower = try TrainableViT.random(
            TrainConfig(dim: 48, depth: 2, heads: 3, patch: 8, imageSize: 32, mlpHidden: 192, classes: 3, layerScale: false))
        XCTAssertThrowsError(try shallower.apply(adapter, source: "peft_adapter")) { e in
            XCTAssertTrue("\(e)".contains("different base model") && "\(e)".contains("blocks.2.attn.qkv"), "\(e)")
        }
        let dir = Fixtures.tempDir("xrlab-peft")
        try "{\"peft_type\": \"IA3\", \"r\": 8}".write(to: dir.appendingPathComponent("adapter_config.json"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try PEFTAdapter.load(dir)) { XCTAssertTrue("\($0)".contains("peft_type"), "\($0)") }
    }
}
