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
    }

    func testMatchesTorchPipeline() throws {
        struct Cases: Decodable { var cases: [String: Case] }
        let cases = try JSONDecoder().decode(Cases.self, from: Data(contentsOf: Fixtures.url("preprocess/cases.json"))).cases
        let ref = try SafeTensorsFile(contentsOf: Fixtures.url("preprocess/expected.safetensors"))
        XCTAssertEqual(cases.count, 6)
        for (name, c) in cases.sorted(by: { $0.key < $1.key }) {
            var p = Preprocessing(shortestEdge: c.short, crop: nil, interpolation: c.mode == "bilinear" ? .bilinear : .bicubic,
                                  mean: c.mean ?? [0.485, 0.456, 0.406], std: c.std ?? [0.229, 0.224, 0.225])
            if let s = c.size { p.resizeHeight = s[0]; p.resizeWidth = s[1] }
            if let k = c.crop { p.cropHeight = k[0]; p.cropWidth = k[1] }
            let img = try PNGCodec.read(Fixtures.url("preprocess/\(c.image)"))
            let out = try p.apply(img)
            let want = try ref.tensor("case.\(name)")
            let (h, w) = p.outputSize(height: img.height, width: img.width)
            XCTAssertEqual([3, h, w], want.shape, name)
            assertClose(out, want.scalars, rel: 1e-6, name)
        }
    }

    func testReadsHuggingFaceConfig() throws {
        let p = try Preprocessing.fromHuggingFace(Fixtures.url("vit/hf_dinov2/preprocessor_config.json"))
        XCTAssertEqual(p.shortestEdge, 64)
        XCTAssertEqual(p.cropHeight, 56)
        XCTAssertEqual(p.interpolation, .bicubic)
        XCTAssertEqual(p.mean, [0.485, 0.456, 0.406])
    }

    func testBadHuggingFaceConfigs() throws {
        let dir = Fixtures.tempDir()
        func check(_ json: String, field: String) {
            let u = dir.appendingPathComponent("pp.json")
            try? Data(json.utf8).write(to: u)
            XCTAssertThrowsError(try Preprocessing.fromHuggingFace(u)) { e in
                XCTAssertEqual((e as? XRError)?.field, field, "\(e)")
                XCTAssertEqual((e as? XRError)?.file, u.path)
            }
        }
        check(#"{"size": {"shortest_edge": 224}, "rescale_factor": 0.5, "image_mean": [0,0,0], "image_std": [1,1,1]}"#, field: "rescale_factor")
        check(#"{"size": {"shortest_edge": 224}, "image_std": [1,1,1]}"#, field: "image_mean")
        check(#"{"size": {"shortest_edge": 224}, "resample": 1, "image_mean": [0,0,0], "image_std": [1,1,1]}"#, field: "resample")
        check(#"{"size": {"shortest_edge": 224}, "image_mean": [0,0,0], "image_std": [1,0,1]}"#, field: "image_std")
    }

    func testCodableRoundTrip() throws {
        let p = Preprocessing.radDino
        XCTAssertEqual(try JSONDecoder().decode(Preprocessing.self, from: JSONEncoder().encode(p)), p)
        XCTAssertEqual(p.outputSize(height: 2000, width: 1600).0, 518)
    }
}
