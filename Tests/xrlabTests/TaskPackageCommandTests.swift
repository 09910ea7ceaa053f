import Foundation
import XCTest
import XRPipeline
import TestSupport

/// run → pack → predict of a segmentation study, as a user runs them: masks as PNG files, the
/// CSV, and the errors for a missing --masks and a --top-k on the wrong package.
extension PackageCommandTests {
    func testSegmentationPackageEndToEnd() throws {
        let dir = Fixtures.tempDir("cli-seg-pack")
        try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 2)
        let manifest = try SyntheticRectangles.write(in: dir, count: 16, train: 10)
        let recipe = dir.appendingPathComponent("seg.yaml")
        try """
        version: 1
        name: cli-seg
        model: {path: demo/model}
        data: {manifest: manifest.csv, task: segmentation, mask_column: mask, patient_column: patient, split_column: split}
        methods: [{name: linear_decoder, epochs: 20, lr: 0.05, batch_size: 4}]
        shots: [4]
        seeds: 1
        bootstrap: 0
        output: run
        """.write(to: recipe, atomically: true, encoding: .utf8)
        let run = try xrlab(["run", recipe.path, "--quiet"])
        XCTAssertEqual(run.status, 0, run.err)
        let reg = dir.appendingPathComponent("reg").path
        let pack = try xrlab([
            "pack", dir.appendingPathComponent("run").path, "--name", "masks", "--version", "1.0.0", "--shots", "4", "--registry", reg, "--quiet"
        ])
        XCTAssertEqual(pack.status, 0, pack.err)
        XCTAssertTrue(pack.out.contains("dice"), pack.out)
        let pkg = dir.appendingPathComponent("reg/masks-1.0.0.xrpkg").path
        let inspect = try xrlab(["inspect", pkg])
        XCTAssertEqual(inspect.status, 0, inspect.err)
        XCTAssertTrue(inspect.out.contains("segmentation"), inspect.out)

        let noMasks = try xrlab(["predict", "--package", pkg, "--base", dir.appendingPathComponent("demo/model").path, manifest.path, "--quiet"])
        XCTAssertNotEqual(noMasks.status, 0)
        XCTAssertTrue(noMasks.err.contains("--masks"), noMasks.err)

        let masks = dir.appendingPathComponent("out/masks"), csv = dir.appendingPathComponent("out/masks.csv")
        let pred = try xrlab([
            "predict", "--package", pkg, "--base", dir.appendingPathComponent("demo/model").path, manifest.path, "--masks", masks.path, "--out",
            csv.path, "--quiet"
        ])
        XCTAssertEqual(pred.status, 0, pred.err)
        let lines = try String(contentsOf: csv, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.first, "path,mask,foreground_fraction")
        XCTAssertEqual(lines.count, 17)
        let files = try FileManager.default.contentsOfDirectory(atPath: masks.path).filter { $0.hasSuffix(".png") }
        XCTAssertEqual(files.count, 16)
        XCTAssertTrue(lines[1].hasPrefix("images/0.png,\(masks.path)/images_0_png.png,"), String(lines[1]))
    }
}
