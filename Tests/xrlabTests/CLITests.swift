import Foundation
import XCTest
import XRTensor
import TestSupport

/// The `xrlab` binary, run as a user would.
final class CLITests: XCTestCase {
    var binary: URL {
        // Tests run from .build/<config>/xrlabPackageTests.xctest; the tool sits beside it.
        var dir = Bundle(for: CLITests.self).bundleURL.deletingLastPathComponent()
        if !FileManager.default.fileExists(atPath: dir.appendingPathComponent("xrlab").path) {
            dir = Fixtures.repoRoot.appendingPathComponent(".build/debug")
        }
        return dir.appendingPathComponent("xrlab")
    }

    @discardableResult
    func xrlab(
        _ args: [String], cwd: URL? = nil, environment extra: [String: String] = [:],
        input: String? = nil
    ) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = binary
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["XRLAB_CACHE"] = Fixtures.tempDir("cli-cache").path
        env.merge(extra) { $1 }
        p.environment = env
        if let cwd { p.currentDirectoryURL = cwd }
        let o = Pipe(), e = Pipe()
        p.standardOutput = o
        p.standardError = e
        let i = Pipe()
        if input != nil { p.standardInput = i }
        try p.run()
        if let input {
            i.fileHandleForWriting.write(Data(input.utf8))
            try i.fileHandleForWriting.close()
        }
        let od = o.fileHandleForReading.readDataToEndOfFile(), ed = e.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: od, as: UTF8.self), String(decoding: ed, as: UTF8.self))
    }

    func images() throws -> URL {
        let dir = Fixtures.tempDir("cli-images")
        for f in ["gray16.png", "gray8.png", "rgb8.png"] {
            try FileManager.default.copyItem(at: Fixtures.url("preprocess/\(f)"), to: dir.appendingPathComponent(f))
        }
        return dir
    }

    func testEmbedWritesFeaturesAndSidecar() throws {
        let out = Fixtures.tempDir().appendingPathComponent("feats.safetensors")
        let r = try xrlab([
            "embed", "--model", Fixtures.url("vit/hf_dinov2").path, "--input", try images().path,
            "--output", out.path, "--last-blocks", "2", "--patch-tokens", "--quiet"
        ])
        XCTAssertEqual(r.status, 0, r.err)
        let f = try SafeTensorsFile(contentsOf: out)
        XCTAssertEqual(f.info("cls")?.shape, [3, 48])
        XCTAssertEqual(f.info("patch_mean")?.shape, [3, 48])
        XCTAssertEqual(f.info("last_blocks_cls")?.shape, [3, 2, 48])
        XCTAssertEqual(f.info("patch_tokens")?.shape, [3, 16, 48])
        let side = try JSONSerialization.jsonObject(with: Data(contentsOf: out.deletingPathExtension().appendingPathExtension("json"))) as? [String: Any]
        let inputs = side?["inputs"] as? [[String: Any]]
        XCTAssertEqual(inputs?.map { $0["path"] as? String }, ["gray16.png", "gray8.png", "rgb8.png"])
        XCTAssertNotNil((side?["model"] as? [String: Any])?["weights_sha256"])
        XCTAssertNotNil(side?["preprocessing"])
    }

    func testNpyFormat() throws {
        let dir = Fixtures.tempDir()
        let r = try xrlab([
            "embed", "--model", Fixtures.url("vit/hf_dinov2").path, "--input", try images().path,
            "--output", dir.appendingPathComponent("f.npy").path, "--format", "npy", "--quiet"
        ])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(try NPY.read(dir.appendingPathComponent("f.cls.npy")).shape, [3, 48])
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("f.json").path))
    }

    func testBadImageFailsWithoutPartialOutput() throws {
        let imgs = try images()
        let data = try Data(contentsOf: imgs.appendingPathComponent("gray16.png"))
        try data.prefix(data.count / 2).write(to: imgs.appendingPathComponent("truncated.png"))
        let outDir = Fixtures.tempDir()
        let out = outDir.appendingPathComponent("feats.safetensors")
        let r = try xrlab([
            "embed", "--model", Fixtures.url("vit/hf_dinov2").path, "--input", imgs.path,
            "--output", out.path, "--quiet"
        ])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("truncated.png"), r.err)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: outDir.path), [], "no partial output")
        let ok = try xrlab([
            "embed", "--model", Fixtures.url("vit/hf_dinov2").path, "--input", imgs.path,
            "--output", out.path, "--quiet", "--skip-bad"
        ])
        XCTAssertEqual(ok.status, 0, ok.err)
        XCTAssertTrue(ok.out.contains("skipped truncated.png"), ok.out)
    }

    func testMissingPreprocessingIsAClearError() throws {
        let r = try xrlab([
            "embed", "--model", Fixtures.url("vit/timm_vit/model.safetensors").path, "--input", try images().path,
            "--output", Fixtures.tempDir().appendingPathComponent("x.safetensors").path
        ])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("preprocessing") && r.err.contains("HINT"), r.err)
    }

    /// `xrlab score` with METEOR's resources (flag or environment) on the caption fixture: the
    /// corpus METEOR pycocoevalcap 1.2 gave on the same raw reports; a bad path names it and writes nothing.
    func testScoreWithMeteor() throws {
        struct Item: Decodable { var id: String; var candidate: String; var references: [String] }
        struct Captions: Decodable { var items: [Item]; var scores: [String: Double] }
        let f = try JSONDecoder().decode(Captions.self, from: Data(contentsOf: Fixtures.url("text/captions.json")))
        func q(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
        let dir = Fixtures.tempDir("cli-score")
        let gen = dir.appendingPathComponent("generated.csv"), refs = dir.appendingPathComponent("references.csv")
        try ("id,report\n" + f.items.map { "\($0.id),\(q($0.candidate))\n" }.joined()).write(to: gen, atomically: true, encoding: .utf8)
        try ("id,report\n" + f.items.flatMap { it in it.references.map { "\(it.id),\(q($0))\n" } }.joined()).write(to: refs, atomically: true, encoding: .utf8)
        let data = Fixtures.url("text/meteor").path
        for (args, env) in [(["--meteor-data", data], [String: String]()), ([], ["XRLAB_METEOR_DATA": data])] {
            let out = dir.appendingPathComponent("scores.json")
            let r = try xrlab(["score", "--generated", gen.path, "--references", refs.path, "--out", out.path] + args, environment: env)
            XCTAssertEqual(r.status, 0, r.err)
            XCTAssertTrue(r.out.contains("METEOR"), r.out)
            let json = try JSONSerialization.jsonObject(with: Data(contentsOf: out)) as! [String: Any]
            XCTAssertEqual(json["meteor"] as! Double, f.scores["meteor"]!, accuracy: 1e-9)
            XCTAssertEqual(json["cider_d"] as! Double, f.scores["cider_d"]!, accuracy: 1e-4)
            try FileManager.default.removeItem(at: out)
        }
        let nowhere = dir.appendingPathComponent("no-meteor").path, out = dir.appendingPathComponent("bad.json")
        let r = try xrlab(["score", "--generated", gen.path, "--references", refs.path, "--out", out.path, "--meteor-data", nowhere])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains(nowhere) && r.err.contains("METEOR data not found"), r.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
    }

    /// `bench --class-token-only` reports it, and counts fewer operations per image (the last
    /// block's queries, attention, projection and MLP on one row) than the every-output run.
    func testBenchClassTokenOnlyCountsTheWorkDone() throws {
        var perImage: [Bool: Double] = [:]
        for only in [false, true] {
            let r = try xrlab(["bench", "--preset", "vitTiny16", "--no-ceiling", "--seconds", "0"] + (only ? ["--class-token-only"] : []))
            XCTAssertEqual(r.status, 0, r.err)
            let json = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
            XCTAssertEqual(json["class_token_only"] as? Bool, only)
            perImage[only] = (json["gflops"] as! Double) / (json["images_per_s"] as! Double)
        }
        // ViT-Ti/16 at 224: 12 blocks of 197 rows; the shortcut leaves the last block's keys and values
        // (2·197·2C² of its qkv product) and the class token's query, attention, projection and MLP.
        XCTAssertEqual(perImage[true]! / perImage[false]!, 0.9305, accuracy: 0.001)
    }

    /// `--serve` (bench/vit_peers.py's interleaved turns): one JSON line per request, at least one
    /// forward pass per turn, the ceiling on request (`ceiling SECONDS`), a summary at the end of input; a malformed
    /// request is an error naming the option.
    func testBenchServesTimedTurns() throws {
        let r = try xrlab(["bench", "encoder", "--preset", "vitTiny16", "--batch", "2", "--serve", "--class-token-only"], input: "run 0\nrun 0.05\nceiling 0\n")
        XCTAssertEqual(r.status, 0, r.err)
        let lines = try r.out.split(separator: "\n").map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        XCTAssertEqual(lines.count, 4, r.out)
        XCTAssertEqual(lines[0]["images"] as? Int, 2) // "run 0": one pass of two images
        XCTAssertGreaterThanOrEqual(lines[1]["seconds"] as! Double, 0.05)
        XCTAssertEqual((lines[1]["images"] as! Int) % 2, 0)
        XCTAssertGreaterThan(lines[2]["sgemm_gflops"] as! Double, 0)
        XCTAssertEqual(lines[3]["images"] as? Int, (lines[0]["images"] as! Int) + (lines[1]["images"] as! Int))
        XCTAssertEqual(lines[3]["class_token_only"] as? Bool, true)
        XCTAssertNotNil(lines[3]["peak_rss_mb"] as? Double)
        let bad = try xrlab(["bench", "--preset", "vitTiny16", "--batch", "1", "--serve"], input: "run fast\n")
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.err.contains("--serve") && bad.err.contains("run fast"), bad.err)
        let badCeiling = try xrlab(["bench", "--preset", "vitTiny16", "--batch", "1", "--serve"], input: "ceiling soon\n")
        XCTAssertNotEqual(badCeiling.status, 0)
        XCTAssertTrue(badCeiling.err.contains("--serve") && badCeiling.err.contains("ceiling soon"), badCeiling.err)
    }

    /// `bench train`'s turns (bench/train_peers.py): a step per `run 0`, the totals and trainable
    /// count at the end; an unknown request names the option.
    func testBenchTrainServesTimedTurns() throws {
        let r = try xrlab(
            ["bench", "train", "--preset", "vitTiny16", "--method", "head", "--batch", "2", "--size", "32", "--serve"],
            input: "run 0\nrun 0\n")
        XCTAssertEqual(r.status, 0, r.err)
        let lines = try r.out.split(separator: "\n").map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        XCTAssertEqual(lines.count, 3, r.out)
        XCTAssertEqual(lines[0]["steps"] as? Int, 1)
        XCTAssertEqual(lines[1]["steps"] as? Int, 1)
        XCTAssertEqual(lines[2]["steps"] as? Int, 2)
        XCTAssertEqual(lines[2]["trainable"] as? Int, 192 * 2 + 2) // head only: 192 → 2 classes
        let seconds = (lines[0]["seconds"] as! Double) + (lines[1]["seconds"] as! Double)
        XCTAssertEqual(lines[2]["seconds_per_step"] as! Double, seconds / 2, accuracy: 1e-9)
        let bad = try xrlab(
            ["bench", "train", "--preset", "vitTiny16", "--method", "head", "--batch", "1", "--size", "32", "--serve"],
            input: "steps 3\n")
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.err.contains("--serve") && bad.err.contains("steps 3"), bad.err)
    }

    func testBenchRefusesANegativeColumnSplit() throws {
        let r = try xrlab(["bench", "--preset", "vitTiny16", "--no-ceiling", "--seconds", "0", "--column-split-rows=-1"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("--column-split-rows") && r.err.contains("must be ≥ 0"), r.err)
    }

    /// `bench gemm --precision int8` adds both integer kernels' times and their difference from
    /// the fp32 product (small but not zero: the operands are quantised), and the int8 table.
    func testBenchGEMMInt8ReportsBothKernels() throws {
        let r = try xrlab(["bench", "gemm", "--precision", "int8", "--shapes", "13x20x40", "--seconds", "0"])
        XCTAssertEqual(r.status, 0, r.err)
        let line = try XCTUnwrap(r.out.split(separator: "\n").first { $0.hasPrefix("{") })
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        for key in ["int8_u7_ms", "int8_i16_ms"] {
            let v = try XCTUnwrap(o[key] as? Double, key)
            XCTAssertTrue(v > 0 && v.isFinite, "\(key) = \(v)")
        }
        for key in ["int8_u7_rel_l2", "int8_i16_rel_l2"] {
            let v = try XCTUnwrap(o[key] as? Double, key)
            XCTAssertTrue(v > 0 && v < 0.05, "\(key) = \(v)")
        }
        XCTAssertTrue(r.out.contains("int8 u7") && r.out.contains("int8 i16"), r.out)
    }

    /// `bench gemm` times both paths on the shapes asked for, prints one JSON object per shape and
    /// the table; a malformed shape is named.
    func testBenchGEMMReportsEveryPath() throws {
        let r = try xrlab(["bench", "gemm", "--shapes", "13x20x40,7x33x16", "--seconds", "0"])
        XCTAssertEqual(r.status, 0, r.err)
        let objects = r.out.split(separator: "\n").filter { $0.hasPrefix("{") }
        XCTAssertEqual(objects.count, 2)
        for line in objects {
            let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            var ms: [String: Double] = [:]
            for key in ["openblas_rows_ms", "openblas_columns_ms", "packed_rows_ms", "packed_columns_ms", "speedup_best_vs_best"] {
                let v = try XCTUnwrap(o[key] as? Double, key)
                XCTAssertTrue(v > 0 && v.isFinite, "\(key) = \(v)")
                ms[key] = v
            }
            // The reported speed-up is the best OpenBLAS time over the best packed time.
            let want = min(ms["openblas_rows_ms"]!, ms["openblas_columns_ms"]!) / min(ms["packed_rows_ms"]!, ms["packed_columns_ms"]!)
            XCTAssertEqual(ms["speedup_best_vs_best"]!, want, accuracy: 1e-9 * want)
        }
        XCTAssertTrue(r.out.contains("| 13 × 20 → 40 |"), r.out)
        let bad = try xrlab(["bench", "gemm", "--shapes", "13x20", "--seconds", "0"])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.err.contains("--shapes") && bad.err.contains("13x20"), bad.err)
        let negative = try xrlab(["bench", "gemm", "--shapes", "13x20x40", "--seconds=-1"])
        XCTAssertEqual(negative.status, 1)
        XCTAssertTrue(negative.err.contains("--seconds") && negative.err.contains("must be ≥ 0"), negative.err)
        XCTAssertFalse(negative.out.contains("{"), "no result for a refused run")
    }

    /// The bench commands are nested under `bench`; their old names still run them for one
    /// release (hidden from help, with a note on stderr).
    func testBenchSubcommandsAndTheirOldNames() throws {
        let help = try xrlab(["bench", "--help"])
        XCTAssertEqual(help.status, 0, help.err)
        for sub in ["encoder", "train", "gemm", "report"] { XCTAssertTrue(help.out.contains(sub), help.out) }
        let top = try xrlab(["--help"])
        XCTAssertTrue(top.out.contains("bench"), top.out)
        XCTAssertFalse(top.out.contains("bench-train") || top.out.contains("bench-gemm") || top.out.contains("bench-report"), top.out)
        let old = try xrlab(["bench-gemm", "--shapes", "5x6x7", "--seconds", "0"])
        XCTAssertEqual(old.status, 0, old.err)
        XCTAssertTrue(old.out.contains("| 5 × 6 → 7 |"), old.out)
        XCTAssertTrue(old.err.contains("xrlab bench gemm"), old.err)
        let oldTrain = try xrlab(["bench-train", "--preset", "vitTiny16", "--method", "head", "--batch", "1", "--size", "32", "--serve"], input: "run 0\n")
        XCTAssertEqual(oldTrain.status, 0, oldTrain.err)
        XCTAssertEqual(oldTrain.out.split(separator: "\n").count, 2, oldTrain.out)
    }

    /// Options with a fixed set of values refuse another one before any work, naming the option
    /// and listing the values.
    func testFixedChoiceOptionsNameTheOptionAndTheChoices() throws {
        let dir = Fixtures.tempDir()
        let cases: [([String], String, [String])] = [
            (["embed", "--model", "m", "--input", "i", "--output", "o", "--format", "csv"], "--format", ["'safetensors'", "'npy'"]),
            (["embed", "--model", "m", "--input", "i", "--output", "o", "--dicom-values", "raw"], "--dicom-values", ["'stored'", "'modality'", "'voi'"]),
            (["embed", "--model", "m", "--input", "i", "--output", "o", "--interpolation", "nearest"], "--interpolation", ["'bicubic'", "'bilinear'"]),
            (["pack", "run", "--name", "x", "--bump", "huge"], "--bump", ["'patch'", "'minor'", "'major'"]),
            (["pack", "run", "--name", "x", "--compression", "xz"], "--compression", ["'gzip'", "'zstd'"]),
            (["convert", "a.pt", "b.safetensors", "--dtype", "F8"], "--dtype", ["'F32'", "'F16'", "'BF16'"]),
            (["ingest", "d", "--out", "m.csv", "--join-on", "patient"], "--join-on", ["'filename'", "'accession'", "'study'"]),
            (["bench", "train", "--method", "lora2"], "--method", ["'lora'", "'last2'", "'head'"]),
            (["bench", "report", "--visual-input", "side"], "--visual-input", ["'cross_attention'", "'prefix'"]),
            (
                ["report", "train", "--manifest", "m", "--encoder", "e", "--out", "o", "--encoder-method", "adapter"], "--encoder-method",
                ["'frozen'", "'lora'", "'last_k'"]
            ),
            (
                ["report", "train", "--manifest", "m", "--encoder", "e", "--out", "o", "--target", "history"], "--target",
                ["'findings'", "'impression'", "'both'"]
            )
        ]
        for (args, option, choices) in cases {
            let r = try xrlab(args, cwd: dir)
            XCTAssertNotEqual(r.status, 0, args.joined(separator: " "))
            XCTAssertTrue(r.err.contains(option), "\(args): \(r.err)")
            for c in choices { XCTAssertTrue(r.err.contains(c), "\(args) should list \(c): \(r.err)") }
        }
        // Lower-case dtypes are still read.
        let lower = try xrlab(["convert", "missing.pt", "b.safetensors", "--dtype", "bf16"], cwd: dir)
        XCTAssertFalse(lower.err.contains("--dtype"), lower.err)
    }

    func testCorruptCheckpointIsAClearError() throws {
        let bad = Fixtures.tempDir().appendingPathComponent("model.safetensors")
        try Data([200, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]).write(to: bad)
        let r = try xrlab([
            "embed", "--model", bad.path, "--input", try images().path, "--size", "56", "--mean", "0.5", "--std", "0.25",
            "--output", Fixtures.tempDir().appendingPathComponent("x.safetensors").path
        ])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains(bad.path) && r.err.contains("header length"), r.err)
    }

    func testEmbedInputOffThePatchGridNamesTheOption() throws {
        let out = Fixtures.tempDir().appendingPathComponent("x.safetensors")
        let r = try xrlab([
            "embed", "--model", Fixtures.url("vit/hf_dinov2").path, "--input", try images().path, "--size", "40", "--crop", "30", "--mean", "0.5",
            "--std", "0.25", "--output", out.path, "--quiet"
        ])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("30×30 is not a positive multiple of the patch size"), r.err)
        XCTAssertTrue(r.err.contains("--crop") && r.err.contains("make the crop a multiple of"), r.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
    }

    func testConvertWritesTheStateDictAndRefusesHostilePickles() throws {
        let dir = Fixtures.tempDir("convert")
        let out = dir.appendingPathComponent("w.safetensors")
        let r = try xrlab(["convert", Fixtures.url("torch/vit_module_fp16.pt").path, out.path])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("'module'"), r.out)
        let got = try SafeTensorsFile(contentsOf: out), want = try SafeTensorsFile(contentsOf: Fixtures.url("torch/hub_vit/model.safetensors"))
        XCTAssertEqual(got.names, want.names)
        for n in want.names { XCTAssertEqual(try got.tensor(n), try want.tensor(n), n) }
        XCTAssertEqual(got.metadata["state_dict_key"], "module")
        // A hostile pickle: refused by name, nothing written, the payload's marker absent.
        let bad = dir.appendingPathComponent("bad.safetensors")
        try? FileManager.default.removeItem(atPath: "/tmp/xrlab-hostile-os_system")
        let h = try xrlab(["convert", Fixtures.url("torch/hostile_os_system.pt").path, bad.path])
        XCTAssertEqual(h.status, 1)
        XCTAssertTrue(h.err.contains("os.system") && h.err.contains("hostile_os_system.pt"), h.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: bad.path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/tmp/xrlab-hostile-os_system"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["w.safetensors"], "no temporary files left")
    }

    func testEmbedReadsPtCheckpointsAndTimmHubFolders() throws {
        let dir = Fixtures.tempDir("embed-pt")
        let pt = dir.appendingPathComponent("pt.safetensors"), hub = dir.appendingPathComponent("hub.safetensors")
        let a = try xrlab([
            "embed", "--model", Fixtures.url("torch/vit_views.pth").path, "--state-dict-key", "state_dict", "--heads", "2",
            "--size", "35", "--crop", "32", "--mean", "0.5", "--std", "0.25", "--input", try images().path, "--output", pt.path, "--quiet"
        ])
        XCTAssertEqual(a.status, 0, a.err)
        let b = try xrlab(["embed", "--model", Fixtures.url("torch/hub_vit").path, "--input", try images().path, "--output", hub.path, "--quiet"])
        XCTAssertEqual(b.status, 0, b.err)
        let fa = try SafeTensorsFile(contentsOf: pt), fb = try SafeTensorsFile(contentsOf: hub)
        XCTAssertEqual(fa.info("pooled")?.shape, [3, 24])
        XCTAssertEqual(try fb.tensor("pooled"), try fb.tensor("cls"), "class-token pooling")
        // The hub folder's features are timm's for these images (reference rows: gray16, gray8, gray_alpha16, rgb8).
        let ref = try SafeTensorsFile(contentsOf: Fixtures.url("torch/hub_vit/embed_reference.safetensors")).tensor("pooled").scalars
        assertClose(try fb.tensor("pooled").scalars, Array(ref[0..<48] + ref[72..<96]), rel: 1e-5, "hub pooled via the CLI")
        let side = try String(contentsOf: hub.deletingPathExtension().appendingPathExtension("json"), encoding: .utf8)
        XCTAssertTrue(side.contains("halfEven") && side.contains("timm architecture vit_tiny_patch16_224"), side)
        let bad = try xrlab([
            "embed", "--model", Fixtures.url("torch/vit_model.pt").path, "--state-dict-key", "ema", "--heads", "2",
            "--size", "32", "--mean", "0.5", "--std", "0.25", "--input", try images().path, "--output", pt.path, "--quiet"
        ])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.err.contains("no top-level key 'ema'"), bad.err)
    }

    func testEmbedRunsAnEVAXCheckpointWithItsDefaultPreprocessing() throws {
        let out = Fixtures.tempDir("embed-eva").appendingPathComponent("eva.safetensors")
        let r = try xrlab([
            "embed", "--model", Fixtures.url("eva/eva_x_ti.pt").path, "--heads", "2", "--input", try images().path,
            "--output", out.path, "--patch-tokens", "--quiet"
        ])
        XCTAssertEqual(r.status, 0, r.err)
        let f = try SafeTensorsFile(contentsOf: out)
        XCTAssertEqual(f.info("pooled")?.shape, [3, 32])
        XCTAssertEqual(f.info("patch_tokens")?.shape, [3, 16, 32])
        // PyTorch's features for these images through EVA-X's eval transform (reference rows:
        // gray16, gray8, gray_alpha16, rgb8; the CLI's images are gray16, gray8, rgb8).
        let ref = try SafeTensorsFile(contentsOf: Fixtures.url("eva/eva_x_ti_embed_reference.safetensors"))
        for name in ["pooled", "cls"] {
            let want = try ref.tensor(name).scalars
            assertClose(try f.tensor(name).scalars, Array(want[0..<64] + want[96..<128]), rel: 1e-5, "EVA-X \(name) via the CLI")
        }
        // The preprocessing used is written beside the features, and flags override it.
        let side = try String(contentsOf: out.deletingPathExtension().appendingPathExtension("json"), encoding: .utf8)
        XCTAssertTrue(side.contains("EVA-X default") && side.contains("0.4918524"), side)
        let other = out.deletingLastPathComponent().appendingPathComponent("flags.safetensors")
        let o = try xrlab([
            "embed", "--model", Fixtures.url("eva/eva_x_ti.pt").path, "--heads", "2", "--input", try images().path,
            "--output", other.path, "--size", "32", "--mean", "0.5", "--std", "0.25", "--quiet"
        ])
        XCTAssertEqual(o.status, 0, o.err)
        let flags = try String(contentsOf: other.deletingPathExtension().appendingPathExtension("json"), encoding: .utf8)
        XCTAssertTrue(flags.contains("command line") && !flags.contains("0.4918524"), flags)
    }

    func testDemoRunsOnGeneratedData() throws {
        let dir = Fixtures.tempDir("demo")
        let r = try xrlab(["demo", "--dir", dir.path, "--patients", "40", "--seeds", "1", "--quiet"], cwd: Fixtures.repoRoot)
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run/report.md").path))
        XCTAssertTrue(r.out.contains("plot:") && r.out.contains("report:"), r.out)
    }

    func testHelpListsCommands() throws {
        let r = try xrlab(["--help"])
        XCTAssertTrue(r.out.contains("embed") && r.out.contains("demo"), r.out)
    }
}
