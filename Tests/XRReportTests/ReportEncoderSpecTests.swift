import XCTest
import Foundation
import XRTrain
import XRReport

/// The encoder setting of report models as model.json's `encoder_tuning` holds it.
final class ReportEncoderSpecTests: XCTestCase {
    func decode(_ json: String) throws -> ReportEncoderSpec {
        try JSONDecoder().decode(ReportEncoderSpec.self, from: Data(json.utf8))
    }

    /// What earlier model.json files hold reads back to the same setting, keys left out taking
    /// the defaults (LoRA rank 8, alpha 2·rank, qkv, encoder lr ×1; last 2 blocks at ×0.1).
    func testReadsTheStoredFormWithDefaults() throws {
        XCTAssertEqual(
            try decode(#"{"method": "lora", "rank": 4, "alpha": 8, "targets": ["qkv", "fc2"], "dropout": 0, "lr_scale": 1}"#),
            .lora(ReportLoRASpec(lora: LoRASettings(rank: 4, targets: ["qkv", "fc2"]))))
        XCTAssertEqual(
            try decode(#"{"method": "lora"}"#), .lora(ReportLoRASpec(lora: LoRASettings(rank: 8, alpha: 16, targets: ["qkv"], dropout: 0), lrScale: 1)))
        XCTAssertEqual(try decode(#"{"method": "last_k", "blocks": 1}"#), .lastK(ReportLastKSpec(blocks: 1, lrScale: 0.1)))
        XCTAssertEqual(try decode(#"{"method": "frozen"}"#), .frozen)
        XCTAssertThrowsError(try decode(#"{"method": "adapter"}"#)) { e in XCTAssertTrue("\(e)".contains("frozen, lora, last_k"), "\(e)") }
    }

    /// Written with every value, under the same keys as before.
    func testWritesEveryKey() throws {
        let spec = ReportEncoderSpec.lora(ReportLoRASpec(lora: LoRASettings(rank: 2), lrScale: 0.5))
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(spec)) as? [String: Any])
        XCTAssertEqual(Set(json.keys), ["method", "rank", "alpha", "targets", "dropout", "lr_scale"])
        XCTAssertEqual(json["alpha"] as? Double, 4)
        XCTAssertEqual(try decode(String(decoding: JSONEncoder().encode(spec), as: UTF8.self)), spec)
        XCTAssertEqual(spec.trainableSet, .lora(rank: 2, alpha: 4, targets: ["qkv"], dropout: 0))
        XCTAssertEqual(spec.lrScale, 0.5)
        XCTAssertEqual(ReportEncoderSpec.lastK(ReportLastKSpec()).description, "encoder last 2 blocks tuned, lr ×0.1")
        XCTAssertNil(ReportEncoderSpec.frozen.trainableSet)
    }
}
