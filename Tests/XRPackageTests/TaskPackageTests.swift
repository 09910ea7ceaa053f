import XCTest
import Foundation
import XRTensor
import XRProbe
import XRData
import XRPipeline
import XRRecipes
@testable import XRPackage
import TestSupport

/// Segmentation and retrieval packages on generated images (`SyntheticRectangles`, the demo
/// encoder): `pack` records the task kind, geometry and head; `predict` reproduces the study's own
/// masks and neighbours; tampering and bad inputs are refused naming what is wrong.
final class TaskPackageTests: XCTestCase {
    let testKey = Fixtures.url("signing/TEST-ONLY-signing-key.pem")
    let testPub = Fixtures.url("signing/TEST-ONLY-signing-key.pub")

    /// The demo encoder and the generated study under `dir`; runs `recipe` there.
    func runStudy(_ dir: URL, recipe: String) throws -> URL {
        try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 2)
        try SyntheticRectangles.write(in: dir, count: 24, train: 14)
        let url = dir.appendingPathComponent("r.yaml")
        try recipe.write(to: url, atomically: true, encoding: .utf8)
        var ro = RunOptions()
        ro.quiet = true
        return try Runner.run(try RecipeLoader.load(url), options: ro).directory
    }

    static let segmentationRecipe = """
        version: 1
        name: seg-package
        model: {path: demo/model, batch_size: 8}
        data:
          manifest: manifest.csv
          task: segmentation
          mask_column: mask
          patient_column: patient
          split_column: split
          subgroups: {sex: {column: sex}}
        methods:
          - {name: linear_decoder, epochs: 30, lr: 0.05, batch_size: 4}
          - {name: knn_patches, k: 5}
        shots: [8]
        seeds: 1
        bootstrap: 20
        output: run
        """

    static let retrievalRecipe = """
        version: 1
        name: retrieval-package
        model: {path: demo/model, batch_size: 8}
        data:
          manifest: manifest.csv
          task: retrieval
          label_column: size
          patient_column: patient
          split_column: split
        retrieval: {neighbours: 5, k: [1, 5]}
        methods:
          - {name: cosine}
          - {name: linear_projection}
        shots: [2]
        seeds: 1
        bootstrap: 20
        output: run
        """

    func pack(_ run: URL, _ dir: URL, name: String, method: String, shots: Int?, sign: Bool = false) throws -> PackResult {
        var o = PackOptions(name: name, registry: dir.appendingPathComponent("reg"))
        o.version = "1.0.0"
        o.fit.method = method
        o.fit.shots = shots
        o.quiet = true
        if sign { o.signingKey = try SigningKey.load(testKey) }
        return try Packer.pack(runDirectory: run, options: o)
    }

    func cell(_ run: URL, method: String, shots: Int) throws -> CellResult {
        let lines = try String(contentsOf: run.appendingPathComponent("results.jsonl"), encoding: .utf8).split(separator: "\n")
        let all = try lines.map { try JSONDecoder().decode(CellResult.self, from: Data($0.utf8)) }
        return try XCTUnwrap(all.first { $0.cell.method == method && $0.cell.shots == shots && $0.cell.seed == 0 })
    }

    func embedOptions() -> EmbedOptions {
        var eo = EmbedOptions()
        eo.quiet = true
        eo.cache = nil
        return eo
    }

    /// Rewrite one entry (SHA256SUMS recomputed when asked) into a new archive.
    func tamper(_ url: URL, _ name: String, fixSums: Bool, _ change: (Data) -> Data) throws -> URL {
        var entries = try TarArchive.read(url)
        let i = try XCTUnwrap(entries.firstIndex { $0.name == name })
        entries[i].data = change(entries[i].data)
        if fixSums, let j = entries.firstIndex(where: { $0.name == "SHA256SUMS" }) {
            entries[j].data = Data(Packer.checksums(entries.filter { $0.name != "SHA256SUMS" && $0.name != ModelSignature.fileName }).utf8)
        }
        let out = url.deletingLastPathComponent().appendingPathComponent("tampered-\(UUID().uuidString).xrpkg")
        try TarArchive.write(entries, to: out)
        return out
    }

    func editManifest(_ url: URL, _ edit: @escaping (inout [String: Any]) -> Void) throws -> URL {
        try tamper(url, "manifest.json", fixSums: true) { d in
            var o = (try? JSONSerialization.jsonObject(with: d) as? [String: Any]) ?? [:]
            edit(&o)
            return (try? JSONSerialization.data(withJSONObject: o)) ?? Data()
        }
    }

    // MARK: segmentation

    func testSegmentationPackagePredictsTheStudysMasks() throws {
        let dir = Fixtures.tempDir("xrlab-seg-pack")
        let run = try runStudy(dir, recipe: Self.segmentationRecipe)
        let res = try pack(run, dir, name: "seg", method: "linear_decoder", shots: 8)
        let p = try PackageReader.open(res.archive)
        XCTAssertEqual(p.manifest.kind, "segmentation")
        XCTAssertEqual(p.manifest.packageKind, .segmentation)
        XCTAssertEqual(p.manifest.format_version, 1)
        XCTAssertEqual(p.heads.map(\.info.kind), ["linear_decoder"])
        let seg = try XCTUnwrap(p.manifest.segmentation)
        let pre = try XCTUnwrap(p.manifest.base_encoder.preprocessing)
        let g = pre.geometry(height: SyntheticRectangles.height, width: SyntheticRectangles.width)
        XCTAssertEqual([seg.input_height, seg.input_width], [g.inputHeight, g.inputWidth], "the packaged grid covers the preprocessing's model input")
        XCTAssertEqual(p.heads[0].tensors["weight"]?.shape, [1, p.manifest.base_encoder.dim])
        XCTAssertEqual(p.manifest.heads[0].n_train, 8)

        // The packaged evaluation is the study cell's (same draw, same seed).
        let c = try cell(run, method: "linear_decoder", shots: 8)
        let e = p.manifest.evaluation[0]
        for (name, v) in c.metrics where v.isFinite { XCTAssertEqual(e.metrics[name]?.value, v, name) }
        XCTAssertEqual(e.metrics["dice"]?.low, c.primary_ci?.low)
        XCTAssertEqual(e.metrics["dice"]?.high, c.primary_ci?.high)
        XCTAssertNotNil(e.metrics["iou"]?.low, "every metric has its interval")

        // predict on every image: the study's sample masks come back bit-identical, and the test
        // masks give the packaged Dice.
        let masks = dir.appendingPathComponent("predicted")
        let inputs = try InputList.resolve(dir.appendingPathComponent("manifest.csv"))
        let pred = try Predictor.predict(p, base: dir.appendingPathComponent("demo/model"), inputs: inputs, options: embedOptions(), masks: masks.path)
        try pred.writeMasks(to: masks, classValues: seg.mask_classes)
        XCTAssertEqual(pred.header, ["path", "mask", "foreground_fraction"])
        XCTAssertEqual(pred.rows.count, 24)
        let sample = run.appendingPathComponent("masks/linear_decoder__k8__s0")
        let sampled = try FileManager.default.contentsOfDirectory(atPath: sample.path).filter { $0.hasSuffix(".png") }
        XCTAssertEqual(sampled.count, 8)
        for f in sampled {
            let a = try LabelMask.read(sample.appendingPathComponent(f), width: SyntheticRectangles.width, height: SyntheticRectangles.height)
            let b = try LabelMask.read(masks.appendingPathComponent(f), width: SyntheticRectangles.width, height: SyntheticRectangles.height)
            XCTAssertEqual(a.labels, b.labels, f)
        }
        let table = try CSVTable(contentsOf: dir.appendingPathComponent("manifest.csv"))
        var dice: [Double] = []
        for (i, row) in table.rows.enumerated() where row[3] == "test" {
            let truth = try LabelMask.read(
                dir.appendingPathComponent(row[1]), width: SyntheticRectangles.width, height: SyntheticRectangles.height)
            let predicted = try LabelMask.read(
                URL(fileURLWithPath: pred.rows[i][1]), width: SyntheticRectangles.width, height: SyntheticRectangles.height)
            XCTAssertEqual(pred.rows[i][2], String(format: "%.6f", Double(predicted.labels.count { $0 != 0 }) / Double(predicted.labels.count)))
            dice.append(
                MaskMetrics.scores(
                    prediction: predicted.isClass(1), truth: truth.isClass(1), width: truth.width, height: truth.height
                ).dice)
        }
        XCTAssertEqual(dice.reduce(0, +) / Double(dice.count), try XCTUnwrap(e.metrics["dice"]).value, accuracy: 1e-12)
        XCTAssertGreaterThan(try XCTUnwrap(e.metrics["dice"]).value, 0.5, "the rectangles are learnt")

        // The card says what the package outputs.
        XCTAssertTrue(p.card.contains("masks from a linear decoder"), p.card)
    }

    func testSegmentationPackageRefusals() throws {
        let dir = Fixtures.tempDir("xrlab-seg-pack-bad")
        let run = try runStudy(dir, recipe: Self.segmentationRecipe)
        XCTAssertThrowsError(try pack(run, dir, name: "knn", method: "knn_patches", shots: nil)) { e in
            XCTAssertTrue("\(e)".contains("linear decoder") && (e as? XRError)?.field == "--method", "\(e)")
        }
        XCTAssertThrowsError(try pack(run, dir, name: "many", method: "linear_decoder", shots: 50)) { e in
            XCTAssertEqual((e as? XRError)?.field, "--shots", "\(e)")
        }
        let url = try pack(run, dir, name: "seg", method: "linear_decoder", shots: nil).archive
        let p = try PackageReader.open(url)
        XCTAssertNil(p.manifest.method.shots)
        XCTAssertEqual(p.manifest.heads[0].n_train, 13, "every annotated training image (row 1 has no mask)")
        let base = dir.appendingPathComponent("demo/model")
        let inputs = try InputList.resolve(dir.appendingPathComponent("manifest.csv"))
        XCTAssertThrowsError(try Predictor.predict(p, base: base, inputs: inputs, options: embedOptions())) { e in
            XCTAssertEqual((e as? XRError)?.field, "--masks", "\(e)")
        }
        XCTAssertThrowsError(try Predictor.predict(p, features: Tensor(zeros: [1, p.manifest.base_encoder.dim]), ids: ["a"])) { e in
            XCTAssertEqual((e as? XRError)?.field, "--features", "\(e)")
        }
        // An unreadable image stops predict, naming it.
        let junk = dir.appendingPathComponent("junk.png")
        try Data("not a png".utf8).write(to: junk)
        let masks = dir.appendingPathComponent("out-masks")
        XCTAssertThrowsError(
            try Predictor.predict(p, base: base, inputs: [ImageInput(url: junk, id: "junk.png")] + inputs.prefix(2), options: embedOptions(), masks: masks.path)
        ) { e in XCTAssertTrue("\(e)".contains("junk.png"), "\(e)") }

        // Two images whose ids give the same mask file name.
        let same = dir.appendingPathComponent("images/0.png")
        XCTAssertThrowsError(
            try Predictor.predict(
                p, base: base, inputs: [ImageInput(url: same, id: "images/0.png"), ImageInput(url: same, id: "images_0.png")], options: embedOptions(),
                masks: masks.path)
        ) { e in XCTAssertTrue("\(e)".contains("would both write mask images_0_png.png"), "\(e)") }

        // A kind this reader does not know is refused by name, before the schema.
        let future = try editManifest(url) {
            $0["kind"] = "keypoints"; $0.removeValue(forKey: "segmentation")
        }
        XCTAssertThrowsError(try PackageReader.open(future)) { e in
            XCTAssertTrue("\(e)".contains("package kind 'keypoints'"), "\(e)")
            XCTAssertEqual((e as? XRError)?.field, "kind")
        }
        // What a reader from before package kinds sees (it ignores the kind): the head kind is refused by name.
        let unkinded = try editManifest(url) { $0.removeValue(forKey: "kind") }
        XCTAssertThrowsError(try PackageReader.open(unkinded)) { e in
            XCTAssertTrue("\(e)".contains("unknown head kind 'linear_decoder'"), "\(e)")
            XCTAssertEqual((e as? XRError)?.field, "heads[0].kind")
        }
        // A head kind of another task, a missing grid, a decoder of the wrong shape, a changed weight.
        let wrongHead = try tamper(url, "manifest.json", fixSums: true) {
            Data(String(decoding: $0, as: UTF8.self).replacingOccurrences(of: "\"kind\" : \"linear_decoder\"", with: "\"kind\" : \"logistic\"").utf8)
        }
        XCTAssertThrowsError(try PackageReader.open(wrongHead)) {
            XCTAssertTrue("\($0)".contains("unknown head kind 'logistic' for a segmentation package"), "\($0)")
        }
        let noGrid = try editManifest(url) { $0.removeValue(forKey: "segmentation") }
        XCTAssertThrowsError(try PackageReader.open(noGrid)) { XCTAssertEqual(($0 as? XRError)?.field, "segmentation", "\($0)") }
        let shape = try tamper(url, "weights/head.safetensors", fixSums: true) { _ in
            (try? SafeTensors.encode([("heads.0.weight", Tensor(zeros: [2, 7])), ("heads.0.bias", Tensor(zeros: [2]))])) ?? Data()
        }
        XCTAssertThrowsError(try PackageReader.open(shape)) { XCTAssertTrue("\($0)".contains("heads.0.weight"), "\($0)") }
        let changed = try tamper(url, "weights/head.safetensors", fixSums: false) { d in
            var d = d
            d[d.count - 1] ^= 1
            return d
        }
        XCTAssertThrowsError(try PackageReader.open(changed)) { XCTAssertTrue("\($0)".contains("checksum mismatch"), "\($0)") }
    }

    /// A tuned segmentation cell (LoRA with the decoder head) packages its tuned encoder beside the
    /// decoder; predict runs both and gives back the cell's masks and Dice.
    func testTunedSegmentationPackagePredictsTheStudysMasks() throws {
        let dir = Fixtures.tempDir("xrlab-seg-tune-pack")
        let recipe = Self.segmentationRecipe.replacingOccurrences(
            of: "  - {name: knn_patches, k: 5}",
            with: "  - {name: lora, rank: 4, alpha: 8, epochs: 3, lr: 0.002, batch_size: 3, validation: 3}")
        let run = try runStudy(dir, recipe: recipe)
        XCTAssertThrowsError(try pack(run, dir, name: "all", method: "lora", shots: nil)) { XCTAssertEqual(($0 as? XRError)?.field, "--shots", "\($0)") }
        let res = try pack(run, dir, name: "lora-seg", method: "lora", shots: 8)
        let p = try PackageReader.open(res.archive)
        XCTAssertEqual(p.manifest.packageKind, .segmentation)
        XCTAssertEqual(p.heads.map(\.info.kind), ["lora"])
        XCTAssertTrue(p.heads[0].isTuned)
        let S = try XCTUnwrap(p.manifest.base_encoder.input_size)
        XCTAssertEqual([p.manifest.segmentation?.input_height, p.manifest.segmentation?.input_width], [S, S])
        XCTAssertEqual(p.manifest.base_encoder.representation, ["patch_tokens"])
        XCTAssertEqual(p.heads[0].tensors["weight"]?.shape, [1, p.manifest.base_encoder.dim])
        XCTAssertTrue(p.heads[0].tensors.keys.contains { $0.contains("lora_") }, "\(p.heads[0].tensors.keys.sorted())")
        XCTAssertFalse(p.heads[0].tensors.keys.contains { $0.hasPrefix("head") }, "the classifier head is not packaged")
        let c = try cell(run, method: "lora", shots: 8)
        for (name, v) in c.metrics where v.isFinite { XCTAssertEqual(p.manifest.evaluation[0].metrics[name]?.value, v, name) }

        let masks = dir.appendingPathComponent("predicted")
        let inputs = try InputList.resolve(dir.appendingPathComponent("manifest.csv"))
        let pred = try Predictor.predict(p, base: dir.appendingPathComponent("demo/model"), inputs: inputs, options: embedOptions(), masks: masks.path)
        try pred.writeMasks(to: masks, classValues: nil)
        let sample = run.appendingPathComponent("masks/lora__k8__s0")
        let sampled = try FileManager.default.contentsOfDirectory(atPath: sample.path).filter { $0.hasSuffix(".png") }
        XCTAssertEqual(sampled.count, 8)
        for f in sampled {
            let a = try LabelMask.read(sample.appendingPathComponent(f), width: SyntheticRectangles.width, height: SyntheticRectangles.height)
            let b = try LabelMask.read(masks.appendingPathComponent(f), width: SyntheticRectangles.width, height: SyntheticRectangles.height)
            XCTAssertEqual(a.labels, b.labels, f)
        }
        // The frozen decoder's package of the same draw predicts other masks: the tuned encoder is used.
        let frozen = try PackageReader.open(try pack(run, dir, name: "frozen", method: "linear_decoder", shots: 8).archive)
        let other = try Predictor.predict(frozen, base: dir.appendingPathComponent("demo/model"), inputs: inputs, options: embedOptions(), masks: "m")
        XCTAssertNotEqual(other.rows.map { $0[2] }, pred.rows.map { $0[2] })

        // A tuned tensor of the wrong size is refused naming it.
        let name = try XCTUnwrap(p.heads[0].tensors.keys.sorted().first { $0.contains("lora_") })
        let shape = try tamper(res.archive, "weights/head.safetensors", fixSums: true) { _ in
            var t = p.heads[0].tensors.map { ("heads.0." + $0.key, $0.value) }
            if let i = t.firstIndex(where: { $0.0 == "heads.0." + name }) { t[i].1 = Tensor(zeros: [3]) }
            return (try? SafeTensors.encode(t)) ?? Data()
        }
        let bad = try PackageReader.open(shape)
        XCTAssertThrowsError(
            try Predictor.predict(bad, base: dir.appendingPathComponent("demo/model"), inputs: Array(inputs.prefix(1)), options: embedOptions(), masks: "m")
        ) { XCTAssertEqual(($0 as? XRError)?.field, "heads.0." + name, "\($0)") }
    }

    // MARK: retrieval

    /// The study's neighbours.csv rows of one cell: query → [(neighbour, similarity)].
    func studyNeighbours(_ run: URL, method: String, shots: Int) throws -> [String: [(String, Double)]] {
        let t = try CSVTable(contentsOf: run.appendingPathComponent("neighbours.csv"))
        let m = try t.column("method"), k = try t.column("shots"), q = try t.column("query"), n = try t.column("neighbour")
        let s = try t.column("similarity"), rank = try t.column("rank")
        var out: [String: [(String, Double)]] = [:]
        for row in t.rows where row[m] == method && row[k] == String(shots) {
            XCTAssertEqual(Int(row[rank]), (out[row[q]]?.count ?? 0) + 1)
            out[row[q], default: []].append((row[n], Double(row[s]) ?? .nan))
        }
        return out
    }

    func testRetrievalPackagesPredictTheStudysNeighbours() throws {
        let dir = Fixtures.tempDir("xrlab-retrieval-pack")
        let run = try runStudy(dir, recipe: Self.retrievalRecipe)
        let base = dir.appendingPathComponent("demo/model")
        let inputs = try InputList.resolve(dir.appendingPathComponent("manifest.csv"))
        for (method, shots) in [("cosine", nil), ("linear_projection", 2)] as [(String, Int?)] {
            let res = try pack(run, dir, name: method.replacingOccurrences(of: "_", with: "-"), method: method, shots: shots, sign: true)
            let p = try PackageReader.open(res.archive, trust: [try TrustedKey.load(testPub)])
            XCTAssertEqual(p.manifest.packageKind, .retrieval)
            XCTAssertEqual(p.heads.map(\.info.kind), [method])
            XCTAssertEqual(p.manifest.retrieval?.neighbours, 5)
            XCTAssertEqual(p.galleries[0].ids.count, 14, "the gallery is the training rows")
            XCTAssertEqual(p.galleries[0].ids.first, "images/0.png")
            XCTAssertEqual(p.heads[0].tensors["projection.mean"] != nil, method == "linear_projection")
            XCTAssertTrue(p.card.contains("gallery.<i>.csv"), p.card)
            let c = try cell(run, method: method, shots: shots ?? 0)
            XCTAssertEqual(p.manifest.evaluation[0].metrics["map_at_r"]?.value, c.metrics["map_at_r"])
            XCTAssertEqual(p.manifest.evaluation[0].metrics["map_at_r"]?.low, c.primary_ci?.low)

            let pred = try Predictor.predict(p, base: base, inputs: inputs, options: embedOptions())
            XCTAssertEqual(pred.header, ["path", "task", "rank", "neighbour", "labels", "similarity"])
            XCTAssertEqual(pred.rows.count, 24 * 5)
            let study = try studyNeighbours(run, method: method, shots: shots ?? 0)
            XCTAssertEqual(study.count, 10)
            for (query, expected) in study {
                let got = pred.rows.filter { $0[0] == query }
                XCTAssertEqual(got.map { $0[3] }, expected.map(\.0), "\(method): neighbours of \(query)")
                for (g, x) in zip(got, expected) { XCTAssertEqual(Double(g[5]) ?? .nan, x.1, accuracy: 2e-6) }
                let labels = Dictionary(uniqueKeysWithValues: zip(p.galleries[0].ids, p.galleries[0].labels.map { $0.joined(separator: "|") }))
                XCTAssertEqual(got.map { $0[4] }, got.map { labels[$0[3]] ?? "?" })
            }
            let top2 = try Predictor.predict(p, base: base, inputs: Array(inputs.prefix(3)), options: embedOptions(), topK: 2)
            XCTAssertEqual(top2.rows.count, 6)
            XCTAssertThrowsError(try Predictor.predict(p, base: base, inputs: Array(inputs.prefix(1)), options: embedOptions(), topK: 0)) {
                XCTAssertEqual(($0 as? XRError)?.field, "--top-k")
            }
        }
    }

    func testRetrievalPackageTamperingRefused() throws {
        let dir = Fixtures.tempDir("xrlab-retrieval-pack-bad")
        let run = try runStudy(dir, recipe: Self.retrievalRecipe)
        let url = try pack(run, dir, name: "lp", method: "linear_projection", shots: nil, sign: true).archive
        let trust = [try TrustedKey.load(testPub)]
        let p = try PackageReader.open(url, trust: trust)
        XCTAssertNil(p.manifest.method.shots)
        XCTAssertTrue(p.sizes["gallery.0.csv"] != nil && p.manifest.files.contains("gallery.0.csv"))
        XCTAssertThrowsError(try pack(run, dir, name: "cos", method: "cosine", shots: 3)) { XCTAssertEqual(($0 as? XRError)?.field, "--shots") }
        // The gallery list is covered by the checksums and the signature.
        let relabel: (Data) -> Data = { Data(String(decoding: $0, as: UTF8.self).replacingOccurrences(of: "small", with: "large").utf8) }
        let plain = try tamper(url, "gallery.0.csv", fixSums: false, relabel)
        XCTAssertThrowsError(try PackageReader.open(plain)) {
            XCTAssertTrue("\($0)".contains("checksum mismatch") && "\($0)".contains("gallery.0.csv"), "\($0)")
        }
        let resummed = try tamper(url, "gallery.0.csv", fixSums: true, relabel)
        XCTAssertNoThrow(try PackageReader.open(resummed), "without trusted keys only the checksums are checked")
        XCTAssertThrowsError(try PackageReader.open(resummed, trust: trust)) {
            XCTAssertTrue("\($0)".contains("'gallery.0.csv' changed since signing"), "\($0)")
        }
        // A gallery list that does not match the gallery tensor.
        let short = try tamper(url, "gallery.0.csv", fixSums: true) { d in
            Data(String(decoding: d, as: UTF8.self).split(separator: "\n").dropLast().joined(separator: "\n").utf8 + Data("\n".utf8))
        }
        XCTAssertThrowsError(try PackageReader.open(short)) { e in
            XCTAssertTrue("\(e)".contains("13 rows for a gallery of 14"), "\(e)")
            XCTAssertTrue((e as? XRError)?.file?.hasSuffix("gallery.0.csv") ?? false, "\(e)")
        }
        // A features matrix of the wrong width.
        XCTAssertThrowsError(try Predictor.predict(p, features: Tensor(zeros: [2, 3]), ids: ["a", "b"])) { XCTAssertEqual(($0 as? XRError)?.field, "features") }
    }
}
