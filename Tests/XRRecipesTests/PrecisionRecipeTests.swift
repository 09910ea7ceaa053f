import Foundation
import XCTest
import XRRecipes
import XRModels
import XRPipeline
import XRTensor
import TestSupport

/// `model.precision`: parsed, refused by name when misspelt, shown by `plan`, and the features a
/// study encodes at int8 are int8 features.
final class PrecisionRecipeTests: XCTestCase {
    func recipe(_ dir: URL, model: URL, precision: String?) throws -> URL {
        let u = dir.appendingPathComponent("r.yaml")
        try """
        version: 1
        name: precision
        model: {path: \(model.path), batch_size: 8\(precision.map { ", precision: \($0)" } ?? "")}
        representation: [cls]
        data: {manifest: demo/manifest.csv, label_column: labels, labels: [effusion], patient_column: patient_id, split_column: split}
        methods:
          - {name: prototype}
        shots: [2]
        seeds: 1
        bootstrap: 20
        output: run
        """.write(to: u, atomically: true, encoding: .utf8)
        return u
    }

    func testParsedShownAndHonoured() throws {
        let dir = Fixtures.tempDir("xrlab-precision-recipe")
        let demo = try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 12)
        let fp32 = try RecipeLoader.load(try recipe(dir, model: demo.modelDir, precision: nil))
        XCTAssertNil(fp32.recipe.model?.precision, "absent means fp32")
        let r = try RecipeLoader.load(try recipe(dir, model: demo.modelDir, precision: "int8"))
        XCTAssertEqual(r.recipe.model?.precision, .int8)
        XCTAssertEqual(
            try RecipeLoader.load(try recipe(dir, model: demo.modelDir, precision: nil), overrides: ["model.precision=int8"]).recipe.model?.precision, .int8)
        // plan says which precision the encoder runs at.
        let plan = try Planner.plan(r).text
        XCTAssertTrue(plan.contains("int8 linear layers (model.precision)"), plan)
        XCTAssertTrue(try Planner.plan(fp32).text.contains("fp32 linear layers"))
        // The study's encoder is loaded at the recipe's precision; tuning asks for fp32 explicitly.
        XCTAssertEqual(try EncoderFeatureSource().encoder(r).precision, .int8)
        XCTAssertEqual(try EncoderFeatureSource().encoder(r, precision: .fp32).precision, .fp32)
        XCTAssertEqual(try EncoderFeatureSource().encoder(fp32).precision, .fp32)
    }

    func testBadPrecisionNamesTheField() throws {
        let dir = Fixtures.tempDir("xrlab-precision-bad")
        let u = try recipe(dir, model: dir.appendingPathComponent("model"), precision: "fp16")
        let problems = Planner.validate(u, checkFiles: false)
        XCTAssertEqual(problems.count, 1, "\(problems)")
        let p = try XCTUnwrap(problems.first)
        XCTAssertTrue(p.message.contains("unknown precision 'fp16'"), p.description)
        XCTAssertTrue((p.field ?? "").contains("model.precision"), p.description)
        XCTAssertTrue((p.hint ?? "").contains("fp32, int8"), p.description)
        XCTAssertThrowsError(try RecipeLoader.load(u))
    }
}
