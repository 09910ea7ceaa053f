// L2-regularised logistic regression, the few-shot linear probe. n samples, d features,
// K classes, m = min(n, d) working dimensions.
import Foundation
import XRKernels

/// A fitted logistic-regression probe. Binary models hold one weight row (positive class);
/// multinomial models hold one row per class.
public struct LogisticModel: Sendable, Codable, Equatable {
    public var classes: Int
    /// (K', d) with K' = 1 for binary, K otherwise.
    public var weights: [Double]
    /// (K')
    public var bias: [Double]
    public var dim: Int

    public init(classes: Int, weights: [Double], bias: [Double], dim: Int) {
        self.classes = classes
        self.weights = weights
        self.bias = bias
        self.dim = dim
    }

    /// Class probabilities (n, K) for features x (n, d) row-major.
    public func probabilities(_ x: [Double], n: Int) -> [[Double]] {
        let rows = bias.count
        var z = [Double](repeating: 0, count: n * rows)
        BLAS.dgemm(&z, x, weights, transB: true, m: n, n: rows, k: dim)
        return (0..<n).map { i in
            if classes == 2 && rows == 1 {
                let p = sigmoid(z[i] + bias[0])
                return [1 - p, p]
            }
            return softmax((0..<rows).map { z[i * rows + $0] + bias[$0] })
        }
    }
}

@inline(__always) func sigmoid(_ z: Double) -> Double { z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z)) }
/// log(1 + e^z), stable.
@inline(__always) func softplus(_ z: Double) -> Double { max(z, 0) + log1p(exp(-abs(z))) }
func softmax(_ z: [Double]) -> [Double] {
    let m = z.max() ?? 0
    let e = z.map { exp($0 - m) }
    let s = e.reduce(0, +)
    return e.map { $0 / s }
}

/// Fits `C · Σ_i loss_i + ½ ‖W‖²` with the intercept unpenalised — scikit-learn's
/// `LogisticRegression(penalty="l2", C=C)` objective (binary, or multinomial over all K
/// weight rows) — by damped Newton iterations in double precision to a gradient of ~1e-10,
/// tighter than sklearn's lbfgs default.
///
/// When n < d (the few-shot case) the optimum lies in the span of the training rows, so the
/// problem is solved exactly in that n-dimensional span (from the eigen-decomposition of the
/// Gram matrix X Xᵀ) and mapped back; each Newton step then costs O(n³) instead of O(d³).
public enum LogisticRegression {
    /// Training rows in working coordinates: the span of the rows when n < d, else the rows.
    /// Independent of C, so one preparation serves a whole C grid.
    public struct Prepared: Sendable {
        let x: [Double] // (n, d) original rows
        let xt: [Double] // (n, m) working coordinates
        let back: [Double]? // (n, m): sample weights α = back · w̃
        let n: Int, d: Int, m: Int
    }

    public static func prepare(_ x: [Double], n: Int, d: Int) -> Prepared {
        precondition(x.count == n * d)
        if n < d {
            var gram = [Double](repeating: 0, count: n * n)
            BLAS.dgemm(&gram, x, x, transB: true, m: n, n: n, k: d)
            if let (vals, vecs) = LAPACK.symmetricEigen(gram, n: n) {
                let top = vals.last ?? 0
                let keep = (0..<n).filter { vals[$0] > max(top, 1e-300) * 1e-12 }
                let m = keep.count
                var xt = [Double](repeating: 0, count: n * m), b = [Double](repeating: 0, count: n * m)
                for (j, e) in keep.enumerated() {
                    let s = vals[e].squareRoot()
                    for i in 0..<n {
                        let u = vecs[e * n + i]
                        xt[i * m + j] = u * s
                        b[i * m + j] = u / s
                    }
                }
                return Prepared(x: x, xt: xt, back: b, n: n, d: d, m: m)
            }
        }
        return Prepared(x: x, xt: x, back: nil, n: n, d: d, m: d)
    }

    public static func fit(
        _ x: [Double], n: Int, d: Int, labels: [Int], classes: Int, C: Double,
        maxIterations: Int = 100
    ) -> LogisticModel {
        fit(prepare(x, n: n, d: d), labels: labels, classes: classes, C: C, maxIterations: maxIterations).model
    }

    /// Fit on prepared rows; `start` (working-coordinate weights and bias from a previous fit,
    /// e.g. the neighbouring C) warm-starts Newton.
    public static func fit(
        _ p: Prepared, labels: [Int], classes: Int, C: Double, maxIterations: Int = 100,
        start: ([Double], [Double])? = nil
    ) -> (model: LogisticModel, state: ([Double], [Double])) {
        precondition(labels.count == p.n && classes >= 2 && C > 0)
        let rows = classes == 2 ? 1 : classes
        let (w, b) = newton(p.xt, n: p.n, m: p.m, labels: labels, rows: rows, C: C, maxIterations: maxIterations, start: start)
        // Map back to d-dimensional weights: W = (back · w̃ᵀ)ᵀ X.
        var weights = w
        if let back = p.back {
            var alpha = [Double](repeating: 0, count: rows * p.n) // (K', n)
            BLAS.dgemm(&alpha, w, back, transB: true, m: rows, n: p.n, k: p.m)
            weights = [Double](repeating: 0, count: rows * p.d)
            BLAS.dgemm(&weights, alpha, p.x, m: rows, n: p.d, k: p.n)
        }
        return (LogisticModel(classes: classes, weights: weights, bias: b, dim: p.d), (w, b))
    }

    /// Objective value for weights w (K', m) and bias b.
    static func objective(_ z: [Double], labels: [Int], w: [Double], rows: Int, n: Int, C: Double) -> Double {
        var loss = 0.0
        for i in 0..<n {
            if rows == 1 {
                let zi = z[i]
                loss += softplus(zi) - (labels[i] == 1 ? zi : 0)
            } else {
                let r = Array(z[(i * rows)..<((i + 1) * rows)])
                let mx = r.max() ?? 0
                loss += mx + log(r.reduce(0) { $0 + exp($1 - mx) }) - r[labels[i]]
            }
        }
        return C * loss + 0.5 * w.reduce(0) { $0 + $1 * $1 }
    }

    static func scores(_ x: [Double], w: [Double], b: [Double], n: Int, m: Int, rows: Int) -> [Double] {
        var z = [Double](repeating: 0, count: n * rows)
        BLAS.dgemm(&z, x, w, transB: true, m: n, n: rows, k: m)
        for i in 0..<n { for k in 0..<rows { z[i * rows + k] += b[k] } }
        return z
    }

    static func newton(
        _ x: [Double], n: Int, m: Int, labels: [Int], rows: Int, C: Double,
        maxIterations: Int, start: ([Double], [Double])? = nil
    ) -> ([Double], [Double]) {
        var w = [Double](repeating: 0, count: rows * m), b = [Double](repeating: 0, count: rows)
        if let start, start.0.count == w.count, start.1.count == b.count { w = start.0; b = start.1 }
        let P = rows * (m + 1) // parameters: per row, m weights then the bias
        var z = scores(x, w: w, b: b, n: n, m: m, rows: rows)
        var f = objective(z, labels: labels, w: w, rows: rows, n: n, C: C)
        for _ in 0..<maxIterations {
            // Gradient and Hessian.
            var grad = [Double](repeating: 0, count: P)
            var hess = [Double](repeating: 0, count: P * P)
            var gsum = [Double](repeating: 0, count: rows * n) // C · (p − y)
            var prob = [Double](repeating: 0, count: rows * n)
            for i in 0..<n {
                if rows == 1 {
                    let p = sigmoid(z[i])
                    prob[i] = p
                    gsum[i] = C * (p - (labels[i] == 1 ? 1 : 0))
                } else {
                    let p = softmax(Array(z[(i * rows)..<((i + 1) * rows)]))
                    for k in 0..<rows {
                        prob[k * n + i] = p[k]
                        gsum[k * n + i] = C * (p[k] - (labels[i] == k ? 1 : 0))
                    }
                }
            }
            for k in 0..<rows {
                let o = k * (m + 1)
                for j in 0..<m { grad[o + j] = w[k * m + j] }
                for i in 0..<n {
                    let g = gsum[k * n + i]
                    if g == 0 { continue }
                    for j in 0..<m { grad[o + j] += g * x[i * m + j] }
                    grad[o + m] += g
                }
            }
            let gmax = grad.reduce(0) { max($0, abs($1)) }
            if gmax < 1e-10 * max(1, C * Double(n)) { break }
            // Hessian blocks: C Σ_i s_kl(i) [x_i; 1][x_i; 1]ᵀ with s_kl = p_k(δ_kl − p_l) (binary: p(1 − p)).
            var xa = [Double](repeating: 0, count: n * (m + 1)) // rows [x_i, 1]
            for i in 0..<n { for j in 0..<m { xa[i * (m + 1) + j] = x[i * m + j] }; xa[i * (m + 1) + m] = 1 }
            for k in 0..<rows {
                for l in k..<rows {
                    var scaled = xa
                    for i in 0..<n {
                        let s: Double
                        if rows == 1 { s = prob[i] * (1 - prob[i]) } else { s = prob[k * n + i] * ((k == l ? 1 : 0) - prob[l * n + i]) }
                        for j in 0...m { scaled[i * (m + 1) + j] *= C * s }
                    }
                    var block = [Double](repeating: 0, count: (m + 1) * (m + 1))
                    BLAS.dgemm(&block, xa, transA: true, scaled, m: m + 1, n: m + 1, k: n)
                    let m1 = m + 1, rowK = k * m1, rowL = l * m1
                    for r in 0..<m1 {
                        for c in 0..<m1 {
                            let v: Double = block[r * m1 + c]
                            hess[(rowK + r) * P + rowL + c] = v
                            hess[(rowL + c) * P + rowK + r] = v
                        }
                    }
                }
                let base = k * (m + 1)
                for j in 0..<m { hess[(base + j) * P + base + j] += 1 }
                // The intercepts are unpenalised; for softmax one direction is flat. A tiny
                // ridge keeps the system definite without moving the optimum measurably.
                hess[(base + m) * P + base + m] += 1e-10
            }
            var step = LAPACK.choleskySolve(hess, grad, n: P)
            if step == nil {
                for i in 0..<P { hess[i * P + i] += 1e-6 }
                step = LAPACK.choleskySolve(hess, grad, n: P)
            }
            guard let dir = step else { break }
            // Backtracking line search on the objective.
            var t = 1.0, improved = false
            for _ in 0..<30 {
                var w2 = w, b2 = b
                for k in 0..<rows {
                    for j in 0..<m { w2[k * m + j] -= t * dir[k * (m + 1) + j] }
                    b2[k] -= t * dir[k * (m + 1) + m]
                }
                let z2 = scores(x, w: w2, b: b2, n: n, m: m, rows: rows)
                let f2 = objective(z2, labels: labels, w: w2, rows: rows, n: n, C: C)
                if f2 <= f {
                    w = w2; b = b2; z = z2
                    improved = f2 < f - 1e-15 * abs(f)
                    f = f2
                    break
                }
                t *= 0.5
            }
            if !improved { break }
        }
        return (w, b)
    }
}
