import Foundation
import XCTest
import XRData
import XRTensor
import TestSupport

/// Preprocessing against the torch reference pipeline (fixtures/make_preprocess_fixtures.py):
/// relative L2 error ≤ 1e-6 per case.
final class PreprocessingTests: XCTestCase {
    struct Case: Decodable {
        var image: String
        var mode: String
        var short: Int?
        var size: [Int]?
        var crop: [Int]?
        var mean: [Float]?
        var std: [Float]?

        var preprocessing: Preprocessing {
            var p = Preprocessing(
                shortestEdge: short, crop: nil, interpolation: mode == "bilinear" ? .bilinear : .bicubic,
                mean: mean ?? [0.485, 0.456, 0.406], std: std ?? [0.229, 0.224, 0.225])
            if let s = size { p.resizeHeight = s[0]; p.resizeWidth = s[1] }
            if let k = crop { p.cropHeight = k[0]; p.cropWidth = k[1] }
            return p
        }
    }

    func loadCases() throws -> [(String, Case)] {
        struct Cases: Decodable { var cases: [String: Case] }
        return try JSONDecoder().decode(Cases.self, from: Data(contentsOf: Fixtures.url("preprocess/cases.json")))
            .cases.sorted { $0.key < $1.key }
    }

    func testMatchesTorchPipeline() throws {
        let cases = try loadCases()
        let ref = try SafeTensorsFile(contentsOf: Fixtures.url("preprocess/expected.safetensors"))
        XCTAssertEqual(cases.count, 14)
        for (name, c) in cases {
            let p = c.preprocessing
            let img = try PNGCodec.read(Fixtures.url("preprocess/\(c.image)"))
            let out = try p.apply(img)
            let want = try ref.tensor("case.\(name)")
            let (h, w) = p.outputSize(height: img.height, width: img.width)
            XCTAssertEqual([3, h, w], want.shape, name)
            assertClose(out, want.scalars, rel: 1e-6, name)
        }
    }

    /// The batch helper writes each image's input into its slot, identical to `apply`.
    func testBatchIntoCallerBuffer() throws {
        let p = Preprocessing(shortestEdge: 20, crop: 16, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25])
        let imgs = try ["gray16", "rgb8", "gray8"].map { try PNGCodec.read(Fixtures.url("preprocess/\($0).png")) }
        var buf = [Float](repeating: .nan, count: imgs.count * 3 * 16 * 16)
        try buf.withUnsafeMutableBufferPointer { try p.applyBatch(imgs, into: $0) }
        for (b, img) in imgs.enumerated() {
            XCTAssertEqual(Array(buf[(b * 768)..<((b + 1) * 768)]), try p.apply(img), "image \(b)")
        }
        var exact = p
        exact.shortestEdge = nil; exact.cropHeight = nil; exact.cropWidth = nil
        var small = [Float](repeating: 0, count: 2 * 3 * 131 * 97)
        XCTAssertThrowsError(try small.withUnsafeMutableBufferPointer { try exact.applyBatch([imgs[0], imgs[2]], into: $0) }) {
            XCTAssertEqual(($0 as? XRError)?.field, "image 1")
        }
    }

    /// Sizes follow Hugging Face's rule: int(s · long / short), the short side exactly s.
    func testResizeRule() {
        let p = Preprocessing.radDino
        XCTAssertEqual(p.resizedSize(height: 2880, width: 2304).0, 647) // int(518 · 2880 / 2304) = int(647.5)
        XCTAssertEqual(p.resizedSize(height: 2880, width: 2304).1, 518)
        XCTAssertEqual(p.resizedSize(height: 256, width: 313).0, 518)
        XCTAssertEqual(p.resizedSize(height: 256, width: 313).1, 633) // int(633.3…)
        XCTAssertEqual(p.resizedSize(height: 440, width: 440).0, 518)
        XCTAssertEqual(p.outputSize(height: 2000, width: 1600).0, 518)
    }

    /// A thin strip would resize to billions of pixels: refused before allocating.
    func testExtremeAspectRatioIsRefused() throws {
        let strip = XRImage(width: 10_000, height: 1, channels: 1, bitDepth: 8, pixels: [Float](repeating: 0.5, count: 10_000))
        XCTAssertThrowsError(try Preprocessing.radDino.apply(strip)) { e in
            XCTAssertEqual((e as? XRError)?.field, "size", "\(e)")
            XCTAssertTrue("\(e)".contains("more than the limit"), "\(e)")
        }
        var p = Preprocessing.imagenet(size: 4)
        p.maxPixels = 400 // a 25 × 1 strip resizes to 4 × 100
        XCTAssertNoThrow(try p.apply(XRImage(width: 25, height: 1, channels: 1, bitDepth: 8, pixels: [Float](repeating: 0, count: 25))))
        XCTAssertThrowsError(try p.apply(XRImage(width: 26, height: 1, channels: 1, bitDepth: 8, pixels: [Float](repeating: 0, count: 26))))
    }

    /// Straight from a file: decoded within maxPixels, errors name the file.
    func testApplyContentsOfFile() throws {
        let u = Fixtures.url("preprocess/gray16.png")
        let p = Preprocessing(shortestEdge: 64, crop: 56, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])
        XCTAssertEqual(try p.apply(contentsOf: u), try p.apply(PNGCodec.read(u)))
        var small = p
        small.maxPixels = 1000
        XCTAssertThrowsError(try small.apply(contentsOf: u)) { e in
            XCTAssertEqual((e as? XRError)?.file, u.path)
            XCTAssertEqual((e as? XRError)?.field, "IHDR")
        }
        var thin = Preprocessing.radDino
        thin.maxPixels = 200_000
        XCTAssertThrowsError(try thin.apply(contentsOf: u)) { e in // 97×131 → 518×699 > 200,000
            XCTAssertEqual((e as? XRError)?.file, u.path)
            XCTAssertEqual((e as? XRError)?.field, "size")
        }
    }

    func testInvalidSettingsNameTheField() {
        var p = Preprocessing.imagenet(size: 8)
        p.std = [1, 0, 1]
        XCTAssertThrowsError(try p.apply(XRImage(width: 2, height: 2, channels: 1, bitDepth: 8, pixels: [0, 0, 0, 0]))) {
            XCTAssertEqual(($0 as? XRError)?.field, "image_std")
        }
        p = Preprocessing.imagenet(size: 8)
        p.cropWidth = nil
        XCTAssertThrowsError(try p.validate()) { XCTAssertEqual(($0 as? XRError)?.field, "crop_size") }
        p = Preprocessing.imagenet(size: 0)
        XCTAssertThrowsError(try p.validate()) { XCTAssertEqual(($0 as? XRError)?.field, "shortest_edge") }
    }

    // MARK: Hugging Face configs

    func testReadsHuggingFaceConfig() throws {
        let p = try Preprocessing.fromHuggingFace(Fixtures.url("vit/hf_dinov2/preprocessor_config.json"))
        XCTAssertEqual(p.shortestEdge, 64)
        XCTAssertEqual(p.cropHeight, 56)
        XCTAssertEqual(p.cropWidth, 56)
        XCTAssertEqual(p.interpolation, .bicubic)
        XCTAssertEqual(p.mean, [0.485, 0.456, 0.406])
        XCTAssertEqual(p.std, [0.229, 0.224, 0.225])
    }

    func write(_ json: String) -> URL {
        let u = Fixtures.tempDir().appendingPathComponent("preprocessor_config.json")
        try? Data(json.utf8).write(to: u)
        return u
    }

    /// RAD-DINO's own config (microsoft/rad-dino preprocessor_config.json, as published).
    func testRadDinoConfigGivesThePreset() throws {
        let u = write(
            #"""
            {"crop_size": {"height": 518, "width": 518}, "do_center_crop": true, "do_convert_rgb": true, "do_normalize": true,
             "do_rescale": true, "do_resize": true, "image_mean": [0.5307, 0.5307, 0.5307], "image_processor_type": "BitImageProcessor",
             "image_std": [0.2583, 0.2583, 0.2583], "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 518}}
            """#)
        XCTAssertEqual(try Preprocessing.fromHuggingFace(u), .radDino)
    }

    /// Keys left out take the class defaults of known processors.
    func testKnownProcessorDefaults() throws {
        let bit = try Preprocessing.fromHuggingFace(write(#"{"image_processor_type": "BitImageProcessorFast", "size": {"shortest_edge": 256}}"#))
        XCTAssertEqual(bit.shortestEdge, 256)
        XCTAssertEqual(bit.cropHeight, 224)
        XCTAssertEqual(bit.interpolation, .bicubic)
        XCTAssertEqual(bit.mean, [0.48145466, 0.4578275, 0.40821073])
        let vit = try Preprocessing.fromHuggingFace(write(#"{"image_processor_type": "ViTImageProcessor"}"#))
        XCTAssertEqual(vit.resizeHeight, 224)
        XCTAssertEqual(vit.resizeWidth, 224)
        XCTAssertNil(vit.cropHeight)
        XCTAssertEqual(vit.interpolation, .bilinear)
        XCTAssertEqual(vit.mean, [0.5, 0.5, 0.5])
        // An older ViT config: a feature extractor and a bare-number (square) size.
        let old = try Preprocessing.fromHuggingFace(
            write(#"{"feature_extractor_type": "ViTFeatureExtractor", "size": 384, "resample": 2, "image_mean": [0.5,0.5,0.5], "image_std": [0.5,0.5,0.5]}"#))
        XCTAssertEqual(old.resizeHeight, 384)
        XCTAssertEqual(old.resizeWidth, 384)
        XCTAssertNil(old.shortestEdge)
        let clip = try Preprocessing.fromHuggingFace(write(#"{"image_processor_type": "CLIPImageProcessor", "size": 336, "crop_size": 336}"#))
        XCTAssertEqual(clip.shortestEdge, 336)
        XCTAssertEqual(clip.cropWidth, 336)
        let noNorm = try Preprocessing.fromHuggingFace(write(#"{"size": {"height": 32, "width": 48}, "resample": 2, "do_normalize": false}"#))
        XCTAssertEqual(noNorm.mean, [0, 0, 0])
        XCTAssertEqual(noNorm.std, [1, 1, 1])
        XCTAssertEqual(noNorm.outputSize(height: 5, width: 5).1, 48)
    }

    func testBadHuggingFaceConfigs() throws {
        func check(_ json: String, field: String?, line: UInt = #line) {
            let u = write(json)
            XCTAssertThrowsError(try Preprocessing.fromHuggingFace(u), line: line) { e in
                XCTAssertEqual((e as? XRError)?.field, field, "\(e)", line: line)
                XCTAssertEqual((e as? XRError)?.file, u.path, line: line)
            }
        }
        let ok = #""resample": 3, "image_mean": [0,0,0], "image_std": [1,1,1]"#
        check(#"{"size": {"shortest_edge": 224}, "rescale_factor": 0.5, \#(ok)}"#, field: "rescale_factor")
        check(#"{"size": {"shortest_edge": 224}, "do_rescale": false, \#(ok)}"#, field: "do_rescale")
        check(#"{"size": {"shortest_edge": 224}, "resample": 3, "image_std": [1,1,1]}"#, field: "image_mean")
        check(#"{"size": {"shortest_edge": 224}, "resample": 1, "image_mean": [0,0,0], "image_std": [1,1,1]}"#, field: "resample")
        check(#"{"size": {"shortest_edge": 224}, "image_mean": [0,0,0], "image_std": [1,1,1]}"#, field: "resample")
        check(#"{"size": {"shortest_edge": 224}, "resample": 3, "image_mean": [0,0,0], "image_std": [1,0,1]}"#, field: "image_std")
        check(#"{"size": {"shortest_edge": 224}, "resample": 3, "image_mean": [0,0], "image_std": [1,1,1]}"#, field: "image_mean")
        check(#"{\#(ok)}"#, field: "size")
        check(#"{"size": 224, \#(ok)}"#, field: "size")
        check(#"{"size": {"shortest_edge": 224, "longest_edge": 1333}, \#(ok)}"#, field: "size")
        check(#"{"size": {"shortest_edge": -3}, \#(ok)}"#, field: "size.shortest_edge")
        check(#"{"size": {"shortest_edge": 224}, "do_center_crop": true, \#(ok)}"#, field: "crop_size")
        check(#"{"size": {"shortest_edge": 224}, "do_center_crop": "yes", \#(ok)}"#, field: "do_center_crop")
        check(#"[1, 2]"#, field: nil) // not an object: no field, still names the file
    }

    // MARK: Codable

    func testCodableRoundTripAndOlderJSON() throws {
        var p = Preprocessing.radDino
        XCTAssertEqual(try JSONDecoder().decode(Preprocessing.self, from: JSONEncoder().encode(p)), p)
        let json = String(decoding: try JSONEncoder().encode(p), as: UTF8.self)
        XCTAssertFalse(json.contains("maxPixels"), "the default bound is not written (cache keys stay stable)")
        p.maxPixels = 1000
        XCTAssertEqual(try JSONDecoder().decode(Preprocessing.self, from: JSONEncoder().encode(p)), p)
        // JSON written before antialias/interpolation/maxPixels were stored still decodes.
        let old = try JSONDecoder().decode(
            Preprocessing.self,
            from: Data(#"{"shortestEdge": 518, "cropHeight": 518, "cropWidth": 518, "mean": [0.5307,0.5307,0.5307], "std": [0.2583,0.2583,0.2583]}"#.utf8))
        XCTAssertEqual(old, .radDino)
        XCTAssertTrue(Preprocessing.radDino.description.contains("resize shortest edge to 518 (bicubic, antialiased)"))
    }
}
