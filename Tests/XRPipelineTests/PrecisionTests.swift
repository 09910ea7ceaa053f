import Foundation
import XCTest
import XRPipeline
import XRModels
import XRData
import XRTensor
import XRKernels
import TestSupport

/// Precision through the embedding pipeline: the cache keeps fp32 and int8 features apart, the
/// sidecar names the precision, and the accuracy guard (`PrecisionCheck`) measures int8 against
/// fp32 per image.
final class PrecisionTests: XCTestCase {
    func imagesDir() throws -> URL {
        let dir = Fixtures.tempDir("precision-images")
        for f in ["gray16.png", "gray8.png", "rgb8.png", "gray_alpha16.png"] {
            try FileManager.default.copyItem(at: Fixtures.url("preprocess/\(f)"), to: dir.appendingPathComponent(f))
        }
        return dir
    }

    let model = Fixtures.url("vit/timm_vit/model.safetensors")
    let pre = Preprocessing(shortestEdge: 56, crop: 48, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25])

    func encoder(_ precision: Precision) throws -> Encoder {
        try Encoder.load(model: model, heads: 3, explicit: pre, precision: precision)
    }

    /// int8 features depend on the activation bits of the kernel chosen at run time (8 on AVX-512
    /// VNNI, 7 on the AVX2 fallback): their cache keys differ, so features from one path are never
    /// served for the other.
    func testInt8CacheKeyFollowsTheActivationBits() {
        let saved = Int8Kernel.default
        defer { Int8Kernel.default = saved }
        Int8Kernel.default = .u7
        XCTAssertEqual(Precision.int8.featureIdentity, "int8-a127")
        let seven = FeatureCache.key(configFingerprint: "f", imageHash: "h", precision: .int8)
        Int8Kernel.default = .i16
        XCTAssertEqual(Precision.int8.featureIdentity, "int8-a255")
        let eight = FeatureCache.key(configFingerprint: "f", imageHash: "h", precision: .int8)
        XCTAssertNotEqual(seven, eight)
        XCTAssertEqual(Precision.fp32.featureIdentity, "fp32")
    }

    func testCacheKeepsPrecisionsApart() throws {
        XCTAssertNotEqual(
            FeatureCache.key(configFingerprint: "f", imageHash: "h", precision: .fp32),
            FeatureCache.key(configFingerprint: "f", imageHash: "h", precision: .int8))
        XCTAssertEqual(FeatureCache.key(configFingerprint: "f", imageHash: "h"), FeatureCache.key(configFingerprint: "f", imageHash: "h", precision: .fp32))
        let inputs = try InputList.resolve(try imagesDir())
        var o = EmbedOptions()
        o.quiet = true
        o.batchSize = 3
        o.cache = FeatureCache(root: Fixtures.tempDir("precision-cache"))
        let fp32 = try encoder(.fp32), int8 = try encoder(.int8)
        XCTAssertEqual(fp32.fingerprint(o), int8.fingerprint(o), "same weights and preprocessing: only the key's precision differs")
        let a = try fp32.embed(inputs, options: o)
        XCTAssertEqual(a.encoded, inputs.count)
        XCTAssertEqual(int8.cachedCount(inputs, options: o), 0, "fp32 entries are not int8 entries")
        let b = try int8.embed(inputs, options: o)
        XCTAssertEqual(b.cacheHits, 0)
        XCTAssertEqual(b.encoded, inputs.count)
        XCTAssertNotEqual(a.tensors["pooled"]?.scalars, b.tensors["pooled"]?.scalars)
        // A rerun at each precision reads its own entries back.
        let a2 = try fp32.embed(inputs, options: o), b2 = try int8.embed(inputs, options: o)
        XCTAssertEqual(a2.cacheHits, inputs.count)
        XCTAssertEqual(b2.cacheHits, inputs.count)
        XCTAssertEqual(a2.tensors["pooled"]?.scalars, a.tensors["pooled"]?.scalars)
        XCTAssertEqual(b2.tensors["pooled"]?.scalars, b.tensors["pooled"]?.scalars)

        // The sidecar names the precision; one without the field reads as fp32 (nil).
        let out = Fixtures.tempDir("precision-out").appendingPathComponent("f.safetensors")
        try EmbedOutput.write(b, encoder: int8, modelPath: model.path, format: .safetensors, to: out)
        XCTAssertEqual(try EmbedOutput.readSidecar(EmbedOutput.sidecarURL(for: out)).model.precision, .int8)
        let side = EmbedOutput.sidecarURL(for: out)
        var doc = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: side)) as? [String: Any])
        var m = try XCTUnwrap(doc["model"] as? [String: Any])
        m["precision"] = nil
        doc["model"] = m
        try JSONSerialization.data(withJSONObject: doc).write(to: side)
        XCTAssertNil(try EmbedOutput.readSidecar(side).model.precision)
    }

    func testCheckAgainstFP32ReportsEveryImage() throws {
        let inputs = try InputList.resolve(try imagesDir())
        var o = EmbedOptions()
        o.quiet = true
        o.cache = nil
        let check = try PrecisionCheck.measure(try encoder(.int8), reference: try encoder(.fp32), inputs: inputs, count: 3, options: o)
        XCTAssertEqual(check.precision, .int8)
        XCTAssertEqual(check.images.map(\.path), Array(inputs.prefix(3).map(\.id)))
        for i in check.images {
            XCTAssertGreaterThanOrEqual(i.pooled_cosine, 0.999, "\(i)")
            XCTAssertGreaterThanOrEqual(i.cls_cosine, 0.999, "\(i)")
            XCTAssertLessThan(i.pooled_cosine, 1 - 1e-9, "int8 features are not the fp32 ones: \(i)")
        }
        XCTAssertEqual(check.worst_pooled.pooled_cosine, check.images.map(\.pooled_cosine).min())
        XCTAssertEqual(check.worst_cls.cls_cosine, check.images.map(\.cls_cosine).min())
        XCTAssertEqual(check.mean_cls_cosine, check.images.map(\.cls_cosine).reduce(0, +) / 3, accuracy: 1e-12)
        XCTAssertTrue(check.summary.contains("worst pooled"), check.summary)
        let url = PrecisionCheck.url(for: Fixtures.tempDir("precision-check").appendingPathComponent("feats.safetensors"))
        XCTAssertEqual(url.lastPathComponent, "feats.precision-check.json")
        try check.write(to: url)
        let back = try JSONDecoder().decode(PrecisionCheck.self, from: Data(contentsOf: url))
        XCTAssertEqual(back.images, check.images)
        // The reference must be fp32, and at least one image is needed.
        XCTAssertThrowsError(try PrecisionCheck.measure(try encoder(.int8), reference: try encoder(.int8), inputs: inputs, count: 3, options: o))
        XCTAssertThrowsError(try PrecisionCheck.measure(try encoder(.int8), reference: try encoder(.fp32), inputs: inputs, count: 0, options: o))
        XCTAssertEqual(PrecisionCheck.cosine([1, 0], [0, 1]), 0)
        XCTAssertEqual(PrecisionCheck.cosine([2, 2], [1, 1]), 1, accuracy: 1e-12)
    }
}
