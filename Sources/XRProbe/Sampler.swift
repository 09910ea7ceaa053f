// Few-shot sampling: k labelled examples per class, deterministic per seed, patient-grouped.
import Foundation
import XRTensor

/// Not enough eligible examples of a class for the requested shots.
public struct InsufficientShots: Error, Sendable, Equatable, CustomStringConvertible {
    public var classIndex: Int
    public var available: Int
    public var requested: Int
    public var description: String { "class \(classIndex) has \(available) eligible examples, \(requested) requested" }
}

public enum FewShotSampler {
    /// Draw `k` training rows per class from `pool`.
    ///
    /// - Rows whose patient also has a row in `test` are never drawn (no patient on both sides).
    /// - Each patient contributes at most one row per class, so k shots are k patients.
    /// - Order: the pool is shuffled by `XRRandom(seed:stream:)`, then rows are taken in that
    ///   order, so the same (seed, stream) always gives the same shots.
    /// - Parameters:
    ///   - labels: class per row (0..<classes), or −1 for rows without a label for this task.
    ///   - patients: patient id per row, or nil when rows are independent.
    /// - Returns: row indices grouped by class (class 0's shots first), in draw order.
    public static func sample(
        labels: [Int], classes: Int, pool: [Int], test: [Int], patients: [String]?,
        k: Int, seed: UInt64, stream: [UInt64]
    ) -> Result<[Int], InsufficientShots> {
        let testPatients = Set(patients.map { p in test.map { p[$0] } } ?? [])
        var order = pool.filter { labels[$0] >= 0 }
        if let patients { order = order.filter { !testPatients.contains(patients[$0]) } }
        var rng = XRRandom(seed: seed, stream: stream)
        rng.shuffle(&order)
        var chosen = [[Int]](repeating: [], count: classes)
        var used = [Set<String>](repeating: [], count: classes)
        var available = [Int](repeating: 0, count: classes)
        for i in order {
            let c = labels[i]
            if let patients {
                if used[c].contains(patients[i]) { continue }
                used[c].insert(patients[i])
            }
            available[c] += 1
            if chosen[c].count < k { chosen[c].append(i) }
        }
        for c in 0..<classes where chosen[c].count < k {
            return .failure(InsufficientShots(classIndex: c, available: available[c], requested: k))
        }
        return .success(chosen.flatMap { $0 })
    }
}
