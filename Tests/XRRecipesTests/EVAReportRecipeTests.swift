import XCTest
import Foundation
import XRPipeline
import XRTensor
@testable import XRRecipes
import TestSupport

/// Report generation with an EVA-X encoder (`fixtures/eva/eva_x_ti.pt`, as EVA-X saves it): frozen
/// (patch tokens computed once), tuned with LoRA on qkv and the SwiGLU projections and with its
/// last block (the decoder's visual-token gradient flowing back through the EVA-02 blocks).
final class EVAReportRecipeTests: XCTestCase {
    func testReportCellsRunWithAnEVAXEncoder() throws {
        let dir = Fixtures.tempDir("xrlab-eva-report")
        try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 30)
        let url = dir.appendingPathComponent("r.yaml")
        try """
        version: 1
        name: eva-reports
        model: {path: \(Fixtures.url("eva/eva_x_ti.pt").path), heads: 2}
        data:
          manifest: demo/reports.csv
          task: report
          split_column: split
        report: {target: findings, vocab_size: 300, dim: 16, layers: 1, heads: 2, max_tokens: 24, epochs: 2, batch_size: 8, beams: 1, max_new_tokens: 12}
        methods:
          - {name: frozen}
          - {name: lora, rank: 2, targets: [qkv, fc1, fc2]}
          - {name: last_k, blocks: 1}
        shots: [6]
        seeds: 1
        bootstrap: 20
        output: run
        """.write(to: url, atomically: true, encoding: .utf8)
        var o = RunOptions()
        o.quiet = true
        let s = try Runner.run(try RecipeLoader.load(url), options: o)
        XCTAssertTrue(s.complete)
        let lines = try String(contentsOf: s.directory.appendingPathComponent("results.jsonl"), encoding: .utf8).split(separator: "\n")
        let results = try lines.map { try JSONDecoder().decode(CellResult.self, from: Data($0.utf8)) }
        XCTAssertEqual(Set(results.map(\.cell.method)), ["frozen", "lora", "last_k"])
        for res in results {
            XCTAssertEqual(res.status, "ok", "\(res.cell.id): \(res.reason ?? "")")
            let t = try XCTUnwrap(res.training, res.cell.id)
            XCTAssertEqual(t.trainable_parameters > 0, res.cell.method != "frozen", res.cell.id)
            XCTAssertTrue(t.train_loss.allSatisfy(\.isFinite), res.cell.id)
            XCTAssertNotNil(res.metrics["cider_d"], res.cell.id)
        }
    }
}
