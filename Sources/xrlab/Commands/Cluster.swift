import ArgumentParser
import Foundation
import XRTensor
import XRRecipes

/// `xrlab run` with `--shard`, `--stage encode` or `--merge`; false when none is given.
func runStaged(_ r: LoadedRecipe, options o: inout RunOptions, shard: String?, stage: String?, merge: Bool) throws -> Bool {
    let parsed = try shard.map { try Shard(parsing: $0) }
    if merge {
        guard shard == nil, stage == nil else { throw XRError("--merge computes nothing, so it takes neither --shard nor --stage", field: "--merge") }
        try mergeRun(r, options: o)
        return true
    }
    if let stage {
        guard stage == "encode" else { throw XRError("unknown stage '\(stage)'", field: "--stage", hint: "the stage that runs on its own is 'encode'") }
        let s = try EncodeStage.run(r, shard: parsed, quiet: o.quiet)
        print("encode\(parsed.map { " shard \($0)" } ?? ""): \(s.images) images (\(s.encoded) encoded, \(s.cached) from cache)")
        return true
    }
    guard let parsed else { return false }
    guard !o.force else {
        throw XRError(
            "--force discards every shard's cells, so it cannot be combined with --shard", field: "--force",
            hint: "start over with `xrlab run RECIPE --force` (no --shard), or choose a new output directory")
    }
    o.shard = parsed
    let s = try Runner.run(r, options: o)
    print("shard \(parsed): \(s.computed) cells computed; \(s.computed + s.reused) of the study's cells finished")
    print("merge: xrlab merge \(s.directory.path)")
    return true
}

/// Write the outputs from the cells present and list the missing ones.
func mergeRun(_ r: LoadedRecipe, options: RunOptions) throws {
    var o = options
    o.mergeOnly = true
    let s = try Runner.run(r, options: o)
    let cellsDir = s.directory.appendingPathComponent("cells")
    let missing = RunDirectory.plan(r).filter { !CellWork.isFinished($0, cellsDirectory: cellsDir) }
    print("merged \(s.reused) cells\(s.skipped.isEmpty ? "" : " (\(s.skipped.count) skipped, see report)")")
    if !missing.isEmpty {
        print("missing \(missing.count) cell\(missing.count == 1 ? "" : "s") (the outputs are marked incomplete):")
        for c in missing.prefix(50) { print("  \(c.id)") }
        if missing.count > 50 { print("  … \(missing.count - 50) more") }
        print("compute them with `xrlab run \(r.file.path)` or `xrlab submit \(r.file.path) --slurm`, then merge again")
    }
    for p in s.plots { print("plot:   \(p.path)") }
    print("report: \(s.report.path)")
}

/// `xrlab merge RUN_DIR`.
struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Write results, summary, plots and report of a run directory from the cells present; list the missing cells.")

    @Argument(help: "Run directory (the recipe's output).")
    var runDirectory: String

    @Flag(name: .long, help: "No progress output.")
    var quiet = false

    func run() throws {
        try runReportingErrors {
            let r = try RunDirectory.recipe(URL(fileURLWithPath: runDirectory))
            var o = RunOptions()
            o.quiet = quiet
            o.skipCheck = true
            try mergeRun(r, options: o)
        }
    }
}

/// `xrlab submit RECIPE --slurm`.
struct SubmitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Run a recipe as Slurm job arrays: encode, the shards with missing cells, then merge.")

    @Argument(help: "Recipe YAML file.")
    var recipe: String

    @Option(name: .customLong("set"), help: "Override a value: key.path=value (repeatable).")
    var overrides: [String] = []

    @Flag(name: .long, help: "Submit to Slurm with sbatch (the scheduler xrlab submits to).")
    var slurm = false

    @Option(name: .long, help: "Shards (array tasks) the cells are split into.")
    var shards: Int = 4

    @Option(name: .long, help: "Slurm partition.")
    var partition: String?

    @Option(name: .long, help: "Time limit per task (sbatch --time, e.g. 2:00:00).")
    var time: String?

    @Option(name: .long, help: "CPUs per task; each task runs with as many threads.")
    var cpus: Int = 1

    @Option(name: .long, help: "Memory per task (sbatch --mem, e.g. 8G).")
    var mem: String?

    @Option(name: .long, help: "Slurm account.")
    var account: String?

    @Flag(name: .long, help: "Print the scripts and sbatch commands; submit nothing.")
    var dryRun = false

    func run() throws {
        try runReportingErrors {
            guard slurm else { throw XRError("say where to submit: --slurm", field: "--slurm", hint: "xrlab submits to Slurm (`xrlab submit RECIPE --slurm`)") }
            let url = URL(fileURLWithPath: recipe)
            let problems = Planner.validate(url, overrides: overrides)
            if let first = problems.first {
                for p in problems.dropFirst() { FileManager.default.fileHandleStandardError("error: \(p.description)") }
                throw first
            }
            let r = try RecipeLoader.load(url, overrides: overrides)
            let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
            var settings = SlurmSettings(executable: URL(fileURLWithPath: exe).standardizedFileURL.path)
            settings.shards = shards; settings.partition = partition; settings.time = time
            settings.cpus = cpus; settings.memory = mem; settings.account = account; settings.overrides = overrides
            let p = try Slurm.prepare(r, settings: settings)
            guard !p.pendingShards.isEmpty else {
                print("all \(p.totalCells) cells are finished; nothing to submit")
                print("merge: xrlab merge \(p.runDirectory.path)")
                return
            }
            let what = "\(p.missingCells) of \(p.totalCells) cells in shards \(p.pendingShards.map(String.init).joined(separator: ",")) of \(shards)"
            if dryRun {
                for (name, text) in p.scripts {
                    print("# ==> \(p.runDirectory.appendingPathComponent("slurm/\(name)").path) <==")
                    print(text)
                }
                print("# submit (\(what)):")
                for c in Slurm.commands(p) { print(c) }
                return
            }
            let sub = try Slurm.submit(p, recipe: r)
            print("submitted \(what)")
            if let e = sub.encode_job { print("encode: job \(e) (array 1-\(shards))") }
            print("cells:  job \(sub.cells_job ?? "?")\(sub.encode_job == nil ? "" : ", after encode succeeds")")
            print("merge:  job \(sub.merge_job ?? "?"), after the cells array ends")
            print("logs:   \(p.runDirectory.appendingPathComponent("slurm/logs").path)")
            print("status: xrlab status \(p.runDirectory.path)")
        }
    }
}

/// `xrlab status RUN_DIR`.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a run directory's cells done, missing and failed, and its Slurm jobs' states.")

    @Argument(help: "Run directory (the recipe's output).")
    var runDirectory: String

    func run() throws {
        try runReportingErrors {
            print(try RunDirectory.status(URL(fileURLWithPath: runDirectory)).text, terminator: "")
        }
    }
}
