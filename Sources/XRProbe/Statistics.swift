// Statistics over seeds and over test images.
import Foundation
import XRTensor

/// Mean ± std over seeds with a 95% Student-t interval: mean ± t(0.975, n−1) · std / √n.
public struct SeedSummary: Sendable, Codable, Equatable {
    public var n: Int
    public var mean: Double
    public var std: Double
    public var low: Double
    public var high: Double

    public init(_ values: [Double]) {
        let v = values.filter { $0.isFinite }
        n = v.count
        mean = n > 0 ? v.reduce(0, +) / Double(n) : .nan
        let m = mean
        std = n > 1 ? (v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(n - 1)).squareRoot() : 0
        let half = n > 1 ? Self.t975(n - 1) * std / Double(n).squareRoot() : 0
        low = mean - half
        high = mean + half
    }

    /// 97.5% quantile of Student's t with `df` degrees of freedom.
    public static func t975(_ df: Int) -> Double {
        let table: [Double] = [
            12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
            2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
            2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042
        ]
        if df >= 1 && df <= 30 { return table[df - 1] }
        if df <= 0 { return .nan }
        // Cornish-Fisher expansion around the normal quantile for larger df.
        let z = 1.959964, d = Double(df)
        return z + (z * z * z + z) / (4 * d) + (5 * pow(z, 5) + 16 * z * z * z + 3 * z) / (96 * d * d)
    }
}

/// A bootstrap percentile interval.
public struct Interval: Sendable, Codable, Equatable {
    public var low: Double
    public var high: Double
    /// Resamples that were skipped because the metric was undefined (e.g. one class only).
    public var skipped: Int
}

public enum Bootstrap {
    /// 95% percentile interval of `metric` over `resamples` resamples of the test rows. With
    /// `groups` (patient ids), whole patients are resampled. Deterministic for a seed.
    /// `metric` receives the row indices of one resample (with repeats) and returns nil when
    /// the metric is undefined for it.
    public static func interval(
        rows n: Int, groups: [String]?, resamples: Int, seed: UInt64,
        metric: ([Int]) -> Double?
    ) -> Interval? {
        guard let (values, skipped) = distribution(rows: n, groups: groups, resamples: resamples, seed: seed, metric: metric) else { return nil }
        return Interval(low: percentile(values, 2.5), high: percentile(values, 97.5), skipped: skipped)
    }

    /// The sorted resampled values behind `interval` (nil with fewer than 10 defined), and the
    /// number of resamples skipped.
    public static func distribution(
        rows n: Int, groups: [String]?, resamples: Int, seed: UInt64,
        metric: ([Int]) -> Double?
    ) -> (values: [Double], skipped: Int)? {
        guard n > 0, resamples > 0 else { return nil }
        var clusters: [[Int]]
        if let groups {
            var byGroup: [String: [Int]] = [:]
            for i in 0..<n { byGroup[groups[i], default: []].append(i) }
            clusters = byGroup.keys.sorted().compactMap { byGroup[$0] }
        } else {
            clusters = (0..<n).map { [$0] }
        }
        var rng = XRRandom(seed: seed, stream: [0xB007])
        var values: [Double] = []
        values.reserveCapacity(resamples)
        var skipped = 0
        for _ in 0..<resamples {
            var idx: [Int] = []
            idx.reserveCapacity(n)
            for _ in 0..<clusters.count { idx += clusters[rng.nextInt(below: clusters.count)] }
            if let v = metric(idx), v.isFinite { values.append(v) } else { skipped += 1 }
        }
        guard values.count >= 10 else { return nil }
        values.sort()
        return (values, skipped)
    }

    /// Linear-interpolated percentile (numpy's default) of sorted values.
    public static func percentile(_ sorted: [Double], _ q: Double) -> Double {
        let pos = q / 100 * Double(sorted.count - 1)
        let lo = Int(pos.rounded(.down)), hi = min(lo + 1, sorted.count - 1)
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - Double(lo))
    }
}

/// A metric per subgroup, the gap between groups, and whether its bootstrap CI excludes 0.
public struct SubgroupResult: Sendable, Codable, Equatable {
    public var attribute: String
    /// Group name → metric (nil when undefined in that group).
    public var values: [String: Double]
    /// Group name → number of test rows.
    public var counts: [String: Int]
    /// max − min over groups with a defined metric (for two groups: first − second by name order
    /// of the higher and lower; the sign is reported through `highest`/`lowest`).
    public var gap: Double?
    public var highest: String?
    public var lowest: String?
    public var gapInterval: Interval?
    /// True when the gap's 95% interval excludes 0.
    public var flagged: Bool
    /// Standard deviation of the gap over the bootstrap resamples.
    public var gapSE: Double? = nil
    /// Two-sided p-value of "no gap": 2 Φ(−|gap| / gapSE) (normal approximation; the percentile
    /// interval cannot resolve p-values below ~2 / resamples, which multiple-testing control needs).
    public var pValue: Double? = nil

    /// - Parameters:
    ///   - group: group name per test row (nil = not in any group, e.g. age missing).
    ///   - metric: metric on a subset of test rows (indices), nil when undefined.
    public static func analyse(
        attribute: String, group: [String?], patients: [String]?, resamples: Int, seed: UInt64,
        metric: ([Int]) -> Double?
    ) -> SubgroupResult {
        var members: [String: [Int]] = [:]
        for (i, g) in group.enumerated() { if let g { members[g, default: []].append(i) } }
        var values: [String: Double] = [:]
        for (g, idx) in members { if let v = metric(idx) { values[g] = v } }
        // Ties broken by group name: dictionary order changes from process to process, and a
        // resumed run must reproduce the same highest / lowest group.
        let sorted = values.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        guard let hi = sorted.first, let lo = sorted.last, sorted.count >= 2 else {
            return SubgroupResult(
                attribute: attribute, values: values, counts: members.mapValues(\.count),
                gap: nil, highest: nil, lowest: nil, gapInterval: nil, flagged: false)
        }
        let boot = Bootstrap.distribution(rows: group.count, groups: patients, resamples: resamples, seed: seed) { idx in
            var a: [Int] = [], b: [Int] = []
            for i in idx { if group[i] == hi.key { a.append(i) } else if group[i] == lo.key { b.append(i) } }
            guard let va = metric(a), let vb = metric(b) else { return nil }
            return va - vb
        }
        let interval = boot.map { Interval(low: Bootstrap.percentile($0.values, 2.5), high: Bootstrap.percentile($0.values, 97.5), skipped: $0.skipped) }
        let flagged = interval.map { $0.low > 0 || $0.high < 0 } ?? false
        let gap = hi.value - lo.value
        var result = SubgroupResult(
            attribute: attribute, values: values, counts: members.mapValues(\.count),
            gap: gap, highest: hi.key, lowest: lo.key, gapInterval: interval, flagged: flagged)
        if let v = boot?.values, v.count > 1 {
            let mean = v.reduce(0, +) / Double(v.count)
            let se = (v.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(v.count - 1)).squareRoot()
            result.gapSE = se
            if se > 0 { result.pValue = erfc(abs(gap) / (se * 2.0.squareRoot())) }
        }
        return result
    }
}

/// Multiple-testing control over the settings of a study.
public enum MultipleTesting {
    /// Benjamini–Hochberg (1995) q-values in input order: with the m finite p-values sorted
    /// ascending, q_(i) = min over j ≥ i of min(1, m · p_(j) / j) — statsmodels'
    /// `multipletests(method="fdr_bh")`. Rejecting every q ≤ α controls the false discovery rate
    /// at α for independent or positively dependent tests. Non-finite p-values are left out of m
    /// and get NaN.
    public static func benjaminiHochberg(_ p: [Double]) -> [Double] {
        let idx = p.indices.filter { p[$0].isFinite }.sorted { p[$0] != p[$1] ? p[$0] < p[$1] : $0 < $1 }
        var q = [Double](repeating: .nan, count: p.count)
        let m = Double(idx.count)
        var running = 1.0
        for (rank, i) in idx.enumerated().reversed() {
            running = min(running, m * p[i] / Double(rank + 1))
            q[i] = min(running, 1)
        }
        return q
    }

    /// One p-value for a hypothesis tested K times on dependent data (a setting's seeds share
    /// the test set): min(1, 2 · p_(⌈K/2⌉)), twice the lower median. Valid under any dependence
    /// (Rüschendorf 1982; Meng 1994): p_(⌈K/2⌉) ≤ α/2 needs ⌈K/2⌉ of the p-values ≤ α/2, whose
    /// expected count is at most K·α/2, so by Markov's inequality it happens with probability
    /// ≤ α. Nil without a finite p-value.
    public static func twiceMedian(_ p: [Double]) -> Double? {
        let v = p.filter(\.isFinite).sorted()
        guard !v.isEmpty else { return nil }
        return min(1, 2 * v[(v.count + 1) / 2 - 1])
    }
}
