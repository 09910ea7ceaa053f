import Foundation
import XCTest
import XRTensor
import TestSupport

/// `xrlab run --shard`, `--stage encode`, `merge`, `status` and `submit --dry-run`: no Slurm needed.
final class ShardCommandTests: XCTestCase {
    /// Encoding shards and cell shards as concurrent processes sharing a run directory and a
    /// feature cache, then a merge: every output byte-identical to one process's run with the
    /// same thread count (tuning cells' float sums depend on it in the last bits).
    func testShardedTuningStudyMergedMatchesOneProcess() throws {
        let root = Fixtures.tempDir("xrlab-shard-tune")
        let recipe = try ClusterSupport.tuningStudy(in: root).path
        let one = root.appendingPathComponent("one"), sharded = root.appendingPathComponent("sharded")
        let single = try ClusterSupport.xrlab(["run", recipe, "--set", "output=\(one.path)", "--quiet"], cache: root.appendingPathComponent("cache-one"))
        XCTAssertEqual(single.status, 0, single.err)

        // Three writers on one cache at once: two encoding shards and an unsharded encode of every image.
        let cache = root.appendingPathComponent("cache-shared")
        let enc = try ClusterSupport.all(
            [
                ["run", recipe, "--stage", "encode", "--shard", "1/2", "--quiet"],
                ["run", recipe, "--stage", "encode", "--shard", "2/2", "--quiet"],
                ["run", recipe, "--stage", "encode", "--quiet"]
            ], cache: cache)
        for r in enc { XCTAssertEqual(r.status, 0, r.err) }
        XCTAssertTrue(enc[0].out.contains("encode shard 1/2: "), enc[0].out)
        let images = try String(contentsOf: root.appendingPathComponent("demo/manifest.csv"), encoding: .utf8).split(separator: "\n").count - 1
        let entries = ClusterSupport.files(cache)
        XCTAssertEqual(entries.filter { $0.hasSuffix(".safetensors") }.count, images, "one cache entry per image")
        XCTAssertFalse(entries.contains { $0.contains(".tmp-") }, "temporary files left in the cache: \(entries.filter { $0.contains(".tmp-") })")
        for e in entries { XCTAssertNoThrow(try SafeTensorsFile(contentsOf: cache.appendingPathComponent(e)), e) }

        let shards = try ClusterSupport.all(
            (1...3).map { ["run", recipe, "--shard", "\($0)/3", "--threads", "2", "--set", "output=\(sharded.path)", "--quiet"] },
            cache: cache)
        var computed = 0
        for (i, r) in shards.enumerated() {
            XCTAssertEqual(r.status, 0, r.err)
            XCTAssertTrue(r.out.contains("shard \(i + 1)/3: "), r.out)
            computed += Int(r.out.split(separator: " ")[2]) ?? -100
        }
        XCTAssertEqual(computed, 6, "each of the 6 cells computed by exactly one shard")
        XCTAssertFalse(FileManager.default.fileExists(atPath: sharded.appendingPathComponent("results.jsonl").path), "shards leave the outputs to merge")
        let merged = try ClusterSupport.xrlab(["merge", sharded.path], cache: cache)
        XCTAssertEqual(merged.status, 0, merged.err)
        XCTAssertTrue(merged.out.contains("merged 6 cells"), merged.out)
        XCTAssertFalse(merged.out.contains("missing"), merged.out)
        ClusterSupport.assertSameOutputs(one, sharded)
    }

    /// A partly computed study: merge writes what is there and lists the rest; status counts it;
    /// a dry-run submission asks only for the shard still missing cells; finishing it and
    /// merging again gives the one-process outputs.
    func testMergeStatusAndDryRunSubmission() throws {
        let root = Fixtures.tempDir("xrlab-shard-merge")
        let cache = root.appendingPathComponent("cache")
        let recipe = Fixtures.repoRoot.appendingPathComponent("recipes/synthetic-features.yaml").path
        func sets(_ out: URL) -> [String] { ["--set", "output=\(out.path)", "--set", "seeds=2", "--set", "bootstrap=20"] }
        let one = root.appendingPathComponent("one"), part = root.appendingPathComponent("part")
        XCTAssertEqual(try ClusterSupport.xrlab(["run", recipe, "--quiet"] + sets(one), cache: cache).status, 0)

        let first = try ClusterSupport.xrlab(["run", recipe, "--shard", "1/2", "--quiet"] + sets(part), cache: cache)
        XCTAssertEqual(first.status, 0, first.err)
        let done = Int(first.out.split(separator: " ")[2]) ?? -1
        XCTAssertTrue(done > 0 && done < 80, first.out)
        let merged = try ClusterSupport.xrlab(["run", recipe, "--merge", "--quiet"] + sets(part), cache: cache)
        XCTAssertEqual(merged.status, 0, merged.err)
        XCTAssertTrue(merged.out.contains("merged \(done) cells") && merged.out.contains("missing \(80 - done) cells"), merged.out)
        XCTAssertTrue(try String(contentsOf: part.appendingPathComponent("report.md"), encoding: .utf8).contains("Incomplete run"))
        let status = try ClusterSupport.xrlab(["status", part.path], cache: cache)
        XCTAssertEqual(status.status, 0, status.err)
        XCTAssertTrue(status.out.contains("cells: \(done) of 80 done, \(80 - done) missing"), status.out)

        let dry = try ClusterSupport.xrlab(
            [
                "submit", recipe, "--slurm", "--dry-run", "--shards", "2", "--partition", "cpu", "--time", "0:10:00",
                "--cpus", "2", "--mem", "2G", "--account", "lab"
            ] + sets(part), cache: cache)
        XCTAssertEqual(dry.status, 0, dry.err)
        for s in [
            "#SBATCH --array=2\n", "--shard \"$SLURM_ARRAY_TASK_ID/2\"", "--threads \"${SLURM_CPUS_PER_TASK:-1}\"", "#SBATCH --cpus-per-task=2",
            "#SBATCH --partition=cpu", "#SBATCH --time=0:10:00", "#SBATCH --mem=2G", "#SBATCH --account=lab", "--dependency=afterany:$CELLS",
            "merge '\(part.path)'", "#SBATCH --output=\(part.path)/slurm/logs/cells-%A_%a.out"
        ] {
            XCTAssertTrue(dry.out.contains(s), "dry run lacks \(s):\n\(dry.out)")
        }
        XCTAssertFalse(dry.out.contains("encode.sh"), "precomputed features: no encoding array\n\(dry.out)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: part.appendingPathComponent("submit.json").path), "a dry run submits nothing")
        XCTAssertFalse(FileManager.default.fileExists(atPath: part.appendingPathComponent("slurm").path), "a dry run writes nothing")

        let second = try ClusterSupport.xrlab(["run", recipe, "--shard", "2/2", "--quiet"] + sets(part), cache: cache)
        XCTAssertTrue(second.out.contains("shard 2/2: \(80 - done) cells computed"), second.out)
        XCTAssertEqual(try ClusterSupport.xrlab(["merge", part.path], cache: cache).status, 0)
        ClusterSupport.assertSameOutputs(one, part)
        let nothing = try ClusterSupport.xrlab(["submit", recipe, "--slurm", "--dry-run", "--shards", "2"] + sets(part), cache: cache)
        XCTAssertTrue(nothing.out.contains("all 80 cells are finished; nothing to submit"), nothing.out)
    }

    func testBadShardAndStageArgumentsAreRefused() throws {
        let root = Fixtures.tempDir("xrlab-shard-args")
        let recipe = Fixtures.repoRoot.appendingPathComponent("recipes/synthetic-features.yaml").path
        let out = ["--set", "output=\(root.appendingPathComponent("r").path)"]
        let cache = root.appendingPathComponent("cache")
        for (args, expected) in [
            (["--shard", "3/2"], "shard 3/2 is out of range"), (["--shard", "a/b"], "cannot read shard 'a/b'"),
            (["--stage", "cells"], "unknown stage 'cells'"), (["--merge", "--shard", "1/2"], "--merge computes nothing"),
            (["--shard", "1/2", "--force"], "--force discards every shard's cells")
        ] {
            let r = try ClusterSupport.xrlab(["run", recipe] + out + args, cache: cache)
            XCTAssertEqual(r.status, 1, "\(args)")
            XCTAssertTrue(r.err.contains(expected), "\(args): \(r.err)")
        }
        let noTarget = try ClusterSupport.xrlab(["submit", recipe, "--dry-run"] + out, cache: cache)
        XCTAssertEqual(noTarget.status, 1)
        XCTAssertTrue(noTarget.err.contains("--slurm"), noTarget.err)
        let notRun = try ClusterSupport.xrlab(["status", root.path], cache: cache)
        XCTAssertEqual(notRun.status, 1)
        XCTAssertTrue(notRun.err.contains("no run.json"), notRun.err)
    }
}
