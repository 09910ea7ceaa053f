import Foundation
import XCTest
import XRRecipes
import XRTensor
import XRData
import TestSupport

/// Subgroup flags of whole studies: Benjamini–Hochberg over the settings, the chance check,
/// and the `subgroups.fdr` key.
final class SubgroupFDRTests: XCTestCase {
    /// 600 patients, 16-d features, a `site` attribute (A / B by row parity). `alpha` shifts
    /// features 0–3; with `planted`, only in site A (site B's shift ignores the label). `noise`
    /// is a label the features do not carry.
    func makeSiteStudy(in dir: URL, seed: UInt64, planted: Bool) throws {
        var rng = XRRandom(seed: seed)
        let d = 16, rows = 600
        var feats: [Float] = [], table: [[String]] = []
        for i in 0..<rows {
            let site = i % 2 == 0 ? "A" : "B"
            let a = rng.nextDouble() < 0.4, noise = rng.nextDouble() < 0.4
            let shifted = planted && site == "B" ? rng.nextDouble() < 0.4 : a
            for j in 0..<d { feats.append(rng.nextGaussian() + (shifted && j < 4 ? 2.0 : 0)) }
            let labels = [a ? "alpha" : nil, noise ? "noise" : nil].compactMap { $0 }.joined(separator: "|")
            table.append(["img\(i).png", "P\(i)", i % 3 == 0 ? "test" : "train", labels, site])
        }
        try NPY.write(Tensor(shape: [rows, d], scalars: feats), to: dir.appendingPathComponent("feats.npy"))
        try CSVTable(header: ["path", "patient", "split", "labels", "site"], rows: table).write(to: dir.appendingPathComponent("table.csv"))
        try """
        version: 1
        name: sites
        features: {matrix: feats.npy}
        data:
          manifest: table.csv
          label_column: labels
          labels: [alpha, noise]
          patient_column: patient
          split_column: split
          subgroups: {site: {column: site}}
        methods:
          - {name: logistic, C: [0.1, 1], cv_min_shots: 4}
          - {name: prototype}
        shots: [4, 16]
        seeds: 3
        bootstrap: 200
        output: run
        """.write(to: dir.appendingPathComponent("r.yaml"), atomically: true, encoding: .utf8)
    }

    struct Setting: Hashable { var method: String, task: String, shots: String }
    /// subgroups.csv per setting: (q, flagged, interpretable).
    func settings(_ dir: URL) throws -> [Setting: (q: Double, flagged: Bool, interpretable: String)] {
        let t = try CSVTable(contentsOf: dir.appendingPathComponent("run/subgroups.csv"))
        func col(_ n: String) throws -> Int { try XCTUnwrap(t.header.firstIndex(of: n), "column \(n)") }
        let (m, ta, k, q, f, i) = (try col("method"), try col("task"), try col("shots"), try col("q_value"), try col("flagged"), try col("interpretable"))
        var out: [Setting: (Double, Bool, String)] = [:]
        for r in t.rows { out[Setting(method: r[m], task: r[ta], shots: r[k])] = (Double(r[q]) ?? .nan, r[f] == "yes", r[i]) }
        return out
    }

    func run(_ dir: URL, overrides: [String] = []) throws {
        var o = RunOptions(); o.quiet = true; o.commandLine = ["xrlab", "run"]
        _ = try Runner.run(try RecipeLoader.load(dir.appendingPathComponent("r.yaml"), overrides: overrides), options: o)
    }

    func testNoTrueGapFlagsAlmostNothingAcrossStudies() throws {
        var flagged = 0, total = 0
        for seed in UInt64(1)...4 {
            let dir = Fixtures.tempDir()
            try makeSiteStudy(in: dir, seed: seed, planted: false)
            try run(dir)
            let s = try settings(dir)
            total += s.count
            flagged += s.values.filter(\.flagged).count
        }
        XCTAssertEqual(total, 4 * 8)
        XCTAssertLessThanOrEqual(flagged, 1, "\(flagged) of \(total) settings flagged without a true gap")
    }

    func testPlantedGapIsFlaggedAndChanceLevelGapsAreNotInterpretable() throws {
        let dir = Fixtures.tempDir()
        try makeSiteStudy(in: dir, seed: 7, planted: true)
        try run(dir)
        let s = try settings(dir)
        for method in ["logistic", "prototype"] {
            let g = try XCTUnwrap(s[Setting(method: method, task: "alpha", shots: "16")])
            XCTAssertTrue(g.flagged, "\(method) at 16 shots: planted site gap not flagged (q \(g.q))")
        }
        XCTAssertEqual(s[Setting(method: "logistic", task: "alpha", shots: "16")]?.interpretable, "yes")
        // Interpretable exactly when the mean bootstrap AUROC interval over seeds lies above 0.5.
        let summary = try CSVTable(contentsOf: dir.appendingPathComponent("run/summary.csv"))
        for r in summary.rows where r[3] == "auroc" {
            let g = try XCTUnwrap(s[Setting(method: r[0], task: r[1], shots: r[2])])
            XCTAssertEqual(g.interpretable, (Double(r[9]) ?? 0) > 0.5 ? "yes" : "no", "\(r)")
        }
        for (setting, g) in s where setting.task == "noise" {
            XCTAssertEqual(g.interpretable, "no", "\(setting): a method at chance on a label the features do not carry")
        }
        let report = try String(contentsOf: dir.appendingPathComponent("run/report.md"), encoding: .utf8)
        XCTAssertTrue(report.contains("Benjamini–Hochberg") && report.contains("**flagged**"), report)

        // subgroups.fdr re-summarises the finished cells (no fingerprint change, no recomputation):
        // a stricter rate flags a subset.
        try run(dir, overrides: ["subgroups.fdr=0.0001"])
        let strict = try settings(dir)
        XCTAssertEqual(Set(s.keys), Set(strict.keys))
        for (k, g) in strict where g.flagged { XCTAssertTrue(s[k]?.flagged == true, "\(k)") }
        for (k, g) in strict { XCTAssertEqual(g.flagged, g.q <= 0.0001, "\(k)") }
    }

    func testBadFDRValues() throws {
        let dir = Fixtures.tempDir()
        try makeSiteStudy(in: dir, seed: 1, planted: false)
        let u = dir.appendingPathComponent("r.yaml")
        for (o, message) in [
            ("subgroups.fdr=1.5", "subgroups.fdr must be between 0 and 1"), ("subgroups.fdr=0", "between 0 and 1"),
            ("subgroups={fdrr: 0.1}", "did you mean 'fdr'")
        ] {
            XCTAssertThrowsError(try RecipeLoader.load(u, overrides: [o]), o) { e in
                guard let x = e as? XRError else { return XCTFail("\(e)") }
                XCTAssertTrue(x.description.contains(message), "\(x) should say \(message)")
                XCTAssertTrue((x.field ?? "").contains("subgroups"), "\(x)")
            }
        }
    }
}
