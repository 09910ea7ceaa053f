import XCTest
import Foundation
import XRTensor
@testable import XRRecipes
import TestSupport

/// The one cell loop: resume, atomic per-cell writes, failures, results in plan order.
final class CellRunnerTests: XCTestCase {
    struct Boom: Error {}

    func plan() -> [Cell] {
        var out: [Cell] = []
        for m in ["logistic", "lora"] { for k in [1, 4] { for s in 0..<3 { out.append(Cell(method: m, task: "effusion", shots: k, seed: s)) } } }
        return out
    }

    /// A result whose numbers depend on the cell, so a misplaced or re-computed cell shows.
    func result(_ c: Cell, status: String = "ok") -> CellResult { Self.result(c, status: status) }

    static func result(_ c: Cell, status: String = "ok") -> CellResult {
        CellResult(
            cell: c, status: status, reason: status == "ok" ? nil : "too few", metrics: ["auroc": Double(c.shots) + Double(c.seed) / 10],
            primary_ci: nil, chosen_C: nil, n_train: c.shots * 2, n_test: 7, train_ids: (0..<c.shots).map { "\(c.id)-\($0)" }, subgroups: [])
    }

    /// Every file in the cells directory (temporary files included).
    func files(_ dir: URL) throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() }

    func testResumeComputesOnlyUnfinishedCellsAndCollectsInPlanOrder() throws {
        let dir = Fixtures.tempDir("xrlab-cellrunner")
        let runner = CellRunner(cellsDirectory: dir, quiet: true)
        let all = plan()
        // An earlier run finished cells 0, 5 and 7 (written with other numbers, which must survive).
        var earlier = [Int: CellResult]()
        for i in [0, 5, 7] {
            var r = result(all[i])
            r.metrics["auroc"] = -1
            earlier[i] = r
            try AtomicFile.write(try CellRunner.encoder().encode(r), to: runner.file(all[i]))
        }
        let todo = runner.unfinished(all)
        XCTAssertEqual(todo.map(\.id), all.enumerated().filter { earlier[$0.offset] == nil }.map(\.element.id))
        XCTAssertEqual(runner.unfinished(all, limit: 2).map(\.id), Array(todo.prefix(2)).map(\.id))

        var computed: [String] = []
        var written: [String] = []
        try runner.run(
            todo,
            written: { c, r in
                XCTAssertTrue(FileManager.default.fileExists(atPath: runner.file(c).path), "written after the file is in place")
                XCTAssertEqual(r.cell, c)
                written.append(c.id)
            }
        ) { c in
            computed.append(c.id)
            return result(c, status: c.shots == 4 && c.seed == 2 ? "skipped" : "ok")
        }
        XCTAssertEqual(computed, todo.map(\.id))
        XCTAssertEqual(written, todo.map(\.id))
        XCTAssertTrue(runner.unfinished(all).isEmpty)

        let results = try runner.results(all)
        XCTAssertEqual(results.map(\.cell), all, "results in plan order, whatever order cells finished in")
        for (i, r) in results.enumerated() {
            XCTAssertEqual(r, earlier[i] ?? result(all[i], status: all[i].shots == 4 && all[i].seed == 2 ? "skipped" : "ok"), all[i].id)
        }
        XCTAssertEqual(try files(dir), all.map { $0.id + ".json" }.sorted(), "one file per cell, nothing else")

        // A second run finds nothing to do.
        try runner.run(runner.unfinished(all)) { c in
            XCTFail("recomputed \(c.id)"); return nil
        }
    }

    func testAFailingCellLeavesNoFileAndEarlierCellsStay() throws {
        let dir = Fixtures.tempDir("xrlab-cellrunner-fail")
        let runner = CellRunner(cellsDirectory: dir, quiet: true)
        let all = plan()
        var computed: [String] = []
        XCTAssertThrowsError(
            try runner.run(all) { c in
                computed.append(c.id)
                if c == all[3] { throw Boom() }
                return result(c)
            }
        ) { XCTAssertTrue($0 is Boom, "\($0)") }
        XCTAssertEqual(computed, all.prefix(4).map(\.id), "the run stops at the failing cell")
        XCTAssertEqual(try files(dir), all.prefix(3).map { $0.id + ".json" }.sorted(), "earlier cells stay; no file, temporary or final, for the failed one")
        XCTAssertEqual(try runner.results(all).map(\.cell), Array(all.prefix(3)))

        // A result that cannot be encoded (a NaN metric) fails at writing: still no file.
        var bad = result(all[3])
        bad.metrics["auroc"] = .nan
        XCTAssertThrowsError(try runner.run([all[3]]) { _ in bad })
        XCTAssertEqual(try files(dir), all.prefix(3).map { $0.id + ".json" }.sorted())

        // The rerun computes exactly the missing cells.
        computed = []
        try runner.run(runner.unfinished(all)) { c in
            computed.append(c.id); return result(c)
        }
        XCTAssertEqual(computed, all.dropFirst(3).map(\.id))
        XCTAssertEqual(try runner.results(all), all.map { result($0) })
    }

    func testParallelWorkersWriteEveryCellAndStopOnAFailure() throws {
        let all = plan()
        let dir = Fixtures.tempDir("xrlab-cellrunner-parallel")
        let runner = CellRunner(cellsDirectory: dir, quiet: true)
        try runner.run(all, workers: 3) { c in c.seed == 1 && c.shots == 1 ? nil : Self.result(c) }
        let expected = all.filter { !($0.seed == 1 && $0.shots == 1) }
        XCTAssertEqual(try runner.results(all), expected.map { result($0) }, "nil writes nothing; results in plan order")
        XCTAssertEqual(try files(dir), expected.map { $0.id + ".json" }.sorted())

        let dir2 = Fixtures.tempDir("xrlab-cellrunner-parallel-fail")
        let runner2 = CellRunner(cellsDirectory: dir2, quiet: true)
        XCTAssertThrowsError(
            try runner2.run(all, workers: 2) { c in
                if c == all[4] { throw Boom() }
                return Self.result(c)
            }
        ) { XCTAssertTrue($0 is Boom, "\($0)") }
        let left = try files(dir2)
        XCTAssertFalse(left.contains(all[4].id + ".json"))
        XCTAssertFalse(left.contains { !$0.hasSuffix(".json") || $0.hasPrefix(".") }, "no temporary files: \(left)")
        for r in try runner2.results(all) { XCTAssertEqual(r, result(r.cell)) }
    }

    func testUnreadableCellFileIsNamed() throws {
        let dir = Fixtures.tempDir("xrlab-cellrunner-bad")
        let runner = CellRunner(cellsDirectory: dir, quiet: true)
        let all = plan()
        try AtomicFile.write("{not json", to: runner.file(all[2]))
        XCTAssertThrowsError(try runner.results(all)) { e in
            XCTAssertEqual((e as? XRError)?.file, runner.file(all[2]).path, "\(e)")
        }
    }
}
