import Foundation
import XRData
import XRTensor

/// Generated images for segmentation and retrieval tests: a bright rectangle on a dark, noisy
/// background, its mask the rectangle, so frozen patch tokens of even a random encoder separate
/// the two.
public enum SyntheticRectangles {
    public static let width = 144, height = 160

    /// Write `images/<i>.png`, `masks/<i>.png` and `manifest.csv` (columns path, mask, patient,
    /// split, sex, size) under `dir`. Row 1 has no mask; patients own one image each; the first
    /// `train` rows are training rows; `size` is `large` when the rectangle covers over a quarter
    /// of the image, else `small`.
    @discardableResult
    public static func write(in dir: URL, count: Int, train: Int) throws -> URL {
        let fm = FileManager.default
        try fm.createDirectory(at: dir.appendingPathComponent("images"), withIntermediateDirectories: true)
        try fm.createDirectory(at: dir.appendingPathComponent("masks"), withIntermediateDirectories: true)
        var rng = XRRandom(seed: 11)
        let w = width, h = height
        var rows: [[String]] = []
        for i in 0..<count {
            let rw = 40 + rng.nextInt(below: 50), rh = 40 + rng.nextInt(below: 50)
            let x0 = rng.nextInt(below: w - rw), y0 = rng.nextInt(below: h - rh)
            var pixels = [UInt8](repeating: 0, count: w * h), mask = [UInt8](repeating: 0, count: w * h)
            for y in 0..<h {
                for x in 0..<w {
                    let inside = x >= x0 && x < x0 + rw && y >= y0 && y < y0 + rh
                    pixels[y * w + x] = UInt8((inside ? 200 : 40) + rng.nextInt(below: 30))
                    mask[y * w + x] = inside ? 255 : 0
                }
            }
            let image = "images/\(i).png", maskPath = "masks/\(i).png"
            try PNGCodec.write(try PNGCodec.encodeGray8(width: w, height: h, pixels: pixels), to: dir.appendingPathComponent(image))
            try PNGCodec.write(try PNGCodec.encodeGray8(width: w, height: h, pixels: mask), to: dir.appendingPathComponent(maskPath))
            rows.append([
                image, i == 1 ? "" : maskPath, "P\(i)", i < train ? "train" : "test", i % 2 == 0 ? "F" : "M", rw * rh * 4 > w * h ? "large" : "small"
            ])
        }
        let manifest = dir.appendingPathComponent("manifest.csv")
        try CSVTable(header: ["path", "mask", "patient", "split", "sex", "size"], rows: rows).write(to: manifest)
        return manifest
    }
}
