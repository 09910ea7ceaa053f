// Classification metrics as scikit-learn defines them. N test items.
import Foundation

/// Metrics over scores and labels. Binary metrics take the positive-class score (N) and
/// labels (N, true = positive); multiclass ones take probabilities (N, K) and class indices.
public enum Metrics {
    /// Area under the ROC curve by the Mann-Whitney statistic with average ranks, so tied
    /// scores count 1/2 (identical to sklearn `roc_auc_score`). nil when only one class is present.
    public static func auroc(_ scores: [Double], _ labels: [Bool]) -> Double? {
        let n = scores.count
        let nPos = labels.filter { $0 }.count, nNeg = n - nPos
        guard nPos > 0, nNeg > 0 else { return nil }
        let order = (0..<n).sorted { scores[$0] < scores[$1] }
        var rankSumPos = 0.0
        var i = 0
        while i < n {
            var j = i
            while j + 1 < n && scores[order[j + 1]] == scores[order[i]] { j += 1 }
            let avgRank = Double(i + j) / 2 + 1
            for k in i...j where labels[order[k]] { rankSumPos += avgRank }
            i = j + 1
        }
        return (rankSumPos - Double(nPos) * Double(nPos + 1) / 2) / (Double(nPos) * Double(nNeg))
    }

    /// Average precision, sklearn's step-wise definition: Σ (R_t − R_{t−1}) P_t over distinct
    /// score thresholds in decreasing order. nil when there are no positives.
    public static func averagePrecision(_ scores: [Double], _ labels: [Bool]) -> Double? {
        let nPos = labels.filter { $0 }.count
        guard nPos > 0 else { return nil }
        let order = (0..<scores.count).sorted { scores[$0] > scores[$1] }
        var tp = 0, fp = 0, ap = 0.0, prevRecall = 0.0
        var i = 0
        while i < order.count {
            var j = i
            while j < order.count && scores[order[j]] == scores[order[i]] {
                if labels[order[j]] { tp += 1 } else { fp += 1 }
                j += 1
            }
            let recall = Double(tp) / Double(nPos), precision = Double(tp) / Double(tp + fp)
            ap += (recall - prevRecall) * precision
            prevRecall = recall
            i = j
        }
        return ap
    }

    public static func accuracy(_ predicted: [Int], _ truth: [Int]) -> Double {
        guard !truth.isEmpty else { return .nan }
        return Double(zip(predicted, truth).filter { $0 == $1 }.count) / Double(truth.count)
    }

    /// Mean per-class recall over classes present in `truth` (sklearn `balanced_accuracy_score`).
    public static func balancedAccuracy(_ predicted: [Int], _ truth: [Int]) -> Double {
        let classes = Set(truth).sorted()
        guard !classes.isEmpty else { return .nan }
        var s = 0.0
        for c in classes {
            let idx = truth.indices.filter { truth[$0] == c }
            s += Double(idx.filter { predicted[$0] == c }.count) / Double(idx.count)
        }
        return s / Double(classes.count)
    }

    /// Macro F1 over the union of predicted and true classes; F1 = 0 where undefined
    /// (sklearn `f1_score(average="macro", zero_division=0)`).
    public static func macroF1(_ predicted: [Int], _ truth: [Int]) -> Double {
        let classes = Set(truth).union(predicted).sorted()
        guard !classes.isEmpty else { return .nan }
        var s = 0.0
        for c in classes {
            var tp = 0, fp = 0, fn = 0
            for (p, t) in zip(predicted, truth) {
                if p == c && t == c { tp += 1 } else if p == c { fp += 1 } else if t == c { fn += 1 }
            }
            s += tp == 0 ? 0 : 2 * Double(tp) / Double(2 * tp + fp + fn)
        }
        return s / Double(classes.count)
    }

    /// Expected calibration error with equal-width bins on the confidence of the predicted
    /// class (top-label): Σ_b |acc_b − conf_b| · n_b / N. probs: (N, K), rows summing to 1; for a
    /// binary task pass two columns (1 − p, p).
    public static func expectedCalibrationError(_ probs: [[Double]], _ truth: [Int], bins: Int = 15) -> Double {
        guard !truth.isEmpty else { return .nan }
        var conf = [Double](repeating: 0, count: bins), acc = [Double](repeating: 0, count: bins), cnt = [Int](repeating: 0, count: bins)
        for (p, t) in zip(probs, truth) {
            guard let (k, c) = p.enumerated().max(by: { $0.element < $1.element }).map({ ($0.offset, $0.element) }) else { continue }
            let b = min(bins - 1, max(0, Int((c * Double(bins)).rounded(.up)) - 1))
            conf[b] += c; acc[b] += k == t ? 1 : 0; cnt[b] += 1
        }
        var e = 0.0
        for b in 0..<bins where cnt[b] > 0 { e += abs(acc[b] - conf[b]) }
        return e / Double(truth.count)
    }

    /// Mean negative log-likelihood of the true class, probabilities clipped to [1e-15, 1].
    public static func logLoss(_ probs: [[Double]], _ truth: [Int]) -> Double {
        guard !truth.isEmpty else { return .nan }
        var s = 0.0
        for (p, t) in zip(probs, truth) { s -= log(min(max(p[t], 1e-15), 1)) }
        return s / Double(truth.count)
    }
    /// Metric names a recipe may ask for.
    public static let names = ["auroc", "auprc", "accuracy", "balanced_accuracy", "f1_macro", "ece", "log_loss"]

    /// A metric by its recipe name over class probabilities (N, K) and true classes: for K = 2
    /// AUROC / AUPRC score the positive class (index 1); for K > 2 they are one-vs-rest macro
    /// averages. Predictions for accuracy-type metrics are the most probable class. nil when the
    /// metric is undefined on these rows (e.g. one class only) or the name is unknown.
    public static func named(_ name: String, probabilities p: [[Double]], truth y: [Int], classes K: Int) -> Double? {
        let pred = p.map { row in row.indices.max { row[$0] < row[$1] } ?? 0 }
        switch name {
        case "auroc":
            if K == 2 { return auroc(p.map { $0[1] }, y.map { $0 == 1 }) }
            let v = (0..<K).compactMap { c in auroc(p.map { $0[c] }, y.map { $0 == c }) }
            return v.count == K ? v.reduce(0, +) / Double(K) : nil
        case "auprc":
            if K == 2 { return averagePrecision(p.map { $0[1] }, y.map { $0 == 1 }) }
            let v = (0..<K).compactMap { c in averagePrecision(p.map { $0[c] }, y.map { $0 == c }) }
            return v.count == K ? v.reduce(0, +) / Double(K) : nil
        case "accuracy": return y.isEmpty ? nil : accuracy(pred, y)
        case "balanced_accuracy": return y.isEmpty ? nil : balancedAccuracy(pred, y)
        case "f1_macro": return y.isEmpty ? nil : macroF1(pred, y)
        case "ece": return y.isEmpty ? nil : expectedCalibrationError(p, y)
        case "log_loss": return y.isEmpty ? nil : logLoss(p, y)
        default: return nil
        }
    }
}
