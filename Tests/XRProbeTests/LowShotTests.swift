import Foundation
import XCTest
import XRProbe
import XRTensor
import TestSupport

/// The logistic probe at one and two shots per class against scikit-learn 1.9.1
/// (fixtures/make_lowshot_fixtures.py): standardised on the training pool it does as well as
/// logistic regression on the raw features; standardised on the shots it does not.
final class LowShotStandardizationTests: XCTestCase {
    struct Meta: Decodable {
        struct K: Decodable { var auroc: [String: [Double]]; var mean: [String: Double] }
        var k: [String: K]
    }

    /// Mean test AUROC over the fixture's draws at `k` shots per class, and the per-draw values.
    func run(_ standardize: Standardization, k: Int) throws -> (mean: Double, perDraw: [Double]) {
        let ref = try SafeTensorsFile(contentsOf: Fixtures.url("probe/lowshot.safetensors"))
        let poolT = try ref.tensor("pool"), test = try ref.tensor("test").scalars
        let d = poolT.shape[1], nPool = poolT.shape[0], nTest = test.count / d
        let pool = poolT.scalars
        let poolLabels = try ref.tensor("pool_labels"), testLabels = try ref.tensor("test_labels").scalars
        let tasks = poolLabels.shape[1]
        let shots = try ref.tensor("k\(k).shots"), label = try ref.tensor("k\(k).label").scalars.map { Int($0) }
        let perDraw = shots.shape[1]
        let scaler = Standardizer(fit: pool, rows: Array(0..<nPool), d: d)
        var values: [Double] = []
        for (draw, li) in label.enumerated() {
            let rows = (0..<perDraw).map { Int(shots.scalars[draw * perDraw + $0]) }
            let train = rows.flatMap { pool[($0 * d)..<(($0 + 1) * d)] }
            let ytr = rows.map { Int(poolLabels.scalars[$0 * tasks + li]) }
            let spec = ProbeSpec.logistic(grid: [0.01, 0.1, 1, 10], cvMinShots: 4, defaultC: 1, folds: 3, standardize: standardize)
            let r = Probe.run(spec, train: train, labels: ytr, test: test, d: d, classes: 2, pool: scaler)
            let truth = (0..<nTest).map { testLabels[$0 * tasks + li] == 1 }
            values.append(Metrics.auroc(r.probabilities.map { $0[1] }, truth) ?? .nan)
        }
        return (values.reduce(0, +) / Double(values.count), values)
    }

    func meta() throws -> Meta {
        try JSONDecoder().decode(Meta.self, from: Data(contentsOf: Fixtures.url("probe/lowshot.json")))
    }

    /// Pool standardisation: every draw matches scikit-learn on pool-standardised features, and
    /// the mean is at least raw-feature scikit-learn's minus 0.005 at k = 1 and 2.
    func testPoolStandardisationKeepsUpWithRawFeatures() throws {
        let m = try meta()
        for k in [1, 2] {
            let want = try XCTUnwrap(m.k[String(k)])
            let (mean, perDraw) = try run(.pool, k: k)
            let ref = try XCTUnwrap(want.auroc["pool"])
            let worst = zip(perDraw, ref).map { abs($0 - $1) }.max() ?? .infinity
            XCTAssertLessThan(worst, 0.002, "k=\(k): largest per-draw AUROC difference from scikit-learn (pool-standardised)")
            let raw = try XCTUnwrap(want.mean["raw"])
            XCTAssertGreaterThanOrEqual(mean, raw - 0.005, "k=\(k): pool-standardised mean AUROC \(mean) vs raw-feature scikit-learn \(raw)")
        }
    }

    /// The old default, standardisation on the shots, falls short of the raw-feature goal at
    /// k = 1 and 2, as scikit-learn does with the same standardisation. (Per draw the two differ:
    /// a column whose shots nearly agree gets a tiny std and dominates the score, so float32
    /// rounding in scikit-learn's scaler moves single draws; the means agree.)
    func testShotStandardisationFallsShortAtOneAndTwoShots() throws {
        let m = try meta()
        for k in [1, 2] {
            let want = try XCTUnwrap(m.k[String(k)])
            let (mean, _) = try run(.shots, k: k)
            XCTAssertEqual(mean, try XCTUnwrap(want.mean["shots"]), accuracy: 0.005, "k=\(k): mean AUROC vs scikit-learn (shot-standardised)")
            let raw = try XCTUnwrap(want.mean["raw"])
            XCTAssertLessThan(mean, raw - 0.005, "k=\(k): shot-standardised mean AUROC \(mean) vs raw-feature \(raw)")
        }
    }

    /// No standardisation is scikit-learn on the raw features.
    func testNoStandardisationMatchesRawFeatures() throws {
        let m = try meta()
        let (_, perDraw) = try run(.none, k: 2)
        let ref = try XCTUnwrap(m.k["2"]?.auroc["raw"])
        let worst = zip(perDraw, ref).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThan(worst, 0.002, "largest per-draw AUROC difference from scikit-learn (raw features)")
    }
}
