import Foundation
import XCTest
import XRRecipes
import XRTensor
import TestSupport

/// Typed method specs: defaults filled in at parse time, the flat YAML / JSON form of stored
/// recipes, and errors naming the key and the method.
final class MethodSpecTests: XCTestCase {
    let tuningRecipe = """
        version: 1
        name: tuning
        model: {path: model}
        data: {manifest: table.csv, label_column: labels, labels: [alpha, beta], split_column: split}
        methods:
          - {name: logistic}
          - {name: knn, k: [3, 9]}
          - {name: prototype, temperature: 0.5}
          - {name: lora, rank: 4}
          - {name: adapter, placement: parallel}
          - {name: last_k, head_hidden: 64}
          - {name: bitfit, epochs: 3}
          - {name: full}
        shots: [4]
        output: run
        """

    func load(_ text: String) throws -> LoadedRecipe {
        try RecipeLoader.load(text: text, file: Fixtures.tempDir().appendingPathComponent("r.yaml"))
    }

    /// The methods as they are stored (package manifests): one JSON object each.
    func stored(_ r: Recipe) throws -> [[String: Any]] {
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(r)) as? [String: Any])
        return try XCTUnwrap(json["methods"] as? [[String: Any]])
    }

    func testDefaultsAreFilledInByMethod() throws {
        let m = try stored(load(tuningRecipe).recipe)
        XCTAssertEqual(m.map { $0["name"] as? String }, ["logistic", "knn", "prototype", "lora", "adapter", "last_k", "bitfit", "full"])
        XCTAssertEqual(m[0]["C"] as? [Double], [0.01, 0.1, 1, 10])
        XCTAssertEqual(m[1]["temperature"] as? Double, 0.07)
        XCTAssertEqual(m[2]["temperature"] as? Double, 0.5)
        // LoRA: alpha 2·rank, on qkv.
        XCTAssertEqual(m[3]["alpha"] as? Double, 8)
        XCTAssertEqual(m[3]["targets"] as? [String], ["qkv"])
        XCTAssertEqual(m[4]["placement"] as? String, "parallel")
        XCTAssertEqual(m[4]["adapter_dim"] as? Int, 32)
        // lr 1e-4 for last_k and full, 1e-3 otherwise; layer decay 0.75 for full only.
        XCTAssertEqual(m.map { $0["lr"] as? Double }, [nil, nil, nil, 1e-3, 1e-3, 1e-4, 1e-3, 1e-4])
        XCTAssertEqual(m.map { $0["layer_decay"] as? Double }, [nil, nil, nil, 1, 1, 1, 1, 0.75])
        XCTAssertEqual(m[5]["head_hidden"] as? Int, 64)
        XCTAssertNil(m[6]["head_hidden"], "a linear head unless head_hidden is given")
        XCTAssertEqual(m[6]["epochs"] as? Int, 3)
        XCTAssertEqual(m[7]["epochs"] as? Int, 30)
        // Probe keys stay off tuning methods and the other way round.
        XCTAssertNil(m[0]["epochs"])
        XCTAssertNil(m[3]["C"])
        XCTAssertNil(m[3]["lr_scale"])
    }

    /// Stored recipes read back to the same methods, and keys they lack take their defaults (a
    /// manifest written before a key existed).
    func testStoredMethodsRoundTripAndFillMissingKeys() throws {
        let r = try load(tuningRecipe).recipe
        XCTAssertEqual(try JSONDecoder().decode(Recipe.self, from: JSONEncoder().encode(r)), r)
        let old = try JSONDecoder().decode(
            [Recipe.Method].self,
            from: Data(
                """
                [{"name": "logistic", "C": [1]}, {"name": "lora", "rank": 2, "epochs": 5}, {"name": "full"}]
                """.utf8))
        let again = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(old)) as? [[String: Any]])
        XCTAssertEqual(again[0]["standardize"] as? String, "pool")
        XCTAssertEqual(again[0]["folds"] as? Int, 3)
        XCTAssertEqual(again[1]["alpha"] as? Double, 4)
        XCTAssertEqual(again[1]["epochs"] as? Int, 5)
        XCTAssertEqual(again[2]["layer_decay"] as? Double, 0.75)
        // Report encoders are told apart by lr_scale (always written) or the name frozen.
        let report = try JSONDecoder().decode(
            [Recipe.Method].self,
            from: Data(
                """
                [{"name": "frozen"}, {"name": "lora", "rank": 4, "lr_scale": 0.5}, {"name": "last_k", "blocks": 1, "lr_scale": 0.1}]
                """.utf8))
        XCTAssertFalse(report.contains(where: \.isTuning))
        let reportJSON = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(report)) as? [[String: Any]])
        XCTAssertEqual(reportJSON[0].count, 1)
        XCTAssertEqual(reportJSON[1]["alpha"] as? Double, 8)
        XCTAssertNil(reportJSON[1]["epochs"])
        XCTAssertEqual(reportJSON[2]["lr_scale"] as? Double, 0.1)
        XCTAssertThrowsError(try JSONDecoder().decode(Recipe.Method.self, from: Data(#"{"name": "svm"}"#.utf8)))
    }

    func testKeysAreCheckedAgainstTheMethodWithTheLine() throws {
        func error(_ text: String) -> XRError? { RecipeLoader.check(text: text, file: URL(fileURLWithPath: "/r.yaml")).1.first }
        let epochs = try XCTUnwrap(error(tuningRecipe.replacingOccurrences(of: "{name: knn, k: [3, 9]}", with: "{name: knn, k: [3, 9], epochs: 4}")))
        XCTAssertTrue(epochs.description.contains("'epochs' does not apply to method knn"), epochs.description)
        XCTAssertTrue(epochs.field?.hasPrefix("line 7:") == true && epochs.field?.hasSuffix("(methods[1].epochs)") == true, "\(epochs.field ?? "")")
        XCTAssertTrue(epochs.hint?.contains("knn takes: k, temperature") == true, epochs.description)
        let placement = try XCTUnwrap(error(tuningRecipe.replacingOccurrences(of: "placement: parallel", with: "placement: beside")))
        XCTAssertTrue(placement.description.contains("placement must be sequential or parallel, got 'beside'"), placement.description)
        let typo = try XCTUnwrap(error(tuningRecipe.replacingOccurrences(of: "{name: bitfit,", with: "{name: bitfti,")))
        XCTAssertTrue(typo.description.contains("did you mean 'bitfit'"), typo.description)
        let range = try XCTUnwrap(error(tuningRecipe.replacingOccurrences(of: "{name: full}", with: "{name: full, label_smoothing: 0.7}")))
        XCTAssertTrue(range.description.contains("label_smoothing must be between 0 and 0.5, got 0.7"), range.description)
    }

    /// Report recipes take the encoder settings (frozen, lora, last_k), not the tuning methods' keys.
    func testReportMethodsTakeTheEncoderKeys() throws {
        let text = try String(contentsOf: Fixtures.repoRoot.appendingPathComponent("recipes/demo-reports.yaml"), encoding: .utf8)
        let r = try load(text)
        XCTAssertEqual(r.recipe.methods.map(\.name), ["frozen", "lora", "last_k"])
        func problems(_ from: String, _ to: String) -> [XRError] {
            RecipeLoader.check(text: text.replacingOccurrences(of: from, with: to), file: URL(fileURLWithPath: "/r.yaml")).1
        }
        let rank = problems("{name: last_k, blocks: 1}", "{name: last_k, blocks: 1, rank: 2}")
        XCTAssertEqual(rank.count, 1)
        XCTAssertTrue(rank.first?.description.contains("'rank' does not apply to method last_k") == true, "\(rank)")
        XCTAssertTrue(rank.first?.hint?.contains("last_k takes: blocks, lr_scale") == true, "\(rank)")
        // Training keys belong to the decoder's `report` section here.
        let epochs = problems("{name: last_k, blocks: 1}", "{name: last_k, blocks: 1, epochs: 2}")
        XCTAssertTrue(epochs.first?.description.contains("unknown key 'epochs'") == true, "\(epochs)")
        XCTAssertTrue(epochs.first?.field?.hasPrefix("line 30:") == true, "\(epochs)")
        let adapter = RecipeLoader.check(text: text.replacingOccurrences(of: "{name: frozen}", with: "{name: adapter}"), file: URL(fileURLWithPath: "/r.yaml"))
            .1
        XCTAssertTrue(adapter.first?.description.contains("unknown method 'adapter' for a report task") == true, "\(adapter)")
    }
}
