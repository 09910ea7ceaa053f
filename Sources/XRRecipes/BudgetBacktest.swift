// Backtests of the label-budget planner: fit on the small shot counts of a run, predict the
// larger ones it measured, and check the prediction and its interval.
import Foundation
import XRTensor
import XRProbe

/// One prediction of a backtest: a method × task's curve fitted on shots ≤ the cut-off, at a
/// larger shot count the run measured.
public struct BacktestRow: Sendable, Codable, Equatable {
    public var task: String
    public var method: String
    public var model: String
    public var shots: Int
    /// Mean over seeds at `shots`, the fitted curve there, and its bootstrap interval.
    public var measured: Double
    public var predicted: Double
    public var low: Double
    public var high: Double
    public var covered: Bool { measured >= low && measured <= high }
    public var error: Double { predicted - measured }
}

extension Budget {
    /// Fit every method × task on the cells with shots ≤ `fitMaxShots` (model chosen as in
    /// `plan`, intervals at `options.level` from `options.resamples` seed resamples) and predict
    /// each larger shot count of the run. Errors as in `entries` when the run lacks what is asked.
    public static func backtest(_ results: [CellResult], fitMaxShots: Int, options o: BudgetOptions, source: String) throws -> [BacktestRow] {
        let ps = try planned(results.filter { $0.cell.shots <= fitMaxShots }, options: o, source: source)
        let metric = o.target.metric
        var rows: [BacktestRow] = []
        for p in ps {
            guard let m = p.model, p.boot.count >= 10 else { continue }
            let later = results.filter { $0.status == "ok" && $0.cell.task == p.entry.task && $0.cell.method == p.entry.method && $0.cell.shots > fitMaxShots }
            for k in Array(Set(later.map(\.cell.shots))).sorted() {
                let s = SeedSummary(later.filter { $0.cell.shots == k }.compactMap { $0.metrics[metric] })
                guard s.n > 0 else { continue }
                let vs = p.boot.map { $0.value(at: Double(k)) }.sorted()
                rows.append(
                    BacktestRow(
                        task: p.entry.task, method: p.entry.method, model: m.name, shots: k, measured: s.mean,
                        predicted: m.value(at: Double(k)), low: Bootstrap.percentile(vs, 50 * (1 - o.level)),
                        high: Bootstrap.percentile(vs, 50 * (1 + o.level))))
            }
        }
        return rows
    }

    /// The backtest as text: one line per prediction, then per shot count and overall the mean
    /// absolute error, mean signed error and interval coverage.
    public static func describe(backtest rows: [BacktestRow], fitMaxShots: Int, level: Double) -> String {
        let pct = "\(Int((level * 100).rounded()))%"
        var s = "backtest: fitted on shots <= \(fitMaxShots), \(pct) intervals\n"
        for r in rows {
            s += "\(r.task)  \(r.method)  (\(r.model.replacingOccurrences(of: "_", with: " "))) k=\(r.shots): measured \(Outputs.f(r.measured)), "
            s += "predicted \(Outputs.f(r.predicted)) [\(Outputs.f(r.low)), \(Outputs.f(r.high))], error \(String(format: "%+.4f", r.error))"
            s += r.covered ? ", covered\n" : ", not covered\n"
        }
        func summary(_ rs: [BacktestRow], _ label: String) -> String {
            guard !rs.isEmpty else { return "" }
            let n = Double(rs.count)
            return "\(label): \(rs.count) predictions, mean |error| \(Outputs.f(rs.map { abs($0.error) }.reduce(0, +) / n)), "
                + "mean error \(String(format: "%+.4f", rs.map(\.error).reduce(0, +) / n)), "
                + "\(pct) interval covered \(rs.filter(\.covered).count)/\(rs.count) (\(String(format: "%.0f", 100 * Double(rs.filter(\.covered).count) / n))%)\n"
        }
        for k in Array(Set(rows.map(\.shots))).sorted() { s += summary(rows.filter { $0.shots == k }, "k=\(k)") }
        s += summary(rows, "all")
        return s
    }
}
