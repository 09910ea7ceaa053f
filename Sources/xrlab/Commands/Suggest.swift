import ArgumentParser
import Foundation
import XRTensor
import XRRecipes

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
    var labelled: String

    @Option(name: .long, help: "How many rows to suggest.")
    var budget: Int

    @Option(name: .long, help: "random | uncertainty | kcenter | typiclust | probcover | balanced.")
    var strategy: String = "typiclust"

    @Option(name: .long, help: "Only this task's probe (uncertainty, balanced); default: every task jointly.")
    var task: String?

    @Option(name: .long, help: "Seed (random draws, k-means seeding, samples).")
    var seed: UInt64 = 0

    @Option(name: .long, help: "Where to write the suggested rows (CSV).")
    var out: String

    @Option(name: .customLong("set"), help: "Override a recipe value: key.path=value (repeatable).")
    var overrides: [String] = []

    func run() throws {
        try runReportingErrors {
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
}
