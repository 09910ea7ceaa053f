// Exact nearest-neighbour retrieval on features, and its metrics.
//
// Letters: Q queries, G gallery rows, D feature dimensions, R relevant gallery rows of a query.
import Foundation
import XRTensor
import XRKernels

/// When a gallery row is relevant to a query, for multi-valued labels.
public enum RetrievalRelevance: String, Sendable, Codable, CaseIterable {
    /// Any label value in common.
    case any
    /// The same set of values.
    case all

    /// Whether label sets `a` and `b` match under this rule.
    public func matches<T: Hashable>(_ a: Set<T>, _ b: Set<T>) -> Bool {
        switch self {
        case .any: return !a.isDisjoint(with: b)
        case .all: return a == b
        }
    }
}

/// One query's ranking and metrics.
public struct RetrievalQuery: Sendable, Codable, Equatable {
    /// The first gallery rows of the ranking (as many as asked for).
    public var top: [Int]
    /// Relevant gallery rows (the query itself left out).
    public var relevant: Int
    /// mAP@R = (1/R) Σ_{i ≤ R} P(i)·rel(i) (Musgrave et al. 2020); 0 when R = 0.
    public var mapAtR: Double
    /// Relevant rows in the top k ÷ k, and ÷ R (0 when R = 0), per k.
    public var precision: [Int: Double]
    public var recall: [Int: Double]
    /// 1 / rank of the first relevant row; 0 when none is.
    public var reciprocalRank: Double
}

public enum Retrieval {
    /// Queries per block of similarities (a block holds this many × G floats).
    static let queryBlock = 64

    /// Rank every gallery row for every query by cosine similarity (descending; ties by gallery
    /// row order, so results do not depend on threads) and score the rankings.
    ///
    /// - Parameters:
    ///   - queries: (Q, D) and `gallery`: (G, D), row-major; normalised here.
    ///   - relevant: whether gallery row g is relevant to query q.
    ///   - exclude: per query, a gallery row left out of its ranking (the query itself when the
    ///     gallery holds every row), or nil.
    ///   - ks: the k of precision@k and recall@k.
    ///   - keep: how many top rows to return per query.
    /// Memory: the gallery once, plus `queryBlock` × G similarities — never Q × G.
    public static func evaluate(
        queries: [Float], gallery: [Float], dim d: Int, relevant: (Int, Int) -> Bool,
        exclude: [Int?]? = nil, ks: [Int], keep: Int = 10
    ) -> [RetrievalQuery] {
        guard d > 0 else { return [] }
        let g = gallery.count / d
        var out: [RetrievalQuery] = []
        out.reserveCapacity(queries.count / d)
        similarityBlocks(queries: Probe.normalized(queries, d: d), gallery: Probe.normalized(gallery, d: d), dim: d) { start, b, sims in
            for i in 0..<b {
                let row = start + i
                let skip = exclude?[row]
                var order = (0..<g).filter { $0 != skip }
                let base = i * g
                order.sort { sims[base + $0] != sims[base + $1] ? sims[base + $0] > sims[base + $1] : $0 < $1 }
                out.append(score(order.map { relevant(row, $0) }, top: Array(order.prefix(keep)), ks: ks))
            }
        }
        return out
    }

    /// The `k` most similar gallery rows of each query by cosine similarity, exact: (Q, min(k, G))
    /// gallery indices and their similarities, most similar first, ties to the lower gallery row.
    /// With `unitRows` the rows are taken as already L2-normalised (a gallery normalised once and
    /// searched many times); otherwise both are normalised here. Memory as `evaluate`.
    public static func nearest(
        queries: [Float], gallery: [Float], dim d: Int, k: Int, unitRows: Bool = false
    ) -> (indices: [Int], similarities: [Float]) {
        guard d > 0 else { return ([], []) }
        let g = gallery.count / d, kk = min(max(k, 0), g)
        if kk == 0 { return ([], []) }
        var indices: [Int] = [], similarities: [Float] = []
        indices.reserveCapacity(queries.count / d * kk)
        similarities.reserveCapacity(queries.count / d * kk)
        let qn = unitRows ? queries : Probe.normalized(queries, d: d), gn = unitRows ? gallery : Probe.normalized(gallery, d: d)
        similarityBlocks(queries: qn, gallery: gn, dim: d) { _, b, sims in
            var topI = [Int](repeating: 0, count: kk), topS = [Float](repeating: 0, count: kk)
            for i in 0..<b {
                // Insertion into a sorted list of the best kk so far; a later row enters only when
                // strictly more similar, so ties keep the lower row.
                var n = 0
                let base = i * g
                for j in 0..<g {
                    let s = sims[base + j]
                    if n == kk && !(s > topS[kk - 1]) { continue }
                    var p = min(n, kk - 1)
                    while p > 0 && s > topS[p - 1] {
                        topS[p] = topS[p - 1]; topI[p] = topI[p - 1]
                        p -= 1
                    }
                    topS[p] = s; topI[p] = j
                    n = min(n + 1, kk)
                }
                indices += topI
                similarities += topS
            }
        }
        return (indices, similarities)
    }

    /// Calls `body(start, b, sims)` for consecutive blocks of at most `queryBlock` queries with
    /// sims (b, G) = their cosine similarities to every gallery row (rows already normalised).
    static func similarityBlocks(queries qn: [Float], gallery gn: [Float], dim d: Int, _ body: (Int, Int, [Float]) -> Void) {
        let q = qn.count / d, g = gn.count / d
        var sims = [Float](repeating: 0, count: queryBlock * g)
        var start = 0
        while start < q {
            let b = min(queryBlock, q - start)
            sims.withUnsafeMutableBufferPointer { c in
                qn.withUnsafeBufferPointer { a in
                    gn.withUnsafeBufferPointer { gb in
                        if let c0 = c.baseAddress, let a0 = a.baseAddress, let b0 = gb.baseAddress, g > 0 {
                            BLAS.sgemm(c0, a0 + start * d, b0, transB: true, m: b, n: g, k: d)
                        }
                    }
                }
            }
            body(start, b, sims)
            start += b
        }
    }

    /// Metrics of one ranking given each ranked row's relevance.
    public static func score(_ rel: [Bool], top: [Int], ks: [Int]) -> RetrievalQuery {
        let r = rel.filter { $0 }.count
        var mapAtR = 0.0
        if r > 0 {
            var hits = 0
            for i in 0..<r where rel[i] { hits += 1; mapAtR += Double(hits) / Double(i + 1) }
            // Terms for i ≤ R whose row is not relevant are 0; `hits` counts relevant rows up to i.
            mapAtR /= Double(r)
        }
        var precision: [Int: Double] = [:], recall: [Int: Double] = [:]
        for k in ks where k > 0 {
            let h = rel.prefix(k).filter { $0 }.count
            precision[k] = Double(h) / Double(k)
            recall[k] = r > 0 ? Double(h) / Double(r) : 0
        }
        let first = rel.firstIndex(of: true)
        return RetrievalQuery(
            top: top, relevant: r, mapAtR: mapAtR, precision: precision, recall: recall,
            reciprocalRank: first.map { 1 / Double($0 + 1) } ?? 0)
    }
}
