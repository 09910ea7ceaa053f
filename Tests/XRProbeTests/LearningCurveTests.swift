import Foundation
import XCTest
import XRProbe
import XRTensor
import TestSupport

/// Learning-curve fits: exact recovery of known curves, the log-linear fallback, parity with
/// scipy.optimize.curve_fit (fixtures/make_curve_fixtures.py), the inverse, the seed bootstrap.
final class LearningCurveTests: XCTestCase {
    /// Points of `f` at `shots` for `seeds` seeds, plus Gaussian noise of `sd` (deterministic).
    func points(
        _ f: (Double) -> Double, shots: [Double] = [1, 2, 4, 8, 16, 32, 64], seeds: Int = 5, sd: Double = 0,
        seed: UInt64 = 1
    ) -> [CurvePoint] {
        var rng = XRRandom(seed: seed)
        return shots.flatMap { n in (0..<seeds).map { s in CurvePoint(shots: n, seed: s, value: f(n) + sd * Double(rng.nextGaussian())) } }
    }

    func testRecoversAnExactPowerLaw() throws {
        for (a, b, c) in [(0.9, 0.4, 0.7), (0.75, 0.2, 0.3), (0.97, 0.5, 1.6)] {
            let fit = try XCTUnwrap(LearningCurveFit.powerLaw(points { a - b * pow($0, -c) }))
            guard case let .powerLaw(fa, fb, fc) = fit.model else { return XCTFail("not a power law") }
            XCTAssertFalse(fit.degenerate)
            XCTAssertEqual(fa, a, accuracy: 1e-7, "a for (\(a), \(b), \(c))")
            XCTAssertEqual(fb, b, accuracy: 1e-7, "b for (\(a), \(b), \(c))")
            XCTAssertEqual(fc, c, accuracy: 1e-6, "c for (\(a), \(b), \(c))")
            XCTAssertLessThan(fit.sse, 1e-12) // SSE = Syy − Sxy²/Sxx: rounding, not misfit
        }
    }

    func testRecoversAPowerLawUnderSmallNoiseAndChoosesIt() throws {
        let pts = points({ 0.88 - 0.35 * pow($0, -0.6) }, seeds: 10, sd: 0.005)
        let choice = try XCTUnwrap(LearningCurveFit.choose(pts))
        guard case let .powerLaw(a, b, c) = choice.fit.model else { return XCTFail("chose \(choice.fit.model): \(choice.reason)") }
        XCTAssertEqual(a, 0.88, accuracy: 0.01)
        XCTAssertEqual(b, 0.35, accuracy: 0.02)
        XCTAssertEqual(c, 0.6, accuracy: 0.08)
        XCTAssertEqual(choice.heldOut, [32, 64]) // ⌊7/3⌋ = 2 largest counts
        let e = try XCTUnwrap(choice.heldOutError)
        XCTAssertLessThan(e.powerLaw, e.logLinear)
    }

    func testALogLinearCurvePicksTheFallback() throws {
        let pts = points({ 0.55 + 0.05 * log($0) }, sd: 0.003, seed: 7)
        let choice = try XCTUnwrap(LearningCurveFit.choose(pts))
        guard case let .logLinear(a, b) = choice.fit.model else { return XCTFail("chose \(choice.fit.model): \(choice.reason)") }
        XCTAssertEqual(a, 0.55, accuracy: 0.005)
        XCTAssertEqual(b, 0.05, accuracy: 0.002)
        // Exact log-linear: the power law's exponent runs to its lower bound and is called degenerate.
        let exact = try XCTUnwrap(LearningCurveFit.powerLaw(points { 0.55 + 0.05 * log($0) }))
        XCTAssertTrue(exact.degenerate)
        XCTAssertEqual(try XCTUnwrap(LearningCurveFit.choose(points { 0.55 + 0.05 * log($0) })).fit.model.name, "log_linear")
    }

    func testTheCeilingIsHeldToTheMetricsBound() throws {
        let pts = points { 1.3 - 0.7 * pow($0, -0.3) }
        let free = try XCTUnwrap(LearningCurveFit.powerLaw(pts))
        let held = try XCTUnwrap(LearningCurveFit.powerLaw(pts, bound: 1))
        XCTAssertEqual(free.model.ceiling ?? .nan, 1.3, accuracy: 1e-6)
        XCTAssertEqual(held.model.ceiling, 1)
        guard case let .powerLaw(_, b, c) = held.model else { return XCTFail() }
        XCTAssertGreaterThan(b, 0)
        XCTAssertGreaterThan(held.sse, free.sse)
        // The bounded fit is the least-squares one with a = 1: perturbing b or c only adds error.
        func sse(_ b: Double, _ c: Double) -> Double { pts.reduce(0) { $0 + pow($1.value - (1 - b * pow($1.shots, -c)), 2) } }
        for (db, dc) in [(1e-4, 0.0), (-1e-4, 0.0), (0.0, 1e-4), (0.0, -1e-4)] { XCTAssertGreaterThan(sse(b + db, c + dc), held.sse) }
        let ece = try XCTUnwrap(LearningCurveFit.powerLaw(points { -0.05 + 0.3 * pow($0, -0.5) }, higherIsBetter: false, bound: 0))
        XCTAssertEqual(ece.model.ceiling, 0, "a falling metric's floor is held at 0")
    }

    func testAFlatOrFallingCurveIsDegenerateForARisingMetric() throws {
        let flat = try XCTUnwrap(LearningCurveFit.powerLaw(points({ _ in 0.5 }, sd: 0.01)))
        let falling = try XCTUnwrap(LearningCurveFit.powerLaw(points { 0.6 + 0.2 * pow($0, -0.5) }))
        XCTAssertTrue(falling.degenerate)
        XCTAssertTrue(flat.degenerate || flat.model.value(at: 64) - flat.model.value(at: 1) < 0.05)
        XCTAssertNil(LearningCurveFit.powerLaw(points({ _ in 0.7 }, shots: [8])), "one shot count cannot be fitted")
        XCTAssertNil(LearningCurveFit.choose(points({ _ in 0.7 }, shots: [8])))
    }

    struct Case: Decodable {
        struct Power: Decodable { var a: Double, b: Double, c: Double, sse: Double }
        struct Line: Decodable { var a: Double, b: Double }
        var shots: [Double], seed: [Int], value: [Double]
        var higher_is_better: Bool
        var power_law: Power?
        var log_linear: Line
        var points: [CurvePoint] { shots.indices.map { CurvePoint(shots: shots[$0], seed: seed[$0], value: value[$0]) } }
    }
    struct File: Decodable { var cases: [String: Case]; var versions: [String: String] }

    /// Tolerances: our profile search and scipy's Levenberg–Marquardt reach the same minimum, so
    /// SSE agrees to 1e-9 relative (ours never worse), a and b to 2e-5 absolute, c to 1e-4
    /// relative; the log-linear fit is closed form on both sides (1e-10).
    func testMatchesScipyCurveFit() throws {
        let file = try JSONDecoder().decode(File.self, from: Data(contentsOf: Fixtures.url("curves/curve_fit.json")))
        XCTAssertEqual(file.versions["scipy"], "1.17.1")
        XCTAssertEqual(file.cases.count, 5)
        for (name, c) in file.cases.sorted(by: { $0.key < $1.key }) {
            let ll = try XCTUnwrap(LearningCurveFit.logLinear(c.points))
            guard case let .logLinear(la, lb) = ll.model else { return XCTFail(name) }
            XCTAssertEqual(la, c.log_linear.a, accuracy: 1e-10, "\(name): log-linear a")
            XCTAssertEqual(lb, c.log_linear.b, accuracy: 1e-10, "\(name): log-linear b")
            guard let want = c.power_law else { continue }
            let fit = try XCTUnwrap(LearningCurveFit.powerLaw(c.points, higherIsBetter: c.higher_is_better))
            guard case let .powerLaw(a, b, cc) = fit.model else { return XCTFail(name) }
            XCTAssertFalse(fit.degenerate, name)
            XCTAssertLessThanOrEqual(fit.sse, want.sse * (1 + 1e-9), "\(name): SSE \(fit.sse) vs scipy \(want.sse)")
            XCTAssertEqual(fit.sse, want.sse, accuracy: 1e-9 * want.sse, name)
            XCTAssertEqual(a, want.a, accuracy: 2e-5, "\(name): a \(a) vs scipy \(want.a)")
            XCTAssertEqual(b, want.b, accuracy: 2e-5, "\(name): b \(b) vs scipy \(want.b)")
            XCTAssertEqual(cc, want.c, accuracy: 1e-4 * want.c, "\(name): c \(cc) vs scipy \(want.c)")
        }
    }

    func testShotsReachingATargetInvertsTheCurve() throws {
        let m = CurveModel.powerLaw(a: 0.9, b: 0.4, c: 0.5)
        let n = try XCTUnwrap(m.shots(reaching: 0.85, higherIsBetter: true))
        XCTAssertEqual(n, 64, accuracy: 1e-9) // 0.9 − 0.4/√64 = 0.85
        XCTAssertEqual(m.value(at: n), 0.85, accuracy: 1e-12)
        XCTAssertNil(m.shots(reaching: 0.9, higherIsBetter: true), "the ceiling itself is never reached")
        XCTAssertNil(m.shots(reaching: 0.95, higherIsBetter: true))
        let falling = CurveModel.powerLaw(a: 0.05, b: -0.2, c: 1)
        XCTAssertEqual(try XCTUnwrap(falling.shots(reaching: 0.07, higherIsBetter: false)), 10, accuracy: 1e-9)
        XCTAssertNil(falling.shots(reaching: 0.04, higherIsBetter: false))
        let line = CurveModel.logLinear(a: 0.5, b: 0.1)
        XCTAssertEqual(try XCTUnwrap(line.shots(reaching: 0.8, higherIsBetter: true)), exp(3), accuracy: 1e-9)
        XCTAssertNil(CurveModel.logLinear(a: 0.5, b: -0.1).shots(reaching: 0.8, higherIsBetter: true))
    }

    func testSeedBootstrapIsDeterministicAndCoversTheTruth() throws {
        let pts = points({ 0.88 - 0.35 * pow($0, -0.6) }, seeds: 8, sd: 0.02, seed: 3)
        let one = LearningCurveFit.bootstrap(pts, kind: "power_law", higherIsBetter: true, resamples: 300, seed: 0)
        let two = LearningCurveFit.bootstrap(pts, kind: "power_law", higherIsBetter: true, resamples: 300, seed: 0)
        let other = LearningCurveFit.bootstrap(pts, kind: "power_law", higherIsBetter: true, resamples: 300, seed: 1)
        XCTAssertEqual(one.count, 300)
        XCTAssertEqual(one, two)
        XCTAssertNotEqual(one, other)
        // Coverage of the true curve at n = 64 by the 80% interval over 40 independent studies
        // (8 seeds, noise sd 0.02): near 80%, and never a collapsed interval.
        var covered = 0
        for study in UInt64(100)..<140 {
            let p = points({ 0.88 - 0.35 * pow($0, -0.6) }, seeds: 8, sd: 0.02, seed: study)
            let v = LearningCurveFit.bootstrap(p, kind: "power_law", higherIsBetter: true, resamples: 200, seed: 0).map { $0.value(at: 64) }.sorted()
            let lo = Bootstrap.percentile(v, 10), hi = Bootstrap.percentile(v, 90)
            XCTAssertGreaterThan(hi - lo, 0.001)
            if lo <= 0.88 - 0.35 * pow(64, -0.6) && 0.88 - 0.35 * pow(64, -0.6) <= hi { covered += 1 }
        }
        XCTAssertGreaterThanOrEqual(covered, 24, "80% intervals covered the truth in \(covered) of 40 studies")
        XCTAssertLessThanOrEqual(covered, 38, "80% intervals covered the truth in \(covered) of 40 studies")
        XCTAssertEqual(
            LearningCurveFit.bootstrap(
                pts.filter { $0.seed == 0 }, kind: "power_law", higherIsBetter: true,
                resamples: 10, seed: 0), [], "one seed: no interval")
    }

    func testExtrapolationErrorIsNilWithoutRoomZeroOnTheTrueShapeAndLargeOnAWrongOne() throws {
        let truth = { (n: Double) in 0.9 - 0.4 * pow(n, -0.7) }
        let fitted = points(truth, shots: [1, 2, 4, 8, 16])
        let exact = try XCTUnwrap(LearningCurveFit.extrapolationError(fitted, kind: "power_law", higherIsBetter: true))
        XCTAssertLessThan(exact, 1e-6, "an exact power law extrapolates without error")
        // A log-linear curve keeps rising where the power law bends: its backtests inside
        // 1…16 miss, by more at 16 than at 8.
        let wrong = try XCTUnwrap(LearningCurveFit.extrapolationError(fitted, kind: "log_linear", higherIsBetter: true))
        XCTAssertGreaterThan(wrong, 0.01)
        XCTAssertNil(
            LearningCurveFit.extrapolationError(points(truth, shots: [1, 2, 4]), kind: "power_law", higherIsBetter: true),
            "three shot counts leave nothing to predict")
    }

    func testBandCurveMovesOnlyBeyondTheFitAndItsInverseMatches() throws {
        let m = CurveModel.logLinear(a: 0.6, b: 0.05)
        let up = BandCurve(model: m, slope: 0.02, lastFitted: 16)
        XCTAssertEqual(up.value(at: 8), m.value(at: 8))
        XCTAssertEqual(up.value(at: 64), m.value(at: 64) + 0.04, accuracy: 1e-12)
        let n = try XCTUnwrap(up.shots(reaching: 0.85, higherIsBetter: true, cap: 1024))
        XCTAssertEqual(up.value(at: n), 0.85, accuracy: 1e-9)
        XCTAssertLessThan(n, try XCTUnwrap(m.shots(reaching: 0.85, higherIsBetter: true)), "a rising shift reaches the target sooner")
        // Within the fitted range the model's own inverse; a falling shift that never gets there is nil.
        XCTAssertEqual(try XCTUnwrap(up.shots(reaching: 0.7, higherIsBetter: true, cap: 1024)), try XCTUnwrap(m.shots(reaching: 0.7, higherIsBetter: true)))
        XCTAssertNil(BandCurve(model: m, slope: -0.06, lastFitted: 16).shots(reaching: 0.85, higherIsBetter: true, cap: 1024))
        XCTAssertNil(up.shots(reaching: 0.85, higherIsBetter: true, cap: 32), "beyond the cap")
    }

    func testTheBandCoversNewMeasurementsWhereTheSeedBootstrapAloneDoesNot() throws {
        // Studies whose curve bends (power law) fitted with the log-linear model on k ≤ 16,
        // predicting the mean of 5 new seeds at k = 64: the seed bootstrap alone is too narrow for
        // the wrong shape; the band with the curve's extrapolation error is not.
        let truth = { (n: Double) in 0.92 - 0.45 * pow(n, -0.55) }
        var plain = 0, band = 0
        let studies = 40
        for study in 0..<studies {
            let fit = points(truth, shots: [1, 2, 4, 8, 16], seeds: 5, sd: 0.02, seed: UInt64(200 + study))
            let new = points(truth, shots: [64], seeds: 5, sd: 0.02, seed: UInt64(900 + study))
            let measured = new.map(\.value).reduce(0, +) / Double(new.count)
            let boot = LearningCurveFit.bootstrap(fit, kind: "log_linear", higherIsBetter: true, resamples: 300, seed: 0)
            let sigma = LearningCurveFit.extrapolationError(fit, kind: "log_linear", higherIsBetter: true)
            let curves = LearningCurveFit.band(boot, errorPerDoubling: sigma, lastFitted: 16, seed: 0)
            for (vs, isBand) in [(boot.map { $0.value(at: 64) }, false), (curves.map { $0.value(at: 64) }, true)] {
                let v = vs.sorted()
                if Bootstrap.percentile(v, 10) <= measured && measured <= Bootstrap.percentile(v, 90) { if isBand { band += 1 } else { plain += 1 } }
            }
        }
        XCTAssertLessThan(plain, studies * 6 / 10, "the seed bootstrap alone covered \(plain) of \(studies)")
        XCTAssertGreaterThanOrEqual(band, studies * 7 / 10, "the band covered \(band) of \(studies)")
        XCTAssertEqual(
            LearningCurveFit.band([.logLinear(a: 0, b: 1)], errorPerDoubling: 0.1, lastFitted: 16, seed: 4),
            LearningCurveFit.band([.logLinear(a: 0, b: 1)], errorPerDoubling: 0.1, lastFitted: 16, seed: 4), "deterministic")
    }
}
