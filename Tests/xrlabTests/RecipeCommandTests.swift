import Foundation
import XCTest
import XRTensor
import TestSupport

/// `xrlab validate`, `plan` and `run`, as a user runs them.
final class RecipeCommandTests: XCTestCase {
    var binary: URL {
        var dir = Bundle(for: RecipeCommandTests.self).bundleURL.deletingLastPathComponent()
        if !FileManager.default.fileExists(atPath: dir.appendingPathComponent("xrlab").path) {
            dir = Fixtures.repoRoot.appendingPathComponent(".build/debug")
        }
        return dir.appendingPathComponent("xrlab")
    }

    func xrlab(_ args: [String], cwd: URL? = nil) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = binary
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["XRLAB_CACHE"] = Fixtures.tempDir("cli-cache").path
        p.environment = env
        if let cwd { p.currentDirectoryURL = cwd }
        let o = Pipe(), e = Pipe()
        p.standardOutput = o
        p.standardError = e
        try p.run()
        let od = o.fileHandleForReading.readDataToEndOfFile(), ed = e.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: od, as: UTF8.self), String(decoding: ed, as: UTF8.self))
    }

    func testValidateReportsAllProblemsAndFails() throws {
        let dir = Fixtures.tempDir("cli-validate")
        let bad = dir.appendingPathComponent("bad.yaml")
        try """
        version: 1
        name: bad
        features: {matrix: missing.npy}
        data: {manifest: missing.csv, label_column: labels, labels: [a]}
        methods: [{name: knn, k: [0]}, {name: protoype}]
        shots: [1]
        sedes: 3
        output: run
        """.write(to: bad, atomically: true, encoding: .utf8)
        let good = Fixtures.repoRoot.appendingPathComponent("recipes/synthetic-features.yaml")
        let r = try xrlab(["validate", good.path, bad.path])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.out.contains("ok  \(good.path)"), r.out)
        XCTAssertTrue(r.out.contains("FAIL \(bad.path): 3 problems"), r.out)
        XCTAssertTrue(r.err.contains("line 5:27 (methods[0].k[0]): k must be at least 1"), r.err)
        XCTAssertTrue(r.err.contains("did you mean 'prototype'"), r.err)
        XCTAssertTrue(r.err.contains("line 7:1 (sedes): unknown key 'sedes' — did you mean 'seeds'"), r.err)
        // Schema fixed, files still missing: each file is reported.
        try String(contentsOf: bad, encoding: .utf8).replacingOccurrences(of: "k: [0]", with: "k: [3]")
            .replacingOccurrences(of: "protoype", with: "prototype").replacingOccurrences(of: "sedes", with: "seeds")
            .write(to: bad, atomically: true, encoding: .utf8)
        let files = try xrlab(["validate", bad.path])
        XCTAssertEqual(files.status, 1)
        XCTAssertTrue(files.err.contains("manifest not found"), files.err)
        XCTAssertEqual(try xrlab(["validate", "--schema-only", bad.path]).status, 0)
    }

    func testPlanRunResumeAndRefuse() throws {
        let out = Fixtures.tempDir("cli-run").appendingPathComponent("run")
        let recipe = Fixtures.repoRoot.appendingPathComponent("recipes/synthetic-features.yaml").path
        let sets = ["--set", "output=\(out.path)", "--set", "seeds=1", "--set", "shots=[1, 4]", "--set", "bootstrap=0"]
        let plan = try xrlab(["plan", recipe] + sets)
        XCTAssertEqual(plan.status, 0, plan.err)
        XCTAssertTrue(plan.out.contains("16 cells = 4 method settings × 2 tasks × 2 shot counts × 1 seeds"), plan.out)
        XCTAssertTrue(plan.out.contains("0 already finished, 16 to run"), plan.out)
        XCTAssertTrue(plan.out.contains("cls (240, 24), patch_mean (240, 24)"), plan.out)
        let run = try xrlab(["run", recipe, "--quiet"] + sets)
        XCTAssertEqual(run.status, 0, run.err)
        XCTAssertTrue(run.out.contains("16 cells computed, 0 reused"), run.out)
        let again = try xrlab(["run", recipe, "--quiet"] + sets)
        XCTAssertTrue(again.out.contains("0 cells computed, 16 reused"), again.out)
        XCTAssertTrue(try xrlab(["plan", recipe] + sets).out.contains("16 already finished, 0 to run"))
        // The stored resolved recipe runs as is.
        let resolved = try xrlab(["run", out.appendingPathComponent("resolved.yaml").path, "--quiet"])
        XCTAssertTrue(resolved.out.contains("0 cells computed, 16 reused"), resolved.out + resolved.err)
        // Another recipe into the same directory is refused, with what differs; --force recomputes.
        let otherSets = ["--set", "output=\(out.path)", "--set", "seeds=2", "--set", "shots=[1, 4]", "--set", "bootstrap=0"]
        XCTAssertTrue(try xrlab(["plan", recipe] + otherSets).out.contains("warning: the run directory holds results of a different recipe"))
        let other = try xrlab(["run", recipe, "--quiet"] + otherSets)
        XCTAssertEqual(other.status, 1)
        XCTAssertTrue(other.err.contains("different recipe (seeds: 1 → 2)"), other.err)
        XCTAssertTrue(other.err.contains("HINT: choose another output directory, or pass --force"), other.err)
        let forced = try xrlab(["run", recipe, "--quiet", "--force"] + sets)
        XCTAssertTrue(forced.out.contains("16 cells computed, 0 reused"), forced.out)
    }

    /// A run killed part-way (SIGKILL: no cleanup at all) finishes only the remaining cells when run
    /// again, and its outputs are byte-identical to an uninterrupted run's.
    func testKilledRunResumesToIdenticalOutputs() throws {
        let root = Fixtures.tempDir("cli-kill")
        let recipe = Fixtures.repoRoot.appendingPathComponent("recipes/synthetic-features.yaml").path
        func sets(_ out: URL) -> [String] { ["--set", "output=\(out.path)", "--set", "seeds=2", "--set", "bootstrap=100"] }
        let full = root.appendingPathComponent("full"), killed = root.appendingPathComponent("killed")
        XCTAssertEqual(try xrlab(["run", recipe, "--quiet"] + sets(full)).status, 0)

        let p = Process()
        p.executableURL = binary
        p.arguments = ["run", recipe, "--quiet"] + sets(killed)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let cells = killed.appendingPathComponent("cells")
        var finished = 0
        while p.isRunning {
            finished = (try? FileManager.default.contentsOfDirectory(atPath: cells.path).filter { $0.hasSuffix(".json") }.count) ?? 0
            if finished >= 5 { kill(p.processIdentifier, SIGKILL); break }
            usleep(20_000)
        }
        p.waitUntilExit()
        let done = try FileManager.default.contentsOfDirectory(atPath: cells.path).filter { $0.hasSuffix(".json") }.count
        guard p.terminationReason == .uncaughtSignal, done < 80 else {
            throw XCTSkip("the run finished before it could be killed (\(done) cells)")
        }
        let again = try xrlab(["run", recipe, "--quiet"] + sets(killed))
        XCTAssertEqual(again.status, 0, again.err)
        XCTAssertTrue(again.out.contains("\(80 - done) cells computed, \(done) reused"), again.out)
        for f in ["results.jsonl", "summary.csv", "subgroups.csv", "curve_effusion.png", "curve_nodule.png"] {
            XCTAssertEqual(try Data(contentsOf: killed.appendingPathComponent(f)), try Data(contentsOf: full.appendingPathComponent(f)), f)
        }
    }
}
