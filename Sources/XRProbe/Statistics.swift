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
        let table: [Double] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                               2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                               2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
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
    public static func interval(rows n: Int, groups: [String]?, resamples: Int, seed: UInt64,
                                metric: ([Int]) -> Double?) -> Interval? {
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
        return Interval(low: percentile(values, 2.5), high: percentile(values, 97.5), skipped: skipped)
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

    /// - Parameters:
    ///   - group: group name per test row (nil = not in any group, e.g. age missing).
    ///   - metric: metric on a subset of test rows (indices), nil when undefined.
    public static func analyse(attribute: String, group: [String?], patients: [String]?, resamples: Int, seed: UInt64,
                               metric: ([Int]) -> Double?) -> SubgroupResult {
        var members: [String: [Int]] = [:]
        for (i, g) in group.enumerated() { if let g { members[g, default: []].append(i) } }
        var values: [String: Double] = [:]
        for (g, idx) in members { if let v = metric(idx) { values[g] = v } }
        // Ties broken by group name: dictionary order changes from process to process, and a
        // resumed run must reproduce the same highest / lowest group.
        let sorted = values.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        guard let hi = sorted.first, let lo = sorted.last, sorted.count >= 2 else {
            return SubgroupResult(attribute: attribute, values: values, counts: members.mapValues(\.count),
                                  gap: nil, highest: nil, lowest: nil, gapInterval: nil, flagged: false)
        }
        let interval = Bootstrap.interval(rows: group.count, groups: patients, resamples: resamples, seed: seed) { idx in
            var a: [Int] = [], b: [Int] = []
            for i in idx { if group[i] == hi.key { a.append(i) } else if group[i] == lo.key { b.append(i) } }
            guard let va = metric(a), let vb = metric(b) else { return nil }
            return va - vb
        }
        let flagged = interval.map { $0.low > 0 || $0.high < 0 } ?? false
        return SubgroupResult(attribute: attribute, values: values, counts: members.mapValues(\.count),
                              gap: hi.value - lo.value, highest: hi.key, lowest: lo.key, gapInterval: interval, flagged: flagged)
    }
}
