// ProbCover: greedy maximum coverage of δ-balls in feature space.
import Foundation
import XRTensor

extension ActiveSelection {
    /// The share of δ-balls that must stay inside one k-means cluster (the paper's purity α).
    static let coverPurity = 0.95

    static func probcover(_ pool: SelectionPool, budget: Int, rng: inout XRRandom) -> [Selection] {
        // The rows the graph is built on: every candidate and labelled row, or a seeded sample.
        let isCandidate = Set(pool.candidates), labelledSet = Set(pool.labelled)
        var rows = pool.candidates
        for r in pool.labelled where !isCandidate.contains(r) { rows.append(r) }
        let sampled = rows.count > maxCoverRows
        if sampled { rng.shuffle(&rows); rows = Array(rows.prefix(maxCoverRows)) }
        let s = rows.count
        guard s > 0 else { return [] }
        // δ: the largest radius at which `coverPurity` of the balls hold one cluster only, i.e. the
        // (1 − α) quantile over rows of the distance to the nearest row of another cluster.
        let classes = max(2, pool.classNames.map(\.count).max() ?? 2)
        let assign = kmeans(pool, rows: rows, clusters: classes, rng: &rng)
        var other = [Float](repeating: .infinity, count: s)
        distanceBlocks(pool, rows, rows) { i0, j0, ra, rb, dist in
            for i in 0..<ra { for j in 0..<rb where assign[i0 + i] != assign[j0 + j] && dist[i * rb + j] < other[i0 + i] { other[i0 + i] = dist[i * rb + j] } }
        }
        let finite = other.filter(\.isFinite).sorted()
        var delta2 = finite.isEmpty ? Float(4) : finite[min(finite.count - 1, Int(Double(finite.count) * (1 - coverPurity)))]
        // The δ-ball graph (symmetric, each row its own neighbour), δ shrunk while it is too dense.
        var adjacency: [[Int32]] = []
        for _ in 0..<4 {
            var adj = [[Int32]](repeating: [], count: s), edges = 0
            let cap = delta2
            distanceBlocks(pool, rows, rows) { i0, j0, ra, rb, dist in
                guard edges <= maxCoverEdges else { return }
                for i in 0..<ra { for j in 0..<rb where dist[i * rb + j] <= cap || i0 + i == j0 + j { adj[i0 + i].append(Int32(j0 + j)); edges += 1 } }
            }
            if edges <= maxCoverEdges { adjacency = adj; break }
            delta2 /= 2
        }
        if adjacency.isEmpty { adjacency = (0..<s).map { [Int32($0)] } }
        // Rows already covered: within δ of a labelled row.
        var covered = [Bool](repeating: false, count: s)
        for (i, r) in rows.enumerated() where labelledSet.contains(r) { for j in adjacency[i] { covered[Int(j)] = true } }
        let inGraph = Set(rows)
        let outside = pool.labelled.filter { !inGraph.contains($0) }
        if !outside.isEmpty {
            let cap = delta2
            distanceBlocks(pool, rows, outside) { i0, _, ra, rb, dist in
                for i in 0..<ra where !covered[i0 + i] { for j in 0..<rb where dist[i * rb + j] <= cap { covered[i0 + i] = true; break } }
            }
        }
        var gain = adjacency.map { $0.filter { !covered[Int($0)] }.count }
        var used = Set<Int>(), out: [Selection] = []
        let delta = Double(delta2.squareRoot())
        let scope = sampled ? "of \(s) sampled rows" : "of \(s) rows"
        while out.count < budget {
            var pick = -1
            for i in 0..<s where isCandidate.contains(rows[i]) && !used.contains(patientKey(pool, rows[i])) && (pick < 0 || gain[i] > gain[pick]) { pick = i }
            guard pick >= 0 else { break }
            if gain[pick] == 0 {
                // Everything is covered: the rest at random, as the method prescribes.
                var rest = (0..<s).filter { isCandidate.contains(rows[$0]) && !used.contains(patientKey(pool, rows[$0])) }
                rng.shuffle(&rest)
                for i in rest where out.count < budget && used.insert(patientKey(pool, rows[i])).inserted {
                    out.append(
                        Selection(
                            row: rows[i], score: 0, reason: "every row is within δ = \(String(format: "%.4f", delta)) of a labelled or chosen row; random"))
                }
                break
            }
            out.append(
                Selection(
                    row: rows[pick], score: Double(gain[pick]),
                    reason: "its δ-ball (δ = \(String(format: "%.4f", delta))) covers \(gain[pick]) uncovered rows \(scope)"))
            used.insert(patientKey(pool, rows[pick]))
            for j in adjacency[pick] where !covered[Int(j)] {
                covered[Int(j)] = true
                for q in adjacency[Int(j)] { gain[Int(q)] -= 1 }
            }
        }
        return out
    }
}
