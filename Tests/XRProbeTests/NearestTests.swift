import Foundation
import TestSupport
import XCTest
import XRProbe
import XRTensor

/// Exact top-k search against a full sort, with ties and more than one block of queries.
final class NearestTests: XCTestCase {
    func testTopKMatchesAFullSortWithTies() {
        var rng = XRRandom(seed: 4)
        let d = 3, g = 50, q = 70
        // Small whole numbers taken as they are (`unitRows`): every dot product is exact, so the
        // many ties are real ties (duplicated gallery rows among them), whatever order BLAS sums in.
        var gallery = (0..<(g * d)).map { _ in Float(rng.nextInt(below: 5) - 2) }
        for j in 0..<d { gallery[10 * d + j] = gallery[3 * d + j]; gallery[40 * d + j] = gallery[3 * d + j] }
        let queries = (0..<(q * d)).map { _ in Float(rng.nextInt(below: 5) - 2) }
        for k in [1, 7, 50, 80] {
            let (idx, sim) = Retrieval.nearest(queries: queries, gallery: gallery, dim: d, k: k, unitRows: true)
            let kk = min(k, g)
            XCTAssertEqual(idx.count, q * kk)
            for i in 0..<q {
                let s = (0..<g).map { j in (0..<d).reduce(Float(0)) { $0 + queries[i * d + $1] * gallery[j * d + $1] } }
                let want = (0..<g).sorted { s[$0] != s[$1] ? s[$0] > s[$1] : $0 < $1 }.prefix(kk)
                XCTAssertEqual(Array(idx[(i * kk)..<((i + 1) * kk)]), Array(want), "query \(i), k \(k)")
                XCTAssertEqual(Array(sim[(i * kk)..<((i + 1) * kk)]), want.map { s[$0] })
            }
        }
        // Without `unitRows` the rows are normalised first (cosine similarity).
        let gn = Probe.normalized(gallery, d: d), qn = Probe.normalized(queries, d: d)
        let cosine = Retrieval.nearest(queries: queries, gallery: gallery, dim: d, k: 5)
        let unit = Retrieval.nearest(queries: qn, gallery: gn, dim: d, k: 5, unitRows: true)
        XCTAssertEqual(cosine.indices, unit.indices)
        XCTAssertEqual(cosine.similarities, unit.similarities)
        XCTAssertTrue(cosine.similarities.allSatisfy { $0 <= 1.0001 })
        XCTAssertTrue(Retrieval.nearest(queries: queries, gallery: gallery, dim: d, k: 0).indices.isEmpty)
    }
}
