import Foundation
import XRData
import XRTensor

/// Generated images for detection tests: a bright rectangle (the finding, its box) on a dark,
/// noisy background in two thirds of the images (every third image has none), so frozen patch
/// tokens of even a random encoder separate the two.
public enum SyntheticBoxes {
    public static let width = 144, height = 160

    /// Write `images/<i>.png`, `manifest.csv` (columns path, patient, split, sex) and `boxes.csv`
    /// (path, x, y, width, height, finding = `square`) under `dir`. Patients own one image each;
    /// the first `train` rows are training rows. Returns the manifest and each positive image's box.
    @discardableResult
    public static func write(in dir: URL, count: Int, train: Int) throws -> (
        manifest: URL, boxes: [String: (x: Int, y: Int, width: Int, height: Int)]
    ) {
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("images"), withIntermediateDirectories: true)
        var rng = XRRandom(seed: 7)
        let w = width, h = height
        var rows: [[String]] = [], boxRows: [[String]] = [], boxes: [String: (x: Int, y: Int, width: Int, height: Int)] = [:]
        for i in 0..<count {
            let positive = i % 3 != 2
            let rw = 36 + rng.nextInt(below: 40), rh = 36 + rng.nextInt(below: 40)
            let x0 = rng.nextInt(below: w - rw), y0 = rng.nextInt(below: h - rh)
            var pixels = [UInt8](repeating: 0, count: w * h)
            for y in 0..<h {
                for x in 0..<w {
                    let inside = positive && x >= x0 && x < x0 + rw && y >= y0 && y < y0 + rh
                    pixels[y * w + x] = UInt8((inside ? 200 : 40) + rng.nextInt(below: 30))
                }
            }
            let image = "images/\(i).png"
            try PNGCodec.write(try PNGCodec.encodeGray8(width: w, height: h, pixels: pixels), to: dir.appendingPathComponent(image))
            rows.append([image, "P\(i)", i < train ? "train" : "test", i % 2 == 0 ? "F" : "M"])
            if positive {
                boxes[image] = (x0, y0, rw, rh)
                boxRows.append([image, String(x0), String(y0), String(rw), String(rh), "square"])
            }
        }
        let manifest = dir.appendingPathComponent("manifest.csv")
        try CSVTable(header: ["path", "patient", "split", "sex"], rows: rows).write(to: manifest)
        try CSVTable(header: ["path", "x", "y", "width", "height", "finding"], rows: boxRows).write(to: dir.appendingPathComponent("boxes.csv"))
        return (manifest, boxes)
    }
}
