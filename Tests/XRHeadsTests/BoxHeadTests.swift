import Foundation
import TestSupport
import XCTest
import XRData
import XRHeads
import XRProbe
import XRTensor

/// The box head: rasterising, components, boxes back in image pixels, learning planted boxes,
/// and box CSV files.
final class BoxHeadTests: XCTestCase {
    func testRasterizeTakesPixelCentresInsideBoxes() {
        // x 1.2 … 3.2 holds the centres 1.5 and 2.5; y 0 … 1 the centre 0.5.
        let m = BoxHead.rasterize([Box(x: 1.2, y: 0, width: 2, height: 1)], width: 5, height: 2)
        XCTAssertEqual(m, [0, 1, 1, 0, 0, 0, 0, 0, 0, 0])
        // Reaching past the image is clipped; a box between two centres covers nothing.
        XCTAssertEqual(BoxHead.rasterize([Box(x: 3.6, y: -1, width: 5, height: 9)], width: 5, height: 2), [0, 0, 0, 0, 1, 0, 0, 0, 0, 1])
        XCTAssertEqual(BoxHead.rasterize([Box(x: 1.6, y: 0, width: 0.8, height: 2)], width: 5, height: 2), [UInt8](repeating: 0, count: 10))
    }

    func testComponentsAreEightConnectedAndScored() {
        let n = Float.nan
        let map: [Float] = [
            5, 0, 0, 0, 0,
            0, 3, 0, 0, 2,
            0, 0, 0, 0, 4,
            n, 0, 0, 0, 0
        ]
        let maxScored = BoxHead.components(map, width: 5, height: 4, threshold: 1, scoring: .max)
        XCTAssertEqual(
            maxScored,
            [
                MapComponent(x0: 0, y0: 0, x1: 1, y1: 1, pixels: 2, score: 5),
                MapComponent(x0: 4, y0: 1, x1: 4, y1: 2, pixels: 2, score: 4)
            ])
        XCTAssertEqual(BoxHead.components(map, width: 5, height: 4, threshold: 1, scoring: .mean).map(\.score), [4, 3])
        XCTAssertEqual(BoxHead.components(map, width: 5, height: 4, threshold: 4, scoring: .max).count, 1)
    }

    /// A decoder whose one-channel tokens are its patch logits: one hot patch on a grid of −10
    /// gives a component of exactly that patch (bilinear crosses 0 on the patch edge), mapped
    /// back through the resize by 0.8 and the 8-pixel crop offset.
    func testBoxesMapBackToImagePixels() {
        var d = LinearDecoder(grid: SyntheticPatches.grid, channels: 1, classes: 2)
        d.weight = [1]
        d.bias = [0]
        var tokens = [Float](repeating: -10, count: 36)
        tokens[1 * 6 + 2] = 10
        let g = SyntheticPatches.preprocessing.geometry(height: 60, width: 80)
        let found = BoxHead(decoder: d).detect(tokens, geometry: g, image: 3)
        XCTAssertEqual(found.boxes.count, 1)
        let b = found.boxes[0]
        XCTAssertEqual(b.image, 3)
        // Patch (row 1, column 2) covers input x 16 … 24, y 8 … 16 → image x (16 + 8) / 0.8 = 30 … 40, y 10 … 20.
        XCTAssertEqual(b.box, Box(x: 30, y: 10, width: 10, height: 10))
        XCTAssertEqual(b.score, Double(found.imageScore))
        XCTAssertTrue(b.box.contains(x: found.peak.x, y: found.peak.y))
        XCTAssertGreaterThan(found.imageScore, 5)
    }

    func testLearnsPlantedBoxes() {
        // 12 negatives among 48 images; train on 32, test on 16 (4 negatives among them).
        let data = SyntheticPatches(images: 48, negatives: 12, seed: 11)
        var order = Array(0..<48)
        var rng = XRRandom(seed: 2)
        rng.shuffle(&order)
        let train = Array(order[0..<32]), test = Array(order[32..<48])
        let g = data.geometry
        let examples = train.map { BoxHead.example(tokens: data.tokens[$0], boxes: data.box($0).map { [$0] } ?? [], geometry: g) }
        let (decoder, _) = LinearDecoder.fit(
            examples, grid: SyntheticPatches.grid, channels: 16, classes: 2,
            options: DecoderTraining(epochs: 40, batchImages: 8, learningRate: 0.05, l2: 1e-4, seed: 1))
        let head = BoxHead(decoder: decoder)
        let found = test.enumerated().map { k, i in head.detect(data.tokens[i], geometry: g, image: k) }
        let truth = test.map { data.box($0).map { [$0] } ?? [] }
        let predictions = found.flatMap(\.boxes)
        let ap = DetectionMetrics.averagePrecision(predictions, truth: truth, threshold: 0.5) ?? 0
        let pointing = DetectionMetrics.pointingGame(points: found.map(\.peak), truth: truth) ?? 0
        let auroc = Metrics.auroc(found.map(\.imageScore), truth.map { !$0.isEmpty }) ?? 0
        print("box head: AP@0.5 \(ap), pointing game \(pointing), image AUROC \(auroc), \(predictions.count) boxes")
        XCTAssertGreaterThan(ap, 0.7)
        XCTAssertGreaterThan(pointing, 0.9)
        XCTAssertGreaterThan(auroc, 0.9)
    }

    // MARK: Box CSV

    func csv(_ text: String) throws -> URL {
        let url = Fixtures.tempDir("boxes").appendingPathComponent("boxes.csv")
        try Data(text.utf8).write(to: url)
        return url
    }

    let images: [String: (width: Int, height: Int)] = ["a.png": (100, 80), "b.png": (50, 50), "c.png": (10, 10)]

    func testReadsBoxesWithLabelsAndNegatives() throws {
        let url = try csv("path,finding,x,y,width,height\na.png,Mass,10,20.5,30,40\na.png,Nodule,0,0,100,80\nb.png,Mass,1,2,3,4\n")
        let boxes = try BoxAnnotations.read(url, images: images, labelColumn: "finding")
        XCTAssertEqual(
            boxes["a.png"],
            [
                AnnotatedBox(box: Box(x: 10, y: 20.5, width: 30, height: 40), label: "Mass"),
                AnnotatedBox(box: Box(x: 0, y: 0, width: 100, height: 80), label: "Nodule")
            ])
        XCTAssertEqual(boxes["b.png"]?.count, 1)
        XCTAssertEqual(boxes["c.png"], [], "an image without rows is a negative")
    }

    func testBoxErrorsNameFileRowAndColumn() throws {
        func expect(_ text: String, _ words: [String], field: String) throws {
            let url = try csv(text)
            XCTAssertThrowsError(try BoxAnnotations.read(url, images: images)) { e in
                guard let e = e as? XRError else { return XCTFail("not an XRError: \(e)") }
                XCTAssertEqual(e.file, url.path)
                XCTAssertEqual(e.field, field)
                for w in words { XCTAssertTrue(e.description.contains(w), "'\(w)' not in: \(e)") }
            }
        }
        let h = "path,x,y,width,height\n"
        try expect(h + "a.png,1,1,2,2\na.png,90,10,20,5\n", ["outside", "100×80", "a.png"], field: "row 3")
        try expect(h + "a.png,-0.5,1,2,2\n", ["outside"], field: "row 2")
        try expect(h + "a.png,1,1,-2,2\n", ["width -2.0 is not positive"], field: "row 2, column width")
        try expect(h + "a.png,1,1,2,0\n", ["height 0.0 is not positive"], field: "row 2, column height")
        try expect(h + "d.png,1,1,2,2\n", ["unknown image 'd.png'"], field: "row 2, column path")
        try expect(h + "a.png,1,one,2,2\n", ["'one' is not a number"], field: "row 2, column y")
        try expect(h + "a.png,1,nan,2,2\n", ["not a number"], field: "row 2, column y")
        try expect("path,x,y,w,height\na.png,1,1,2,2\n", ["no column 'width'"], field: "width")
    }
}
