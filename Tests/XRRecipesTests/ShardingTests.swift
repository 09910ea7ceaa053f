import XCTest
import Foundation
import XRTensor
@testable import XRRecipes
import TestSupport

/// How a plan is split into shards.
final class ShardingTests: XCTestCase {
    func cells() -> [Cell] {
        var out: [Cell] = []
        for m in ["logistic", "knn-k20", "lora", "last_k"] {
            for k in [1, 4, 16] {
                for s in 0..<5 {
                    out.append(Cell(method: m, task: "effusion", shots: k, seed: s))
                }
            }
        }
        return out
    }

    func cost(_ c: Cell) -> Double { (c.method == "lora" || c.method == "last_k" ? 100 : 0.01) * Double(c.shots) }

    func testEveryCellInExactlyOneShardWhateverTheInputOrder() {
        let all = cells()
        for n in [1, 2, 3, 4, 7, 64] {
            let parts = CellWork.partition(all, count: n, cost: cost)
            XCTAssertEqual(parts.count, n)
            XCTAssertEqual(parts.flatMap { $0 }.map(\.id).sorted(), all.map(\.id).sorted(), "n=\(n)")
            // Each shard keeps the plan's order.
            for p in parts { XCTAssertEqual(p.map(\.id), all.filter { c in p.contains(c) }.map(\.id)) }
            var rng = XRRandom(seed: UInt64(n))
            var shuffled = all
            rng.shuffle(&shuffled)
            let again = CellWork.partition(shuffled, count: n, cost: cost)
            XCTAssertEqual(again.map { Set($0.map(\.id)) }, parts.map { Set($0.map(\.id)) }, "the same cell lands in the same shard (n=\(n))")
        }
    }

    func testShardsAreBalancedAndTuningCellsSpreadOut() {
        let all = cells()
        let parts = CellWork.partition(all, count: 4, cost: cost)
        let loads = parts.map { $0.map(cost).reduce(0, +) }
        let biggest = all.map(cost).max() ?? 0
        XCTAssertLessThanOrEqual((loads.max() ?? 0) - (loads.min() ?? 0), biggest, "loads \(loads)")
        // A plan-order split (first quarter, second quarter, …) would put all 15 lora cells in one or two shards.
        for p in parts { XCTAssertTrue(p.contains { $0.method == "lora" } && p.contains { $0.method == "last_k" }, "\(p.map(\.id))") }
    }

    func testShardParsing() throws {
        XCTAssertEqual(try Shard(parsing: "2/4"), try Shard(index: 2, count: 4))
        XCTAssertEqual(try Shard(parsing: " 1 / 1 ").description, "1/1")
        for bad in ["0/4", "5/4", "1/0", "x", "1/2/3", "-1/2", ""] {
            XCTAssertThrowsError(try Shard(parsing: bad), bad) { e in XCTAssertEqual((e as? XRError)?.field, "--shard", bad) }
        }
    }

    func testArrayRanges() {
        XCTAssertEqual(Slurm.ranges([1, 2, 3, 5, 7, 8]), "1-3,5,7-8")
        XCTAssertEqual(Slurm.ranges([4]), "4")
    }
}
