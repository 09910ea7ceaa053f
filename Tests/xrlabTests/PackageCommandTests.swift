import Foundation
import XCTest
import XRTensor
import XRPipeline
import TestSupport

/// pack → verify → inspect → predict → diff on images and an encoder, as a user runs them.
final class PackageCommandTests: XCTestCase {
    var binary: URL {
        var dir = Bundle(for: PackageCommandTests.self).bundleURL.deletingLastPathComponent()
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
        env["SOURCE_DATE_EPOCH"] = "1767225600"
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

    func testEncoderPackageEndToEnd() throws {
        let dir = Fixtures.tempDir("cli-pack")
        let demo = try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 40)
        // Another encoder of the same shape (different weights): predict must refuse it.
        let other = try DemoData.generate(in: dir.appendingPathComponent("other"), patients: 1, seed: 7)
        let recipe = dir.appendingPathComponent("study.yaml")
        try """
        version: 1
        name: pack-test
        model: {path: demo/model, batch_size: 16}
        data:
          manifest: demo/manifest.csv
          label_column: labels
          labels: [effusion, cardiomegaly]
          patient_column: patient_id
          split_column: split
          subgroups: {sex: {column: sex}}
        representation: [cls, patch_mean]
        methods: [{name: logistic, C: [0.1, 1]}]
        shots: [2, 4]
        seeds: 2
        bootstrap: 50
        output: run
        """.write(to: recipe, atomically: true, encoding: .utf8)
        let run = try xrlab(["run", recipe.path, "--quiet"])
        XCTAssertEqual(run.status, 0, run.err)

        let pack = try xrlab(["pack", "run", "--name", "chest", "--version", "0.1.0", "--registry", "reg", "--quiet"], cwd: dir)
        XCTAssertEqual(pack.status, 0, pack.err)
        XCTAssertTrue(pack.out.contains("packed chest 0.1.0 (logistic, 2 heads)"), pack.out)
        let pkg = dir.appendingPathComponent("reg/chest-0.1.0.xrpkg").path

        let verify = try xrlab(["verify", pkg, "--base", demo.modelDir.path])
        XCTAssertEqual(verify.status, 0, verify.err)
        XCTAssertTrue(verify.out.contains("ok  base encoder: \(demo.modelDir.path) matches"), verify.out)
        let wrong = try xrlab(["verify", pkg, "--base", other.modelDir.path])
        XCTAssertEqual(wrong.status, 1)
        XCTAssertTrue(wrong.err.contains("base encoder mismatch"), wrong.err)

        let inspect = try xrlab(["inspect", pkg])
        XCTAssertEqual(inspect.status, 0, inspect.err)
        XCTAssertTrue(inspect.out.contains("\"format_version\" : 1") && inspect.out.contains("# chest 0.1.0"), inspect.out)

        // Predict on two images by path and on the whole manifest.
        let out = dir.appendingPathComponent("pred.csv")
        let images = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("demo/images").path).sorted().prefix(2)
            .map { dir.appendingPathComponent("demo/images/\($0)").path }
        let pred = try xrlab(["predict", "--package", pkg, "--base", demo.modelDir.path, "--out", out.path, "--quiet"] + images)
        XCTAssertEqual(pred.status, 0, pred.err)
        let lines = try String(contentsOf: out, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.first, "path,effusion_probability,effusion_decision,cardiomegaly_probability,cardiomegaly_decision")
        XCTAssertEqual(lines.count, 3)
        let all = try xrlab(["predict", "--package", pkg, "--base", demo.modelDir.path, demo.manifest.path, "--quiet"])
        XCTAssertEqual(all.status, 0, all.err)
        XCTAssertEqual(all.out.split(separator: "\n").count, demo.images + 1)
        let refused = try xrlab(["predict", "--package", pkg, "--base", other.modelDir.path, "--out", dir.appendingPathComponent("no.csv").path] + images)
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.err.contains("base encoder mismatch") && refused.err.contains(other.modelDir.path), refused.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("no.csv").path))
        let bad = dir.appendingPathComponent("broken.png")
        try Data("not a png".utf8).write(to: bad)
        let badRun = try xrlab(["predict", "--package", pkg, "--base", demo.modelDir.path, bad.path, "--quiet"])
        XCTAssertEqual(badRun.status, 1)
        XCTAssertTrue(badRun.err.contains("broken.png"), badRun.err)

        // Same run, same bytes (SOURCE_DATE_EPOCH fixes the time); a bump and a diff.
        let again = try xrlab(["pack", "run", "--name", "chest", "--version", "0.1.0", "--registry", "reg2", "--quiet"], cwd: dir)
        XCTAssertEqual(again.status, 0, again.err)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: pkg)), try Data(contentsOf: dir.appendingPathComponent("reg2/chest-0.1.0.xrpkg")))
        let exists = try xrlab(["pack", "run", "--name", "chest", "--version", "0.1.0", "--registry", "reg", "--quiet"], cwd: dir)
        XCTAssertEqual(exists.status, 1)
        XCTAssertTrue(exists.err.contains("already exists"), exists.err)
        let bump = try xrlab(["pack", "run", "--name", "chest", "--bump", "minor", "--shots", "4", "--registry", "reg", "--quiet"], cwd: dir)
        XCTAssertEqual(bump.status, 0, bump.err)
        XCTAssertTrue(bump.out.contains("packed chest 0.2.0"), bump.out)
        let diff = try xrlab(["diff", pkg, dir.appendingPathComponent("reg/chest-0.2.0.xrpkg").path])
        XCTAssertEqual(diff.status, 0, diff.err)
        XCTAssertTrue(diff.out.contains("method: logistic (all rows) → logistic (4 shots)"), diff.out)
        let unpack = try xrlab(["unpack", pkg, "--to", dir.appendingPathComponent("unpacked").path])
        XCTAssertEqual(unpack.status, 0, unpack.err)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("unpacked/MODEL_CARD.md").path))
    }
}
