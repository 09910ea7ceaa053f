// Where a run directory stands (`xrlab status RUN_DIR`), and the recipe that made it (for
// `xrlab merge RUN_DIR`): cells done and missing, and, after `xrlab submit --slurm`, each
// shard's cells and how its task ended or where it is in the queue.
import Foundation
import XRTensor

/// One shard of the latest Slurm submission.
public struct ShardStatus: Sendable {
    public var index: Int
    public var cells: Int
    public var done: Int
    /// How the task stands: the queue's state (PENDING, RUNNING), else how it ended (done,
    /// failed (exit n), cancelled) as the task recorded it or accounting reports it; nil when unknown.
    public var state: String?
    /// Submitted in the latest cells array.
    public var submitted: Bool
    /// The task ended without finishing its cells (failed, cancelled, timed out, out of memory).
    public var failed: Bool {
        state.map { s in ["failed", "cancelled", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"].contains { s.hasPrefix($0) } }
            ?? false
    }
}

/// Cells done / missing / failed of a run directory.
public struct RunStatus: Sendable {
    public var directory: URL
    public var total: Int
    public var done: Int
    public var missing: [Cell]
    /// Missing cells whose shard's task failed or was cancelled.
    public var failed: [Cell]
    public var shards: [ShardStatus]
    /// Job name → (id, state) of the latest submission (state from squeue / sacct, else "ended").
    public var jobs: [(name: String, id: String, state: String)]

    public var text: String {
        var s = "\(directory.path)\ncells: \(done) of \(total) done, \(missing.count) missing"
        s += failed.isEmpty ? "\n" : " (\(failed.count) in failed or cancelled shards)\n"
        if !jobs.isEmpty {
            s += "jobs: " + jobs.map { "\($0.name) \($0.id) \($0.state)" }.joined(separator: ", ") + "\n"
        }
        if !shards.isEmpty {
            s += "shard  cells  done  state\n"
            for sh in shards {
                let state = sh.state ?? (sh.submitted ? "unknown" : "not submitted")
                s +=
                    "\(String(sh.index).padding(toLength: 7, withPad: " ", startingAt: 0))\(String(sh.cells).padding(toLength: 7, withPad: " ", startingAt: 0))"
                s += "\(String(sh.done).padding(toLength: 6, withPad: " ", startingAt: 0))\(state)\n"
            }
        }
        if !missing.isEmpty {
            s += "missing: " + missing.prefix(20).map(\.id).joined(separator: ", ") + (missing.count > 20 ? ", … (\(missing.count - 20) more)" : "") + "\n"
        }
        return s
    }
}

public enum RunDirectory {
    /// The recipe a run directory was made with (its `run.json`: recipe file and overrides),
    /// writing to that directory; refused when the recipe file changed since.
    public static func recipe(_ dir: URL) throws -> LoadedRecipe {
        let runFile = dir.appendingPathComponent("run.json")
        guard let data = try? Data(contentsOf: runFile) else {
            throw XRError(
                "no run.json: not a run directory, or no task has started yet", file: runFile.path,
                hint: "give the directory `xrlab run` writes (the recipe's output)")
        }
        guard let info = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let file = info["recipe_file"] as? String, let fingerprint = info["recipe_fingerprint"] as? String
        else {
            throw XRError("run.json is unreadable", file: runFile.path, field: "recipe_file")
        }
        let overrides = (info["overrides"] as? [String] ?? []).filter { !$0.hasPrefix("output=") } + ["output=\(dir.standardizedFileURL.path)"]
        let r = try RecipeLoader.load(URL(fileURLWithPath: file), overrides: overrides)
        guard r.fingerprint == fingerprint else {
            throw XRError(
                "the recipe changed since this run started", file: file, field: "recipe_fingerprint",
                hint: "restore the recipe as run (\(dir.appendingPathComponent("resolved.yaml").path) holds it), or start a new run")
        }
        return r
    }

    /// Every cell of a recipe's plan, in plan order.
    public static func plan(_ r: LoadedRecipe) -> [Cell] {
        Runner.cells(r.recipe, tasks: r.recipe.isReport ? [r.recipe.report?.target ?? "both"] : StudyLoader.taskNames(r.recipe))
    }

    /// Done / missing cells, and the latest Slurm submission's shards and jobs when there is one.
    public static func status(_ dir: URL) throws -> RunStatus {
        let r = try recipe(dir)
        let cellsDir = dir.appendingPathComponent("cells")
        let all = plan(r)
        let missing = all.filter { !CellWork.isFinished($0, cellsDirectory: cellsDir) }
        var status = RunStatus(directory: dir, total: all.count, done: all.count - missing.count, missing: missing, failed: [], shards: [], jobs: [])
        guard FileManager.default.fileExists(atPath: dir.appendingPathComponent(Slurm.recordName).path),
            let sub = try Slurm.readRecord(dir).submissions.last
        else { return status }
        let costs = CellCosts(r, rows: try StudyLoader.rows(r))
        let parts = CellWork.partition(all, count: sub.shards, cost: costs.seconds)
        let queued = sub.cells_job.map { Slurm.queueStates(job: $0) } ?? [:]
        let accounted = sub.cells_job.map { Slurm.accountingStates(job: $0) } ?? [:]
        let slurmDir = dir.appendingPathComponent("slurm")
        var failedShards = Set<Int>()
        for (i, cells) in parts.enumerated() {
            let index = i + 1
            let key = "\(sub.cells_job ?? "")_\(index)"
            let recorded = (try? String(contentsOf: slurmDir.appendingPathComponent("shard-\(index).status"), encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines)
            // The queue knows best while a task waits or runs; afterwards the task's own record, then accounting.
            let state = queued[key] ?? recorded ?? accounted[key]
            let sh = ShardStatus(
                index: index, cells: cells.count, done: cells.filter { CellWork.isFinished($0, cellsDirectory: cellsDir) }.count,
                state: state, submitted: sub.cells_array.contains(index))
            if sh.failed { failedShards.insert(i) }
            status.shards.append(sh)
        }
        status.failed = failedShards.sorted().flatMap { parts[$0].filter { !CellWork.isFinished($0, cellsDirectory: cellsDir) } }
        for (name, id) in [("encode", sub.encode_job), ("cells", sub.cells_job), ("merge", sub.merge_job)] {
            guard let id else { continue }
            let q = Slurm.queueStates(job: id), a = Slurm.accountingStates(job: id)
            let state = Set(q.values).sorted().joined(separator: "/")
            status.jobs.append((name, id, !state.isEmpty ? state : (a[id] ?? "not queued")))
        }
        return status
    }
}
