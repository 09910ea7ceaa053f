// Active labelling: which unlabelled rows to label next.
//
// Letters: N rows, D feature dimensions, C candidate rows, L labelled rows, B the budget,
// K clusters. Features are unit-norm rows, so squared distance = 2 − 2·dot.
import Foundation
import XRTensor
import XRKernels

/// How the next rows to label are chosen.
public enum SelectionStrategy: String, CaseIterable, Sendable, Codable {
    /// A seeded random draw: the baseline every other strategy must beat.
    case random
    /// Highest entropy of the current probe's class probabilities (mean over tasks, each
    /// divided by ln(classes) so every task weighs the same).
    case uncertainty
    /// Greedy core-set (Sener & Savarese 2018): each pick is the row farthest from every
    /// labelled or already picked row.
    case kcenter
    /// TypiClust (Hacohen et al. 2022): k-means into L + B clusters; from the largest clusters
    /// without labels, the most typical row (inverse mean distance to its 20 nearest neighbours).
    case typiclust
    /// ProbCover (Yehuda et al. 2022): greedy maximum coverage of δ-balls, δ the largest radius
    /// at which 95% of balls stay inside one k-means cluster.
    case probcover
    /// Class-balanced by the current probe: each pick goes to the task × class with the fewest
    /// labels so far (labelled, plus picks by their predicted class), taking its most confident row.
    case balanced

    /// Strategies that need the current probe's probabilities (and so at least one label of every class).
    public var needsProbe: Bool { self == .uncertainty || self == .balanced }
}

/// One chosen row, with why.
public struct Selection: Sendable, Equatable, Codable {
    public var row: Int
    public var score: Double
    public var reason: String
    public init(row: Int, score: Double, reason: String) { self.row = row; self.score = score; self.reason = reason }
}

/// What a strategy sees.
public struct SelectionPool: Sendable {
    /// (N, D) unit-norm rows (`Probe.normalized`); candidates and labelled rows index it.
    public var features: [Float]
    public var dim: Int
    /// Rows that may be chosen, and rows already labelled.
    public var candidates: [Int]
    public var labelled: [Int]
    /// Patient per row (N entries); no batch holds two rows of one patient. Nil: rows are patients.
    public var patient: [Int]?
    /// `uncertainty` / `balanced`: per task, per candidate (in `candidates` order), the current
    /// probe's class probabilities; and per task the labelled count of each class.
    public var probabilities: [[[Double]]] = []
    public var labelledCounts: [[Int]] = []
    /// Task and class names for the reasons.
    public var taskNames: [String] = []
    public var classNames: [[String]] = []

    public init(features: [Float], dim: Int, candidates: [Int], labelled: [Int], patient: [Int]? = nil) {
        self.features = features; self.dim = dim; self.candidates = candidates; self.labelled = labelled; self.patient = patient
    }
}

public enum ActiveSelection {
    /// Choose up to `budget` candidates with `strategy` (fewer when fewer patients remain).
    /// Deterministic for `seed`. `uncertainty` / `balanced` need `pool.probabilities`.
    public static func select(_ pool: SelectionPool, strategy: SelectionStrategy, budget: Int, seed: UInt64) -> [Selection] {
        guard budget > 0, !pool.candidates.isEmpty else { return [] }
        var rng = XRRandom(seed: seed, stream: [0x5E1EC7, UInt64(SelectionStrategy.allCases.firstIndex(of: strategy) ?? 0)])
        switch strategy {
        case .random:
            var order = pool.candidates
            rng.shuffle(&order)
            return ranked(order.map { ($0, 0.0) }, pool: pool, budget: budget) { _, rank in "random draw \(rank + 1)" }
        case .uncertainty: return uncertainty(pool, budget: budget)
        case .balanced: return balanced(pool, budget: budget)
        case .kcenter: return kcenter(pool, budget: budget, rng: &rng)
        case .typiclust: return typiclust(pool, budget: budget, rng: &rng)
        case .probcover: return probcover(pool, budget: budget, rng: &rng)
        }
    }

    /// Rows in the given order, one per patient, until the budget.
    static func ranked(
        _ order: [(row: Int, score: Double)], pool: SelectionPool, budget: Int,
        reason: (Double, Int) -> String
    ) -> [Selection] {
        var used = Set<Int>(), out: [Selection] = []
        for (row, score) in order where out.count < budget {
            guard used.insert(pool.patient?[row] ?? -1 - row).inserted else { continue }
            out.append(Selection(row: row, score: score, reason: reason(score, out.count)))
        }
        return out
    }

    static func uncertainty(_ pool: SelectionPool, budget: Int) -> [Selection] {
        let tasks = pool.probabilities.count
        guard tasks > 0 else { return [] }
        var scored: [(row: Int, score: Double)] = []
        for (j, row) in pool.candidates.enumerated() {
            var h = 0.0
            for t in 0..<tasks {
                let p = pool.probabilities[t][j]
                var e = 0.0
                for q in p where q > 0 { e -= q * log(q) }
                h += p.count > 1 ? e / log(Double(p.count)) : 0
            }
            scored.append((row, h / Double(tasks)))
        }
        scored.sort { $0.score != $1.score ? $0.score > $1.score : $0.row < $1.row }
        let over = tasks == 1 ? "" : " (mean over \(tasks) tasks)"
        return ranked(scored, pool: pool, budget: budget) { s, _ in "normalised entropy \(String(format: "%.3f", s)) of the probe's prediction\(over)" }
    }

    static func balanced(_ pool: SelectionPool, budget: Int) -> [Selection] {
        let tasks = pool.probabilities.count
        guard tasks > 0 else { return [] }
        var counts = pool.labelledCounts
        var taken = Set<Int>(), used = Set<Int>(), out: [Selection] = []
        // Candidates by predicted class, most confident first, per task × class.
        var lists: [[[Int]]] = (0..<tasks).map { t in Array(repeating: [], count: counts[t].count) }
        for t in 0..<tasks {
            for j in pool.candidates.indices {
                let p = pool.probabilities[t][j]
                let k = p.indices.max { p[$0] < p[$1] } ?? 0
                lists[t][k].append(j)
            }
            for k in lists[t].indices {
                lists[t][k].sort {
                    pool.probabilities[t][$0][k] != pool.probabilities[t][$1][k] ? pool.probabilities[t][$0][k] > pool.probabilities[t][$1][k] : $0 < $1
                }
            }
        }
        var cursor: [[Int]] = lists.map { $0.map { _ in 0 } }
        while out.count < budget {
            // The task × class with the fewest labels that still has candidates.
            var best: (t: Int, k: Int)? = nil, fewest = Int.max
            for t in 0..<tasks {
                for k in counts[t].indices {
                    while cursor[t][k] < lists[t][k].count,
                        taken.contains(lists[t][k][cursor[t][k]])
                            || used.contains(pool.patient?[pool.candidates[lists[t][k][cursor[t][k]]]] ?? -1 - pool.candidates[lists[t][k][cursor[t][k]]])
                    {
                        cursor[t][k] += 1
                    }
                    guard cursor[t][k] < lists[t][k].count else { continue }
                    if counts[t][k] < fewest { best = (t, k); fewest = counts[t][k] }
                }
            }
            guard let (t, k) = best else { break }
            let j = lists[t][k][cursor[t][k]]
            let row = pool.candidates[j]
            taken.insert(j)
            used.insert(pool.patient?[row] ?? -1 - row)
            let name = pool.taskNames.indices.contains(t) ? pool.taskNames[t] : "task \(t)"
            let cls = pool.classNames.indices.contains(t) && pool.classNames[t].indices.contains(k) ? pool.classNames[t][k] : "class \(k)"
            let p = pool.probabilities[t][j][k]
            out.append(
                Selection(
                    row: row, score: p,
                    reason: "predicted \(name) = \(cls) (p \(String(format: "%.3f", p))); that class had the fewest labels (\(counts[t][k]))"))
            for u in 0..<tasks {
                let q = pool.probabilities[u][j]
                counts[u][q.indices.max { q[$0] < q[$1] } ?? 0] += 1
            }
        }
        return out
    }
}
