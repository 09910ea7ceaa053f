import Foundation
import XCTest
import XRRecipes
import XRPipeline
import XRTensor
import XRData
import TestSupport

/// Where features come from: `xrlab embed` outputs, per-tensor npy files, custom sources.
final class FeatureSourceTests: XCTestCase {
    func write(_ text: String, in dir: URL, name: String = "r.yaml") throws -> URL {
        let u = dir.appendingPathComponent(name)
        try text.write(to: u, atomically: true, encoding: .utf8)
        return u
    }

    func quiet() -> RunOptions { var o = RunOptions(); o.quiet = true; o.commandLine = ["xrlab", "run"]; return o }

    static func recipe(_ input: String, output: String, representation: String = "[cls, patch_mean]") -> String {
        """
        version: 1
        name: embed-parity
        \(input)
        data:
          manifest: manifest.csv
          label_column: labels
          labels: [effusion, nodule]
          patient_column: patient_id
          split_column: split
        representation: \(representation)
        methods:
          - {name: logistic, C: [0.1, 1], cv_min_shots: 2}
          - {name: prototype}
        shots: [1, 2]
        seeds: 2
        bootstrap: 10
        output: \(output)
        """
    }

    /// Encoding the images in the run and reading what `xrlab embed` wrote (safetensors + sidecar,
    /// rows in a different order; or per-tensor npy files) give byte-identical results.
    func testEmbedOutputsGiveTheSameResultsAsEncoding() throws {
        let dir = Fixtures.tempDir("embed-parity")
        let demo = try DemoData.generate(in: dir, patients: 16)
        let encoder = try Encoder.load(model: demo.modelDir)
        let table = try CSVTable(contentsOf: demo.manifest)
        let pathColumn = try table.column("path")
        // Embedded in reverse manifest order: the sidecar says which row is which.
        let inputs = table.rows.reversed().map { ImageInput(url: dir.appendingPathComponent($0[pathColumn]), id: $0[pathColumn]) }
        var o = EmbedOptions()
        o.quiet = true
        o.cache = nil
        let result = try encoder.embed(inputs, options: o)
        try EmbedOutput.write(
            result, encoder: encoder, modelPath: demo.modelDir.path, format: .safetensors, to: dir.appendingPathComponent("feats.safetensors"))
        try EmbedOutput.write(result, encoder: encoder, modelPath: demo.modelDir.path, format: .npy, to: dir.appendingPathComponent("feats.npy"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("feats.cls.npy").path))

        var runs: [URL] = []
        for (name, input) in [
            ("encoded", "model:\n  path: model"), ("safetensors", "features:\n  matrix: feats.safetensors"),
            ("npy", "features:\n  matrix: feats.npy")
        ] {
            let r = try RecipeLoader.load(try write(Self.recipe(input, output: "run-\(name)"), in: dir, name: "\(name).yaml"))
            XCTAssertEqual(Planner.validate(r.file).map(\.description), [], name)
            let s = try Runner.run(r, options: quiet())
            XCTAssertTrue(s.complete, name)
            XCTAssertEqual(s.computed, 2 * 2 * 2 * 2, name)
            runs.append(s.directory)
        }
        let report = try String(contentsOf: runs[1].appendingPathComponent("report.md"), encoding: .utf8)
        XCTAssertTrue(report.contains("rows matched by the embed sidecar"), report)
        for f in ["results.jsonl", "summary.csv"] {
            let want = try Data(contentsOf: runs[0].appendingPathComponent(f))
            XCTAssertEqual(try Data(contentsOf: runs[1].appendingPathComponent(f)), want, "safetensors + sidecar: \(f)")
            XCTAssertEqual(try Data(contentsOf: runs[2].appendingPathComponent(f)), want, "per-tensor npy + sidecar: \(f)")
        }
    }

    /// `representation: [pooled]`, encoded in the run and read from an embed output: the model's
    /// pre-logits feature (for the demo's ViT, the class token), the same results both ways and
    /// the same as `[cls]`.
    func testPooledRepresentation() throws {
        let dir = Fixtures.tempDir("pooled")
        let demo = try DemoData.generate(in: dir, patients: 16)
        let encoder = try Encoder.load(model: demo.modelDir)
        let table = try CSVTable(contentsOf: demo.manifest)
        let pathColumn = try table.column("path")
        var o = EmbedOptions()
        o.quiet = true
        o.cache = nil
        let result = try encoder.embed(table.rows.map { ImageInput(url: dir.appendingPathComponent($0[pathColumn]), id: $0[pathColumn]) }, options: o)
        XCTAssertEqual(result.tensors["pooled"], result.tensors["cls"])
        try EmbedOutput.write(
            result, encoder: encoder, modelPath: demo.modelDir.path, format: .safetensors, to: dir.appendingPathComponent("feats.safetensors"))
        var summaries: [Data] = []
        for (name, input, rep) in [
            ("encoded", "model:\n  path: model", "[pooled]"), ("file", "features:\n  matrix: feats.safetensors", "[pooled]"),
            ("cls", "model:\n  path: model", "[cls]")
        ] {
            let r = try RecipeLoader.load(try write(Self.recipe(input, output: "run-\(name)", representation: rep), in: dir, name: "\(name).yaml"))
            XCTAssertEqual(Planner.validate(r.file).map(\.description), [], name)
            let s = try Runner.run(r, options: quiet())
            XCTAssertTrue(s.complete, name)
            summaries.append(try Data(contentsOf: s.directory.appendingPathComponent("summary.csv")))
        }
        XCTAssertEqual(summaries[1], summaries[0], "read from the embed output")
        XCTAssertEqual(summaries[2], summaries[0], "the same numbers as the class token")
    }

    func testMissingTensorNamesWhatTheFileHolds() throws {
        let dir = Fixtures.tempDir()
        let n = 6
        try SafeTensors.write([("cls", Tensor(shape: [n, 4], scalars: (0..<(n * 4)).map(Float.init)))], to: dir.appendingPathComponent("f.safetensors"))
        try CSVTable(header: ["path", "labels", "split"], rows: (0..<n).map { ["i\($0)", $0 % 2 == 0 ? "a" : "", $0 < 3 ? "train" : "test"] })
            .write(to: dir.appendingPathComponent("m.csv"))
        let text = """
            version: 1
            name: t
            features: {matrix: f.safetensors}
            data: {manifest: m.csv, label_column: labels, labels: [a], split_column: split}
            representation: [cls, last4_cls]
            methods: [{name: prototype}]
            shots: [1]
            seeds: 1
            output: run
            """
        let u = try write(text, in: dir)
        let problems = Planner.validate(u)
        XCTAssertEqual(problems.count, 1)
        XCTAssertEqual(problems.first?.field, "representation")
        XCTAssertTrue(problems.first?.description.contains("no tensor 'last_blocks_cls' (for 'last4_cls')") == true, "\(problems)")
        XCTAssertTrue(problems.first?.hint?.contains("cls") == true)
        // A single plain matrix cannot be split into representations.
        try NPY.write(Tensor(shape: [n, 4], scalars: [Float](repeating: 1, count: n * 4)), to: dir.appendingPathComponent("f.npy"))
        let npy = try write(text.replacingOccurrences(of: "f.safetensors", with: "f.npy"), in: dir, name: "npy.yaml")
        XCTAssertThrowsError(try Runner.run(try RecipeLoader.load(npy), options: quiet())) { e in
            XCTAssertTrue("\(e)".contains("a single .npy matrix holds one representation"), "\(e)")
        }
        // Row-count mismatch without a sidecar.
        try NPY.write(Tensor(shape: [n + 1, 4], scalars: [Float](repeating: 1, count: (n + 1) * 4)), to: dir.appendingPathComponent("g.npy"))
        let rows = try write(
            text.replacingOccurrences(of: "f.safetensors", with: "g.npy").replacingOccurrences(of: "[cls, last4_cls]", with: "[cls]"), in: dir, name: "g.yaml")
        XCTAssertThrowsError(try Runner.run(try RecipeLoader.load(rows), options: quiet())) { e in
            XCTAssertTrue("\(e)".contains("7 rows but the manifest has 6"), "\(e)")
        }
    }

    /// A source that serves features in its own order (as a remote service might).
    struct ShuffledSource: FeatureSource {
        var drop: String?
        func loadFeatures(for recipe: LoadedRecipe, rows: ManifestRows, quiet: Bool) throws -> FeatureSet {
            let base = try PrecomputedFeatureSource().loadFeatures(for: recipe, rows: rows, quiet: quiet)
            let d = base.matrix.shape[1]
            let order = Array((0..<base.ids.count).reversed()).filter { base.ids[$0] != drop }
            return FeatureSet(
                ids: order.map { base.ids[$0] },
                matrix: Tensor(shape: [order.count, d], scalars: order.flatMap { base.matrix.scalars[($0 * d)..<(($0 + 1) * d)] }),
                description: "shuffled test source")
        }
        func status(for recipe: LoadedRecipe, rows: ManifestRows) throws -> (description: String, seconds: Double) { ("test", 0) }
    }

    func testCustomFeatureSourcePlugsIn() throws {
        let a = Fixtures.tempDir(), b = Fixtures.tempDir()
        try makeStudy(in: a); try makeStudy(in: b)
        _ = try Runner.run(try RecipeLoader.load(try write(studyRecipe, in: a)), options: quiet())
        var o = quiet()
        o.featureSource = ShuffledSource()
        let rb = try RecipeLoader.load(try write(studyRecipe, in: b))
        let s = try Runner.run(rb, options: o)
        XCTAssertTrue(try String(contentsOf: s.report, encoding: .utf8).contains("shuffled test source"))
        XCTAssertEqual(try Data(contentsOf: a.appendingPathComponent("run/results.jsonl")), try Data(contentsOf: b.appendingPathComponent("run/results.jsonl")))
        // A row the source does not cover is named.
        o.featureSource = ShuffledSource(drop: "img5.png")
        o.force = true
        XCTAssertThrowsError(try Runner.run(rb, options: o)) { e in
            XCTAssertEqual((e as? XRError)?.field, "row 7, column path")
            XCTAssertTrue("\(e)".contains("no features for 'img5.png'"), "\(e)")
        }
    }
}
