import XCTest
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
            let findings = (labels.contains("effusion") ? "Small right pleural effusion. " : "No pleural effusion. ")
                + (labels.contains("cardiomegaly") ? "The heart is enlarged." : "The heart size is normal.")
            let impression = labels.subtracting(["no_finding"]).isEmpty ? "No acute disease." : "Abnormal chest."
            csv += "demo/\(r[p]),\(r[s]),\(findings),\(impression)\n"
        }
        let manifest = dir.appendingPathComponent("paired.csv")
        try csv.write(to: manifest, atomically: true, encoding: .utf8)
        var o = ReportTrainOptions(manifest: manifest, encoder: demo.modelDir, output: dir.appendingPathComponent("model"))
        o.vocabSize = 300; o.dim = 32; o.layers = 1; o.heads = 2; o.maxTokens = 40; o.epochs = 12; o.lr = 3e-3; o.quiet = true
        o.generation.beams = 2
        let r = try ReportTraining.run(o)
        XCTAssertLessThan(r.history.last!.trainLoss, r.history.first!.trainLoss * 0.7, "the decoder learns")
        for k in ["bleu_1", "bleu_4", "rouge_l", "cider_d", "ce_f1"] { XCTAssertNotNil(r.metrics[k], k) }
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
    }

    func testMissingReportIsAnError() throws {
        let dir = Fixtures.tempDir("xrlab-report")
        let m = dir.appendingPathComponent("m.csv")
        try "path,split,findings,impression\na.png,train,Clear.,Normal.\nb.png,test,,\n".write(to: m, atomically: true, encoding: .utf8)
        let o = ReportTrainOptions(manifest: m, encoder: dir, output: dir.appendingPathComponent("out"))
        XCTAssertThrowsError(try ReportTraining.run(o)) { XCTAssertTrue("\($0)".contains("row 3") && "\($0)".contains("without a report"), "\($0)") }
    }
}
