// Probes on frozen features: standardisation, logistic regression with C chosen by CV,
// k-NN (DINOv2 protocol) and nearest prototype. n train, t test, d features, K classes.
import Foundation
import XRKernels

/// Feature standardisation: (x − mean) / std with the population std; zero-variance columns
/// keep std 1 (as sklearn's StandardScaler). Fitted on the rows it is given — the training
/// shots, or every row of the training pool (see `Standardization`).
public struct Standardizer: Sendable, Equatable {
    public var mean: [Double]
    public var std: [Double]

    /// Statistics of x (n, d) row-major.
    public init(fit x: [Double], n: Int, d: Int) {
        self.init(d: d, rows: n) { i, j in x[i * d + j] }
    }

    /// Statistics of the listed rows of x (N, d) row-major float32, accumulated in double
    /// precision without copying the rows.
    public init(fit x: [Float], rows: [Int], d: Int) {
        self.init(d: d, rows: rows.count) { i, j in Double(x[rows[i] * d + j]) }
    }

    /// Two passes (mean, then squared deviations) over `n` rows read through `value(row, column)`.
    private init(d: Int, rows n: Int, _ value: (Int, Int) -> Double) {
        var mu = [Double](repeating: 0, count: d), sd = [Double](repeating: 0, count: d)
        for i in 0..<n { for j in 0..<d { mu[j] += value(i, j) } }
        for j in 0..<d { mu[j] /= Double(max(n, 1)) }
        for i in 0..<n { for j in 0..<d { let v = value(i, j) - mu[j]; sd[j] += v * v } }
        for j in 0..<d {
            let s = (sd[j] / Double(max(n, 1))).squareRoot()
            sd[j] = s < 10 * Double.ulpOfOne * max(abs(mu[j]), 1) ? 1 : s
        }
        mean = mu
        std = sd
    }

    /// A model fitted on standardised features, rewritten to take raw features:
    /// w' = w / std, b' = b − Σ w · mean / std.
    public func fold(_ m: LogisticModel) -> LogisticModel {
        var out = m
        let d = mean.count
        for r in 0..<m.bias.count {
            var shift = 0.0
            for j in 0..<d {
                let w = m.weights[r * d + j] / std[j]
                out.weights[r * d + j] = w
                shift += w * mean[j]
            }
            out.bias[r] -= shift
        }
        return out
    }

    public func apply(_ x: [Double], n: Int) -> [Double] {
        let d = mean.count
        var out = x
        for i in 0..<n { for j in 0..<d { out[i * d + j] = (x[i * d + j] - mean[j]) / std[j] } }
        return out
    }
}

/// Where the logistic probe's feature standardisation comes from (recipe key `standardize`).
public enum Standardization: String, Sendable, Equatable, Codable, CaseIterable {
    /// Mean and std of every training-pool row (labelled or not; no labels used) — what a site
    /// has anyway. Stable at any shot count.
    case pool
    /// Mean and std of the training shots, refitted inside each CV fold. With one or two shots
    /// per class the estimate is degenerate (two rows make every feature ±1).
    case shots
    /// Raw features.
    case none
}

/// Hyperparameters of one probe method, as a recipe names them.
public enum ProbeSpec: Sendable, Equatable, Codable, CustomStringConvertible {
    /// Logistic regression. `grid` of C values searched by CV when shots per class ≥ `cvMinShots`,
    /// else `defaultC`; features standardised as `standardize` says.
    case logistic(grid: [Double], cvMinShots: Int, defaultC: Double, folds: Int, standardize: Standardization)
    /// k-NN with cosine similarity and exp(sim / T) weighted votes.
    case knn(k: Int, temperature: Double)
    /// Nearest class mean (cosine), probabilities softmax(sim / T).
    case prototype(temperature: Double)

    public var description: String {
        switch self {
        case let .logistic(grid, minShots, c, folds, standardize):
            let how = ["pool": "standardised on the training pool", "shots": "standardised on the shots", "none": "raw features"]
            return "logistic(C∈\(grid), cv≥\(minShots) shots, \(folds) folds, default C=\(c), \(how[standardize.rawValue] ?? standardize.rawValue))"
        case let .knn(k, t): return "knn(k=\(k), T=\(t))"
        case let .prototype(t): return "prototype(T=\(t))"
        }
    }
}

/// What a probe returns for the test set.
public struct ProbeResult: Sendable {
    /// (t, K) class probabilities.
    public var probabilities: [[Double]]
    /// The C chosen (logistic only).
    public var chosenC: Double?
}

public enum Probe {
    /// Fit on (train, labels) and predict the test rows. Features are row-major float32.
    /// `folds` gives each training row's CV fold (only used by logistic regression with a grid);
    /// `pool` is the training pool's standardisation, needed by `standardize: .pool`.
    public static func run(
        _ spec: ProbeSpec, train: [Float], labels: [Int], test: [Float], d: Int,
        classes: Int, folds: [Int]? = nil, pool: Standardizer? = nil
    ) -> ProbeResult {
        let t = test.count / max(d, 1)
        switch spec {
        case .logistic:
            let (model, c) = fitLogistic(spec, train: train, labels: labels, d: d, classes: classes, folds: folds, pool: pool)
            return ProbeResult(probabilities: model.probabilities(test.map(Double.init), n: t), chosenC: c)
        case let .knn(k, temperature):
            return ProbeResult(
                probabilities: knn(
                    train: train, labels: labels, test: test, d: d, classes: classes,
                    k: k, temperature: temperature), chosenC: nil)
        case let .prototype(temperature):
            return ProbeResult(
                probabilities: prototype(
                    train: train, labels: labels, test: test, d: d, classes: classes,
                    temperature: temperature), chosenC: nil)
        }
    }

    /// The logistic-regression probe of `run`, returned as a model on raw features (the
    /// standardisation folded into the weights), with the C it chose. Non-logistic specs fit
    /// with C = 1 on shot-standardised features. `standardize: .pool` needs `pool`.
    public static func fitLogistic(
        _ spec: ProbeSpec, train: [Float], labels: [Int], d: Int, classes: Int,
        folds: [Int]? = nil, pool: Standardizer? = nil
    ) -> (model: LogisticModel, C: Double) {
        let n = labels.count
        var xtr = train.map(Double.init)
        var c = 1.0, mode = Standardization.shots
        if case let .logistic(_, _, _, _, standardize) = spec { mode = standardize }
        // Pool statistics do not depend on the shots: applied once, before CV and the final fit.
        var fixed: Standardizer? = nil
        if mode == .pool {
            precondition(pool?.mean.count == d, "standardize: pool needs the training pool's statistics")
            fixed = pool
            if let p = pool { xtr = p.apply(xtr, n: n) }
        }
        if case let .logistic(grid, cvMinShots, defaultC, nFolds, _) = spec {
            let perClass = (0..<classes).map { k in labels.filter { $0 == k }.count }.min() ?? 0
            c = defaultC
            if grid.count > 1, perClass >= cvMinShots {
                let f = folds ?? stratifiedFolds(labels, folds: nFolds)
                c = selectC(xtr, labels: labels, d: d, classes: classes, folds: f, grid: grid, refitStandardizer: mode == .shots)
            } else if grid.count == 1 {
                c = grid[0]
            }
        }
        var model: LogisticModel
        if mode == .shots {
            let s = Standardizer(fit: xtr, n: n, d: d)
            model = s.fold(LogisticRegression.fit(s.apply(xtr, n: n), n: n, d: d, labels: labels, classes: classes, C: c))
        } else {
            model = LogisticRegression.fit(xtr, n: n, d: d, labels: labels, classes: classes, C: c)
        }
        if let fixed { model = fixed.fold(model) }
        return (model, c)
    }

    /// Deterministic stratified folds: within each class, rows in their given order are dealt
    /// to folds 0, 1, …, folds−1, 0, …
    public static func stratifiedFolds(_ labels: [Int], folds: Int) -> [Int] {
        var seen: [Int: Int] = [:]
        return labels.map { c in
            let r = seen[c, default: 0]
            seen[c] = r + 1
            return r % max(folds, 1)
        }
    }

    /// The C with the lowest mean validation log-loss over folds (with `refitStandardizer`, a
    /// standardiser fitted on each training part; else x is used as given); ties go to the smaller C.
    public static func selectC(
        _ x: [Double], labels: [Int], d: Int, classes: Int, folds: [Int], grid: [Double],
        refitStandardizer: Bool = true
    ) -> Double {
        let nFolds = (folds.max() ?? 0) + 1
        let sortedGrid = grid.sorted()
        var totals = [Double](repeating: 0, count: sortedGrid.count), count = 0
        for f in 0..<nFolds {
            let tr = labels.indices.filter { folds[$0] != f }, va = labels.indices.filter { folds[$0] == f }
            if va.isEmpty || Set(tr.map { labels[$0] }).count < classes { continue }
            let xtr = tr.flatMap { x[($0 * d)..<(($0 + 1) * d)] }, xva = va.flatMap { x[($0 * d)..<(($0 + 1) * d)] }
            // Standardisation and the row-span basis depend on the fold only: once per fold, then
            // the C grid in increasing order, each fit warm-started from the previous one.
            let s = refitStandardizer ? Standardizer(fit: xtr, n: tr.count, d: d) : nil
            let prepared = LogisticRegression.prepare(s?.apply(xtr, n: tr.count) ?? xtr, n: tr.count, d: d)
            let xvs = s?.apply(xva, n: va.count) ?? xva
            let yva = va.map { labels[$0] }, ytr = tr.map { labels[$0] }
            var state: ([Double], [Double])? = nil
            for (ci, c) in sortedGrid.enumerated() {
                let fit = LogisticRegression.fit(prepared, labels: ytr, classes: classes, C: c, start: state)
                state = fit.state
                totals[ci] += Metrics.logLoss(fit.model.probabilities(xvs, n: va.count), yva) * Double(va.count)
            }
            count += va.count
        }
        var best = sortedGrid[0], bestLoss = Double.infinity
        for (ci, c) in sortedGrid.enumerated() {
            let loss = count > 0 ? totals[ci] / Double(count) : .infinity
            if loss < bestLoss - 1e-12 { bestLoss = loss; best = c }
        }
        return best
    }

    /// Rows scaled to unit L2 norm (zero rows stay zero). Used by the cosine probes, retrieval
    /// and the feature-space active-labelling strategies.
    public static func normalized(_ x: [Float], d: Int) -> [Float] {
        var out = x
        for i in 0..<(x.count / max(d, 1)) {
            var s: Float = 0
            for j in 0..<d { s += x[i * d + j] * x[i * d + j] }
            let inv = s > 0 ? 1 / s.squareRoot() : 0
            for j in 0..<d { out[i * d + j] *= inv }
        }
        return out
    }

    /// k-NN as in DINOv2's protocol: cosine similarity of L2-normalised features, the top k
    /// neighbours (ties to the lower training index), votes weighted by exp(sim / T); class
    /// probabilities are the normalised vote totals. k is capped at the number of training rows.
    public static func knn(
        train: [Float], labels: [Int], test: [Float], d: Int, classes: Int,
        k: Int, temperature: Double
    ) -> [[Double]] {
        let n = labels.count, t = test.count / d, kk = min(k, n)
        let a = normalized(train, d: d), b = normalized(test, d: d)
        var sim = [Float](repeating: 0, count: t * n)
        BLAS.sgemm(&sim, b, a, transB: true, m: t, n: n, k: d)
        return (0..<t).map { i in
            let row = Array(sim[(i * n)..<((i + 1) * n)])
            let top = (0..<n).sorted { row[$0] != row[$1] ? row[$0] > row[$1] : $0 < $1 }.prefix(kk)
            var votes = [Double](repeating: 0, count: classes)
            for j in top { votes[labels[j]] += exp(Double(row[j]) / temperature) }
            let s = votes.reduce(0, +)
            return votes.map { $0 / s }
        }
    }

    /// Nearest prototype: the L2-normalised mean of each class's L2-normalised training rows;
    /// probabilities softmax(cos / T).
    public static func prototype(
        train: [Float], labels: [Int], test: [Float], d: Int, classes: Int,
        temperature: Double
    ) -> [[Double]] {
        let a = normalized(train, d: d), b = normalized(test, d: d)
        var protos = [Float](repeating: 0, count: classes * d)
        for (i, c) in labels.enumerated() { for j in 0..<d { protos[c * d + j] += a[i * d + j] } }
        protos = normalized(protos, d: d)
        let t = test.count / d
        var sim = [Float](repeating: 0, count: t * classes)
        BLAS.sgemm(&sim, b, protos, transB: true, m: t, n: classes, k: d)
        return (0..<t).map { i in softmax((0..<classes).map { Double(sim[i * classes + $0]) / temperature }) }
    }
}
