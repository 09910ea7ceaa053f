import Foundation
import XCTest
import XRTensor
import XRPipeline
import TestSupport

/// Running the xrlab binary, a small tuning study on generated demo data, and comparing run
/// directories file by file — for the sharding and Slurm tests.
enum ClusterSupport {
    static var binary: URL {
        var dir = Bundle(for: ShardCommandTests.self).bundleURL.deletingLastPathComponent()
        if !FileManager.default.fileExists(atPath: dir.appendingPathComponent("xrlab").path) {
            dir = Fixtures.repoRoot.appendingPathComponent(".build/debug")
        }
        return dir.appendingPathComponent("xrlab")
    }

    static func process(_ args: [String], cache: URL) -> (Process, Pipe, Pipe) {
        let p = Process()
        p.executableURL = binary
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["XRLAB_CACHE"] = cache.path
        p.environment = env
        let o = Pipe(), e = Pipe()
        p.standardOutput = o
        p.standardError = e
        return (p, o, e)
    }

    /// Run xrlab to the end.
    @discardableResult
    static func xrlab(_ args: [String], cache: URL) throws -> (status: Int32, out: String, err: String) {
        try all([args], cache: cache)[0]
    }

    /// Run several xrlab commands at once and wait for all of them.
    static func all(_ commands: [[String]], cache: URL) throws -> [(status: Int32, out: String, err: String)] {
        let ps = commands.map { process($0, cache: cache) }
        for (p, _, _) in ps { try p.run() }
        var out: [(Int32, String, String)] = []
        for (p, o, e) in ps {
            let od = o.fileHandleForReading.readDataToEndOfFile(), ed = e.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            out.append((p.terminationStatus, String(decoding: od, as: UTF8.self), String(decoding: ed, as: UTF8.self)))
        }
        return out
    }

    /// Demo images and encoder (30 patients) and a small study over them: a probe and two tuning
    /// methods, 6 cells. Returns the recipe file.
    static func tuningStudy(in dir: URL) throws -> URL {
        if !FileManager.default.fileExists(atPath: dir.appendingPathComponent("demo/manifest.csv").path) {
            try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 30)
        }
        let url = dir.appendingPathComponent("study.yaml")
        try """
        version: 1
        name: shard-study
        model: {path: demo/model, batch_size: 16}
        data:
          manifest: demo/manifest.csv
          label_column: labels
          labels: [effusion]
          patient_column: patient_id
          split_column: split
          subgroups: {sex: {column: sex}}
        methods:
          - {name: logistic, C: [1]}
          - {name: lora, rank: 2, epochs: 2, batch_size: 4, validation: 2}
          - {name: last_k, blocks: 1, epochs: 1, batch_size: 4, augment: false}
        shots: [2]
        seeds: 2
        bootstrap: 20
        output: run
        """.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// Files under `dir`, relative, sorted (hidden files included).
    static func files(_ dir: URL) -> [String] {
        guard let e = FileManager.default.enumerator(atPath: dir.path) else { return [] }
        var out: [String] = []
        while let f = e.nextObject() as? String {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent(f).path, isDirectory: &isDir), !isDir.boolValue { out.append(f) }
        }
        return out.sorted()
    }

    /// Every output file of run `a` equals run `b`'s byte for byte. Left out: `run.json` and
    /// `resolved.yaml` (they record the command line and the output path, which differ by
    /// design) and what only a Slurm submission writes (`slurm/`, `submit.json`).
    static func assertSameOutputs(_ a: URL, _ b: URL, file: StaticString = #filePath, line: UInt = #line) {
        func kept(_ dir: URL) -> [String] {
            files(dir).filter { !["run.json", "resolved.yaml", "submit.json"].contains($0) && !$0.hasPrefix("slurm/") }
        }
        let fa = kept(a), fb = kept(b)
        XCTAssertEqual(fa, fb, "the runs wrote different files", file: file, line: line)
        XCTAssertTrue(fa.contains("results.jsonl") && fa.contains("report.md") && fa.contains { $0.hasPrefix("cells/") }, "\(fa)", file: file, line: line)
        for f in fa where fb.contains(f) {
            let da = try? Data(contentsOf: a.appendingPathComponent(f)), db = try? Data(contentsOf: b.appendingPathComponent(f))
            XCTAssertNotNil(da, f, file: file, line: line)
            XCTAssertTrue(da == db, "\(f) differs between \(a.path) and \(b.path)", file: file, line: line)
        }
    }
}
