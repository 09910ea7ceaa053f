import XCTest
import Foundation
import XRTensor
import XRData
import XRPipeline
import XRRecipes
@testable import XRPackage
import TestSupport

/// Detection packages on generated images (`SyntheticBoxes`, the demo encoder): `pack` records the
/// kind, geometry, box head and the study cell's metrics; `predict` reproduces the boxes, image
/// scores and heatmaps the study wrote; tampering and outputs of another kind are refused.
final class DetectionPackageTests: XCTestCase {
    static let recipe = """
        version: 1
        name: det-package
        model: {path: demo/model, batch_size: 8}
        data:
          manifest: manifest.csv
          task: detection
          boxes: boxes.csv
          patient_column: patient
          split_column: split
          subgroups: {sex: {column: sex}}
        methods:
          - {name: box_head, epochs: 40, lr: 0.05, batch_size: 4, scoring: mean}
          - {name: knn_patches, k: 5}
        shots: [6]
        seeds: 1
        bootstrap: 20
        output: run
        """

    /// The demo encoder, 30 generated images (20 training) and the run of `recipe` under `dir`.
    func runStudy(_ dir: URL, recipe: String = DetectionPackageTests.recipe) throws -> URL {
        try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 2)
        try SyntheticBoxes.write(in: dir, count: 30, train: 20)
        let url = dir.appendingPathComponent("r.yaml")
        try recipe.write(to: url, atomically: true, encoding: .utf8)
        var ro = RunOptions()
        ro.quiet = true
        return try Runner.run(try RecipeLoader.load(url), options: ro).directory
    }

    func pack(_ run: URL, _ dir: URL, name: String, method: String?, shots: Int?) throws -> PackResult {
        var o = PackOptions(name: name, registry: dir.appendingPathComponent("reg"))
        o.version = "1.0.0"
        o.fit.method = method
        o.fit.shots = shots
        o.quiet = true
        return try Packer.pack(runDirectory: run, options: o)
    }

    func embedOptions() -> EmbedOptions {
        var eo = EmbedOptions()
        eo.quiet = true
        eo.cache = nil
        return eo
    }

    /// Rewrite one entry (SHA256SUMS recomputed) into a new archive.
    func tamper(_ url: URL, _ name: String, _ change: (Data) -> Data) throws -> URL {
        var entries = try TarArchive.read(url)
        let i = try XCTUnwrap(entries.firstIndex { $0.name == name })
        entries[i].data = change(entries[i].data)
        let j = try XCTUnwrap(entries.firstIndex { $0.name == "SHA256SUMS" })
        entries[j].data = Data(Packer.checksums(entries.filter { $0.name != "SHA256SUMS" }).utf8)
        let out = url.deletingLastPathComponent().appendingPathComponent("tampered-\(UUID().uuidString).xrpkg")
        try TarArchive.write(entries, to: out)
        return out
    }

    func editManifest(_ url: URL, _ edit: @escaping (inout [String: Any]) -> Void) throws -> URL {
        try tamper(url, "manifest.json") { d in
            var o = (try? JSONSerialization.jsonObject(with: d) as? [String: Any]) ?? [:]
            edit(&o)
            return (try? JSONSerialization.data(withJSONObject: o)) ?? Data()
        }
    }

    func headTensors(_ url: URL, _ tensors: [(String, Tensor)]) throws -> URL {
        try tamper(url, "weights/head.safetensors") { _ in (try? SafeTensors.encode(tensors)) ?? Data() }
    }

    func testDetectionPackagePredictsTheStudysBoxes() throws {
        let dir = Fixtures.tempDir("xrlab-det-pack")
        let run = try runStudy(dir)
        let res = try pack(run, dir, name: "det", method: "box_head", shots: 6)
        let p = try PackageReader.open(res.archive)
        XCTAssertEqual(p.manifest.kind, "detection")
        XCTAssertEqual(p.manifest.packageKind, .detection)
        XCTAssertEqual(p.heads.map(\.info.kind), ["box_head"])
        XCTAssertEqual(p.manifest.base_encoder.representation, ["patch_tokens"])
        let spec = try XCTUnwrap(p.manifest.detection)
        XCTAssertEqual(spec.scoring.rawValue, "mean")
        XCTAssertEqual(spec.threshold, 0)
        XCTAssertEqual(spec.finding, "boxes")
        let g = try XCTUnwrap(p.manifest.base_encoder.preprocessing).geometry(height: SyntheticBoxes.height, width: SyntheticBoxes.width)
        XCTAssertEqual([spec.input_height, spec.input_width], [g.inputHeight, g.inputWidth])
        XCTAssertEqual(p.heads[0].tensors["weight"]?.shape, [1, p.manifest.base_encoder.dim])
        XCTAssertEqual(p.manifest.heads[0].n_train, 12, "6 images with a box and 6 without")
        XCTAssertTrue(p.card.contains("boxes (in image pixels"), p.card)

        // The packaged evaluation is the study cell's, every metric with its interval.
        let lines = try String(contentsOf: run.appendingPathComponent("results.jsonl"), encoding: .utf8).split(separator: "\n")
        let cell = try XCTUnwrap(
            try lines.map { try JSONDecoder().decode(CellResult.self, from: Data($0.utf8)) }.first { $0.cell.method == "box_head" && $0.cell.seed == 0 })
        let e = p.manifest.evaluation[0]
        XCTAssertEqual(Set(e.metrics.keys), Set(cell.metrics.filter { $0.value.isFinite }.keys))
        for (name, v) in cell.metrics where v.isFinite {
            XCTAssertEqual(e.metrics[name]?.value, v, name)
            XCTAssertEqual(e.metrics[name]?.low, cell.metric_ci?[name]?.low, name)
            XCTAssertEqual(e.metrics[name]?.high, cell.metric_ci?[name]?.high, name)
        }
        for name in ["ap_10", "ap_30", "ap_50", "froc_1", "pointing_game", "auroc"] { XCTAssertNotNil(e.metrics[name]?.low, name) }
        XCTAssertGreaterThan(try XCTUnwrap(e.metrics["auroc"]).value, 0.7, "the rectangles are found")

        // predict on every image: the test images' boxes, scores and peaks are the ones the cell
        // wrote into boxes.csv, to the last digit.
        let inputs = try InputList.resolve(dir.appendingPathComponent("manifest.csv"))
        let heatmaps = dir.appendingPathComponent("out/heatmaps")
        let pred = try Predictor.predict(
            p, base: dir.appendingPathComponent("demo/model"), inputs: inputs, options: embedOptions(), boxes: "boxes.csv", heatmaps: heatmaps.path)
        XCTAssertEqual(pred.header, ["path", "image_score", "peak_x", "peak_y", "boxes"])
        XCTAssertEqual(pred.rows.count, 30)
        let study = try CSVTable(contentsOf: run.appendingPathComponent("boxes.csv"))
        let col = { (name: String) in try study.column(name) }
        let (m, img, score, px, py, x, y, w, h, s) = try (
            col("method"), col("image"), col("image_score"), col("peak_x"), col("peak_y"), col("x"), col("y"), col("width"), col("height"), col("score")
        )
        let cellRows = study.rows.filter { $0[m] == "box_head" }
        let testImages = Array(Set(cellRows.map { $0[img] })).sorted()
        XCTAssertEqual(testImages.count, 10)
        var compared = 0
        for id in testImages {
            let expected = cellRows.filter { $0[img] == id }
            let row = try XCTUnwrap(pred.rows.first { $0[0] == id })
            XCTAssertEqual(row[1...3].map { $0 }, [expected[0][score], expected[0][px], expected[0][py]], id)
            let got = pred.boxes.filter { $0[0] == id }.map { Array($0[2...6]) }
            let want = expected.filter { !$0[x].isEmpty }.map { [$0[x], $0[y], $0[w], $0[h], $0[s]] }
            XCTAssertEqual(got, want, id)
            XCTAssertEqual(row[4], String(want.count))
            compared += want.count
        }
        XCTAssertGreaterThan(compared, 5, "the cell found boxes to compare")
        XCTAssertEqual(pred.boxes.map { $0[1] }.filter { $0 == "0" }.count, pred.rows.filter { $0[4] != "0" }.count)

        // Heatmaps: the study's sample heatmaps come back byte for byte, with an overlay per image.
        try pred.writeHeatmaps(to: heatmaps)
        try pred.writeBoxes(to: dir.appendingPathComponent("out/boxes.csv"))
        let sample = run.appendingPathComponent("heatmaps/box_head__k6__s0")
        let sampled = try FileManager.default.contentsOfDirectory(atPath: sample.path).filter { $0.hasSuffix(".png") }
        XCTAssertFalse(sampled.isEmpty)
        for f in sampled {
            XCTAssertEqual(try Data(contentsOf: sample.appendingPathComponent(f)), try Data(contentsOf: heatmaps.appendingPathComponent(f)), f)
        }
        let written = try FileManager.default.contentsOfDirectory(atPath: heatmaps.path)
        XCTAssertEqual(written.filter { $0.hasSuffix("_overlay.png") }.count, 30)
        XCTAssertEqual(written.count, 60)
        let overlay = try PNGCodec.read(heatmaps.appendingPathComponent("images_0_png_overlay.png"))
        XCTAssertEqual(overlay.channels, 3)
        let boxesCSV = try CSVTable(contentsOf: dir.appendingPathComponent("out/boxes.csv"))
        XCTAssertEqual(boxesCSV.header, Prediction.boxesHeader)
        XCTAssertEqual(boxesCSV.rows, pred.boxes)
    }

    /// A tuned detection cell (LoRA with the box head) packages its tuned encoder beside the box
    /// head; predict runs both and gives back the cell's boxes, image scores, peaks and heatmaps.
    func testTunedDetectionPackagePredictsTheStudysBoxes() throws {
        let dir = Fixtures.tempDir("xrlab-det-tune-pack")
        let recipe = Self.recipe.replacingOccurrences(
            of: "  - {name: knn_patches, k: 5}", with: "  - {name: lora, rank: 4, alpha: 8, epochs: 3, lr: 0.002, batch_size: 3, validation: 2}")
        let run = try runStudy(dir, recipe: recipe)
        XCTAssertThrowsError(try pack(run, dir, name: "all", method: "lora", shots: nil)) { XCTAssertEqual(($0 as? XRError)?.field, "--shots", "\($0)") }
        let res = try pack(run, dir, name: "lora-det", method: "lora", shots: 6)
        let p = try PackageReader.open(res.archive)
        XCTAssertEqual(p.manifest.packageKind, .detection)
        XCTAssertEqual(p.heads.map(\.info.kind), ["lora"])
        XCTAssertTrue(p.heads[0].isTuned)
        let S = try XCTUnwrap(p.manifest.base_encoder.input_size)
        XCTAssertEqual([p.manifest.detection?.input_height, p.manifest.detection?.input_width], [S, S])
        XCTAssertEqual(p.manifest.detection?.scoring.rawValue, "mean", "the box head's settings")
        XCTAssertEqual(p.manifest.base_encoder.representation, ["patch_tokens"])
        XCTAssertEqual(p.heads[0].tensors["weight"]?.shape, [1, p.manifest.base_encoder.dim])
        XCTAssertTrue(p.heads[0].tensors.keys.contains { $0.contains("lora_") }, "\(p.heads[0].tensors.keys.sorted())")
        XCTAssertFalse(p.heads[0].tensors.keys.contains { $0.hasPrefix("head") }, "the classifier head is not packaged")
        let lines = try String(contentsOf: run.appendingPathComponent("results.jsonl"), encoding: .utf8).split(separator: "\n")
        let cell = try XCTUnwrap(
            try lines.map { try JSONDecoder().decode(CellResult.self, from: Data($0.utf8)) }.first { $0.cell.method == "lora" && $0.cell.seed == 0 })
        XCTAssertNotNil(cell.training, "the cell was tuned")
        let e = p.manifest.evaluation[0]
        XCTAssertEqual(Set(e.metrics.keys), Set(cell.metrics.filter { $0.value.isFinite }.keys))
        for (name, v) in cell.metrics where v.isFinite {
            XCTAssertEqual(e.metrics[name]?.value, v, name)
            XCTAssertEqual(e.metrics[name]?.low, cell.metric_ci?[name]?.low, name)
            XCTAssertEqual(e.metrics[name]?.high, cell.metric_ci?[name]?.high, name)
        }

        // predict: the test images' boxes, scores and peaks are the ones the tuned cell wrote.
        let base = dir.appendingPathComponent("demo/model")
        let inputs = try InputList.resolve(dir.appendingPathComponent("manifest.csv"))
        let heatmaps = dir.appendingPathComponent("out/heatmaps")
        let pred = try Predictor.predict(p, base: base, inputs: inputs, options: embedOptions(), boxes: "boxes.csv", heatmaps: heatmaps.path)
        let study = try CSVTable(contentsOf: run.appendingPathComponent("boxes.csv"))
        let col = { (name: String) in try study.column(name) }
        let (m, img, score, px, py, x, y, w, h, s) = try (
            col("method"), col("image"), col("image_score"), col("peak_x"), col("peak_y"), col("x"), col("y"), col("width"), col("height"), col("score")
        )
        let cellRows = study.rows.filter { $0[m] == "lora" }
        let testImages = Array(Set(cellRows.map { $0[img] })).sorted()
        XCTAssertEqual(testImages.count, 10)
        var compared = 0
        for id in testImages {
            let expected = cellRows.filter { $0[img] == id }
            let row = try XCTUnwrap(pred.rows.first { $0[0] == id })
            XCTAssertEqual(row[1...3].map { $0 }, [expected[0][score], expected[0][px], expected[0][py]], id)
            let got = pred.boxes.filter { $0[0] == id }.map { Array($0[2...6]) }
            XCTAssertEqual(got, expected.filter { !$0[x].isEmpty }.map { [$0[x], $0[y], $0[w], $0[h], $0[s]] }, id)
            compared += got.count
        }
        XCTAssertGreaterThan(compared, 5, "the cell found boxes to compare")
        try pred.writeHeatmaps(to: heatmaps)
        let sample = run.appendingPathComponent("heatmaps/lora__k6__s0")
        let sampled = try FileManager.default.contentsOfDirectory(atPath: sample.path).filter { $0.hasSuffix(".png") }
        XCTAssertFalse(sampled.isEmpty)
        for f in sampled {
            XCTAssertEqual(try Data(contentsOf: sample.appendingPathComponent(f)), try Data(contentsOf: heatmaps.appendingPathComponent(f)), f)
        }
        // The frozen box head's package of the same draw predicts other scores: the tuned encoder is used.
        let frozen = try PackageReader.open(try pack(run, dir, name: "frozen", method: "box_head", shots: 6).archive)
        let other = try Predictor.predict(frozen, base: base, inputs: inputs, options: embedOptions(), boxes: "b.csv")
        XCTAssertNotEqual(other.rows.map { $0[1] }, pred.rows.map { $0[1] })

        // A tuned tensor of the wrong size is refused naming it.
        let name = try XCTUnwrap(p.heads[0].tensors.keys.sorted().first { $0.contains("lora_") })
        var t = p.heads[0].tensors.map { ("heads.0." + $0.key, $0.value) }
        if let i = t.firstIndex(where: { $0.0 == "heads.0." + name }) { t[i].1 = Tensor(zeros: [3]) }
        let bad = try PackageReader.open(try headTensors(res.archive, t))
        XCTAssertThrowsError(try Predictor.predict(bad, base: base, inputs: Array(inputs.prefix(1)), options: embedOptions(), boxes: "b.csv")) {
            XCTAssertEqual(($0 as? XRError)?.field, "heads.0." + name, "\($0)")
        }
    }

    func testDetectionPackageRefusals() throws {
        let dir = Fixtures.tempDir("xrlab-det-pack-bad")
        let run = try runStudy(dir)
        XCTAssertThrowsError(try pack(run, dir, name: "knn", method: "knn_patches", shots: 6)) { e in
            XCTAssertTrue("\(e)".contains("box head") && (e as? XRError)?.field == "--method", "\(e)")
        }
        XCTAssertThrowsError(try pack(run, dir, name: "many", method: "box_head", shots: 40)) { XCTAssertEqual(($0 as? XRError)?.field, "--shots", "\($0)") }
        // Every training image (none shares a patient with the test set): the default method.
        let url = try pack(run, dir, name: "all", method: nil, shots: nil).archive
        let p = try PackageReader.open(url)
        XCTAssertEqual(p.manifest.heads[0].n_train, 20)
        XCTAssertNil(p.manifest.method.shots)
        XCTAssertEqual(p.manifest.training_data.train.classes["boxes"], ["box": 14, "no_box": 6])

        // Outputs of another kind, features, a missing --boxes.
        let base = dir.appendingPathComponent("demo/model")
        let inputs = Array(try InputList.resolve(dir.appendingPathComponent("manifest.csv")).prefix(2))
        XCTAssertThrowsError(try Predictor.predict(p, base: base, inputs: inputs, options: embedOptions(), masks: "m", boxes: "b.csv")) { e in
            XCTAssertEqual((e as? XRError)?.field, "--masks", "\(e)")
            XCTAssertTrue("\(e)".contains("this is a detection package: it predicts boxes"), "\(e)")
        }
        XCTAssertThrowsError(try Predictor.predict(p, base: base, inputs: inputs, options: embedOptions())) { e in
            XCTAssertEqual((e as? XRError)?.field, "--boxes", "\(e)")
        }
        XCTAssertThrowsError(try Predictor.predict(p, features: Tensor(zeros: [1, p.manifest.base_encoder.dim]), ids: ["a"])) { e in
            XCTAssertEqual((e as? XRError)?.field, "--features", "\(e)")
        }
        XCTAssertThrowsError(try Predictor.checkOutputs(.segmentation, masks: "m", boxes: "b.csv", heatmaps: nil)) { e in
            XCTAssertEqual((e as? XRError)?.field, "--boxes", "\(e)")
            XCTAssertTrue("\(e)".contains("this is a segmentation package: it predicts masks"), "\(e)")
        }
        XCTAssertThrowsError(try Predictor.checkOutputs(.classification, masks: nil, boxes: nil, heatmaps: "h")) { e in
            XCTAssertEqual((e as? XRError)?.field, "--heatmaps", "\(e)")
        }

        // Head tensors of the wrong shape, non-finite, missing: refused naming the file and the tensor.
        let C = p.manifest.base_encoder.dim
        for (tensors, field, message) in [
            ([("heads.0.weight", Tensor(zeros: [2, C])), ("heads.0.bias", Tensor(zeros: [1]))], "heads.0.weight", "does not match (1, \(C))"),
            ([("heads.0.weight", Tensor(zeros: [1, C])), ("heads.0.bias", Tensor(zeros: [3]))], "heads.0.bias", "does not match (1)"),
            (
                [("heads.0.weight", Tensor(shape: [1, C], scalars: [Float](repeating: .nan, count: C))), ("heads.0.bias", Tensor(zeros: [1]))],
                "heads.0.weight", "non-finite"
            ),
            ([("heads.0.weight", Tensor(zeros: [1, C]))], "heads.0.bias", "missing tensor")
        ] as [([(String, Tensor)], String, String)] {
            XCTAssertThrowsError(try PackageReader.open(try headTensors(url, tensors))) { e in
                XCTAssertEqual((e as? XRError)?.field, field, "\(e)")
                XCTAssertTrue((e as? XRError)?.file?.hasSuffix("weights/head.safetensors") ?? false, "\(e)")
                XCTAssertTrue("\(e)".contains(message), "\(e)")
            }
        }
        // The manifest's detection section: missing, a scoring it does not know, a non-box head, three classes.
        let noSpec = try editManifest(url) { $0.removeValue(forKey: "detection") }
        XCTAssertThrowsError(try PackageReader.open(noSpec)) { XCTAssertEqual(($0 as? XRError)?.field, "detection", "\($0)") }
        let scoring = try editManifest(url) { m in
            var d = (m["detection"] as? [String: Any]) ?? [:]
            d["scoring"] = "median"
            m["detection"] = d
        }
        XCTAssertThrowsError(try PackageReader.open(scoring)) { XCTAssertTrue("\($0)".contains("detection.scoring"), "\($0)") }
        let wrongHead = try editManifest(url) { m in
            var h = (m["heads"] as? [[String: Any]]) ?? []
            h[0]["kind"] = "linear_decoder"
            m["heads"] = h
        }
        XCTAssertThrowsError(try PackageReader.open(wrongHead)) {
            XCTAssertTrue("\($0)".contains("unknown head kind 'linear_decoder' for a detection package"), "\($0)")
        }
        let classes = try editManifest(url) { m in
            var h = (m["heads"] as? [[String: Any]]) ?? []
            h[0]["classes"] = ["a", "b", "c"]
            m["heads"] = h
        }
        XCTAssertThrowsError(try PackageReader.open(classes)) { XCTAssertEqual(($0 as? XRError)?.field, "heads[0].classes", "\($0)") }
    }
}
