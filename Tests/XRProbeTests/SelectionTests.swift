import Foundation
import XCTest
import XRProbe
import XRTensor

/// Active-labelling strategies on feature sets whose right answer is known: separated clusters
/// of known sizes, probabilities with a known most uncertain row, patients with several rows.
final class SelectionTests: XCTestCase {
    /// `sizes[c]` rows around each of len(sizes) random unit centres in 16-d (noise `sd`), unit-norm;
    /// returns the features and each row's cluster.
    func clusters(_ sizes: [Int], sd: Float = 0.03, seed: UInt64 = 1) -> (x: [Float], cluster: [Int]) {
        var rng = XRRandom(seed: seed)
        let d = 16
        let centres = sizes.indices.map { _ in (0..<d).map { _ in rng.nextGaussian() } }
        var x: [Float] = [], cl: [Int] = []
        for (c, n) in sizes.enumerated() {
            for _ in 0..<n { x += centres[c].map { $0 + sd * 4 * rng.nextGaussian() }; cl.append(c) }
        }
        return (Probe.normalized(x, d: d), cl)
    }

    func pool(_ x: [Float], labelled: [Int] = [], patient: [Int]? = nil) -> SelectionPool {
        let n = x.count / 16
        let l = Set(labelled)
        return SelectionPool(features: x, dim: 16, candidates: (0..<n).filter { !l.contains($0) }, labelled: labelled, patient: patient)
    }

    func testKCenterSpreadsOverClustersAndAvoidsLabelledOnes() {
        let (x, cl) = clusters([40, 40, 40])
        let cold = ActiveSelection.select(pool(x), strategy: .kcenter, budget: 3, seed: 0)
        XCTAssertEqual(Set(cold.map { cl[$0.row] }), [0, 1, 2], "three picks, one per cluster")
        let warm = ActiveSelection.select(pool(x, labelled: [0, 1]), strategy: .kcenter, budget: 2, seed: 0)
        XCTAssertEqual(Set(warm.map { cl[$0.row] }), [1, 2], "cluster 0 is labelled already")
        XCTAssertTrue(warm.allSatisfy { $0.score > 0.5 })
    }

    func testTypiClustTakesTheLargestUnlabelledClustersMostTypicalRow() {
        let (x, cl) = clusters([60, 30, 10, 25])
        let picks = ActiveSelection.select(pool(x, labelled: [0]), strategy: .typiclust, budget: 2, seed: 0)
        XCTAssertEqual(picks.map { cl[$0.row] }, [1, 3], "the two largest clusters without a label, largest first")
        // The pick is more typical than the cluster's average row: nearer its members.
        for p in picks {
            let members = cl.indices.filter { cl[$0] == cl[p.row] }
            func meanDistance(_ r: Int) -> Float {
                members.map { m in zip(x[r * 16..<r * 16 + 16], x[m * 16..<m * 16 + 16]).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot() }.reduce(0, +)
            }
            let all = members.map(meanDistance).sorted()
            XCTAssertLessThanOrEqual(meanDistance(p.row), all[all.count / 4], "the most typical row is in the central quarter")
        }
    }

    func testProbCoverCoversEachClusterOnceAndSkipsCoveredOnes() {
        let (x, cl) = clusters([30, 30, 30, 30], seed: 5)
        // δ's purity is judged on k-means with as many clusters as the task has classes: four here.
        var four = pool(x)
        four.classNames = [["a", "b", "c", "d"]]
        let cold = ActiveSelection.select(four, strategy: .probcover, budget: 4, seed: 0)
        XCTAssertEqual(Set(cold.map { cl[$0.row] }).count, 4, "one ball per cluster: \(cold.map { cl[$0.row] })")
        var labelled = pool(x, labelled: Array(0..<30))
        labelled.classNames = four.classNames
        let warm = ActiveSelection.select(labelled, strategy: .probcover, budget: 3, seed: 0)
        XCTAssertFalse(warm.contains { cl[$0.row] == 0 }, "cluster 0 is covered by its labels")
    }

    func testUncertaintyAndBalancedReadTheProbe() {
        let (x, _) = clusters([5])
        var p = pool(x)
        // One binary task: row 3 is the most uncertain, row 1 the most confident positive.
        p.probabilities = [[[0.9, 0.1], [0.05, 0.95], [0.7, 0.3], [0.5, 0.5], [0.99, 0.01]]]
        p.labelledCounts = [[10, 1]]
        p.taskNames = ["effusion"]; p.classNames = [["no", "yes"]]
        XCTAssertEqual(ActiveSelection.select(p, strategy: .uncertainty, budget: 2, seed: 0).map(\.row), [3, 2])
        let b = ActiveSelection.select(p, strategy: .balanced, budget: 2, seed: 0)
        XCTAssertEqual(b.first?.row, 1, "the rare class's most confident row first")
        XCTAssertTrue(b.first?.reason.contains("effusion = yes") ?? false, b.first?.reason ?? "")
    }

    func testNoBatchHoldsTwoRowsOfOnePatientAndRunsAreDeterministic() {
        let (x, _) = clusters([40, 40], seed: 2)
        let patient = (0..<80).map { $0 / 4 } // 20 patients × 4 rows
        var p = pool(x, patient: patient)
        p.probabilities = [
            (0..<80).map { (i: Int) -> [Double] in
                let q = Double(i % 7) / 7
                return [q, 1 - q]
            }
        ]
        p.labelledCounts = [[0, 0]]
        for s in SelectionStrategy.allCases {
            let a = ActiveSelection.select(p, strategy: s, budget: 25, seed: 3)
            XCTAssertEqual(a.count, 20, "\(s): one row per patient, 20 patients")
            XCTAssertEqual(Set(a.map { patient[$0.row] }).count, a.count, "\(s) chose two rows of one patient")
            XCTAssertEqual(a, ActiveSelection.select(p, strategy: s, budget: 25, seed: 3), "\(s) is not deterministic")
        }
        XCTAssertNotEqual(ActiveSelection.select(p, strategy: .random, budget: 5, seed: 3), ActiveSelection.select(p, strategy: .random, budget: 5, seed: 4))
    }
}
