import Foundation
import TestSupport
import XCTest
import XRKernels
import XRTensor

@testable import XRData

/// The geometric transform shared by images, masks and predictions; mask files.
final class ImageGeometryTests: XCTestCase {
    func testGeometryOfKnownConfigurations() {
        // RAD-DINO on a 256-wide, 312-high image: shortest edge 518 → 518 × int(518·312/256) = 631, crop 518.
        let g = Preprocessing.radDino.geometry(height: 312, width: 256)
        XCTAssertEqual(
            g,
            ImageGeometry(imageHeight: 312, imageWidth: 256, resizedHeight: 631, resizedWidth: 518, inputHeight: 518, inputWidth: 518, top: 56, left: 0))
        // An odd margin of 115: floor gives 57, torchvision's half-to-even rounding 58.
        var p = Preprocessing(shortestEdge: 100, crop: 100, mean: [0, 0, 0], std: [1, 1, 1])
        XCTAssertEqual(p.geometry(height: 100, width: 215).left, 57)
        p.cropRounding = .halfEven
        XCTAssertEqual(p.geometry(height: 100, width: 215).left, 58)
        // A crop larger than the resized image pads: (16 − 10) // 2 = 3 rows on top.
        let pad = Preprocessing(height: 10, width: 12, cropHeight: 16, cropWidth: 16, mean: [0, 0, 0], std: [1, 1, 1]).geometry(height: 5, width: 6)
        XCTAssertEqual([pad.top, pad.left, pad.inputHeight, pad.inputWidth], [-3, -2, 16, 16])
        // An image of the model's input size under a shortest-edge + crop configuration is the identity.
        XCTAssertEqual(Preprocessing.radDino.geometry(height: 518, width: 518), .identity(height: 518, width: 518))
    }

    /// The image and its mask go through the same transform: away from edges (where the resize
    /// filter mixes pixels) the preprocessed image is bright exactly where the transformed mask is set.
    func testImageAndMaskStayAligned() throws {
        let h = 70, w = 50
        var mask = [UInt8](repeating: 0, count: h * w)
        for y in 20..<45 { for x in 12..<31 { mask[y * w + x] = 1 } }
        let image = XRImage(width: w, height: h, channels: 1, bitDepth: 8, pixels: mask.map { Float($0) })
        for p in [
            Preprocessing(shortestEdge: 40, crop: 32, interpolation: .bilinear, mean: [0, 0, 0], std: [1, 1, 1]),
            Preprocessing(shortestEdge: 64, crop: 56, mean: [0, 0, 0], std: [1, 1, 1]),
            Preprocessing(height: 30, width: 20, cropHeight: 36, cropWidth: 24, mean: [0, 0, 0], std: [1, 1, 1])
        ] {
            let g = p.geometry(height: h, width: w)
            let input = try p.apply(image), m = g.forward(labels: mask)
            let oh = g.inputHeight, ow = g.inputWidth
            var checked = 0
            for y in 0..<oh {
                for x in 0..<ow {
                    // Pixels whose 7 × 7 neighbourhood has one label only (beyond the resize filter's reach).
                    let near = (max(0, y - 3)...min(oh - 1, y + 3)).flatMap { yy in (max(0, x - 3)...min(ow - 1, x + 3)).map { m[yy * ow + $0] } }
                    guard Set(near).count == 1 else { continue }
                    checked += 1
                    XCTAssertEqual(input[y * ow + x], Float(m[y * ow + x]), accuracy: 0.02, "\(p): input pixel (\(x), \(y))")
                }
            }
            XCTAssertGreaterThan(checked, oh * ow / 3)
        }
    }

    func testMaskRoundTripAtNativeSizeAndUnderEnlargement() {
        var rng = XRRandom(seed: 5)
        func randomMask(_ h: Int, _ w: Int) -> [UInt8] { (0..<(h * w)).map { _ in UInt8(rng.nextInt(below: 3)) } }
        let native = ImageGeometry.identity(height: 9, width: 13), m = randomMask(9, 13)
        XCTAssertEqual(native.forward(labels: m), m)
        XCTAssertEqual(native.backward(labels: native.forward(labels: m)), m)
        // Any enlargement, with crops or pads: a pixel the crop keeps comes back unchanged, the others get the fill.
        for _ in 0..<40 {
            let h = 1 + rng.nextInt(below: 20), w = 1 + rng.nextInt(below: 20)
            let rh = h + rng.nextInt(below: 30), rw = w + rng.nextInt(below: 30)
            let p = Preprocessing(
                height: rh, width: rw, cropHeight: max(1, rh + rng.nextInt(below: 9) - 6), cropWidth: max(1, rw + rng.nextInt(below: 9) - 6),
                mean: [0, 0, 0], std: [1, 1, 1])
            let g = p.geometry(height: h, width: w), mask = randomMask(h, w)
            let back = g.backward(labels: g.forward(labels: mask, fill: 7), fill: 9)
            for y in 0..<h {
                for x in 0..<w {
                    let c = g.inputPoint(x: Double(x) + 0.5, y: Double(y) + 0.5)
                    let kept = c.x >= 0 && c.x < Double(g.inputWidth) && c.y >= 0 && c.y < Double(g.inputHeight)
                    XCTAssertEqual(back[y * w + x], kept ? mask[y * w + x] : 9, "\(g): pixel (\(x), \(y))")
                }
            }
        }
    }

    func testMaskTransformKnownCases() {
        let m: [UInt8] = [
            1, 2, 3, 4,
            5, 6, 7, 8,
            9, 10, 11, 12,
            13, 14, 15, 16
        ]
        // Halving reads the pixel at each output centre: input rows / columns 1 and 3.
        let half = Preprocessing(height: 2, width: 2, mean: [0, 0, 0], std: [1, 1, 1]).geometry(height: 4, width: 4)
        XCTAssertEqual(half.forward(labels: m), [6, 8, 14, 16])
        XCTAssertEqual(half.backward(labels: [1, 2, 3, 4]), [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4])
        // Doubling, then a 6 × 6 centre crop (offset 1): each pixel becomes a 2 × 2 block, cut at the rim.
        let crop = Preprocessing(height: 8, width: 8, cropHeight: 6, cropWidth: 6, mean: [0, 0, 0], std: [1, 1, 1]).geometry(height: 4, width: 4)
        XCTAssertEqual(Array(crop.forward(labels: m).prefix(6)), [1, 2, 2, 3, 3, 4])
        // Image row / column 3 has its centre on resized row / column 7, which the crop cut away.
        XCTAssertEqual(crop.backward(labels: crop.forward(labels: m)), [1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 0, 0, 0, 0])
        // Width 3 → 6 then a 4-wide crop at offset 1: pixel 2's centre lies on resized column 5, cut away.
        let cut = Preprocessing(height: 1, width: 6, cropHeight: 1, cropWidth: 4, mean: [0, 0, 0], std: [1, 1, 1]).geometry(height: 1, width: 3)
        XCTAssertEqual(cut.forward(labels: [1, 2, 3]), [1, 2, 2, 3])
        XCTAssertEqual(cut.backward(labels: [1, 2, 2, 3], fill: 0), [1, 2, 0])
        let narrow = Preprocessing(height: 1, width: 6, cropHeight: 1, cropWidth: 2, mean: [0, 0, 0], std: [1, 1, 1]).geometry(height: 1, width: 3)
        XCTAssertEqual(narrow.forward(labels: [1, 2, 3]), [2, 2])
        XCTAssertEqual(narrow.backward(labels: [2, 2], fill: 0), [0, 2, 0])
        // Padding is filled going forward.
        let pad = Preprocessing(height: 2, width: 2, cropHeight: 4, cropWidth: 4, mean: [0, 0, 0], std: [1, 1, 1]).geometry(height: 2, width: 2)
        XCTAssertEqual(pad.forward(labels: [1, 2, 3, 4], fill: 255), [255, 255, 255, 255, 255, 1, 2, 255, 255, 3, 4, 255, 255, 255, 255, 255])
        XCTAssertEqual(pad.backward(labels: pad.forward(labels: [1, 2, 3, 4])), [1, 2, 3, 4])
        // Points map both ways.
        let g = Preprocessing.radDino.geometry(height: 312, width: 256)
        let q = g.imagePoint(x: g.inputPoint(x: 17.25, y: 200.5).x, y: g.inputPoint(x: 17.25, y: 200.5).y)
        XCTAssertEqual(q.x, 17.25, accuracy: 1e-9)
        XCTAssertEqual(q.y, 200.5, accuracy: 1e-9)
    }

    /// The bilinear matrices are torch's `interpolate(mode="bilinear", align_corners=False)`
    /// upsampling: checked against the resampling kernel the image pipeline uses (antialiasing
    /// changes nothing when enlarging).
    func testBilinearMatricesMatchTheResampleKernel() {
        var rng = XRRandom(seed: 2)
        for (gh, gw, oh, ow) in [(3, 5, 7, 16), (4, 4, 32, 32), (37, 37, 518, 518), (1, 2, 5, 3)] {
            let grid = (0..<(gh * gw)).map { _ in rng.nextGaussian() }
            var want = [Float](repeating: 0, count: oh * ow)
            resample(&want, grid, channels: 1, inH: gh, inW: gw, outH: oh, outW: ow, filter: .bilinear, antialias: true)
            let uh = ImageGeometry.bilinearMatrix(inSize: gh, outSize: oh), uw = ImageGeometry.bilinearMatrix(inSize: gw, outSize: ow)
            // Uh · G · Uwᵀ in two plain passes: rows, then columns.
            var mid = [Float](repeating: 0, count: oh * gw), got = [Float](repeating: 0, count: oh * ow)
            for y in 0..<oh { for j in 0..<gw { for i in 0..<gh { mid[y * gw + j] += uh[y * gh + i] * grid[i * gw + j] } } }
            for y in 0..<oh { for x in 0..<ow { for j in 0..<gw { got[y * ow + x] += mid[y * gw + j] * uw[x * gw + j] } } }
            assertClose(got, want, rel: 1e-5, "bilinear \(gh)×\(gw) → \(oh)×\(ow)")
            // At the identity geometry the map back to the image is that same upsampling.
            let back = ImageGeometry.identity(height: oh, width: ow).backward(grid: grid, channels: 1, gridHeight: gh, gridWidth: gw, fill: .nan)
            assertClose(back, want, rel: 1e-5, "backward at the identity, \(gh)×\(gw) → \(oh)×\(ow)")
        }
    }

    /// Bilinear interpolation reproduces a linear function away from the clamped rim, so the map
    /// back to the image can be checked point by point through the geometry's offsets and scales.
    func testGridMapsBackThroughResizeAndCrop() {
        let gh = 6, gw = 6
        let grid = (0..<(gh * gw)).map { i in Float(3 * (i / gw) - 2 * (i % gw) + 1) }
        let g = Preprocessing(shortestEdge: 48, crop: 48, mean: [0, 0, 0], std: [1, 1, 1]).geometry(height: 60, width: 80)
        XCTAssertEqual([g.resizedHeight, g.resizedWidth, g.top, g.left], [48, 64, 0, 8])
        let back = g.backward(grid: grid, channels: 1, gridHeight: gh, gridWidth: gw, fill: .nan)
        var interior = 0
        for y in 0..<60 {
            for x in 0..<80 {
                let t = g.inputPoint(x: Double(x) + 0.5, y: Double(y) + 0.5)
                let v = back[y * 80 + x]
                guard t.x >= 0 && t.x < 48 else {
                    XCTAssertTrue(v.isNaN, "pixel (\(x), \(y)) was cut away")
                    continue
                }
                let sy = t.y / 8 - 0.5, sx = t.x / 8 - 0.5
                guard sy >= 0, sy <= 5, sx >= 0, sx <= 5 else { continue }
                interior += 1
                XCTAssertEqual(Double(v), 3 * sy - 2 * sx + 1, accuracy: 1e-4, "pixel (\(x), \(y))")
            }
        }
        XCTAssertGreaterThan(interior, 2000)
    }

    // MARK: Mask files

    func write(_ data: Data, _ name: String) throws -> URL {
        let url = Fixtures.tempDir("masks").appendingPathComponent(name)
        try data.write(to: url)
        return url
    }

    func testReadsBinaryAndClassMasks() throws {
        let binary = try write(PNGCodec.encodeGray8(width: 3, height: 2, pixels: [0, 255, 1, 0, 0, 128]), "binary.png")
        XCTAssertEqual(try LabelMask.read(binary, width: 3, height: 2).labels, [0, 1, 1, 0, 0, 1])
        let classes = try write(PNGCodec.encodeGray8(width: 2, height: 2, pixels: [0, 100, 200, 100]), "classes.png")
        XCTAssertEqual(try LabelMask.read(classes, width: 2, height: 2, classValues: [0, 100, 200]).labels, [0, 1, 2, 1])
        let deep = try write(PNGCodec.encodeGray16(width: 2, height: 1, pixels: [0, 1000]), "deep.png")
        XCTAssertEqual(try LabelMask.read(deep, width: 2, height: 1, classValues: [0, 1000]).labels, [0, 1])
    }

    func testWrittenMasksReadBack() throws {
        let mask = LabelMask(width: 3, height: 2, labels: [0, 1, 2, 2, 1, 0])
        let dir = Fixtures.tempDir("masks")
        try mask.write(to: dir.appendingPathComponent("classes.png"), classValues: [0, 60, 120])
        XCTAssertEqual(try LabelMask.read(dir.appendingPathComponent("classes.png"), width: 3, height: 2, classValues: [0, 60, 120]), mask)
        let binary = LabelMask(width: 2, height: 1, labels: [1, 0])
        try binary.write(to: dir.appendingPathComponent("binary.png"))
        XCTAssertEqual(try LabelMask.read(dir.appendingPathComponent("binary.png"), width: 2, height: 1), binary)
        XCTAssertThrowsError(try mask.write(to: dir.appendingPathComponent("few.png"))) { e in
            XCTAssertEqual((e as? XRError)?.field, "mask_classes")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("few.png").path))
    }

    func testMaskErrorsNameTheFile() throws {
        func expect(_ url: URL, width: Int = 2, height: Int = 2, classes: [Int]? = nil, _ words: [String], field: String? = nil) {
            XCTAssertThrowsError(try LabelMask.read(url, width: width, height: height, classValues: classes, image: "images/a.png")) { e in
                guard let e = e as? XRError else { return XCTFail("not an XRError: \(e)") }
                XCTAssertEqual(e.file, url.path)
                if let field { XCTAssertEqual(e.field, field) }
                for w in words { XCTAssertTrue(e.description.contains(w), "'\(w)' not in: \(e)") }
            }
        }
        let mask = try write(PNGCodec.encodeGray8(width: 3, height: 2, pixels: [0, 1, 0, 0, 0, 0]), "m.png")
        expect(mask, ["3×2", "2×2", "images/a.png"], field: "size")
        let odd = try write(PNGCodec.encodeGray8(width: 2, height: 2, pixels: [0, 1, 0, 7]), "odd.png")
        expect(odd, classes: [0, 1], ["value 7", "(x 1, y 1)"], field: "mask_classes")
        expect(odd, classes: [0, 0], ["distinct"], field: "mask_classes")
        expect(try write(Data("not a png".utf8), "text.png"), ["cannot decode"])
        expect(Fixtures.tempDir("masks").appendingPathComponent("missing.png"), ["cannot read"])
        let rgb = try write(PNGCodec.encodeRGB8(width: 2, height: 2, pixels: [UInt8](repeating: 9, count: 12)), "rgb.png")
        expect(rgb, ["3 channels"], field: "channels")
    }
}
