import ArgumentParser
import Foundation
import XRTensor
import XRRecipes

/// `xrlab validate RECIPE…`: check recipes without running them.
struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check recipes (schema, values, referenced files) without running them.")

    @Argument(help: "Recipe YAML files.")
    var recipes: [String]

    @Option(name: .customLong("set"), help: "Override a value: key.path=value (repeatable).")
    var overrides: [String] = []

    @Flag(name: .long, help: "Check the schema only, not that referenced files exist.")
    var schemaOnly = false

    func run() throws {
        var failed = 0
        for path in recipes {
            let problems = Planner.validate(URL(fileURLWithPath: path), overrides: overrides, checkFiles: !schemaOnly)
            if problems.isEmpty {
                print("ok  \(path)\(schemaOnly ? " (schema only)" : "")")
            } else {
                failed += 1
                print("FAIL \(path): \(problems.count) problem\(problems.count == 1 ? "" : "s")")
                for p in problems { FileManager.default.fileHandleStandardError("error: \(p.description)") }
            }
        }
        if failed > 0 {
            FileManager.default.fileHandleStandardError("\(failed) of \(recipes.count) recipes have problems")
            throw ExitCode(1)
        }
    }
}

/// `xrlab plan RECIPE`: the cells, what is done, the feature cache, a time estimate.
struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan", abstract: "Show the cells a recipe runs, what is finished or cached, and a time estimate.")

    @Argument(help: "Recipe YAML file.")
    var recipe: String

    @Option(name: .customLong("set"), help: "Override a value: key.path=value (repeatable).")
    var overrides: [String] = []

    func run() throws {
        try runReportingErrors {
            let r = try RecipeLoader.load(URL(fileURLWithPath: recipe), overrides: overrides)
            print(try Planner.plan(r).text, terminator: "")
        }
    }
}

/// `xrlab run RECIPE`: run or resume a recipe.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run a recipe (resuming finished cells), writing results, curves and a report.")

    @Argument(help: "Recipe YAML file.")
    var recipe: String

    @Option(name: .customLong("set"), help: "Override a value: key.path=value (repeatable).")
    var overrides: [String] = []

    @Flag(name: .long, help: "Recompute every cell, and reuse a run directory written by another recipe.")
    var force = false

    @OptionGroup var work: WorkOptions

    @Flag(name: .long, help: "Do not stop on manifest leakage findings (patients or identical images across splits).")
    var skipCheck = false

    @Option(name: .long, help: "Compute only shard I of N (I/N) of the cells; `xrlab merge` writes the outputs afterwards.")
    var shard: String?

    @Option(name: .long, help: "Run one stage only: 'encode' fills the feature cache (with --shard, every N-th image).")
    var stage: String?

    @Flag(name: .long, help: "Compute nothing: write results, summary, plots and report from the cells present and list the missing ones.")
    var merge = false

    func run() throws {
        try runReportingErrors {
            work.apply()
            let r = try RecipeLoader.load(URL(fileURLWithPath: recipe), overrides: overrides)
            var o = RunOptions()
            o.skipCheck = skipCheck
            o.force = force
            o.quiet = work.quiet
            o.threads = work.threads
            if try runStaged(r, options: &o, shard: shard, stage: stage, merge: merge) { return }
            let s = try Runner.run(r, options: o)
            print("\(s.computed) cells computed, \(s.reused) reused\(s.skipped.isEmpty ? "" : ", \(s.skipped.count) skipped (see report)")")
            // Skips are never silent: each distinct reason, with how many cells it hit.
            var reasons: [String: Int] = [:]
            for c in s.skipped { reasons["\(c.cell.task), \(c.cell.shots) shots: \(c.reason ?? "skipped")", default: 0] += 1 }
            for (reason, n) in reasons.sorted(by: { $0.key < $1.key }) { print("skipped \(n) cell\(n == 1 ? "" : "s") — \(reason)") }
            for p in s.plots { print("plot:   \(p.path)") }
            print("report: \(s.report.path)")
        }
    }
}

extension FileManager {
    func fileHandleStandardError(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }
}
