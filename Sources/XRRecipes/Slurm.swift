// Running a study as Slurm job arrays (`xrlab submit --slurm`) and reading where it stands
// (`xrlab status`). Three jobs per submission, all writing into the run directory on a
// filesystem every node sees:
//   encode  array of N: `xrlab run --stage encode --shard I/N` fills the feature cache;
//   cells   array over the shards with missing cells, after the encode array succeeded
//           (afterok): `xrlab run --shard I/N`, threads from SLURM_CPUS_PER_TASK;
//   merge   one task after the cells array ended however it ended (afterany): `xrlab merge`.
// Scripts and logs go to `<run>/slurm/`, job ids to `<run>/submit.json` (written atomically).
// Each cells task records how it ended in `<run>/slurm/shard-I.status` (done, failed with its
// exit code, cancelled), so `status` can tell failed shards without Slurm's accounting.
import Foundation
import XRTensor

/// Job settings of a Slurm submission.
public struct SlurmSettings: Sendable {
    public var shards = 4
    public var partition: String? = nil
    /// `--time` (e.g. `1:00:00`).
    public var time: String? = nil
    /// CPUs per task; each task runs with this many threads.
    public var cpus = 1
    public var memory: String? = nil
    public var account: String? = nil
    /// The xrlab binary the tasks run (it must be reachable at this path on every node).
    public var executable: String
    /// `--set` overrides, passed to every task.
    public var overrides: [String] = []

    public init(executable: String) { self.executable = executable }
}

/// The jobs of one submission, as recorded in `submit.json`.
public struct SlurmSubmission: Codable, Sendable, Equatable {
    public var encode_job: String?
    public var cells_job: String?
    public var merge_job: String?
    /// Shards (1-based) the cells array runs.
    public var cells_array: [Int]
    public var shards: Int
    /// Cells missing when submitted.
    public var cells_missing: Int
}

/// `submit.json`: every submission of a run directory, the latest last.
public struct SlurmRecord: Codable, Sendable {
    public var format = "xrlab-submit"
    public var format_version = 1
    public var recipe_file: String
    public var overrides: [String]
    public var submissions: [SlurmSubmission]
}

public enum Slurm {
    /// Written scripts and the commands that submit them.
    public struct Prepared: Sendable {
        public var runDirectory: URL
        /// File name → script text (`encode.sh`, `cells.sh`, `merge.sh`); no encode script when the
        /// recipe reads precomputed features.
        public var scripts: [(name: String, text: String)]
        /// Shards with missing cells (the cells array's indices).
        public var pendingShards: [Int]
        public var missingCells: Int
        public var totalCells: Int
        public var settings: SlurmSettings
    }

    static let recordName = "submit.json"

    /// Quote for a POSIX shell.
    static func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    /// An `#SBATCH` option value: as it is, or in double quotes when it holds spaces.
    static func option(_ s: String) -> String {
        s.contains(where: { $0.isWhitespace || $0 == "'" }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\\\"") + "\"" : s
    }

    /// The scripts of a submission; shards whose cells are all finished are left out.
    public static func prepare(_ r: LoadedRecipe, settings: SlurmSettings) throws -> Prepared {
        guard settings.shards >= 1 else { throw XRError("--shards must be ≥ 1, got \(settings.shards)", field: "--shards") }
        guard settings.cpus >= 1 else { throw XRError("--cpus must be ≥ 1, got \(settings.cpus)", field: "--cpus") }
        let dir = Runner.outputDirectory(r)
        try Runner.checkRunDirectory(dir, r, force: false)
        let cellsDir = dir.appendingPathComponent("cells")
        let all = Runner.cells(r.recipe, tasks: r.recipe.isReport ? [r.recipe.report?.target ?? "both"] : StudyLoader.taskNames(r.recipe))
        let costs = CellCosts(r, rows: try StudyLoader.rows(r))
        let parts = CellWork.partition(all, count: settings.shards, cost: costs.seconds)
        let pending = parts.indices.filter { parts[$0].contains { !CellWork.isFinished($0, cellsDirectory: cellsDir) } }.map { $0 + 1 }
        let missing = all.filter { !CellWork.isFinished($0, cellsDirectory: cellsDir) }.count
        let slurmDir = dir.appendingPathComponent("slurm")
        let logs = slurmDir.appendingPathComponent("logs")
        let exe = quote(settings.executable)
        let recipeArgs = ([r.file.path] + settings.overrides.flatMap { ["--set", $0] }).map(quote).joined(separator: " ")
        let n = settings.shards
        func header(_ job: String, array: String?, log: String) -> String {
            var s = "#!/bin/bash\n#SBATCH --job-name=xrlab-\(job)-\(safe(r.recipe.name))\n"
            if let array { s += "#SBATCH --array=\(array)\n" }
            s += "#SBATCH --output=\(option(logs.appendingPathComponent(log).path))\n"
            s += "#SBATCH --cpus-per-task=\(settings.cpus)\n#SBATCH --ntasks=1\n"
            if let p = settings.partition { s += "#SBATCH --partition=\(option(p))\n" }
            if let t = settings.time { s += "#SBATCH --time=\(option(t))\n" }
            if let m = settings.memory { s += "#SBATCH --mem=\(option(m))\n" }
            if let a = settings.account { s += "#SBATCH --account=\(option(a))\n" }
            s += "set -uo pipefail\n"
            if let cache = ProcessInfo.processInfo.environment["XRLAB_CACHE"], !cache.isEmpty {
                s += "export XRLAB_CACHE=\(quote(URL(fileURLWithPath: cache).standardizedFileURL.path))\n"
            }
            return s
        }
        let threads = "--threads \"${SLURM_CPUS_PER_TASK:-1}\""
        var scripts: [(String, String)] = []
        if r.recipe.model != nil && r.recipe.features == nil && !r.recipe.isReport {
            scripts.append(
                (
                    "encode.sh",
                    header("encode", array: "1-\(n)", log: "encode-%A_%a.out")
                        + "exec \(exe) run \(recipeArgs) --stage encode --shard \"$SLURM_ARRAY_TASK_ID/\(n)\" \(threads) --quiet\n"
                ))
        }
        let status = quote(slurmDir.path) + "/shard-\"$SLURM_ARRAY_TASK_ID\".status"
        scripts.append(
            (
                "cells.sh",
                header("cells", array: ranges(pending), log: "cells-%A_%a.out") + """
                    status=\(status)
                    mark() { echo "$1" > "$status.tmp" && mv -f "$status.tmp" "$status"; }
                    trap 'mark cancelled; exit 143' TERM
                    mark running
                    \(exe) run \(recipeArgs) --shard "$SLURM_ARRAY_TASK_ID/\(n)" \(threads) --quiet &
                    wait $!
                    code=$?
                    if [ "$code" -eq 0 ]; then mark done; else mark "failed (exit $code)"; fi
                    exit "$code"

                    """
            ))
        scripts.append(
            (
                "merge.sh",
                header("merge", array: nil, log: "merge-%j.out")
                    + "exec \(exe) merge \(quote(dir.path))\n"
            ))
        return Prepared(runDirectory: dir, scripts: scripts, pendingShards: pending, missingCells: missing, totalCells: all.count, settings: settings)
    }

    /// `1-3,5,7-8`.
    static func ranges(_ xs: [Int]) -> String {
        var out: [String] = []
        var i = 0
        while i < xs.count {
            var j = i
            while j + 1 < xs.count && xs[j + 1] == xs[j] + 1 { j += 1 }
            out.append(i == j ? "\(xs[i])" : "\(xs[i])-\(xs[j])")
            i = j + 1
        }
        return out.joined(separator: ",")
    }

    /// The `sbatch` command lines for a prepared submission (job ids as `$ENCODE`, `$CELLS`).
    public static func commands(_ p: Prepared) -> [String] {
        let slurmDir = p.runDirectory.appendingPathComponent("slurm")
        var out: [String] = []
        let hasEncode = p.scripts.contains { $0.name == "encode.sh" }
        if hasEncode { out.append("ENCODE=$(sbatch --parsable \(quote(slurmDir.appendingPathComponent("encode.sh").path)))") }
        out.append("CELLS=$(sbatch --parsable \(hasEncode ? "--dependency=afterok:$ENCODE " : "")\(quote(slurmDir.appendingPathComponent("cells.sh").path)))")
        out.append("sbatch --parsable --dependency=afterany:$CELLS \(quote(slurmDir.appendingPathComponent("merge.sh").path))")
        return out
    }

    /// Write the scripts, submit them with `sbatch` and record the job ids in `submit.json`.
    /// Refuses while jobs of the previous submission are still queued or running.
    public static func submit(_ p: Prepared, recipe r: LoadedRecipe) throws -> SlurmSubmission {
        let dir = p.runDirectory
        let recordURL = dir.appendingPathComponent(recordName)
        var record = (try? readRecord(dir)) ?? SlurmRecord(recipe_file: r.file.path, overrides: p.settings.overrides, submissions: [])
        if let last = record.submissions.last {
            let queued = [last.encode_job, last.cells_job, last.merge_job].compactMap { $0 }.filter { !queueStates(job: $0).isEmpty }
            if !queued.isEmpty {
                throw XRError(
                    "jobs of the previous submission are still queued or running (\(queued.joined(separator: ", ")))", file: recordURL.path,
                    hint: "wait for them (xrlab status \(dir.path)), or cancel them with scancel")
            }
        }
        let slurmDir = dir.appendingPathComponent("slurm")
        try FileManager.default.createDirectory(at: slurmDir.appendingPathComponent("logs"), withIntermediateDirectories: true)
        for (name, text) in p.scripts { try AtomicFile.write(text, to: slurmDir.appendingPathComponent(name)) }
        // A resubmitted shard's last state no longer applies.
        for s in p.pendingShards { try? FileManager.default.removeItem(at: slurmDir.appendingPathComponent("shard-\(s).status")) }
        var sub = SlurmSubmission(
            encode_job: nil, cells_job: nil, merge_job: nil, cells_array: p.pendingShards, shards: p.settings.shards,
            cells_missing: p.missingCells)
        if p.scripts.contains(where: { $0.name == "encode.sh" }) {
            sub.encode_job = try sbatch([slurmDir.appendingPathComponent("encode.sh").path])
        }
        sub.cells_job = try sbatch((sub.encode_job.map { ["--dependency=afterok:\($0)"] } ?? []) + [slurmDir.appendingPathComponent("cells.sh").path])
        sub.merge_job = try sbatch(["--dependency=afterany:\(sub.cells_job ?? "")", slurmDir.appendingPathComponent("merge.sh").path])
        record.submissions.append(sub)
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        try AtomicFile.write(try e.encode(record), to: recordURL)
        return sub
    }

    /// `submit.json` of a run directory.
    public static func readRecord(_ dir: URL) throws -> SlurmRecord {
        let u = dir.appendingPathComponent(recordName)
        do { return try JSONDecoder().decode(SlurmRecord.self, from: try Data(contentsOf: u)) } catch {
            throw XRError("unreadable submission record: \(error.localizedDescription)", file: u.path)
        }
    }

    /// Run a Slurm client command; nil when it is not installed or fails.
    static func client(_ name: String, _ args: [String]) -> (status: Int32, out: String, err: String)? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [name] + args
        let o = Pipe(), e = Pipe()
        p.standardOutput = o
        p.standardError = e
        do { try p.run() } catch { return nil }
        let od = o.fileHandleForReading.readDataToEndOfFile(), ed = e.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: od, as: UTF8.self), String(decoding: ed, as: UTF8.self))
    }

    static func sbatch(_ args: [String]) throws -> String {
        guard let r = client("sbatch", ["--parsable"] + args) else {
            throw XRError("sbatch could not be run", field: "--slurm", hint: "run on a Slurm login node, or use --dry-run to see the scripts")
        }
        guard r.status == 0, let id = r.out.split(separator: ";").first.map({ $0.trimmingCharacters(in: .whitespacesAndNewlines) }), !id.isEmpty else {
            throw XRError(
                "sbatch failed (exit \(r.status)): \(r.err.trimmingCharacters(in: .whitespacesAndNewlines))", field: "--slurm",
                hint: "check the partition, time, memory and account options against `sinfo`")
        }
        return id
    }

    /// `squeue` states of a job's tasks (`12_3` → RUNNING); empty when none is queued or squeue is absent.
    public static func queueStates(job: String) -> [String: String] {
        guard let r = client("squeue", ["-h", "-r", "-j", job, "-o", "%i %T"]), r.status == 0 else { return [:] }
        var out: [String: String] = [:]
        for line in r.out.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 2 { out[String(f[0])] = String(f[1]) }
        }
        return out
    }

    /// `sacct` states of a job's tasks (empty without accounting).
    public static func accountingStates(job: String) -> [String: String] {
        guard let r = client("sacct", ["-n", "-P", "-X", "-j", job, "-o", "JobID,State"]), r.status == 0 else { return [:] }
        var out: [String: String] = [:]
        for line in r.out.split(separator: "\n") {
            let f = line.split(separator: "|")
            if f.count == 2 { out[String(f[0])] = String(f[1].split(separator: " ").first ?? f[1]) }
        }
        return out
    }
}
