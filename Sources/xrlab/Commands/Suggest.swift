import ArgumentParser
import Foundation
import XRTensor
import XRRecipes
import XRProbe

/// `xrlab suggest RECIPE --labelled labelled.csv --budget N --out next.csv`: the next rows to label.
struct SuggestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suggest",
        abstract: "Choose the next training rows of a recipe's manifest to label (active labelling).",
        discussion: """
            Candidates are the training rows not listed in --labelled (never a test row, nor a row of a patient with a test \
            row); no two suggested rows share a patient. Strategies: random, uncertainty (entropy of the current logistic \
            probe), kcenter (greedy core-set), typiclust (typical rows of k-means clusters), probcover (greedy coverage of \
            δ-balls), balanced (class-balanced by the current probe). uncertainty and balanced need a labelled row of every \
            class. Writes a CSV: rank, the manifest's image column, patient, strategy, score, reason.
            """)

    @Argument(help: "Recipe YAML file (its manifest, features or model, tasks, patients and split).")
    var recipe: String

    @Option(name: .long, help: "CSV listing the labelled rows in a column named as the recipe's data.image_column (a header alone when none are).")
    var labelled: String?

    @Option(name: .long, help: "How many rows to suggest.")
    var budget: Int?

    @Option(name: .long, help: "random | uncertainty | kcenter | typiclust | probcover | balanced.")
    var strategy: String = "typiclust"

    @Option(name: .long, help: "Only this task's probe (uncertainty, balanced); default: every task jointly.")
    var task: String?

    @Option(name: .long, help: "Seed (random draws, k-means seeding, samples).")
    var seed: UInt64 = 0

    @Option(name: .long, help: "Where to write the suggested rows (CSV); with --simulate, a folder.")
    var out: String

    @Flag(
        name: .long,
        help:
            "Simulate instead, on a fully labelled study: reveal labels only for the rows each strategy picks, round by round, and score the probe on the test rows."
    )
    var simulate = false

    @Option(name: .long, help: "--simulate: strategies to compare, comma-separated (include random as the baseline).")
    var strategies: String = "random,uncertainty,kcenter,typiclust,probcover,balanced"

    @Option(name: .long, help: "--simulate: labelled rows at the start (a random draw shared by the strategies of a seed).")
    var start: Int = 10

    @Option(name: .long, help: "--simulate: labelled rows after each round, comma-separated, increasing.")
    var rounds: String = "20,40,80,160"

    @Option(name: .long, help: "--simulate: seeds (trajectories per strategy).")
    var seeds: Int = 5

    @Option(name: .customLong("set"), help: "Override a recipe value: key.path=value (repeatable).")
    var overrides: [String] = []

    func run() throws {
        try runReportingErrors {
            if simulate { return try runSimulation() }
            guard let labelled else { throw XRError("--labelled is required (or --simulate)", field: "--labelled") }
            guard let budget else { throw XRError("--budget is required (or --simulate)", field: "--budget") }
            var o = SuggestOptions(strategy: try Suggest.strategy(strategy), budget: budget)
            o.task = task
            o.seed = seed
            let r = try RecipeLoader.load(URL(fileURLWithPath: recipe), overrides: overrides)
            let s = try Suggest.run(r, labelled: URL(fileURLWithPath: labelled), options: o)
            let url = URL(fileURLWithPath: out)
            try Suggest.write(s, to: url)
            print("\(s.rows.count) rows by \(s.strategy.rawValue), from \(s.poolRows) unlabelled training rows (\(s.labelledRows) labelled)")
            if s.rows.count < budget { print("only \(s.rows.count) of \(budget): one row per patient, and no more patients remain") }
            print("suggested: \(url.path)")
        }
    }

    func runSimulation() throws {
        let names = strategies.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var list: [SelectionStrategy] = []
        for n in names { let s = try Suggest.strategy(n, field: "--strategies"); if !list.contains(s) { list.append(s) } }
        var counts: [Int] = []
        for part in rounds.split(separator: ",") {
            guard let v = Int(part.trimmingCharacters(in: .whitespaces)) else {
                throw XRError("--rounds takes label counts separated by commas, found '\(part)'", field: "--rounds", hint: "e.g. 20,40,80")
            }
            counts.append(v)
        }
        var o = SimulationOptions(strategies: list, start: start, rounds: counts, seeds: seeds)
        o.task = task
        let r = try RecipeLoader.load(URL(fileURLWithPath: recipe), overrides: overrides)
        let study = try StudyLoader.load(r)
        if let t = task, !study.tasks.contains(where: { $0.name == t }) {
            throw XRError(
                "task '\(t)' is not in the recipe", file: r.file.path, field: "--task", hint: "tasks: \(study.tasks.map(\.name).joined(separator: ", "))")
        }
        try SelectionSimulation.check(o, poolRows: study.isTest.filter { $0 == false }.count)
        let dir = URL(fileURLWithPath: out)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let ts = try SelectionSimulation.run(study, recipe: r.recipe, options: o, dir: dir, quiet: false)
        let files = try SelectionSimulation.write(ts, options: o, title: "\(r.recipe.name): active labelling\(task.map { " (\($0))" } ?? "")", to: dir)
        print("strategy      labels  AUROC (95% CI)            gain vs random (95% CI)")
        for row in SelectionSimulation.summarize(ts) {
            let a = String(format: "%.4f [%.4f, %.4f]", row.auroc.mean, row.auroc.low, row.auroc.high)
            let g = row.gain_vs_random.map { String(format: "%+.4f [%+.4f, %+.4f]", $0.mean, $0.low, $0.high) } ?? ""
            let name: String = row.strategy.padding(toLength: 13, withPad: " ", startingAt: 0)
            let shown: String = a.padding(toLength: 26, withPad: " ", startingAt: 0)
            let note: String = row.fallbacks > 0 ? "  (\(row.fallbacks) seeds drew at random: a class had no label)" : ""
            print(name + String(format: "%7d  ", row.labels) + shown + g + note)
        }
        for f in files { print("wrote:  \(f.path)") }
    }
}
