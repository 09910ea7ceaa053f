import Foundation
import TestSupport
import XCTest
import XRData
import XRHeads
import XRProbe
import XRTensor

/// FracAtlas' fracture masks and boxes in the shared data: reading and geometry only.
final class FracAtlasAnnotationTests: XCTestCase {
    func testMasksAndBoxesReadAndFollowTheEncoderGeometry() throws {
        let root = try Fixtures.requireSharedData()
        let manifest = try CSVTable(contentsOf: root.appendingPathComponent("manifest.csv"))
        let pathColumn = try manifest.column("path"), labelColumn = try manifest.column("labels")
        let rows = manifest.rows.filter { $0[pathColumn].contains("/fracatlas/") }
        XCTAssertEqual(rows.count, 400)
        var sizes: [String: (width: Int, height: Int)] = [:]
        var masks: [String: LabelMask] = [:]
        for row in rows {
            let path = row[pathColumn]
            let image = try PNGCodec.read(root.appendingPathComponent(path))
            sizes[path] = (image.width, image.height)
            let maskURL = root.appendingPathComponent("masks/fracatlas").appendingPathComponent((path as NSString).lastPathComponent)
            let mask = try LabelMask.read(maskURL, width: image.width, height: image.height, image: path)
            let fractured = row[labelColumn].split(separator: "|").contains("fractured")
            XCTAssertEqual(mask.labels.contains(1), fractured, "\(path): mask and label disagree")
            masks[path] = mask
        }
        let boxes = try BoxAnnotations.read(root.appendingPathComponent("annotations/fracatlas_boxes.csv"), images: sizes)
        XCTAssertEqual(boxes.count, 400)
        XCTAssertEqual(boxes.values.reduce(0) { $0 + $1.count }, 188)
        XCTAssertEqual(boxes.values.filter { !$0.isEmpty }.count, 140)
        // The polygons lie in their boxes: nearly all mask pixels are inside a box of their image.
        var inside = 0, total = 0
        for (path, list) in boxes where !list.isEmpty {
            let m = try XCTUnwrap(masks[path]), s = try XCTUnwrap(sizes[path])
            let boxed = BoxHead.rasterize(list.map(\.box), width: s.width, height: s.height)
            for i in m.labels.indices where m.labels[i] == 1 {
                total += 1
                if boxed[i] == 1 { inside += 1 }
            }
        }
        print("FracAtlas: \(total) mask pixels, \(Double(inside) / Double(total)) of them inside a box")
        XCTAssertGreaterThan(Double(inside) / Double(total), 0.95)

        // Through RAD-DINO's geometry: the 256-pixel images are enlarged, so a mask taken to the
        // model input and back is unchanged wherever the crop keeps the image.
        var cut = 0, foreground = 0
        for (path, mask) in masks {
            let g = Preprocessing.radDino.geometry(height: mask.height, width: mask.width)
            let back = g.backward(labels: mask.transformed(by: g), fill: 9)
            foreground += mask.labels.count(where: { $0 == 1 })
            if g.resizedHeight >= mask.height && g.resizedWidth >= mask.width {
                let changed = back.indices.first { back[$0] != 9 && back[$0] != mask.labels[$0] }
                XCTAssertNil(changed, "\(path): the round trip changed a pixel")
            } else {
                // The two full-resolution originals are reduced: compare the foreground that survives.
                var both = 0, either = 0
                for i in back.indices where back[i] != 9 {
                    both += back[i] == 1 && mask.labels[i] == 1 ? 2 : 0
                    either += (back[i] == 1 ? 1 : 0) + (mask.labels[i] == 1 ? 1 : 0)
                }
                XCTAssertGreaterThan(either == 0 ? 1 : Double(both) / Double(either), 0.9, "\(path): Dice of the reduced and restored mask")
            }
            for i in back.indices where back[i] == 9 && mask.labels[i] == 1 { cut += 1 }
        }
        print("FracAtlas under RAD-DINO's 518 crop: \(cut) of \(foreground) fracture pixels fall outside the crop")

        // A mask read against another image's size names the mask file.
        let first = try XCTUnwrap(rows.first?[pathColumn])
        let maskURL = root.appendingPathComponent("masks/fracatlas").appendingPathComponent((first as NSString).lastPathComponent)
        XCTAssertThrowsError(try LabelMask.read(maskURL, width: 7, height: 5, image: first)) { e in
            XCTAssertEqual((e as? XRError)?.file, maskURL.path)
        }
    }
}
