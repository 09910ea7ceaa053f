import XCTest
import Foundation
import XRTensor
import XRProbe
import XRData
import XRRecipes
@testable import XRPackage
import TestSupport

/// Packs built from the committed synthetic-features study (no images or model needed).
final class PackageTests: XCTestCase {
    /// Run the example recipe (small grid) into a temp folder; returns the run directory.
    static func runStudy(_ dir: URL, manifest: URL? = nil, extra: [String] = []) throws -> URL {
        var overrides = ["output=\(dir.appendingPathComponent("run").path)", "shots=[2, 8]", "seeds=2", "bootstrap=100"] + extra
        if let manifest { overrides.append("data.manifest=\(manifest.path)") }
        let r = try RecipeLoader.load(Fixtures.repoRoot.appendingPathComponent("recipes/synthetic-features.yaml"), overrides: overrides)
        var o = RunOptions()
        o.quiet = true
        return try Runner.run(r, options: o).directory
    }

    func options(_ dir: URL, name: String = "site-model", version: String? = "1.0.0") -> PackOptions {
        var o = PackOptions(name: name, registry: dir.appendingPathComponent("registry"))
        o.version = version
        o.quiet = true
        return o
    }

    func testPackVerifyInspectPredict() throws {
        let dir = Fixtures.tempDir("xrlab-pack")
        let run = try Self.runStudy(dir)
        let res = try Packer.pack(runDirectory: run, options: options(dir))
        XCTAssertEqual(res.archive.lastPathComponent, "site-model-1.0.0.xrpkg")
        let p = try PackageReader.open(res.archive)
        XCTAssertEqual(p.manifest, res.manifest)
        XCTAssertEqual(Set(p.entries.keys), ["manifest.json", "MODEL_CARD.md", "SHA256SUMS", "weights/head.safetensors"])
        XCTAssertEqual(p.manifest.labels, ["effusion", "nodule"])
        XCTAssertEqual(p.manifest.base_encoder.kind, "features")
        XCTAssertEqual(p.manifest.base_encoder.dim, 48)
        XCTAssertEqual(p.manifest.base_encoder.representation, ["cls", "patch_mean"])
        XCTAssertEqual(p.manifest.recipe.data.manifest, "manifest.csv", "site paths reduced to file names")
        // The run has several methods: the best mean AUROC at the largest shot count is packed.
        let results = try String(contentsOf: run.appendingPathComponent("results.jsonl"), encoding: .utf8).split(separator: "\n")
            .map { try JSONDecoder().decode(CellResult.self, from: Data($0.utf8)) }.filter { $0.cell.shots == 8 && $0.status == "ok" }
        let means = Dictionary(grouping: results, by: \.cell.method).mapValues { rs in rs.map { $0.metrics["auroc"]! }.reduce(0, +) / Double(rs.count) }
        XCTAssertEqual(p.manifest.method.name, means.max { $0.value < $1.value }!.key)
        for (h, e) in zip(p.manifest.heads, p.manifest.evaluation) {
            XCTAssertNotNil(h.threshold)
            XCTAssertTrue(h.threshold_note.contains("Youden"), h.threshold_note)
            let auroc = try XCTUnwrap(e.metrics["auroc"])
            XCTAssertLessThanOrEqual(try XCTUnwrap(auroc.low), auroc.value)
            XCTAssertGreaterThanOrEqual(try XCTUnwrap(auroc.high), auroc.value)
            XCTAssertEqual(e.subgroups.map(\.attribute), ["age", "sex"])
            XCTAssertNotNil(e.operating_point?.sensitivity)
            XCTAssertEqual(e.calibration.map(\.count).reduce(0, +), e.n_test)
        }
        XCTAssertTrue(p.card.contains("## Subgroups") && p.card.contains("## Calibration") && p.card.contains("## Limitations"))
        XCTAssertTrue(p.card.contains("| effusion | 80 |"), p.card)
        // Training / validation / test are disjoint by patient and add up to the manifest.
        let t = p.manifest.training_data
        XCTAssertEqual(t.train.rows + t.validation.rows + t.test.rows, 240)
        XCTAssertEqual(t.test.rows, 80)

        // predict on the features reproduces the packaged evaluation.
        let (x, ids) = try Predictor.loadFeatures(Fixtures.url("recipes/features.safetensors"), representation: ["cls", "patch_mean"])
        let pred = try Predictor.predict(p, features: x, ids: ids)
        XCTAssertEqual(pred.header, ["path", "effusion_probability", "effusion_decision", "nodule_probability", "nodule_decision"])
        let table = try CSVTable(contentsOf: Fixtures.url("recipes/manifest.csv"))
        let split = table.header.firstIndex(of: "split")!, labels = table.header.firstIndex(of: "labels")!
        let testRows = table.rows.indices.filter { table.rows[$0][split] == "test" }
        for (ti, task) in ["effusion", "nodule"].enumerated() {
            let prob = testRows.map { Double(pred.rows[$0][1 + 2 * ti])! }
            let truth = testRows.map { table.rows[$0][labels].split(separator: "|").contains(Substring(task)) }
            let auroc = Metrics.auroc(prob, truth)!
            XCTAssertEqual(auroc, p.manifest.evaluation[ti].metrics["auroc"]!.value, accuracy: 2e-4, "\(task): predict vs packaged AUROC (6-digit CSV)")
            let thr = p.manifest.heads[ti].threshold!
            for (i, r) in testRows.enumerated() { XCTAssertEqual(pred.rows[r][2 + 2 * ti], prob[i] >= thr ? "1" : "0") }
        }
        // Wrong feature width is refused.
        XCTAssertThrowsError(try Predictor.predict(p, features: Tensor(zeros: [3, 47]), ids: ["a", "b", "c"])) {
            XCTAssertTrue("\($0)".contains("expects (3, 48)"), "\($0)")
        }
    }

    func testShotsPackageReproducesTheStudyCell() throws {
        let dir = Fixtures.tempDir("xrlab-pack")
        let run = try Self.runStudy(dir)
        for method in ["logistic", "knn-k5", "prototype"] {
            var o = options(dir, name: "m-\(method)")
            o.fit.method = method
            o.fit.shots = 8
            o.fit.seed = 1
            let res = try Packer.pack(runDirectory: run, options: o)
            for e in res.manifest.evaluation {
                let cell = try JSONDecoder().decode(
                    CellResult.self, from: Data(contentsOf: run.appendingPathComponent("cells/\(method)__\(e.task)__k8__s1.json")))
                XCTAssertEqual(res.manifest.heads.first { $0.task == e.task }!.n_train, cell.n_train)
                for (m, v) in cell.metrics {
                    // float32 storage of the head moves probabilities by ~1e-7.
                    XCTAssertEqual(e.metrics[m]!.value, v, accuracy: 1e-5, "\(method) \(e.task) \(m)")
                }
            }
        }
    }

    func testReproducibleBytes() throws {
        let dir = Fixtures.tempDir("xrlab-pack")
        let run = try Self.runStudy(dir)
        let a = try Packer.pack(runDirectory: run, options: options(dir))
        var o = options(dir)
        o.registry = dir.appendingPathComponent("registry2")
        let b = try Packer.pack(runDirectory: run, options: o)
        XCTAssertEqual(try Data(contentsOf: a.archive), try Data(contentsOf: b.archive))
        XCTAssertEqual(a.sha256, b.sha256)
    }

    func testVersionsAreImmutableAndBump() throws {
        let dir = Fixtures.tempDir("xrlab-pack")
        let run = try Self.runStudy(dir)
        _ = try Packer.pack(runDirectory: run, options: options(dir))
        XCTAssertThrowsError(try Packer.pack(runDirectory: run, options: options(dir))) { XCTAssertTrue("\($0)".contains("already exists"), "\($0)") }
        var o = options(dir, version: nil)
        o.bump = "minor"
        XCTAssertEqual(try Packer.pack(runDirectory: run, options: o).manifest.version, "1.1.0")
        o.bump = "patch"
        XCTAssertEqual(try Packer.pack(runDirectory: run, options: o).manifest.version, "1.1.1")
        o.bump = "major"
        XCTAssertEqual(try Packer.pack(runDirectory: run, options: o).manifest.version, "2.0.0")
        var fresh = options(dir, name: "other", version: nil)
        fresh.bump = "minor"
        XCTAssertEqual(try Packer.pack(runDirectory: run, options: fresh).manifest.version, "0.1.0")
        let index = try RegistryIndex.load(dir.appendingPathComponent("registry"))
        XCTAssertEqual(index.packages["site-model"]?.map(\.version), ["1.0.0", "1.1.0", "1.1.1", "2.0.0"])
        XCTAssertEqual(index.packages["other"]?.map(\.version), ["0.1.0"])
        for (bad, field) in [("1.0", "--version"), ("01.0.0", "--version"), ("1.0.0-rc1", "--version")] {
            XCTAssertThrowsError(try Packer.pack(runDirectory: run, options: options(dir, version: bad))) { XCTAssertTrue("\($0)".contains(field), "\($0)") }
        }
        var both = options(dir)
        both.bump = "patch"
        XCTAssertThrowsError(try Packer.pack(runDirectory: run, options: both)) { XCTAssertTrue("\($0)".contains("exactly one"), "\($0)") }
        XCTAssertThrowsError(try Packer.pack(runDirectory: run, options: options(dir, name: "../evil"))) {
            XCTAssertTrue("\($0)".contains("invalid package name"), "\($0)")
        }
        var merged = options(dir, version: "9.0.0")
        merged.merged = true
        XCTAssertThrowsError(try Packer.pack(runDirectory: run, options: merged)) { XCTAssertTrue("\($0)".contains("--merged"), "\($0)") }
        XCTAssertThrowsError(try Packer.pack(runDirectory: dir, options: options(dir, version: "9.0.0"))) {
            XCTAssertTrue("\($0)".contains("not a run directory"), "\($0)")
        }
    }

    func testDiff() throws {
        let dir = Fixtures.tempDir("xrlab-pack")
        let run = try Self.runStudy(dir)
        let a = try PackageReader.open(try Packer.pack(runDirectory: run, options: options(dir)).archive)
        var o = options(dir, version: "1.1.0")
        o.fit.method = "prototype"
        o.fit.shots = 2
        let b = try PackageReader.open(try Packer.pack(runDirectory: run, options: o).archive)
        let lines = PackageReader.diff(a, b)
        XCTAssertTrue(lines.contains("version: site-model 1.0.0 → site-model 1.1.0"), "\(lines)")
        XCTAssertTrue(lines.contains { $0.hasPrefix("method: ") && $0.hasSuffix("→ prototype (2 shots)") }, "\(lines)")
        XCTAssertTrue(lines.contains { $0.hasPrefix("threshold effusion: ") }, "\(lines)")
        XCTAssertTrue(lines.contains { $0.hasPrefix("auroc effusion: ") && $0.contains("(") }, "\(lines)")
        XCTAssertFalse(lines.contains { $0.hasPrefix("base encoder") }, "same features: \(lines)")
        XCTAssertEqual(PackageReader.diff(a, a), [])
    }

    /// Patient ids and image paths from the manifest never reach the archive.
    func testNoIdentifiersInTheArchive() throws {
        let dir = Fixtures.tempDir("xrlab-pack")
        let table = try CSVTable(contentsOf: Fixtures.url("recipes/manifest.csv"))
        let pc = table.header.firstIndex(of: "patient_id")!, ic = table.header.firstIndex(of: "path")!
        var rows = table.rows
        for i in rows.indices {
            rows[i][pc] = "MRN-99\(rows[i][pc])-DOE"
            rows[i][ic] = "site/JANE_DOE_\(i).png"
        }
        let csv = ([table.header] + rows).map { $0.joined(separator: ",") }.joined(separator: "\n") + "\n"
        let manifest = dir.appendingPathComponent("manifest-with-ids.csv")
        try csv.write(to: manifest, atomically: true, encoding: .utf8)
        let features = dir.appendingPathComponent("features.safetensors")
        try FileManager.default.copyItem(at: Fixtures.url("recipes/features.safetensors"), to: features)
        let run = try Self.runStudy(dir, manifest: manifest, extra: ["features.matrix=\(features.path)"])
        let res = try Packer.pack(runDirectory: run, options: options(dir))
        let entries = try TarArchive.read(res.archive)
        for e in entries {
            let text = String(decoding: e.data, as: UTF8.self)
            XCTAssertFalse(text.contains("MRN-99"), "\(e.name) holds a patient id")
            XCTAssertFalse(text.contains("JANE_DOE"), "\(e.name) holds an image path")
            XCTAssertFalse(text.contains(dir.path), "\(e.name) holds a local path")
        }
        XCTAssertEqual(res.manifest.training_data.test.patients, 40)
    }

    /// Rewrite one package entry (SHA256SUMS kept or recomputed) into a new archive.
    func tamper(_ url: URL, _ name: String, fixSums: Bool, _ change: (Data) -> Data) throws -> URL {
        var entries = try TarArchive.read(url)
        let i = entries.firstIndex { $0.name == name }!
        entries[i].data = change(entries[i].data)
        if fixSums {
            let j = entries.firstIndex { $0.name == "SHA256SUMS" }!
            entries[j].data = Data(Packer.checksums(entries.filter { $0.name != "SHA256SUMS" }).utf8)
        }
        let out = url.deletingLastPathComponent().appendingPathComponent("tampered-\(UUID().uuidString).xrpkg")
        try TarArchive.write(entries, to: out)
        return out
    }

    func testTamperedPackagesRefused() throws {
        let dir = Fixtures.tempDir("xrlab-pack")
        let run = try Self.runStudy(dir)
        var o = options(dir)
        o.fit.method = "logistic"
        let url = try Packer.pack(runDirectory: run, options: o).archive
        // Checksum mismatch names the entry.
        let w = try tamper(url, "weights/head.safetensors", fixSums: false) {
            var d = $0; d[d.count - 1] ^= 1; return d
        }
        XCTAssertThrowsError(try PackageReader.open(w)) { e in
            XCTAssertTrue("\(e)".contains("checksum mismatch") && "\(e)".contains("weights/head.safetensors"), "\(e)")
        }
        // A newer format is refused, naming the xrlab version that reads it.
        let newer = try tamper(url, "manifest.json", fixSums: true) { d in
            var o = try! JSONSerialization.jsonObject(with: d) as! [String: Any]
            o["format_version"] = 2
            o["requires_xrlab"] = "0.3.0"
            return try! JSONSerialization.data(withJSONObject: o)
        }
        XCTAssertThrowsError(try PackageReader.open(newer)) { e in
            XCTAssertTrue("\(e)".contains("package format 2 is newer") && "\(e)".contains("xrlab 0.3.0 or newer"), "\(e)")
        }
        // Schema problems name the field.
        let missing = try tamper(url, "manifest.json", fixSums: true) { d in
            var o = try! JSONSerialization.jsonObject(with: d) as! [String: Any]
            o.removeValue(forKey: "heads")
            return try! JSONSerialization.data(withJSONObject: o)
        }
        XCTAssertThrowsError(try PackageReader.open(missing)) { XCTAssertTrue("\($0)".contains("missing field 'heads'"), "\($0)") }
        let badThreshold = try tamper(url, "manifest.json", fixSums: true) { d in
            String(decoding: d, as: UTF8.self).replacingOccurrences(of: "\"threshold\" : 0.", with: "\"threshold\" : 7.").data(using: .utf8)!
        }
        XCTAssertThrowsError(try PackageReader.open(badThreshold)) { XCTAssertTrue("\($0)".contains("heads[0].threshold"), "\($0)") }
        // Head tensors that do not match the manifest.
        let shape = try tamper(url, "weights/head.safetensors", fixSums: true) { _ in
            try! SafeTensors.encode([("heads.0.weight", Tensor(zeros: [1, 7])), ("heads.0.bias", Tensor(zeros: [1]))])
        }
        XCTAssertThrowsError(try PackageReader.open(shape)) { XCTAssertTrue("\($0)".contains("heads.0.weight"), "\($0)") }
        // An extra file not in SHA256SUMS.
        var entries = try TarArchive.read(url)
        entries.append(ArchiveEntry(name: "extra.sh", data: Data("rm -rf /".utf8)))
        let extra = dir.appendingPathComponent("extra.xrpkg")
        try TarArchive.write(entries, to: extra)
        XCTAssertThrowsError(try PackageReader.open(extra)) { XCTAssertTrue("\($0)".contains("not listed in SHA256SUMS"), "\($0)") }
        // Truncated package.
        let full = try Data(contentsOf: url)
        let cut = dir.appendingPathComponent("cut.xrpkg")
        try full.prefix(full.count * 2 / 3).write(to: cut)
        XCTAssertThrowsError(try PackageReader.open(cut))
    }

    func testUnpackLeavesNothingBehindOnFailure() throws {
        let dir = Fixtures.tempDir("xrlab-pack")
        let run = try Self.runStudy(dir)
        let url = try Packer.pack(runDirectory: run, options: options(dir)).archive
        let dest = dir.appendingPathComponent("out/model")
        let p = try PackageReader.unpack(url, to: dest)
        for name in p.entries.keys { XCTAssertEqual(try Data(contentsOf: dest.appendingPathComponent(name)), p.entries[name]) }
        XCTAssertThrowsError(try PackageReader.unpack(url, to: dest)) { XCTAssertTrue("\($0)".contains("already exists"), "\($0)") }
        let bad = try tamper(url, "MODEL_CARD.md", fixSums: false) { $0 + Data("x".utf8) }
        let dest2 = dir.appendingPathComponent("out/model2")
        XCTAssertThrowsError(try PackageReader.unpack(bad, to: dest2))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dest2.path))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("out").path), ["model"], "no partial folders")
    }
}
