import Foundation
import XCTest
import XRTensor
import TestSupport

/// `xrlab submit --slurm` on a real Slurm cluster (`.ci/slurm-up.sh` starts a one-node one on
/// localhost; `.ci/run` does so before the tests). Skipped, saying so, when no cluster answers.
final class SlurmClusterTests: XCTestCase {
    static let lock = NSLock()
    nonisolated(unsafe) static var local: URL?
    nonisolated(unsafe) static var study: (root: URL, recipe: String)?

    /// One study (demo data and recipe) for the class; each test writes its own run directories.
    func study(_ name: String) throws -> (root: URL, recipe: String) {
        Self.lock.lock(); defer { Self.lock.unlock() }
        if Self.study == nil {
            let root = Fixtures.tempDir("xrlab-slurm")
            Self.study = (root, try ClusterSupport.tuningStudy(in: root).path)
        }
        let s = Self.study ?? (Fixtures.tempDir(name), "")
        let root = s.root.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        return (root, s.recipe)
    }

    /// The small tuning study run by one local process with one thread (as the array tasks run
    /// with --cpus 1), once for the class.
    func localRun(_ recipe: String, root: URL) throws -> URL {
        Self.lock.lock(); defer { Self.lock.unlock() }
        if let l = Self.local { return l }
        let one = root.appendingPathComponent("one")
        let r = try ClusterSupport.xrlab(
            ["run", recipe, "--threads", "1", "--set", "output=\(one.path)", "--quiet"], cache: root.appendingPathComponent("cache-one"))
        XCTAssertEqual(r.status, 0, r.err)
        Self.local = one
        return one
    }

    static func command(_ name: String, _ args: [String]) -> (status: Int32, out: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [name] + args
        let o = Pipe()
        p.standardOutput = o
        p.standardError = o
        do { try p.run() } catch { return (-1, "\(error)") }
        let d = o.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: d, as: UTF8.self))
    }

    func requireCluster() throws {
        let s = Self.command("sinfo", ["-h", "-o", "%t"])
        guard s.status == 0, ["idle", "mix", "alloc"].contains(where: s.out.contains) else {
            throw XCTSkip(
                "no Slurm cluster answers (sinfo: \(s.out.trimmingCharacters(in: .whitespacesAndNewlines).prefix(120))); "
                    + "start a one-node one with .ci/slurm-up.sh (as root), as .ci/run does")
        }
    }

    func submissions(_ run: URL) throws -> [[String: Any]] {
        let d = try Data(contentsOf: run.appendingPathComponent("submit.json"))
        return (try JSONSerialization.jsonObject(with: d) as? [String: Any])?["submissions"] as? [[String: Any]] ?? []
    }

    func jobs(_ sub: [String: Any]) -> [String] { ["encode_job", "cells_job", "merge_job"].compactMap { sub[$0] as? String } }

    /// Wait until none of `jobs` is queued or running.
    func wait(_ jobs: [String], timeout: Double = 300) throws {
        let start = Date()
        while Date().timeIntervalSince(start) < timeout {
            let q = Self.command("squeue", ["-h", "-j", jobs.joined(separator: ",")])
            if q.status == 0 && q.out.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return }
            usleep(200_000)
        }
        throw XCTSkip("jobs \(jobs) still queued after \(Int(timeout)) s (the cluster is busy)")
    }

    func submit(_ recipe: String, _ out: URL, cache: URL) throws -> [String: Any] {
        let s = try ClusterSupport.xrlab(
            ["submit", recipe, "--slurm", "--shards", "4", "--cpus", "1", "--time", "10:00", "--set", "output=\(out.path)"], cache: cache)
        XCTAssertEqual(s.status, 0, s.err)
        return try XCTUnwrap(try submissions(out).last, s.out + s.err)
    }

    func testStudyAsFourShardArrayMatchesLocalRun() throws {
        try requireCluster()
        let (root, recipe) = try study("run")
        let one = try localRun(recipe, root: root)
        let out = root.appendingPathComponent("cluster"), cache = root.appendingPathComponent("cache")
        let sub = try submit(recipe, out, cache: cache)
        XCTAssertEqual(sub["cells_array"] as? [Int], [1, 2, 3, 4])
        try wait(jobs(sub))
        ClusterSupport.assertSameOutputs(one, out)
        let logs = ClusterSupport.files(out.appendingPathComponent("slurm/logs"))
        XCTAssertEqual(logs.filter { $0.hasPrefix("encode-") }.count, 4, "\(logs)")
        XCTAssertEqual(logs.filter { $0.hasPrefix("cells-") }.count, 4, "\(logs)")
        XCTAssertEqual(logs.filter { $0.hasPrefix("merge-") }.count, 1, "\(logs)")
        let status = try ClusterSupport.xrlab(["status", out.path], cache: cache)
        XCTAssertTrue(status.out.contains("cells: 6 of 6 done, 0 missing"), status.out)
        XCTAssertEqual(status.out.components(separatedBy: " done\n").count - 1, 4, "every shard done:\n\(status.out)")
    }

    func testCancelledTaskThenResubmissionComputesOnlyMissingCells() throws {
        try requireCluster()
        let (root, recipe) = try study("cancel")
        let out = root.appendingPathComponent("cluster"), cache = root.appendingPathComponent("cache")
        let sub = try submit(recipe, out, cache: cache)
        let cellsJob = try XCTUnwrap(sub["cells_job"] as? String)
        // Cancel the first cells task seen running.
        var cancelled: String?
        let start = Date()
        while cancelled == nil && Date().timeIntervalSince(start) < 240 {
            let q = Self.command("squeue", ["-h", "-r", "-j", cellsJob, "-o", "%i %T"])
            if let line = q.out.split(separator: "\n").first(where: { $0.hasSuffix(" RUNNING") }) {
                cancelled = String(line.split(separator: " ")[0])
                XCTAssertEqual(Self.command("scancel", [cancelled ?? ""]).status, 0)
            }
            usleep(50_000)
        }
        let task = try XCTUnwrap(cancelled, "no cells task was seen running")
        let shard = try XCTUnwrap(Int(task.split(separator: "_").last ?? ""))
        try wait(jobs(sub))
        let status = try ClusterSupport.xrlab(["status", out.path], cache: cache)
        let missing = Int(status.out.components(separatedBy: " done, ").dropFirst().first?.split(separator: " ").first ?? "") ?? -1
        guard missing > 0 else { throw XCTSkip("task \(task) finished its cells before it was cancelled") }
        XCTAssertTrue(status.out.contains("(\(missing) in failed or cancelled shards)"), status.out)
        XCTAssertTrue(status.out.contains("cancelled"), status.out)
        XCTAssertTrue(try String(contentsOf: out.appendingPathComponent("report.md"), encoding: .utf8).contains("Incomplete run"), "merge ran after the cancel")

        // Resubmission: only the cancelled shard runs, computing only its missing cells; finished cells are not touched.
        let cellsDir = out.appendingPathComponent("cells")
        func stamps() -> [String: Date] {
            Dictionary(
                uniqueKeysWithValues: ClusterSupport.files(cellsDir).filter { $0.hasSuffix(".json") }.map {
                    (
                        $0,
                        (try? FileManager.default.attributesOfItem(atPath: cellsDir.appendingPathComponent($0).path)[.modificationDate] as? Date)
                            ?? .distantPast
                    )
                })
        }
        let before = stamps()
        let again = try submit(recipe, out, cache: cache)
        XCTAssertEqual(again["cells_array"] as? [Int], [shard])
        XCTAssertEqual(again["cells_missing"] as? Int, missing)
        try wait(jobs(again))
        let after = stamps()
        XCTAssertEqual(after.count, 6)
        for (f, d) in before { XCTAssertEqual(after[f], d, "\(f) was recomputed") }
        let log = try String(contentsOf: out.appendingPathComponent("slurm/logs/cells-\(again["cells_job"] as? String ?? "")_\(shard).out"), encoding: .utf8)
        XCTAssertTrue(log.contains("shard \(shard)/4: \(missing) cells computed"), log)
        ClusterSupport.assertSameOutputs(try localRun(recipe, root: root), out)
    }

    func testFailingTaskLeavesOtherShardsCellsAndShowsInStatus() throws {
        try requireCluster()
        let (root, recipe) = try study("fail")
        let out = root.appendingPathComponent("cluster"), cache = root.appendingPathComponent("cache")
        // A damaged training checkpoint on the shared filesystem: the cell that would resume from it fails.
        let first = try ClusterSupport.xrlab(["run", recipe, "--merge", "--set", "output=\(out.path)"], cache: cache)
        XCTAssertEqual(first.status, 0, first.err)
        let bad = "lora__effusion__k2__s1"
        try Data("not a checkpoint".utf8).write(to: out.appendingPathComponent("cells/\(bad).ckpt.safetensors"))
        let sub = try submit(recipe, out, cache: cache)
        try wait(jobs(sub))
        let status = try ClusterSupport.xrlab(["status", out.path], cache: cache)
        XCTAssertEqual(status.status, 0, status.err)
        XCTAssertTrue(status.out.contains("failed (exit 1)"), status.out)
        XCTAssertTrue(status.out.contains("in failed or cancelled shards") && status.out.contains(bad), status.out)
        let failedShards = status.out.split(separator: "\n").filter { $0.hasSuffix("failed (exit 1)") }
        XCTAssertEqual(failedShards.count, 1, status.out)
        XCTAssertEqual(status.out.components(separatedBy: " done\n").count - 1, 3, "the other shards finished:\n\(status.out)")
        let logs = ClusterSupport.files(out.appendingPathComponent("slurm/logs")).filter { $0.hasPrefix("cells-") }
        let texts = try logs.map { try String(contentsOf: out.appendingPathComponent("slurm/logs/\($0)"), encoding: .utf8) }
        XCTAssertTrue(texts.contains { $0.contains("error: ") && $0.contains("\(bad).ckpt.safetensors") }, texts.joined(separator: "\n---\n"))
        XCTAssertTrue(try String(contentsOf: out.appendingPathComponent("report.md"), encoding: .utf8).contains("Incomplete run"))
    }
}
