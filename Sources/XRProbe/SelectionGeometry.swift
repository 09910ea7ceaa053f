// The feature-space strategies of active labelling: k-center, TypiClust, ProbCover, and the
// k-means they share. Memory stays O(N·D + blocks): distances are computed in blocks of rows
// through sgemm and never held as an N × N matrix.
import Foundation
import XRTensor
import XRKernels

extension ActiveSelection {
    /// Rows per side of a distance block.
    static let block = 2048
    /// TypiClust's cluster count is L + B, at most this; neighbours for typicality, and the
    /// members of a cluster it is computed on (a seeded sample of larger clusters).
    static let maxClusters = 500, typicalityNeighbours = 20, typicalitySample = 2000
    /// ProbCover builds its δ-ball graph on a seeded sample of this many rows of a larger pool,
    /// and gives up shrinking δ when the graph would pass `maxCoverEdges`.
    static let maxCoverRows = 10_000, maxCoverEdges = 25_000_000

    /// Rows `rows` of the (N, D) features, contiguous.
    static func gather(_ x: UnsafeBufferPointer<Float>, _ rows: ArraySlice<Int>, _ d: Int) -> [Float] {
        var out = [Float](repeating: 0, count: rows.count * d)
        out.withUnsafeMutableBufferPointer { o in
            for (i, r) in rows.enumerated() { for j in 0..<d { o[i * d + j] = x[r * d + j] } }
        }
        return out
    }

    /// Squared distances between every row of `a` and every row of `b` (unit-norm rows:
    /// 2 − 2·dot), block by block: `body(i0, j0, rowsA, rowsB, block)` with block (rowsA, rowsB).
    static func distanceBlocks(
        _ pool: SelectionPool, _ a: [Int], _ b: [Int],
        _ body: (Int, Int, Int, Int, UnsafeBufferPointer<Float>) -> Void
    ) {
        let d = pool.dim
        pool.features.withUnsafeBufferPointer { x in
            var i0 = 0
            while i0 < a.count {
                let ra = min(block, a.count - i0)
                let ga = gather(x, a[i0..<i0 + ra], d)
                var j0 = 0
                while j0 < b.count {
                    let rb = min(block, b.count - j0)
                    let gb = gather(x, b[j0..<j0 + rb], d)
                    var dots = [Float](repeating: 0, count: ra * rb)
                    dots.withUnsafeMutableBufferPointer { c in
                        ga.withUnsafeBufferPointer { pa in
                            gb.withUnsafeBufferPointer { pb in
                                // Both base addresses exist: ra, rb ≥ 1 and d ≥ 1 (checked by the callers' pools).
                                if let c0 = c.baseAddress, let a0 = pa.baseAddress, let b0 = pb.baseAddress {
                                    BLAS.sgemm(c0, a0, b0, transB: true, m: ra, n: rb, k: d, alpha: -2)
                                }
                            }
                        }
                        for k in 0..<(ra * rb) { c[k] = max(c[k] + 2, 0) }
                    }
                    dots.withUnsafeBufferPointer { body(i0, j0, ra, rb, $0) }
                    j0 += rb
                }
                i0 += ra
            }
        }
    }

    /// Patient key of a row (rows without a patient are their own).
    static func patientKey(_ pool: SelectionPool, _ row: Int) -> Int { pool.patient?[row] ?? -1 - row }

    // MARK: k-center

    static func kcenter(_ pool: SelectionPool, budget: Int, rng: inout XRRandom) -> [Selection] {
        let c = pool.candidates, d = pool.dim, n = pool.features.count / max(d, 1)
        guard d > 0 else { return [] }
        var minD = [Float](repeating: .infinity, count: c.count)
        if !pool.labelled.isEmpty {
            distanceBlocks(pool, c, pool.labelled) { i0, _, ra, rb, dist in
                for i in 0..<ra { for j in 0..<rb where dist[i * rb + j] < minD[i0 + i] { minD[i0 + i] = dist[i * rb + j] } }
            }
        }
        var byPatient: [Int: [Int]] = [:]
        for (j, r) in c.enumerated() { byPatient[patientKey(pool, r), default: []].append(j) }
        var out: [Selection] = []
        var dots = [Float](repeating: 0, count: n)
        while out.count < budget {
            var pick = -1
            if pool.labelled.isEmpty && out.isEmpty {
                pick = rng.nextInt(below: c.count)
            } else {
                for j in minD.indices where minD[j] >= 0 && (pick < 0 || minD[j] > minD[pick]) { pick = j }
            }
            guard pick >= 0, minD[pick] >= 0 else { break }
            let row = c[pick]
            out.append(
                out.isEmpty && pool.labelled.isEmpty
                    ? Selection(row: row, score: 0, reason: "first centre, drawn at random (nothing labelled yet)")
                    : Selection(
                        row: row, score: Double(minD[pick].squareRoot()),
                        reason: "distance \(String(format: "%.4f", minD[pick].squareRoot())) to the nearest labelled or chosen row: the farthest remaining"))
            for j in byPatient[patientKey(pool, row)] ?? [] { minD[j] = -1 }
            pool.features.withUnsafeBufferPointer { x in
                dots.withUnsafeMutableBufferPointer { y in
                    if let y0 = y.baseAddress, let x0 = x.baseAddress { BLAS.sgemv(y0, x0, x0 + row * d, m: n, n: d) }
                }
            }
            for j in minD.indices where minD[j] >= 0 { minD[j] = min(minD[j], max(2 - 2 * dots[c[j]], 0)) }
        }
        return out
    }

    // MARK: k-means

    /// Lloyd's k-means on `rows` (k-means++ seeding on a sample of at most 10,000 of them), up
    /// to `iterations` rounds or until no row moves. Returns the cluster of each row.
    static func kmeans(_ pool: SelectionPool, rows: [Int], clusters k: Int, iterations: Int = 25, rng: inout XRRandom) -> [Int] {
        let d = pool.dim, p = rows.count
        let k = min(k, p)
        guard k > 1 else { return [Int](repeating: 0, count: p) }
        // Seeding: D² sampling on a sample.
        var sample = Array(rows.indices)
        if p > 10_000 { rng.shuffle(&sample); sample = Array(sample.prefix(10_000)) }
        var centers = [Float](repeating: 0, count: k * d)
        pool.features.withUnsafeBufferPointer { x in
            var near = [Float](repeating: .infinity, count: sample.count)
            var chosen = sample[rng.nextInt(below: sample.count)]
            for c in 0..<k {
                for j in 0..<d { centers[c * d + j] = x[rows[chosen] * d + j] }
                guard c + 1 < k else { break }
                var total = 0.0
                for (i, s) in sample.enumerated() {
                    var dist: Float = 0
                    for j in 0..<d { let t = x[rows[s] * d + j] - centers[c * d + j]; dist += t * t }
                    near[i] = min(near[i], dist)
                    total += Double(near[i])
                }
                if total <= 0 { chosen = sample[rng.nextInt(below: sample.count)]; continue }
                var u = rng.nextDouble() * total
                chosen = sample.last ?? chosen
                for (i, s) in sample.enumerated() { u -= Double(near[i]); if u <= 0 { chosen = s; break } }
            }
        }
        var assign = [Int](repeating: -1, count: p)
        for _ in 0..<iterations {
            var norms = [Float](repeating: 0, count: k)
            for c in 0..<k { for j in 0..<d { norms[c] += centers[c * d + j] * centers[c * d + j] } }
            var moved = 0
            pool.features.withUnsafeBufferPointer { x in
                var i0 = 0
                while i0 < p {
                    let r = min(block, p - i0)
                    let g = gather(x, rows[i0..<i0 + r], d)
                    var dots = [Float](repeating: 0, count: r * k)
                    dots.withUnsafeMutableBufferPointer { c in
                        g.withUnsafeBufferPointer { a in
                            centers.withUnsafeBufferPointer { b in
                                if let c0 = c.baseAddress, let a0 = a.baseAddress, let b0 = b.baseAddress {
                                    BLAS.sgemm(c0, a0, b0, transB: true, m: r, n: k, k: d)
                                }
                            }
                        }
                    }
                    for i in 0..<r {
                        var best = 0, bestScore = Float.infinity
                        for c in 0..<k { let s = norms[c] - 2 * dots[i * k + c]; if s < bestScore { bestScore = s; best = c } }
                        if assign[i0 + i] != best { assign[i0 + i] = best; moved += 1 }
                    }
                    i0 += r
                }
                // New centres: means; an empty cluster takes a random row.
                var sums = [Double](repeating: 0, count: k * d), counts = [Int](repeating: 0, count: k)
                for (i, r) in rows.enumerated() {
                    counts[assign[i]] += 1
                    for j in 0..<d { sums[assign[i] * d + j] += Double(x[r * d + j]) }
                }
                for c in 0..<k {
                    if counts[c] == 0 {
                        let r = rows[rng.nextInt(below: p)]
                        for j in 0..<d { centers[c * d + j] = x[r * d + j] }
                    } else {
                        for j in 0..<d { centers[c * d + j] = Float(sums[c * d + j] / Double(counts[c])) }
                    }
                }
            }
            if moved == 0 { break }
        }
        return assign
    }

    // MARK: TypiClust

    static func typiclust(_ pool: SelectionPool, budget: Int, rng: inout XRRandom) -> [Selection] {
        let isCandidate = Set(pool.candidates)
        var rows = pool.candidates
        for r in pool.labelled where !isCandidate.contains(r) { rows.append(r) }
        let k = min(pool.labelled.count + budget, maxClusters, rows.count)
        let assign = kmeans(pool, rows: rows, clusters: k, rng: &rng)
        var members = [[Int]](repeating: [], count: max(k, 1))
        for (i, c) in assign.enumerated() { members[c].append(rows[i]) }
        let labelledSet = Set(pool.labelled)
        var taken = members.map { $0.filter { labelledSet.contains($0) }.count }
        var typicality: [Int: [(row: Int, score: Double)]] = [:]
        var usedPatients = Set<Int>(), chosen = Set<Int>(), out: [Selection] = []
        while out.count < budget {
            // Clusters with the fewest labels (and picks), then the largest; clusters under 5 rows last.
            let order = members.indices.filter { c in
                members[c].contains { isCandidate.contains($0) && !chosen.contains($0) && !usedPatients.contains(patientKey(pool, $0)) }
            }
            .sorted { a, b in
                let (sa, sb) = (members[a].count >= 5, members[b].count >= 5)
                if sa != sb { return sa }
                if taken[a] != taken[b] { return taken[a] < taken[b] }
                if members[a].count != members[b].count { return members[a].count > members[b].count }
                return a < b
            }
            guard let c = order.first else { break }
            if typicality[c] == nil { typicality[c] = typical(pool, members[c], rng: &rng) }
            guard
                let best = typicality[c]?.first(where: {
                    isCandidate.contains($0.row) && !chosen.contains($0.row) && !usedPatients.contains(patientKey(pool, $0.row))
                })
            else { break }
            chosen.insert(best.row)
            usedPatients.insert(patientKey(pool, best.row))
            out.append(
                Selection(
                    row: best.row, score: best.score,
                    reason:
                        "most typical row (typicality \(String(format: "%.3f", best.score))) of a cluster of \(members[c].count) rows with \(taken[c]) labelled or chosen"
                ))
            taken[c] += 1
        }
        return out
    }

    /// Typicality of a cluster's rows, most typical first: 1 / mean distance to the nearest
    /// `typicalityNeighbours` other rows (on a seeded sample of large clusters; rows outside the
    /// sample are not ranked).
    static func typical(_ pool: SelectionPool, _ rows: [Int], rng: inout XRRandom) -> [(row: Int, score: Double)] {
        var rs = rows
        if rs.count > typicalitySample { rng.shuffle(&rs); rs = Array(rs.prefix(typicalitySample)) }
        let m = rs.count
        guard m > 1 else { return rs.map { ($0, 0) } }
        let nn = min(typicalityNeighbours, m - 1)
        var near = [[Float]](repeating: [], count: m)
        distanceBlocks(pool, rs, rs) { i0, j0, ra, rb, dist in
            for i in 0..<ra { for j in 0..<rb where i0 + i != j0 + j { near[i0 + i].append(dist[i * rb + j].squareRoot()) } }
        }
        var out: [(row: Int, score: Double)] = []
        for i in 0..<m {
            let mean = near[i].sorted().prefix(nn).reduce(0, +) / Float(nn)
            out.append((rs[i], 1 / (Double(mean) + 1e-12)))
        }
        return out.sorted { $0.score != $1.score ? $0.score > $1.score : $0.row < $1.row }
    }
}
