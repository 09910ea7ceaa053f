// A linear projection for few-shot retrieval, fitted on k labelled rows per class: the metric of
// Fisher's linear discriminant (within-class whitening) with Ledoit–Wolf shrinkage.
//
// Letters: N rows, D feature dimensions, n labelled rows, M kept within-class directions (M ≤ n).
import Foundation
import XRKernels

/// Within-class whitening fitted on labelled rows: z = S^(−1/2)(x − c), scaled by (s·ν)^(1/2), where
///
///   S = (1 − s)·S_w + s·ν·I,   S_w = (1/n) Σ_i (x_i − μ_c(i))(x_i − μ_c(i))ᵀ,   ν = tr(S_w) / D,
///
/// μ_c the class means of the labelled rows, c a centre (the mean of unlabelled pool rows, or of the
/// labelled rows) and s the Ledoit–Wolf shrinkage
/// intensity of the within-class residuals (Ledoit & Wolf 2004, the estimator scikit-learn's
/// `ledoit_wolf_shrinkage(assume_centered=True)` computes; LDA with `shrinkage='auto'` uses it).
/// Cosine similarity after this map is cosine in the Mahalanobis geometry linear discriminant
/// analysis classifies in: directions along which images of one class vary are shrunk, the rest
/// kept. Only the n × n Gram matrix of the residuals is decomposed, so fitting costs O(n²·D + n³)
/// and applying it O(N·M·D), for any D.
///
/// With one labelled row per class there are no residuals: the map is the centring alone. The
/// centre is best taken from many unlabelled rows (a site's whole training pool): the mean of a few
/// shots is a noisy vector, and subtracting it moves every cosine.
public struct WithinClassWhitening: Sendable, Equatable {
    /// (D) the centre subtracted first.
    public var mean: [Double]
    /// (M, D) unit eigenvectors of S_w with a non-zero eigenvalue.
    public var directions: [Double]
    /// (M) per direction, c_i = (s·ν / ((1 − s)·λ_i + s·ν))^(1/2) − 1 ∈ [−1, 0].
    public var factors: [Double]
    /// The shrinkage intensity s used.
    public var shrinkage: Double
    public var dim: Int

    /// A fitted map from its stored parts (a package's tensors): centre (D), directions (M, D),
    /// factors (M) and the shrinkage they were fitted with.
    public init(mean: [Double], directions: [Double], factors: [Double], shrinkage: Double, dim: Int) {
        precondition(mean.count == dim && directions.count == factors.count * dim, "WithinClassWhitening: parts do not match dimension \(dim)")
        self.mean = mean
        self.directions = directions
        self.factors = factors
        self.shrinkage = shrinkage
        self.dim = dim
    }

    /// Fit on `x` (n, D) row-major with a class per row; `shrinkage` in [0, 1], or nil for the
    /// Ledoit–Wolf estimate; `center` (D), or nil for the mean of `x`.
    public init(fit x: [Float], labels: [Int], d: Int, shrinkage fixed: Double? = nil, center: [Double]? = nil) {
        let n = labels.count
        precondition(x.count == n * d && d > 0, "x must be (n, d)")
        dim = d
        var mu = [Double](repeating: 0, count: d)
        var sums: [Int: [Double]] = [:], counts: [Int: Int] = [:]
        for i in 0..<n {
            counts[labels[i], default: 0] += 1
            var s = sums[labels[i]] ?? [Double](repeating: 0, count: d)
            for j in 0..<d {
                s[j] += Double(x[i * d + j])
                mu[j] += Double(x[i * d + j])
            }
            sums[labels[i]] = s
        }
        precondition(center.map { $0.count == d } ?? true, "center must have d values")
        mean = center ?? mu.map { $0 / Double(max(n, 1)) }
        // (n, D) residuals from the class means.
        var r = [Double](repeating: 0, count: n * d)
        for i in 0..<n {
            let c = Double(counts[labels[i]] ?? 1)
            let s = sums[labels[i]] ?? []
            for j in 0..<d { r[i * d + j] = Double(x[i * d + j]) - s[j] / c }
        }
        // (n, n) Gram matrix R Rᵀ / n; its eigenpairs give S_w's (λ, Rᵀu / (n λ)^(1/2)).
        var g = [Double](repeating: 0, count: n * n)
        if n > 0 { BLAS.dgemm(&g, r, r, transB: true, m: n, n: n, k: d) }
        for i in 0..<(n * n) { g[i] /= Double(n) }
        let nu = (0..<n).reduce(0.0) { $0 + g[$1 * n + $1] } / Double(d)
        var s = fixed ?? Self.ledoitWolf(gram: g, n: n, d: d)
        if nu <= 0 { s = fixed ?? 0 }
        shrinkage = s
        let (values, vectors) = SymmetricEigen.decompose(g, n: n)
        let top = values.max() ?? 0
        var dirs: [Double] = [], f: [Double] = []
        for (k, lambda) in values.enumerated() where lambda > 1e-10 * top && lambda > 0 {
            var v = [Double](repeating: 0, count: d)
            for i in 0..<n where vectors[i * n + k] != 0 {
                let u = vectors[i * n + k]
                for j in 0..<d { v[j] += r[i * d + j] * u }
            }
            let norm = (v.reduce(0) { $0 + $1 * $1 }).squareRoot()
            guard norm > 0 else { continue }
            dirs += v.map { $0 / norm }
            f.append((s * nu / ((1 - s) * lambda + s * nu)).squareRoot() - 1)
        }
        directions = dirs
        factors = f
    }

    /// The Ledoit–Wolf shrinkage intensity of zero-mean rows X (n, D), from their Gram matrix
    /// G = X Xᵀ / n: with μ = tr(G) / D, δ = (‖G‖²_F − D μ²) / D and
    /// β = min(δ, (Σ_i ‖x_i‖⁴ / n − ‖G‖²_F) / (D n)), s = β / δ (0 when β = 0).
    public static func ledoitWolf(gram g: [Double], n: Int, d: Int) -> Double {
        guard n > 0, d > 0 else { return 0 }
        let mu = (0..<n).reduce(0.0) { $0 + g[$1 * n + $1] } / Double(d)
        let frob = g.reduce(0) { $0 + $1 * $1 }
        // ‖x_i‖⁴ = (n · G_ii)².
        let fourth = (0..<n).reduce(0.0) { $0 + pow(Double(n) * g[$1 * n + $1], 2) }
        let delta = (frob - Double(d) * mu * mu) / Double(d)
        var beta = (fourth / Double(n) - frob) / (Double(d) * Double(n))
        beta = min(beta, delta)
        guard beta > 0, delta > 0 else { return 0 }
        return beta / delta
    }

    /// z for rows x (N, D) row-major.
    public func apply(_ x: [Float], d: Int) -> [Float] {
        precondition(d == dim, "features have \(d) dimensions, the projection \(dim)")
        let rows = x.count / max(d, 1), m = factors.count
        var z = x
        for i in 0..<rows { for j in 0..<d { z[i * d + j] -= Float(mean[j]) } }
        guard m > 0, rows > 0 else { return z }
        let v = directions.map(Float.init)
        // (N, M) coordinates along the directions, scaled by their factors, then added back.
        var p = [Float](repeating: 0, count: rows * m)
        z.withUnsafeBufferPointer { zb in
            v.withUnsafeBufferPointer { vb in
                p.withUnsafeMutableBufferPointer { pb in
                    if let z0 = zb.baseAddress, let v0 = vb.baseAddress, let p0 = pb.baseAddress {
                        BLAS.sgemm(p0, z0, v0, transB: true, m: rows, n: m, k: d)
                    }
                }
            }
        }
        for i in 0..<rows { for k in 0..<m { p[i * m + k] *= Float(factors[k]) } }
        z.withUnsafeMutableBufferPointer { zb in
            v.withUnsafeBufferPointer { vb in
                p.withUnsafeBufferPointer { pb in
                    if let z0 = zb.baseAddress, let v0 = vb.baseAddress, let p0 = pb.baseAddress {
                        BLAS.sgemm(z0, p0, v0, m: rows, n: d, k: m, beta: 1)
                    }
                }
            }
        }
        return z
    }
}

/// Eigenpairs of a small symmetric matrix by cyclic Jacobi rotations (Golub & Van Loan §8.5),
/// in double precision: accurate to rounding for the n ≤ a few hundred it is used with.
public enum SymmetricEigen {
    /// Eigenvalues (n) and eigenvectors as the columns of an (n, n) row-major matrix, of `a`
    /// (n, n) row-major symmetric; in no particular order.
    public static func decompose(_ a: [Double], n: Int) -> (values: [Double], vectors: [Double]) {
        var a = a
        var v = [Double](repeating: 0, count: n * n)
        for i in 0..<n { v[i * n + i] = 1 }
        guard n > 1 else { return (a, v) }
        let scale = a.reduce(0) { $0 + $1 * $1 }
        for _ in 0..<100 {
            var off = 0.0
            for p in 0..<n { for q in (p + 1)..<n { off += a[p * n + q] * a[p * n + q] } }
            if off <= 1e-30 * max(scale, .leastNormalMagnitude) { break }
            for p in 0..<(n - 1) {
                for q in (p + 1)..<n {
                    let apq = a[p * n + q]
                    if apq == 0 { continue }
                    // The rotation that zeroes a[p][q]: t = tan θ, the smaller root (stable).
                    let theta = (a[q * n + q] - a[p * n + p]) / (2 * apq)
                    let t = (theta >= 0 ? 1 : -1) / (abs(theta) + (theta * theta + 1).squareRoot())
                    let c = 1 / (t * t + 1).squareRoot(), s = t * c
                    for k in 0..<n {
                        let akp = a[k * n + p], akq = a[k * n + q]
                        a[k * n + p] = c * akp - s * akq
                        a[k * n + q] = s * akp + c * akq
                    }
                    for k in 0..<n {
                        let apk = a[p * n + k], aqk = a[q * n + k]
                        a[p * n + k] = c * apk - s * aqk
                        a[q * n + k] = s * apk + c * aqk
                    }
                    for k in 0..<n {
                        let vkp = v[k * n + p], vkq = v[k * n + q]
                        v[k * n + p] = c * vkp - s * vkq
                        v[k * n + q] = s * vkp + c * vkq
                    }
                }
            }
        }
        return ((0..<n).map { a[$0 * n + $0] }, v)
    }
}
