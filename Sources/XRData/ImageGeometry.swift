import Foundation
import XRTensor

// Dimension letters: H × W the original image, rh × rw after the resize, oh × ow the model
// input (after the crop / pad), gh × gw a grid of values covering the model input (the patch
// grid), K channels of a map (classes).
//
// Coordinates are continuous with pixel i spanning [i, i + 1) and its centre at i + 0.5, the
// convention of `torch.nn.functional.interpolate(align_corners=False)`, so one formula maps
// points both ways and nearest / bilinear resampling agree with the image resize.

/// The geometric part of `Preprocessing` for one image size: resize (H, W) → (rh, rw), then a
/// crop (or zero pad) to the model input (oh, ow) whose top-left corner is resized pixel
/// (`top`, `left`) — negative when the input is padded. `Preprocessing.apply` takes its sizes
/// and offsets from this value, so masks, boxes and predictions that go through it follow the
/// image exactly.
///
/// Masks go forward with nearest-neighbour sampling at pixel centres (`nearest-exact` in torch:
/// output pixel o reads input `floor((o + 0.5) · in / out)`), which keeps label values and, for
/// any enlargement (rh ≥ H, rw ≥ W), maps back exactly: `backward(forward(m)) == m` wherever the
/// crop keeps the image.
public struct ImageGeometry: Sendable, Equatable, Codable, CustomStringConvertible {
    /// Original image size (H, W).
    public var imageHeight: Int, imageWidth: Int
    /// Size after the resize step (rh, rw).
    public var resizedHeight: Int, resizedWidth: Int
    /// Model input size (oh, ow).
    public var inputHeight: Int, inputWidth: Int
    /// Resized-image row and column of model-input pixel (0, 0); negative where the input is padded.
    public var top: Int, left: Int

    public init(
        imageHeight: Int, imageWidth: Int, resizedHeight: Int, resizedWidth: Int,
        inputHeight: Int, inputWidth: Int, top: Int, left: Int
    ) {
        precondition(
            imageHeight > 0 && imageWidth > 0 && resizedHeight > 0 && resizedWidth > 0 && inputHeight > 0 && inputWidth > 0,
            "ImageGeometry: empty size")
        self.imageHeight = imageHeight
        self.imageWidth = imageWidth
        self.resizedHeight = resizedHeight
        self.resizedWidth = resizedWidth
        self.inputHeight = inputHeight
        self.inputWidth = inputWidth
        self.top = top
        self.left = left
    }

    /// The identity: an image that already has the model's input size.
    public static func identity(height: Int, width: Int) -> ImageGeometry {
        ImageGeometry(
            imageHeight: height, imageWidth: width, resizedHeight: height, resizedWidth: width,
            inputHeight: height, inputWidth: width, top: 0, left: 0)
    }

    public var description: String {
        "\(imageWidth)×\(imageHeight) → resize \(resizedWidth)×\(resizedHeight) → input \(inputWidth)×\(inputHeight) at (left \(left), top \(top))"
    }

    // MARK: Points

    /// Model-input coordinates of an image point (continuous, pixel centres at i + 0.5).
    public func inputPoint(x: Double, y: Double) -> (x: Double, y: Double) {
        (x * Double(resizedWidth) / Double(imageWidth) - Double(left), y * Double(resizedHeight) / Double(imageHeight) - Double(top))
    }

    /// Image coordinates of a model-input point: the inverse of `inputPoint`.
    public func imagePoint(x: Double, y: Double) -> (x: Double, y: Double) {
        ((x + Double(left)) * Double(imageWidth) / Double(resizedWidth), (y + Double(top)) * Double(imageHeight) / Double(resizedHeight))
    }

    // MARK: Label maps (nearest)

    /// Nearest index at pixel centres: `floor((o + 0.5) · from / to)`, in exact integer arithmetic.
    @inline(__always) static func nearest(_ o: Int, from: Int, to: Int) -> Int { ((2 * o + 1) * from) / (2 * to) }

    /// A label map (H, W) → (oh, ow): nearest at pixel centres through the resize, then the crop;
    /// input pixels in the padding (outside the resized image) get `fill`.
    public func forward(labels: [UInt8], fill: UInt8 = 0) -> [UInt8] {
        precondition(labels.count == imageHeight * imageWidth, "forward: \(labels.count) labels for a \(imageHeight)×\(imageWidth) image")
        let rows = (0..<inputHeight).map { o -> Int in
            let r = o + top
            return r >= 0 && r < resizedHeight ? Self.nearest(r, from: imageHeight, to: resizedHeight) : -1
        }
        let cols = (0..<inputWidth).map { o -> Int in
            let c = o + left
            return c >= 0 && c < resizedWidth ? Self.nearest(c, from: imageWidth, to: resizedWidth) : -1
        }
        var out = [UInt8](repeating: fill, count: inputHeight * inputWidth)
        for (oy, sy) in rows.enumerated() where sy >= 0 {
            for (ox, sx) in cols.enumerated() where sx >= 0 { out[oy * inputWidth + ox] = labels[sy * imageWidth + sx] }
        }
        return out
    }

    /// A label map (oh, ow) → (H, W): each image pixel takes the model-input pixel its centre falls
    /// in; pixels the crop cut away get `fill`.
    public func backward(labels: [UInt8], fill: UInt8 = 0) -> [UInt8] {
        precondition(labels.count == inputHeight * inputWidth, "backward: \(labels.count) labels for a \(inputHeight)×\(inputWidth) input")
        let rows = (0..<imageHeight).map { y -> Int in
            let o = Self.nearest(y, from: resizedHeight, to: imageHeight) - top
            return o >= 0 && o < inputHeight ? o : -1
        }
        let cols = (0..<imageWidth).map { x -> Int in
            let o = Self.nearest(x, from: resizedWidth, to: imageWidth) - left
            return o >= 0 && o < inputWidth ? o : -1
        }
        var out = [UInt8](repeating: fill, count: imageHeight * imageWidth)
        for (y, oy) in rows.enumerated() where oy >= 0 {
            for (x, ox) in cols.enumerated() where ox >= 0 { out[y * imageWidth + x] = labels[oy * inputWidth + ox] }
        }
        return out
    }

    // MARK: Grids of values (bilinear)

    /// torch's bilinear source taps (`align_corners=False`) for a point `t` of an axis of length
    /// `outSize` resampled from `inSize` values: s = max(0, t · in / out − 0.5), taps
    /// ⌊s⌋ and min(⌊s⌋ + 1, in − 1), weight of the second s − ⌊s⌋. At t = o + 0.5 this is
    /// `interpolate(mode="bilinear")`'s weight for output o.
    public static func bilinearTaps(at t: Double, inSize: Int, outSize: Int) -> (i0: Int, i1: Int, w1: Float) {
        let s = max(0, t * Double(inSize) / Double(outSize) - 0.5)
        let i0 = min(Int(s), inSize - 1)
        return (i0, min(i0 + 1, inSize - 1), Float(s - Double(i0)))
    }

    /// The (outSize, inSize) matrix of bilinear upsampling along one axis (row o holds the weights
    /// of output o): a (K, gh, gw) grid upsampled to (K, oh, ow) is Uh · G_k · Uwᵀ per channel.
    public static func bilinearMatrix(inSize: Int, outSize: Int) -> [Float] {
        var m = [Float](repeating: 0, count: outSize * inSize)
        for o in 0..<outSize {
            let (i0, i1, w1) = bilinearTaps(at: Double(o) + 0.5, inSize: inSize, outSize: outSize)
            m[o * inSize + i0] += 1 - w1
            m[o * inSize + i1] += w1
        }
        return m
    }

    /// A (K, gh, gw) grid of values covering the model input (patch logits or scores) → (K, H, W)
    /// at the original image size. Each image pixel's centre is taken to model-input coordinates
    /// and the grid is read there with `bilinearTaps` — the same function whose values at the
    /// model-input pixel centres are the grid's bilinear upsampling to (oh, ow), so at the identity
    /// geometry the result equals that upsampling exactly. Pixels the crop cut away get `fill`.
    public func backward(grid: [Float], channels k: Int, gridHeight gh: Int, gridWidth gw: Int, fill: Float) -> [Float] {
        precondition(grid.count == k * gh * gw && gh > 0 && gw > 0, "backward: grid of \(grid.count) values is not \(k)×\(gh)×\(gw)")
        typealias Tap = (i0: Int, i1: Int, w1: Float)?
        let rows: [Tap] = (0..<imageHeight).map { y in
            let t = inputPoint(x: 0, y: Double(y) + 0.5).y
            return t >= 0 && t < Double(inputHeight) ? Self.bilinearTaps(at: t, inSize: gh, outSize: inputHeight) : nil
        }
        let cols: [Tap] = (0..<imageWidth).map { x in
            let t = inputPoint(x: Double(x) + 0.5, y: 0).x
            return t >= 0 && t < Double(inputWidth) ? Self.bilinearTaps(at: t, inSize: gw, outSize: inputWidth) : nil
        }
        let plane = imageHeight * imageWidth
        var out = [Float](repeating: fill, count: k * plane)
        for c in 0..<k {
            let g = c * gh * gw
            for (y, r) in rows.enumerated() {
                guard let r else { continue }
                for (x, q) in cols.enumerated() {
                    guard let q else { continue }
                    let upper = (1 - q.w1) * grid[g + r.i0 * gw + q.i0] + q.w1 * grid[g + r.i0 * gw + q.i1]
                    let lower = (1 - q.w1) * grid[g + r.i1 * gw + q.i0] + q.w1 * grid[g + r.i1 * gw + q.i1]
                    out[c * plane + y * imageWidth + x] = (1 - r.w1) * upper + r.w1 * lower
                }
            }
        }
        return out
    }
}

extension Preprocessing {
    /// The geometric transform this preprocessing applies to an image of `height × width`
    /// (resize, then center crop or pad, with this configuration's rounding of the crop offset).
    public func geometry(height h: Int, width w: Int) -> ImageGeometry {
        let (rh, rw) = resizedSize(height: h, width: w)
        let oh = cropHeight ?? rh, ow = cropWidth ?? rw
        // Crop offsets: torchvision-backend center_crop (pads (ch - h) // 2 on top when needed).
        func half(_ margin: Int) -> Int {
            cropRounding == .floor ? margin / 2 : Int((Double(margin) / 2).rounded(.toNearestOrEven))
        }
        let top = rh >= oh ? half(rh - oh) : -((oh - rh) / 2)
        let left = rw >= ow ? half(rw - ow) : -((ow - rw) / 2)
        return ImageGeometry(
            imageHeight: h, imageWidth: w, resizedHeight: max(rh, 1), resizedWidth: max(rw, 1),
            inputHeight: max(oh, 1), inputWidth: max(ow, 1), top: top, left: left)
    }
}
