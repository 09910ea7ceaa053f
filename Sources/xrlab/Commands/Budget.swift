import ArgumentParser
import Foundation
import XRTensor
import XRRecipes

/// `xrlab budget RUN_DIR --target auroc=0.85`: labels per class a target needs, from the run's
/// learning curves.
struct BudgetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "budget",
        abstract: "Fit learning curves to a finished run and estimate the labels per class a target metric needs.",
        discussion: """
            Per method and task: an inverse power law a − b·n^(−c) (log-linear a + b·ln n when the power law is \
            degenerate or predicts the largest held-out shot counts worse), fitted to the per-seed values; intervals by \
            bootstrap over seeds. Writes budget.json and budget_<task>.png into RUN_DIR.
            """)

    @Argument(help: "A run directory written by `xrlab run` (holds results.jsonl).")
    var runDir: String

    @Option(name: .long, help: "Metric and value to reach, e.g. auroc=0.85 (ece / log_loss: value to get below).")
    var target: String

    @Option(name: .long, help: "Only this method setting (e.g. logistic, knn-k20).")
    var method: String?

    @Option(name: .long, help: "Only this task.")
    var task: String?

    @Option(name: .long, help: "Report needs beyond this many shots per class as 'more than'.")
    var maxShots: Int = 1024

    @Option(name: .long, help: "Bootstrap resamples of the seeds.")
    var resamples: Int = 1000

    @Option(name: .long, help: "Coverage of the intervals, in (0, 1).")
    var level: Double = 0.8

    @Option(name: .long, help: "Seed of the bootstrap.")
    var seed: UInt64 = 0

    @Option(
        name: .long, help: "Backtest instead: fit on shots <= K, predict the run's larger shot counts, print errors and interval coverage (writes nothing).")
    var backtest: Int?

    func run() throws {
        try runReportingErrors {
            var o = BudgetOptions(target: try BudgetTarget(parsing: target, field: "--target"))
            guard maxShots >= 1 else { throw XRError("--max-shots must be at least 1, found \(maxShots)", field: "--max-shots") }
            guard resamples >= 10 else { throw XRError("--resamples must be at least 10, found \(resamples)", field: "--resamples") }
            if let k = backtest, k < 2 { throw XRError("--backtest needs K >= 2 (a curve needs two shot counts), found \(k)", field: "--backtest") }
            guard level > 0 && level < 1 else {
                throw XRError("--level must be in (0, 1), found \(level)", field: "--level", hint: "e.g. 0.8 for 80% intervals")
            }
            o.method = method
            o.task = task
            o.maxShots = maxShots
            o.resamples = resamples
            o.level = level
            o.seed = seed
            if let k = backtest {
                let dir = URL(fileURLWithPath: runDir)
                let rows = try Budget.backtest(try Budget.results(in: dir), fitMaxShots: k, options: o, source: dir.path)
                guard !rows.isEmpty else {
                    throw XRError(
                        "nothing to backtest: no method × task has at least 2 shot counts <= \(k), 2 seeds, and results above \(k)",
                        file: dir.path, field: "--backtest", hint: "choose K below the run's largest shot count")
                }
                print(Budget.describe(backtest: rows, fitMaxShots: k, level: level), terminator: "")
                return
            }
            let r = try Budget.plan(URL(fileURLWithPath: runDir), options: o)
            print("target \(o.target.description); \(Int((level * 100).rounded()))% intervals from \(resamples) bootstrap resamples of the seeds")
            for e in r.entries { print(Budget.describe(e, target: o.target, maxShots: maxShots, level: level)) }
            for p in r.plots { print("plot:   \(p.path)") }
            if let j = r.json { print("budget: \(j.path)") }
        }
    }
}
