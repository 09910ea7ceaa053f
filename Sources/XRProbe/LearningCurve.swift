// Learning-curve fits: metric as a function of shots per class, for extrapolating how many
// labels a target needs.
//
// Letters: n shots per class, y the metric of one seed at n, S seeds.
import Foundation
import XRTensor

/// A fitted learning curve.
///
/// - `powerLaw`: y(n) = a − b·n^(−c), c > 0 — the inverse power law of learning curves
///   (Hestness et al. 2017, "Deep learning scaling is predictable, empirically"; Figueroa et al.
///   2012 for sample-size planning in medical classification). `a` is the ceiling (floor for a
///   metric where lower is better).
/// - `logLinear`: y(n) = a + b·ln n, no ceiling; the limit of the power law as c → 0.
public enum CurveModel: Sendable, Equatable, Codable {
    case powerLaw(a: Double, b: Double, c: Double)
    case logLinear(a: Double, b: Double)

    /// `power_law` or `log_linear`.
    public var name: String {
        switch self {
        case .powerLaw: return "power_law";
        case .logLinear: return "log_linear"
        }
    }

    /// The curve at `n` shots per class.
    public func value(at n: Double) -> Double {
        switch self {
        case let .powerLaw(a, b, c): return a - b * pow(n, -c)
        case let .logLinear(a, b): return a + b * log(n)
        }
    }

    /// The value approached as n → ∞ (nil for the log-linear curve, which has none).
    public var ceiling: Double? {
        if case let .powerLaw(a, _, _) = self { return a }
        return nil
    }

    /// Shots per class (real-valued) at which the curve reaches `target`, for a curve that
    /// rises (`higherIsBetter`) or falls toward it; nil when it never does (target beyond the
    /// ceiling, or the curve moves the wrong way). Values below 1 mean the target is met at
    /// any measured shot count the curve covers.
    public func shots(reaching target: Double, higherIsBetter: Bool) -> Double? {
        switch self {
        case let .powerLaw(a, b, c):
            // a − b·n^(−c) = T  ⇔  n = (b / (a − T))^(1/c), defined when (a − T)/b > 0.
            let r = (a - target) / b
            guard r > 0, r.isFinite, (b > 0) == higherIsBetter else { return nil }
            return pow(1 / r, 1 / c)
        case let .logLinear(a, b):
            guard b != 0, (b > 0) == higherIsBetter else { return nil }
            let n = exp((target - a) / b)
            return n.isFinite ? n : nil
        }
    }
}

/// One measured value: shots per class, seed, metric.
public struct CurvePoint: Sendable, Equatable, Codable {
    public var shots: Double
    public var seed: Int
    public var value: Double
    public init(shots: Double, seed: Int, value: Double) { self.shots = shots; self.seed = seed; self.value = value }
}

/// Least-squares learning-curve fits, model choice on held-out shot counts, and intervals by
/// bootstrap over seeds. Everything is deterministic (the bootstrap for a given seed).
public enum LearningCurveFit {
    /// The range searched for the power law's exponent c. At the lower end the power law is
    /// indistinguishable from the log-linear curve over any realistic range of n
    /// (n^(−0.01) moves by 4% from n = 1 to 64), so a fit that lands there is called degenerate.
    public static let exponentRange: ClosedRange<Double> = 0.01...5
    static let gridSize = 240

    /// Result of fitting one model.
    public struct Fit: Sendable, Equatable {
        public var model: CurveModel
        /// Sum of squared residuals over the points.
        public var sse: Double
        /// True when the power law's best exponent sits at the lower end of `exponentRange`,
        /// or no rising (falling) curve fits better than a constant.
        public var degenerate: Bool
    }

    /// Ordinary least squares of y on u: (intercept, slope, SSE); nil when u does not vary.
    static func line(_ u: [Double], _ y: [Double]) -> (Double, Double, Double)? {
        let m = Double(u.count)
        guard m >= 2 else { return nil }
        let ub = u.reduce(0, +) / m, yb = y.reduce(0, +) / m
        var sxx = 0.0, sxy = 0.0, syy = 0.0
        for i in u.indices { sxx += (u[i] - ub) * (u[i] - ub); sxy += (u[i] - ub) * (y[i] - yb); syy += (y[i] - yb) * (y[i] - yb) }
        guard sxx > 1e-14 * max(1, ub * ub) else { return nil }
        let slope = sxy / sxx
        return (yb - slope * ub, slope, max(syy - sxy * sxy / sxx, 0))
    }

    /// The power law by profile least squares: for each exponent c the best a and b are a
    /// straight-line fit of y on n^(−c), so only c is searched — a log-spaced grid of 240 values
    /// over `exponentRange`, then golden-section refinement between the best grid point's
    /// neighbours. A slope in the wrong direction for the metric is replaced by the constant
    /// fit (b = 0). `bound` caps the ceiling a (from above for a rising metric, from below for a
    /// falling one: AUROC cannot pass 1, ECE cannot fall below 0); where the free a would cross it,
    /// a = bound and b is the least-squares slope through it. Nil with fewer than 2 distinct shot counts.
    public static func powerLaw(_ pts: [CurvePoint], higherIsBetter: Bool = true, bound: Double? = nil) -> Fit? {
        let y = pts.map(\.value), lnN = pts.map { log($0.shots) }
        guard Set(pts.map(\.shots)).count >= 2 else { return nil }
        let mean = y.reduce(0, +) / Double(y.count)
        let flatSSE = y.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
        // (a, b, SSE) at exponent c, the constant fit when the slope goes the wrong way.
        func profile(_ c: Double) -> (a: Double, b: Double, sse: Double, flat: Bool) {
            guard let (a, slope, sse) = line(lnN.map { exp(-c * $0) }, y) else { return (mean, 0, flatSSE, true) }
            let b = -slope
            if (b > 0) != higherIsBetter || b == 0 { return (mean, 0, flatSSE, true) }
            if let bound, higherIsBetter ? a > bound : a < bound {
                // y ≈ bound − b·u: b = Σ u·(bound − y) / Σ u².
                let u = lnN.map { exp(-c * $0) }
                var suu = 0.0, suy = 0.0
                for i in u.indices { suu += u[i] * u[i]; suy += u[i] * (bound - y[i]) }
                let bb = suy / suu
                if (bb > 0) != higherIsBetter || bb == 0 { return (mean, 0, flatSSE, true) }
                var e = 0.0
                for i in u.indices { let r = y[i] - (bound - bb * u[i]); e += r * r }
                return (bound, bb, e, false)
            }
            return (a, b, sse, false)
        }
        let lo = log(exponentRange.lowerBound), hi = log(exponentRange.upperBound)
        let grid = (0..<gridSize).map { exp(lo + (hi - lo) * Double($0) / Double(gridSize - 1)) }
        let values = grid.map { profile($0).sse }
        var best = 0
        for j in values.indices where values[j] < values[best] { best = j }
        // Golden section on [c_{j−1}, c_{j+1}] (the profile is smooth there).
        var l = grid[max(best - 1, 0)], r = grid[min(best + 1, gridSize - 1)]
        let g = (5.0.squareRoot() - 1) / 2
        var x1 = r - g * (r - l), x2 = l + g * (r - l)
        var f1 = profile(x1).sse, f2 = profile(x2).sse
        for _ in 0..<100 where r - l > 1e-12 * r {
            if f1 <= f2 {
                r = x2; x2 = x1; f2 = f1; x1 = r - g * (r - l); f1 = profile(x1).sse
            } else {
                l = x1; x1 = x2; f1 = f2; x2 = l + g * (r - l); f2 = profile(x2).sse
            }
        }
        var c = (l + r) / 2
        var p = profile(c)
        if values[best] < p.sse { c = grid[best]; p = profile(c) }
        let degenerate = p.flat || best == 0
        return Fit(model: .powerLaw(a: p.a, b: p.b, c: c), sse: p.sse, degenerate: degenerate)
    }

    /// y = a + b·ln n by least squares; nil with fewer than 2 distinct shot counts.
    public static func logLinear(_ pts: [CurvePoint]) -> Fit? {
        guard let (a, b, sse) = line(pts.map { log($0.shots) }, pts.map(\.value)) else { return nil }
        return Fit(model: .logLinear(a: a, b: b), sse: sse, degenerate: false)
    }

    /// How the model was chosen.
    public struct Choice: Sendable, Equatable {
        public var fit: Fit
        /// Shot counts held out for the choice (empty when there were too few).
        public var heldOut: [Double]
        /// Mean squared error at the held-out counts (prediction vs mean over seeds) of each model
        /// fitted on the other counts.
        public var heldOutError: (powerLaw: Double, logLinear: Double)?
        /// Why this model: a sentence.
        public var reason: String

        public static func == (x: Choice, y: Choice) -> Bool {
            x.fit == y.fit && x.heldOut == y.heldOut && x.reason == y.reason
                && x.heldOutError?.powerLaw == y.heldOutError?.powerLaw && x.heldOutError?.logLinear == y.heldOutError?.logLinear
        }
    }

    /// Shot counts held out when choosing: the largest ⌊m/3⌋ (at least 1) of m distinct counts,
    /// when at least 3 remain to fit on; none otherwise.
    public static func heldOutCounts(_ shots: [Double]) -> [Double] {
        let distinct = Array(Set(shots)).sorted()
        let h = max(1, distinct.count / 3)
        return distinct.count - h >= 3 ? Array(distinct.suffix(h)) : []
    }

    /// Fit both models and choose: the power law unless it is degenerate on all the points, or
    /// the log-linear curve predicts the held-out largest shot counts better when fitted without
    /// them. The chosen model is then fitted on every point. Nil with fewer than 2 distinct counts.
    public static func choose(_ pts: [CurvePoint], higherIsBetter: Bool = true, bound: Double? = nil) -> Choice? {
        guard let pl = powerLaw(pts, higherIsBetter: higherIsBetter, bound: bound), let ll = logLinear(pts) else { return nil }
        if pl.degenerate {
            return Choice(
                fit: ll, heldOut: [], heldOutError: nil,
                reason:
                    "the power law is degenerate on these points (no rising curve, or exponent at its lower bound \(exponentRange.lowerBound)); log-linear fallback"
            )
        }
        let held = heldOutCounts(pts.map(\.shots))
        guard !held.isEmpty else {
            return Choice(fit: pl, heldOut: [], heldOutError: nil, reason: "power law (too few shot counts to hold any out for a comparison)")
        }
        let train = pts.filter { !held.contains($0.shots) }
        guard let plT = powerLaw(train, higherIsBetter: higherIsBetter, bound: bound), let llT = logLinear(train) else {
            return Choice(fit: pl, heldOut: held, heldOutError: nil, reason: "power law")
        }
        func error(_ m: CurveModel) -> Double {
            held.map { n in
                let ys = pts.filter { $0.shots == n }.map(\.value)
                let d = m.value(at: n) - ys.reduce(0, +) / Double(ys.count)
                return d * d
            }.reduce(0, +) / Double(held.count)
        }
        let e = (powerLaw: error(plT.model), logLinear: error(llT.model))
        let shown = held.map { String(Int($0)) }.joined(separator: ", ")
        if e.logLinear < e.powerLaw {
            return Choice(
                fit: ll, heldOut: held, heldOutError: e,
                reason: "log-linear: predicts the held-out shot counts (\(shown)) better when fitted on the smaller ones")
        }
        return Choice(
            fit: pl, heldOut: held, heldOutError: e,
            reason: "power law: predicts the held-out shot counts (\(shown)) at least as well as log-linear when fitted on the smaller ones")
    }

    /// Refit `kind` of model (the name of a `CurveModel`) on points; nil when it cannot be fitted.
    public static func refit(_ kind: String, _ pts: [CurvePoint], higherIsBetter: Bool, bound: Double? = nil) -> CurveModel? {
        kind == "power_law" ? powerLaw(pts, higherIsBetter: higherIsBetter, bound: bound)?.model : logLinear(pts)?.model
    }

    /// The chosen model refitted on `resamples` bootstrap resamples of the seeds (each resample
    /// draws S seeds with replacement and takes all of their points). Resamples that cannot be
    /// fitted (fewer than 2 distinct shot counts) are left out. Deterministic for `seed`.
    public static func bootstrap(
        _ pts: [CurvePoint], kind: String, higherIsBetter: Bool, bound: Double? = nil, resamples: Int, seed: UInt64,
        stream: [UInt64] = []
    ) -> [CurveModel] {
        let seeds = Array(Set(pts.map(\.seed))).sorted()
        guard seeds.count >= 2 else { return [] }
        let bySeed = Dictionary(grouping: pts, by: \.seed)
        var rng = XRRandom(seed: seed, stream: [0xC0_5E] + stream)
        var out: [CurveModel] = []
        out.reserveCapacity(resamples)
        for _ in 0..<resamples {
            var sample: [CurvePoint] = []
            for _ in seeds { sample += bySeed[seeds[rng.nextInt(below: seeds.count)]] ?? [] }
            if let m = refit(kind, sample, higherIsBetter: higherIsBetter, bound: bound) { out.append(m) }
        }
        return out
    }
}

/// One curve of a predictive band: a bootstrap refit plus an extrapolation error that is zero
/// up to the largest fitted shot count and grows linearly with the number of doublings beyond it
/// (`slope` is that error per doubling for this resample: the curve's own extrapolation error
/// times a normal draw).
public struct BandCurve: Sendable, Equatable {
    public var model: CurveModel
    public var slope: Double
    public var lastFitted: Double
    public init(model: CurveModel, slope: Double = 0, lastFitted: Double) { self.model = model; self.slope = slope; self.lastFitted = lastFitted }

    /// The curve at `n` shots per class.
    public func value(at n: Double) -> Double {
        model.value(at: n) + (n > lastFitted ? slope * log2(n / lastFitted) : 0)
    }

    /// The smallest shots per class up to `cap` at which the curve reaches `target` (as
    /// `CurveModel.shots(reaching:)` within the fitted range; beyond it the first crossing of the
    /// shifted curve, found on a log grid and refined by bisection); nil when it does not by `cap`.
    public func shots(reaching target: Double, higherIsBetter: Bool, cap: Double) -> Double? {
        if let n = model.shots(reaching: target, higherIsBetter: higherIsBetter), n <= lastFitted || slope == 0 {
            return n <= cap ? n : nil
        }
        guard cap > lastFitted else { return nil }
        func met(_ n: Double) -> Bool { let v = value(at: n); return higherIsBetter ? v >= target : v <= target }
        let steps = 256
        var previous = lastFitted
        for i in 1...steps {
            let n = lastFitted * pow(cap / lastFitted, Double(i) / Double(steps))
            if met(n) {
                var lo = previous, hi = n
                for _ in 0..<60 { let mid = (lo * hi).squareRoot(); if met(mid) { hi = mid } else { lo = mid } }
                return hi
            }
            previous = n
        }
        return nil
    }
}

extension LearningCurveFit {
    /// The curve's own extrapolation error per doubling of shots, from backtests inside the
    /// measured range: `kind` refitted on the smallest 3, 4, … distinct shot counts predicts each
    /// larger count's mean over seeds; the root mean square of (error ÷ doublings beyond the fit).
    /// It holds both the error of the curve's shape and the noise of a new measurement. Nil with
    /// fewer than 4 distinct shot counts (nothing left to predict).
    public static func extrapolationError(_ pts: [CurvePoint], kind: String, higherIsBetter: Bool, bound: Double? = nil) -> Double? {
        let counts = Array(Set(pts.map(\.shots))).sorted()
        guard counts.count >= 4 else { return nil }
        var means: [Double: Double] = [:]
        for n in counts { let ys = pts.filter { $0.shots == n }.map(\.value); means[n] = ys.reduce(0, +) / Double(ys.count) }
        var sum = 0.0, m = 0
        for j in 3..<counts.count {
            let fitted = counts[j - 1]
            guard let model = refit(kind, pts.filter { $0.shots <= fitted }, higherIsBetter: higherIsBetter, bound: bound) else { continue }
            for n in counts[j...] {
                let e = (model.value(at: n) - (means[n] ?? 0)) / log2(n / fitted)
                guard e.isFinite else { continue }
                sum += e * e; m += 1
            }
        }
        return m > 0 ? (sum / Double(m)).squareRoot() : nil
    }

    /// Bootstrap refits turned into a predictive band: each gets an extrapolation slope of
    /// `errorPerDoubling` times its own standard normal draw (deterministic for `seed` and
    /// `stream`), zero up to `lastFitted`.
    public static func band(_ boot: [CurveModel], errorPerDoubling: Double?, lastFitted: Double, seed: UInt64, stream: [UInt64] = []) -> [BandCurve] {
        var rng = XRRandom(seed: seed, stream: [0xBA_4D] + stream)
        return boot.map { m in
            let slope = errorPerDoubling.map { $0 * Double(rng.nextGaussian()) } ?? 0
            return BandCurve(model: m, slope: slope, lastFitted: lastFitted)
        }
    }
}
