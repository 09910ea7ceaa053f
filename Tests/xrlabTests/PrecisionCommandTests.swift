import Foundation
import XCTest
import XRTensor
import TestSupport

/// `xrlab embed --precision int8 --check-against-fp32 N` and `xrlab bench encoder --precision int8`, run as a user would.
extension CLITests {
    func testEmbedInt8WithTheAccuracyGuard() throws {
        let out = Fixtures.tempDir("cli-int8").appendingPathComponent("feats.safetensors")
        let r = try xrlab([
            "embed", "--model", Fixtures.url("vit/hf_dinov2").path, "--input", try images().path, "--output", out.path,
            "--precision", "int8", "--check-against-fp32", "2", "--quiet"
        ])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("int8 linear layers"), r.out)
        XCTAssertTrue(r.out.contains("int8 vs fp32 on 2 images") && r.out.contains("worst pooled"), r.out)
        let side = try JSONSerialization.jsonObject(with: Data(contentsOf: out.deletingPathExtension().appendingPathExtension("json"))) as? [String: Any]
        XCTAssertEqual((side?["model"] as? [String: Any])?["precision"] as? String, "int8")
        let check =
            try JSONSerialization.jsonObject(with: Data(contentsOf: out.deletingPathExtension().appendingPathExtension("precision-check.json")))
            as? [String: Any]
        let rows = check?["images"] as? [[String: Any]]
        XCTAssertEqual(rows?.count, 2)
        for i in rows ?? [] {
            XCTAssertGreaterThanOrEqual(i["pooled_cosine"] as? Double ?? 0, 0.999, "\(i)")
            XCTAssertGreaterThanOrEqual(i["cls_cosine"] as? Double ?? 0, 0.999, "\(i)")
        }
        XCTAssertNotNil(check?["worst_pooled"])
        // The guard compares a reduced precision with fp32; a bad precision is refused by the parser.
        let bad = try xrlab([
            "embed", "--model", Fixtures.url("vit/hf_dinov2").path, "--input", try images().path, "--output", out.path, "--check-against-fp32", "2"
        ])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.err.contains("--precision int8"), bad.err)
        let typo = try xrlab(["embed", "--model", "m", "--input", "i", "--output", out.path, "--precision", "fp16"])
        XCTAssertNotEqual(typo.status, 0)
        XCTAssertTrue(typo.err.contains("precision") && typo.err.contains("int8"), typo.err)
    }

    func testBenchEncoderAtInt8() throws {
        let r = try xrlab(["bench", "encoder", "--preset", "vitTiny16", "--batch", "1", "--size", "32", "--seconds", "0", "--no-ceiling", "--precision", "int8"]
        )
        XCTAssertEqual(r.status, 0, r.err)
        let json = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]
        XCTAssertEqual(json?["precision"] as? String, "int8")
    }
}
