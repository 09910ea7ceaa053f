import Foundation
import XCTest
import XRProbe
import XRTensor
import TestSupport

/// Benjamini–Hochberg q-values against statsmodels 0.15.0 (fixtures/make_fdr_fixtures.py) and
/// the seed combination of subgroup p-values.
final class MultipleTestingTests: XCTestCase {
    struct Case: Decodable {
        var p: [Double]
        var q: [Double]
        var reject05: [Bool]
        var reject10: [Bool]
        enum CodingKeys: String, CodingKey { case p, q, reject05 = "reject_0.05", reject10 = "reject_0.1" }
    }
    struct File: Decodable { var cases: [String: Case] }

    func testBenjaminiHochbergMatchesStatsmodels() throws {
        let file = try JSONDecoder().decode(File.self, from: Data(contentsOf: Fixtures.url("stats/fdr_bh.json")))
        XCTAssertEqual(file.cases.count, 5)
        for (name, c) in file.cases.sorted(by: { $0.key < $1.key }) {
            let q = MultipleTesting.benjaminiHochberg(c.p)
            XCTAssertEqual(q.count, c.q.count, name)
            for (i, (got, want)) in zip(q, c.q).enumerated() {
                XCTAssertEqual(got, want, accuracy: 1e-12 * max(1, want), "\(name)[\(i)]: q \(got) vs statsmodels \(want)")
            }
            XCTAssertEqual(q.map { $0 <= 0.05 }, c.reject05, "\(name): rejections at 0.05")
            XCTAssertEqual(q.map { $0 <= 0.1 }, c.reject10, "\(name): rejections at 0.1")
        }
    }

    func testNonFiniteValuesAreLeftOut() {
        let q = MultipleTesting.benjaminiHochberg([0.01, .nan, 0.04])
        XCTAssertTrue(q[1].isNaN)
        XCTAssertEqual(q[0], 0.02, accuracy: 1e-15) // m = 2
        XCTAssertEqual(q[2], 0.04, accuracy: 1e-15)
        XCTAssertEqual(MultipleTesting.benjaminiHochberg([]), [])
    }

    func testTwiceTheLowerMedian() {
        XCTAssertNil(MultipleTesting.twiceMedian([]))
        XCTAssertEqual(MultipleTesting.twiceMedian([0.02]), 0.04)
        XCTAssertEqual(MultipleTesting.twiceMedian([0.3, 0.01, 0.02, 0.9]), 0.04) // 2nd of 4
        XCTAssertEqual(MultipleTesting.twiceMedian([0.3, 0.01, 0.02, 0.9, 0.5]), 0.6) // 3rd of 5
        XCTAssertEqual(MultipleTesting.twiceMedian([0.8, 0.9, .nan]), 1)
    }

    /// Under "no gap" the per-cell p-value is close to uniform: about 5% of independent null
    /// subgroup analyses fall below 0.05 (binomial 99.9% range for 400 draws: 7 to 37).
    func testSubgroupPValueIsCalibratedWithoutAGap() {
        var below = 0
        for trial in 0..<400 {
            var rng = XRRandom(seed: 1000 + UInt64(trial))
            var scores: [Double] = [], labels: [Bool] = [], group: [String?] = []
            for i in 0..<200 {
                let y = rng.nextDouble() < 0.4
                scores.append((y ? 0.8 : 0) + Double(rng.nextGaussian()))
                labels.append(y)
                group.append(i % 2 == 0 ? "A" : "B")
            }
            let r = SubgroupResult.analyse(attribute: "g", group: group, patients: nil, resamples: 200, seed: UInt64(trial)) { idx in
                Metrics.auroc(idx.map { scores[$0] }, idx.map { labels[$0] })
            }
            if let p = r.pValue, p < 0.05 { below += 1 }
        }
        XCTAssertTrue((7...37).contains(below), "\(below) of 400 null p-values below 0.05")
    }
}
