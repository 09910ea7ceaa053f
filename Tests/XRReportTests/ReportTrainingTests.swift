import XCTest
import XRText
import Foundation
import XRTensor
import XRData
import XRPipeline
import XRTrain
@testable import XRReport
import TestSupport

/// Report generation end to end on the demo's synthetic X-rays with reports written from their labels.
final class ReportTrainingTests: XCTestCase {
    func testTrainGenerateAndReload() throws {
        let dir = Fixtures.tempDir("xrlab-report")
        let demo = try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 40)
        let table = try CSVTable(contentsOf: demo.manifest)
        let p = try table.column("path"), s = try table.column("split"), l = try table.column("labels")
        var csv = "path,split,findings,impression\n"
        for r in table.rows {
            let labels = Set(r[l].split(separator: "|").map(String.init))
            let findings =
                (labels.contains("effusion") ? "Small right pleural effusion. " : "No pleural effusion. ")
                + (labels.contains("cardiomegaly") ? "The heart is enlarged." : "The heart size is normal.")
            let impression = labels.subtracting(["no_finding"]).isEmpty ? "No acute disease." : "Abnormal chest."
            csv += "demo/\(r[p]),\(r[s]),\(findings),\(impression)\n"
        }
        let manifest = dir.appendingPathComponent("paired.csv")
        try csv.write(to: manifest, atomically: true, encoding: .utf8)
        var o = ReportTrainOptions(manifest: manifest, encoder: demo.modelDir, output: dir.appendingPathComponent("model"))
        o.vocabSize = 300; o.dim = 32; o.layers = 1; o.heads = 2; o.maxTokens = 40; o.epochs = 12; o.lr = 3e-3; o.quiet = true
        o.generation.beams = 2
        o.meteorData = Fixtures.url("text/meteor").path
        let r = try ReportTraining.run(o)
        XCTAssertLessThan(r.history.last!.trainLoss, r.history.first!.trainLoss * 0.7, "the decoder learns")
        for k in ["bleu_1", "bleu_4", "meteor", "rouge_l", "cider_d", "ce_f1"] { XCTAssertNotNil(r.metrics[k], k) }
        // METEOR of the drafts, as scoring them afterwards with the whole resource set gives.
        let scorer = try Meteor.load(from: Fixtures.url("text/meteor").path)
        let expected = scorer.score(candidates: r.generated.map(PTBTokenizer.tokenize), references: r.references.map { [PTBTokenizer.tokenize($0)] }).corpus
        XCTAssertEqual(r.metrics["meteor"]!, expected, accuracy: 1e-12)
        XCTAssertGreaterThan(r.metrics["bleu_1"]!, 0.3, "templated reports are learnable")
        for f in ["model.json", "decoder.safetensors", "tokenizer.json", "generated.csv"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: o.output.appendingPathComponent(f).path), f)
        }
        // Reload and draft; a different encoder is refused.
        let m = try ReportModel.load(o.output)
        let enc = try Encoder.load(model: demo.modelDir)
        var g = GenerationOptions()
        g.beams = 1
        let drafts = try m.generate([demo.manifest.deletingLastPathComponent().appendingPathComponent(table.rows[0][p])], encoder: enc, options: g)
        XCTAssertFalse(drafts[0].isEmpty)
        let other = try DemoData.generate(in: dir.appendingPathComponent("other"), patients: 1, seed: 5)
        XCTAssertThrowsError(try m.generate([other.manifest], encoder: try Encoder.load(model: other.modelDir), options: g)) {
            XCTAssertTrue("\($0)".contains("encoder mismatch"), "\($0)")
        }
        // The visual standardisation is part of the model: a wrong shape or a missing file is named.
        let nu = o.output.appendingPathComponent("visual_norm.safetensors")
        let saved = try Data(contentsOf: nu)
        try SafeTensors.write([("mean", Tensor(shape: [1, 2], scalars: [0, 0])), ("inv_std", Tensor(shape: [1, 2], scalars: [1, 1]))], to: nu)
        XCTAssertThrowsError(try ReportModel.load(o.output)) {
            XCTAssertTrue("\($0)".contains("visual_norm.safetensors") && "\($0)".contains("mean / inv_std"), "\($0)")
        }
        try FileManager.default.removeItem(at: nu)
        XCTAssertThrowsError(try ReportModel.load(o.output)) { XCTAssertTrue("\($0)".contains("visual_norm.safetensors"), "\($0)") }
        try saved.write(to: nu)
        XCTAssertNoThrow(try ReportModel.load(o.output))
    }

    /// The demo's images with reports written from their labels (train / test from the demo split).
    func pairedDemo(_ dir: URL, patients: Int = 30) throws -> (manifest: URL, model: URL, images: [URL], testImages: [URL]) {
        let demo = try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: patients)
        let table = try CSVTable(contentsOf: demo.manifest)
        let p = try table.column("path"), s = try table.column("split"), l = try table.column("labels")
        var csv = "path,split,findings,impression\n"
        for r in table.rows {
            let labels = Set(r[l].split(separator: "|").map(String.init))
            let findings =
                (labels.contains("effusion") ? "Small right pleural effusion. " : "No pleural effusion. ")
                + (labels.contains("cardiomegaly") ? "The heart is enlarged." : "The heart size is normal.")
            csv += "demo/\(r[p]),\(r[s]),\(findings),Impression.\n"
        }
        let manifest = dir.appendingPathComponent("paired.csv")
        try csv.write(to: manifest, atomically: true, encoding: .utf8)
        let base = demo.manifest.deletingLastPathComponent()
        return (
            manifest, demo.modelDir, table.rows.map { base.appendingPathComponent($0[p]) },
            table.rows.filter { $0[s] == "test" }.map { base.appendingPathComponent($0[p]) }
        )
    }

    func smallOptions(_ d: (manifest: URL, model: URL, images: [URL], testImages: [URL]), out: URL) -> ReportTrainOptions {
        var o = ReportTrainOptions(manifest: d.manifest, encoder: d.model, output: out)
        o.vocabSize = 300; o.dim = 32; o.layers = 1; o.heads = 2; o.maxTokens = 24; o.epochs = 4; o.lr = 3e-3; o.quiet = true
        o.target = "findings"; o.generation.beams = 2; o.generation.noRepeatNGram = 3
        return o
    }

    /// LoRA on the encoder, trained through the decoder: the encoder's tuned parameters move, travel
    /// in the model folder, and drafting from the folder reproduces the drafts written in training.
    func testTunedEncoderTrainsAndReloadsToTheSameDrafts() throws {
        let dir = Fixtures.tempDir("xrlab-report-tuned")
        let d = try pairedDemo(dir)
        var o = smallOptions(d, out: dir.appendingPathComponent("lora"))
        o.encoderSpec = .lora(ReportLoRASpec(lora: LoRASettings(rank: 4, targets: ["qkv", "fc2"])))
        let r = try ReportTraining.run(o)
        XCTAssertGreaterThan(r.trainableEncoderParameters, 0)
        XCTAssertLessThan(r.history.last!.trainLoss, r.history.first!.trainLoss)
        let f = try SafeTensorsFile(contentsOf: o.output.appendingPathComponent("encoder_tuned.safetensors"))
        let loraB = try f.tensor("blocks.0.attn.qkv.lora_B.weight")
        XCTAssertGreaterThan(loraB.scalars.map(abs).max()!, 0, "LoRA B starts at zero and must have trained")
        XCTAssertFalse(FileManager.default.fileExists(atPath: o.output.appendingPathComponent("checkpoint.safetensors").path), "checkpoint removed when done")
        let m = try ReportModel.load(o.output)
        XCTAssertEqual(m.encoderSpec, o.encoderSpec)
        let drafts = try m.generate(d.testImages, encoder: try Encoder.load(model: d.model), options: o.generation)
        XCTAssertEqual(drafts, r.generated)
        // A tuned model missing its encoder parameters is refused, naming the file.
        try FileManager.default.removeItem(at: o.output.appendingPathComponent("encoder_tuned.safetensors"))
        XCTAssertThrowsError(try ReportModel.load(o.output)) { XCTAssertTrue("\($0)".contains("encoder_tuned.safetensors"), "\($0)") }
    }

    /// A run stopped after two epochs resumes from its checkpoint to the same weights as an
    /// uninterrupted run; a checkpoint of another configuration is refused, naming what changed.
    func testInterruptedRunResumesToTheSameModel() throws {
        let dir = Fixtures.tempDir("xrlab-report-resume")
        let d = try pairedDemo(dir, patients: 20)
        var o = smallOptions(d, out: dir.appendingPathComponent("whole"))
        o.encoderSpec = .lastK(ReportLastKSpec(blocks: 1))
        let whole = try ReportTraining.run(o)
        var p = o
        p.output = dir.appendingPathComponent("parts")
        p.stopAfter = 2
        let first = try ReportTraining.run(p)
        XCTAssertFalse(first.complete)
        XCTAssertEqual(first.history.count, 2)
        XCTAssertTrue(FileManager.default.fileExists(atPath: p.output.appendingPathComponent("checkpoint.safetensors").path))
        var changed = p
        changed.lr = 1e-3
        XCTAssertThrowsError(try ReportTraining.run(changed)) { XCTAssertTrue("\($0)".contains("training: epochs 4, batch 8, lr 0.003"), "\($0)") }
        p.stopAfter = nil
        let rest = try ReportTraining.run(p)
        XCTAssertEqual(rest.history, whole.history)
        XCTAssertEqual(rest.generated, whole.generated)
        for file in ["decoder.safetensors", "encoder_tuned.safetensors"] {
            XCTAssertEqual(try Data(contentsOf: p.output.appendingPathComponent(file)), try Data(contentsOf: o.output.appendingPathComponent(file)), file)
        }
    }

    /// The visual-prefix decoder trains end to end with a tuned encoder (the gradient reaches the
    /// encoder through the prefix), records its variant in model.json, drafts the same after
    /// reloading, and a checkpoint of the cross-attention variant is refused.
    func testVisualPrefixTrainsAndReloads() throws {
        let dir = Fixtures.tempDir("xrlab-report-prefix")
        let d = try pairedDemo(dir, patients: 20)
        var o = smallOptions(d, out: dir.appendingPathComponent("prefix"))
        o.visualPrefix = true
        o.encoderSpec = .lora(ReportLoRASpec(lora: LoRASettings(rank: 4, targets: ["qkv"])))
        o.stopAfter = 1
        _ = try ReportTraining.run(o)
        var cross = o
        cross.visualPrefix = false
        XCTAssertThrowsError(try ReportTraining.run(cross)) { XCTAssertTrue("\($0)".contains("visual prefix"), "\($0)") }
        o.stopAfter = nil
        let r = try ReportTraining.run(o)
        XCTAssertLessThan(r.history.last!.trainLoss, r.history.first!.trainLoss)
        let f = try SafeTensorsFile(contentsOf: o.output.appendingPathComponent("encoder_tuned.safetensors"))
        XCTAssertGreaterThan(try f.tensor("blocks.0.attn.qkv.lora_B.weight").scalars.map(abs).max()!, 0, "the encoder trains through the prefix")
        let w = try SafeTensorsFile(contentsOf: o.output.appendingPathComponent("decoder.safetensors"))
        XCTAssertFalse(w.names.contains { $0.contains("crossattention") || $0.contains("ln_cross_attn") })
        let info = try JSONSerialization.jsonObject(with: Data(contentsOf: o.output.appendingPathComponent("model.json"))) as! [String: Any]
        XCTAssertEqual(info["visual_input"] as? String, "prefix")
        let S = info["visual_tokens"] as! Int
        XCTAssertEqual((info["decoder"] as! [String: Int])["positions"], 24 + S, "positions hold the prefix and the text")
        let m = try ReportModel.load(o.output)
        XCTAssertTrue(m.decoder.config.visualPrefix)
        XCTAssertEqual(try m.generate(d.testImages, encoder: try Encoder.load(model: d.model), options: o.generation), r.generated)
        // model.json naming another variant, or none known, is refused.
        let infoURL = o.output.appendingPathComponent("model.json")
        let saved = try Data(contentsOf: infoURL)
        for (value, expected) in [("cross_attention", "missing tensor"), ("side", "visual_input must be cross_attention or prefix")] {
            var edited = info
            edited["visual_input"] = value
            try JSONSerialization.data(withJSONObject: edited).write(to: infoURL)
            XCTAssertThrowsError(try ReportModel.load(o.output)) { XCTAssertTrue("\($0)".contains(expected), "\($0)") }
        }
        try saved.write(to: infoURL)
        XCTAssertNoThrow(try ReportModel.load(o.output))
    }

    /// Starting from a GPT-2-layout checkpoint: its tensors replace the random ones (a longer
    /// position table gives its first rows), layers it lacks stay random, and a tensor of the
    /// wrong shape is named.
    func testInitialisationFromAGPT2Checkpoint() throws {
        let file = Fixtures.url("report/prefix_decoder.safetensors")
        let f = try SafeTensorsFile(contentsOf: file)
        let wpe = try f.tensor("transformer.wpe.weight"), wte = try f.tensor("transformer.wte.weight")
        XCTAssertEqual(wpe.shape, [64, 32])
        for prefix in [true, false] {
            let c = DecoderConfig(vocab: 50, positions: 40, dim: 32, layers: 2, heads: 4, visualDim: 24, visualPrefix: prefix)
            let t = try ReportTraining.initialTensors(c, seed: 1, from: file)
            XCTAssertEqual(t["transformer.wpe.weight"]?.shape, [40, 32])
            XCTAssertEqual(t["transformer.wpe.weight"]?.scalars, Array(wpe.scalars.prefix(40 * 32)))
            XCTAssertEqual(t["transformer.wte.weight"]?.scalars, wte.scalars)
            XCTAssertEqual(t["transformer.h.1.mlp.c_fc.weight"]?.scalars, try f.tensor("transformer.h.1.mlp.c_fc.weight").scalars)
            XCTAssertEqual(
                t["transformer.h.0.crossattention.q_attn.weight"] != nil, !prefix, "cross-attention only without a prefix (random: the checkpoint has none)")
            XCTAssertNoThrow(try ReportDecoder(config: c, tensors: t, source: "init"))
        }
        let narrow = DecoderConfig(vocab: 50, positions: 40, dim: 16, layers: 2, heads: 4, visualDim: 24)
        XCTAssertThrowsError(try ReportTraining.initialTensors(narrow, seed: 1, from: file)) {
            XCTAssertTrue("\($0)".contains("prefix_decoder.safetensors") && "\($0)".contains("the decoder config needs"), "\($0)")
        }
    }

    func testMissingReportIsAnError() throws {
        let dir = Fixtures.tempDir("xrlab-report")
        let m = dir.appendingPathComponent("m.csv")
        try "path,split,findings,impression\na.png,train,Clear.,Normal.\nb.png,test,,\n".write(to: m, atomically: true, encoding: .utf8)
        let o = ReportTrainOptions(manifest: m, encoder: dir, output: dir.appendingPathComponent("out"))
        XCTAssertThrowsError(try ReportTraining.run(o)) { XCTAssertTrue("\($0)".contains("row 3") && "\($0)".contains("without a report"), "\($0)") }
    }

    /// METEOR's resources are read before training: a bad path is an error naming it, and nothing is written.
    func testMissingMeteorDataStopsBeforeTraining() throws {
        let dir = Fixtures.tempDir("xrlab-report")
        let m = dir.appendingPathComponent("m.csv")
        try "path,split,findings,impression\na.png,train,Clear.,Normal.\nb.png,test,Clear.,Normal.\n".write(to: m, atomically: true, encoding: .utf8)
        var o = ReportTrainOptions(manifest: m, encoder: dir, output: dir.appendingPathComponent("out"))
        let nowhere = dir.appendingPathComponent("no-meteor").path
        o.meteorData = nowhere
        XCTAssertThrowsError(try ReportTraining.run(o)) { e in
            XCTAssertEqual((e as? XRError)?.file, nowhere, "\(e)")
            XCTAssertTrue("\(e)".contains("METEOR data not found"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: o.output.path), "nothing written")
    }
}
