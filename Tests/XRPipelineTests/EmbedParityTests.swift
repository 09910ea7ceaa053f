import Foundation
import XCTest
import XRPipeline
import XRModels
import XRData
import XRTensor
import TestSupport

/// End to end: PNG files → preprocessing → encoder, against PyTorch (fixtures/make_vit_fixtures.py,
/// which uses fixtures/xrref.py for the reference preprocessing). Relative L2 ≤ 1e-5 per tensor.
final class EmbedParityTests: XCTestCase {
    struct Ref: Decodable { var inputs: [String] }

    func imagesDir() throws -> URL {
        let dir = Fixtures.tempDir("embed-images")
        for f in ["gray16.png", "gray8.png", "rgb8.png", "gray_alpha16.png"] {
            try FileManager.default.copyItem(at: Fixtures.url("preprocess/\(f)"), to: dir.appendingPathComponent(f))
        }
        return dir
    }

    func run(_ model: String, modelURL: URL, heads: Int?, pre: Preprocessing?, cache: FeatureCache?, classTokenOnly: Bool = false) throws -> EmbedResult {
        let enc = try Encoder.load(model: modelURL, heads: heads, explicit: pre)
        var o = EmbedOptions()
        o.quiet = true
        o.cache = cache
        o.batchSize = 3
        o.classTokenOnly = classTokenOnly
        return try enc.embed(try InputList.resolve(try imagesDir()), options: o)
    }

    func check(_ model: String, modelURL: URL, heads: Int?, pre: Preprocessing?) throws {
        let r = try run(model, modelURL: modelURL, heads: heads, pre: pre, cache: nil)
        let refInfo = try JSONDecoder().decode(Ref.self, from: Data(contentsOf: Fixtures.url("vit/\(model)/embed_reference.json")))
        XCTAssertEqual(r.inputs.map(\.id), refInfo.inputs, "row order")
        let ref = try SafeTensorsFile(contentsOf: Fixtures.url("vit/\(model)/embed_reference.safetensors"))
        for name in ["cls", "patch_mean"] {
            let want = try ref.tensor(name)
            XCTAssertEqual(r.tensors[name]?.shape, want.shape, "\(model) \(name)")
            assertClose(r.tensors[name]?.scalars ?? [], want.scalars, rel: 1e-5, "\(model) \(name)")
        }
    }

    func testTimmLayoutWithExplicitPreprocessing() throws {
        try check(
            "timm_vit", modelURL: Fixtures.url("vit/timm_vit/model.safetensors"), heads: 3,
            pre: Preprocessing(shortestEdge: 56, crop: 48, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]))
    }

    func testOriginalDinov2Layout() throws {
        try check(
            "dinov2_reg", modelURL: Fixtures.url("vit/dinov2_reg/model.safetensors"), heads: 4,
            pre: Preprocessing(shortestEdge: 64, crop: 56, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]))
    }

    func testHuggingFaceFolderUsesItsOwnPreprocessing() throws {
        try check("hf_dinov2", modelURL: Fixtures.url("vit/hf_dinov2"), heads: nil, pre: nil)
    }

    /// timm hub folders (fixtures/make_torch_fixtures.py): preprocessing from `pretrained_cfg`
    /// as timm's own eval transform does it (shorter side to floor(input_size / crop_pct), centre
    /// crop with torchvision's rounding), weights from model.safetensors or pytorch_model.bin;
    /// `pooled` is timm's forward_head(pre_logits=True).
    func testTimmHubFoldersUseTheirPretrainedCfg() throws {
        for (name, scale, crop) in [("hub_vit", 35, 32), ("hub_dinov2", 32, 28)] {
            let enc = try Encoder.load(model: Fixtures.url("torch/\(name)"))
            XCTAssertEqual(enc.preprocessing.shortestEdge, scale, name)
            XCTAssertEqual(enc.preprocessing.cropHeight, crop, name)
            XCTAssertEqual(enc.preprocessing.cropRounding, .halfEven, name)
            XCTAssertTrue(enc.preprocessingSource.hasSuffix("config.json"), name)
            var o = EmbedOptions()
            o.quiet = true
            o.cache = nil
            let r = try enc.embed(try InputList.resolve(try imagesDir()), options: o)
            let refInfo = try JSONDecoder().decode(Ref.self, from: Data(contentsOf: Fixtures.url("torch/\(name)/embed_reference.json")))
            XCTAssertEqual(r.inputs.map(\.id), refInfo.inputs, "row order")
            let ref = try SafeTensorsFile(contentsOf: Fixtures.url("torch/\(name)/embed_reference.safetensors"))
            for t in ["pooled", "cls", "patch_mean"] {
                let want = try ref.tensor(t)
                XCTAssertEqual(r.tensors[t]?.shape, want.shape, "\(name) \(t)")
                assertClose(r.tensors[t]?.scalars ?? [], want.scalars, rel: 1e-5, "\(name) \(t)")
            }
        }
    }

    func testModelWithoutPreprocessingConfigNeedsFlags() {
        XCTAssertThrowsError(try Encoder.load(model: Fixtures.url("vit/timm_vit/model.safetensors"), heads: 3)) { e in
            XCTAssertEqual((e as? XRError)?.field, "preprocessing")
            XCTAssertTrue("\(e)".contains("--size"), "\(e)")
        }
    }

    func testCacheHitsGiveIdenticalFeaturesAndMissOnChange() throws {
        let cache = FeatureCache(root: Fixtures.tempDir("cache"))
        let url = Fixtures.url("vit/hf_dinov2")
        let first = try run("hf_dinov2", modelURL: url, heads: nil, pre: nil, cache: cache)
        XCTAssertEqual(first.encoded, 4)
        XCTAssertEqual(first.cacheHits, 0)
        let second = try run("hf_dinov2", modelURL: url, heads: nil, pre: nil, cache: cache)
        XCTAssertEqual(second.encoded, 0, "a rerun over the same images does no encoder work")
        XCTAssertEqual(second.cacheHits, 4)
        XCTAssertEqual(second.tensors, first.tensors)
        let other = Preprocessing(shortestEdge: 70, crop: 56, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25])
        let third = try run("hf_dinov2", modelURL: url, heads: nil, pre: other, cache: cache)
        XCTAssertEqual(third.encoded, 4, "changed preprocessing must miss the cache")
    }

    /// Class-token features only: the reference's `cls`, no `patch_mean`, and a cache of its own
    /// (a later request for every output must not be served the class-token rows).
    func testClassTokenOnlyGivesTheReferenceCLSAndItsOwnCacheEntries() throws {
        let cache = FeatureCache(root: Fixtures.tempDir("cache-cls"))
        let url = Fixtures.url("vit/hf_dinov2")
        let short = try run("hf_dinov2", modelURL: url, heads: nil, pre: nil, cache: cache, classTokenOnly: true)
        let ref = try SafeTensorsFile(contentsOf: Fixtures.url("vit/hf_dinov2/embed_reference.safetensors"))
        assertClose(short.tensors["cls"]?.scalars ?? [], try ref.tensor("cls").scalars, rel: 1e-5, "cls, class token only")
        XCTAssertNil(short.tensors["patch_mean"])
        XCTAssertEqual(short.encoded, 4)
        let full = try run("hf_dinov2", modelURL: url, heads: nil, pre: nil, cache: cache)
        XCTAssertEqual(full.encoded, 4, "every output must not come from the class-token-only cache rows")
        XCTAssertNotNil(full.tensors["patch_mean"])
        XCTAssertEqual(try run("hf_dinov2", modelURL: url, heads: nil, pre: nil, cache: cache, classTokenOnly: true).cacheHits, 4)
    }

    func testBadImagesListedAndSkippedOnRequest() throws {
        let dir = try imagesDir()
        try Data("not a png".utf8).write(to: dir.appendingPathComponent("broken.png"))
        try Data().write(to: dir.appendingPathComponent("empty.png"))
        let enc = try Encoder.load(model: Fixtures.url("vit/hf_dinov2"))
        var o = EmbedOptions()
        o.quiet = true
        o.cache = nil
        XCTAssertThrowsError(try enc.embed(try InputList.resolve(dir), options: o)) { e in
            let d = "\(e)"
            XCTAssertTrue(d.contains("broken.png") && d.contains("empty.png") && d.contains("--skip-bad"), d)
        }
        o.skipBad = true
        let r = try enc.embed(try InputList.resolve(dir), options: o)
        XCTAssertEqual(r.inputs.count, 4)
        XCTAssertEqual(Set(r.failed.map(\.id)), ["broken.png", "empty.png"])
    }

    /// Real DICOM radiographs embed like PNGs, compressed ones included: the four encodings of
    /// WG04 RG3 (uncompressed, RLE, JPEG Lossless, JPEG 2000) decode to identical pixels, so their
    /// features agree to float rounding (batch position changes BLAS summation order).
    func testEmbedsSharedDICOMFiles() throws {
        let root = try Fixtures.requireSharedData()
        let enc = try Encoder.load(model: Fixtures.url("vit/hf_dinov2"))
        var o = EmbedOptions()
        o.quiet = true
        o.cache = nil
        o.skipBad = true
        let r = try enc.embed(try InputList.resolve(root.appendingPathComponent("dicom")), options: o)
        XCTAssertEqual(r.inputs.map(\.id), ["CR-MONO1-10-chest.dcm", "WG04_RG3_J2KR.dcm", "WG04_RG3_JPLL.dcm", "WG04_RG3_RLE.dcm", "WG04_RG3_UNC.dcm"])
        XCTAssertEqual(r.tensors["cls"]?.shape, [5, 48])
        XCTAssertEqual(r.failed.count, 0, "\(r.failed)")
        let cls = r.tensors["cls"]?.scalars ?? []
        guard cls.count == 5 * 48 else { return XCTFail("cls has \(cls.count) values") }
        for i in 2..<5 { assertClose(Array(cls[(i * 48)..<((i + 1) * 48)]), Array(cls[48..<96]), rel: 1e-5, r.inputs[i].id) }
    }
}
