import Foundation
import XCTest
import XRProbe
import XRTensor

/// The few-shot retrieval projection: Jacobi eigenpairs, the Ledoit–Wolf intensity and the
/// whitening identity T S T = s·ν·I, against dense double-precision computations.
final class RetrievalProjectionTests: XCTestCase {
    func testJacobiEigenpairsReconstructTheMatrix() {
        var rng = XRRandom(seed: 3)
        for n in [1, 2, 5, 13] {
            var b = (0..<(n * n)).map { _ in rng.nextGaussian() }.map(Double.init)
            var a = [Double](repeating: 0, count: n * n)
            for i in 0..<n { for j in 0..<n { a[i * n + j] = b[i * n + j] + b[j * n + i] } }
            b = a
            let (values, v) = SymmetricEigen.decompose(a, n: n)
            var worst = 0.0
            for i in 0..<n {
                for j in 0..<n {
                    let r = (0..<n).reduce(0.0) { $0 + v[i * n + $1] * values[$1] * v[j * n + $1] }
                    worst = max(worst, abs(r - b[i * n + j]))
                    let o = (0..<n).reduce(0.0) { $0 + v[$1 * n + i] * v[$1 * n + j] }
                    worst = max(worst, abs(o - (i == j ? 1 : 0)))
                }
            }
            XCTAssertLessThan(worst, 1e-10, "n = \(n)")
        }
    }

    /// Rows of a few classes in D = 7; the projection's matrix T (applied to basis vectors, the
    /// centring removed) must be symmetric and satisfy T S T = s·ν·I for the dense shrunk
    /// within-class covariance S, with s the Ledoit–Wolf formula evaluated on the dense D × D
    /// covariance.
    func testWhiteningMatchesDenseShrunkCovariance() {
        var rng = XRRandom(seed: 11)
        let d = 7, labels = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
        let n = labels.count
        let x = (0..<(n * d)).map { i in Float(rng.nextGaussian()) * Float(1 + i % d) + Float(labels[i / d]) }
        let w = WithinClassWhitening(fit: x, labels: labels, d: d)
        // Dense within-class covariance.
        var r = [Double](repeating: 0, count: n * d)
        for c in 0...2 {
            let rows = (0..<n).filter { labels[$0] == c }
            for j in 0..<d {
                let m = rows.reduce(0.0) { $0 + Double(x[$1 * d + j]) } / Double(rows.count)
                for i in rows { r[i * d + j] = Double(x[i * d + j]) - m }
            }
        }
        var sw = [Double](repeating: 0, count: d * d)
        for a in 0..<d { for b in 0..<d { sw[a * d + b] = (0..<n).reduce(0.0) { $0 + r[$1 * d + a] * r[$1 * d + b] } / Double(n) } }
        let nu = (0..<d).reduce(0.0) { $0 + sw[$1 * d + $1] } / Double(d)
        // Ledoit–Wolf as scikit-learn writes it (assume_centered), on the dense covariance.
        var beta = 0.0
        for i in 0..<n {
            for a in 0..<d { for b in 0..<d { beta += pow(r[i * d + a] * r[i * d + b], 2) } }
        }
        let frob = sw.reduce(0) { $0 + $1 * $1 }
        let delta = (frob - 2 * nu * nu * Double(d) + Double(d) * nu * nu) / Double(d)
        let b = min((beta / Double(n) - frob) / (Double(d) * Double(n)), delta)
        let s = b / delta
        XCTAssertEqual(w.shrinkage, s, accuracy: 1e-9)
        XCTAssertGreaterThan(s, 0)
        XCTAssertLessThan(s, 1)
        var shrunk = sw.map { $0 * (1 - s) }
        for a in 0..<d { shrunk[a * d + a] += s * nu }
        // T from the map of basis vectors (plus the mean, which the map subtracts).
        let basis = (0..<d).flatMap { i in (0..<d).map { j in Float(w.mean[j]) + (i == j ? 1 : 0) } }
        let t = w.apply(basis, d: d).map(Double.init) // row i = T e_i
        var worst = 0.0
        for a in 0..<d {
            for c in 0..<d {
                worst = max(worst, abs(t[a * d + c] - t[c * d + a]))
                var v = 0.0
                for p in 0..<d { for q in 0..<d { v += t[a * d + p] * shrunk[p * d + q] * t[q * d + c] } }
                worst = max(worst, abs(v - (a == c ? s * nu : 0)) / (s * nu))
            }
        }
        XCTAssertLessThan(worst, 1e-4)
        // A fixed shrinkage is taken as given; one row per class leaves only the centring.
        XCTAssertEqual(WithinClassWhitening(fit: x, labels: labels, d: d, shrinkage: 0.3).shrinkage, 0.3)
        let single = WithinClassWhitening(fit: Array(x.prefix(3 * d)), labels: [0, 1, 2], d: d)
        XCTAssertTrue(single.factors.isEmpty)
        // A given centre replaces the labelled rows' mean; the directions do not depend on it.
        let centred = WithinClassWhitening(fit: x, labels: labels, d: d, center: [Double](repeating: 0.5, count: d))
        XCTAssertEqual(centred.mean, [Double](repeating: 0.5, count: d))
        XCTAssertEqual(centred.factors, w.factors)
    }
}
