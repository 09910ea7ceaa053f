import Foundation
import XCTest
import XRPipeline
import TestSupport

/// run → pack → predict of segmentation and detection studies, as a user runs them: masks, boxes
/// and heatmaps as files, the CSVs, and the errors for a missing --masks / --boxes and an output of
/// another kind of package.
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

        let boxes = try xrlab([
            "predict", "--package", pkg, "--base", dir.appendingPathComponent("demo/model").path, manifest.path, "--boxes",
            dir.appendingPathComponent("out/b.csv").path, "--quiet"
        ])
        XCTAssertNotEqual(boxes.status, 0)
        XCTAssertTrue(boxes.err.contains("--boxes applies to detection packages; this is a segmentation package"), boxes.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("out/b.csv").path))
    }

    func testDetectionPackageEndToEnd() throws {
        let dir = Fixtures.tempDir("cli-det-pack")
        try DemoData.generate(in: dir.appendingPathComponent("demo"), patients: 2)
        let (manifest, _) = try SyntheticBoxes.write(in: dir, count: 18, train: 12)
        let recipe = dir.appendingPathComponent("det.yaml")
        try """
        version: 1
        name: cli-det
        model: {path: demo/model}
        data: {manifest: manifest.csv, task: detection, boxes: boxes.csv, patient_column: patient, split_column: split}
        methods: [{name: box_head, epochs: 20, lr: 0.05, batch_size: 4}]
        shots: [3]
        seeds: 1
        bootstrap: 0
        output: run
        """.write(to: recipe, atomically: true, encoding: .utf8)
        let run = try xrlab(["run", recipe.path, "--quiet"])
        XCTAssertEqual(run.status, 0, run.err)
        let reg = dir.appendingPathComponent("reg").path
        let pack = try xrlab([
            "pack", dir.appendingPathComponent("run").path, "--name", "boxes", "--version", "1.0.0", "--shots", "3", "--registry", reg, "--quiet"
        ])
        XCTAssertEqual(pack.status, 0, pack.err)
        XCTAssertTrue(pack.out.contains("ap_30"), pack.out)
        let pkg = dir.appendingPathComponent("reg/boxes-1.0.0.xrpkg").path
        let inspect = try xrlab(["inspect", pkg])
        XCTAssertEqual(inspect.status, 0, inspect.err)
        XCTAssertTrue(inspect.out.contains("kind:      detection"), inspect.out)
        XCTAssertTrue(inspect.out.contains("head:      boxes: box_head, 2 classes, 6 training rows"), inspect.out)

        let base = dir.appendingPathComponent("demo/model").path
        let masks = try xrlab(["predict", "--package", pkg, "--base", base, manifest.path, "--masks", dir.appendingPathComponent("m").path])
        XCTAssertNotEqual(masks.status, 0)
        XCTAssertTrue(masks.err.contains("--masks applies to segmentation packages; this is a detection package"), masks.err)
        let noBoxes = try xrlab(["predict", "--package", pkg, "--base", base, manifest.path, "--quiet"])
        XCTAssertNotEqual(noBoxes.status, 0)
        XCTAssertTrue(noBoxes.err.contains("--boxes"), noBoxes.err)

        let out = dir.appendingPathComponent("out"), heat = out.appendingPathComponent("heatmaps")
        let pred = try xrlab([
            "predict", "--package", pkg, "--base", base, manifest.path, "--boxes", out.appendingPathComponent("boxes.csv").path, "--heatmaps",
            heat.path, "--out", out.appendingPathComponent("images.csv").path, "--quiet"
        ])
        XCTAssertEqual(pred.status, 0, pred.err)
        let images = try String(contentsOf: out.appendingPathComponent("images.csv"), encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(images.first, "path,image_score,peak_x,peak_y,boxes")
        XCTAssertEqual(images.count, 19)
        let boxLines = try String(contentsOf: out.appendingPathComponent("boxes.csv"), encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(boxLines.first, "path,box,x,y,width,height,score")
        let counted = images.dropFirst().map { Int($0.split(separator: ",").last ?? "") ?? -1 }.reduce(0, +)
        XCTAssertEqual(boxLines.count - 1, counted, "one row per predicted box")
        let files = try FileManager.default.contentsOfDirectory(atPath: heat.path)
        XCTAssertEqual(files.filter { $0.hasSuffix("_overlay.png") }.count, 18)
        XCTAssertTrue(files.contains("images_0_png.png"), "\(files)")
    }
}
