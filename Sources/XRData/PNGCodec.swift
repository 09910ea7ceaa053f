import Foundation
import CXRPNG
import XRTensor

/// A decoded image: channel-planar (C, H, W) floats in [0, 1], mapped by the full range of
/// the source bit depth (v / 255 for 8-bit, v / 65535 for 16-bit, v / 1, 3, 15 for 1/2/4-bit),
/// so 16-bit X-rays keep their full precision (every 16-bit value maps to a distinct float).
public struct XRImage: Sendable, Equatable {
    public var width: Int
    public var height: Int
    /// 1 (gray) or 3 (RGB).
    public var channels: Int
    /// 8 or 16 (bit depths below 8 are scaled to 8 bits by the PNG decoder).
    public var bitDepth: Int
    /// (C, H, W)
    public var pixels: [Float]

    public init(width: Int, height: Int, channels: Int, bitDepth: Int, pixels: [Float]) {
        precondition(pixels.count == width * height * channels, "pixel count does not match \(channels)×\(height)×\(width)")
        self.width = width
        self.height = height
        self.channels = channels
        self.bitDepth = bitDepth
        self.pixels = pixels
    }

    /// The largest sample value of `bitDepth` (255 or 65535).
    public var maxSample: Int { (1 << bitDepth) - 1 }

    /// The integer samples (C, H, W) at `bitDepth`: `pixels[i] · maxSample`, rounded (exact for
    /// decoded images: v / 65535 · 65535 rounds back to v).
    public var samples16: [UInt16] {
        let m = Float(maxSample)
        return pixels.map { UInt16(clamping: Int(($0 * m).rounded())) }
    }
}

/// PNG reading and writing through libpng (behind a setjmp guard in the CXRPNG target).
public enum PNGCodec {
    /// Default bound on width × height when decoding (64 megapixels; the largest radiographs
    /// are about 4300 × 4300 = 18.5 megapixels).
    public static let defaultMaxPixels = 64_000_000

    /// Decode PNG bytes. Gray, gray+alpha, RGB, RGBA and palette images of bit depth 1, 2, 4, 8
    /// or 16, interlaced or not; alpha (and tRNS transparency) is dropped, palettes expanded to
    /// RGB, 16-bit samples kept exact. `maxPixels` is checked against the width × height declared
    /// in IHDR before any pixel memory is allocated.
    /// - Throws: `XRError` naming `source` and the part at fault: "signature", "IHDR", "IDAT"
    ///   (or the chunk libpng names, e.g. "PLTE").
    public static func decode(_ data: Data, source: String, maxPixels: Int = PNGCodec.defaultMaxPixels) throws -> XRImage {
        guard !data.isEmpty else { throw XRError("cannot decode PNG: empty file", file: source, field: "signature") }
        var img = xrpng_image()
        data.withUnsafeBytes { raw in
            if let base = raw.bindMemory(to: UInt8.self).baseAddress {
                xrpng_decode(base, raw.count, UInt64(max(0, maxPixels)), &img)
            }
        }
        defer { xrpng_free(&img) }
        let err = withUnsafeBytes(of: img.error) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if !err.isEmpty {
            let field = withUnsafeBytes(of: img.field) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            throw XRError("cannot decode PNG: \(err)", file: source, field: field.isEmpty ? nil : field)
        }
        let w = Int(img.width), h = Int(img.height), c = Int(img.channels), n = w * h
        guard let px = img.pixels, c == 1 || c == 3, img.bit_depth == 8 || img.bit_depth == 16 else {
            throw XRError("cannot decode PNG: no pixel data", file: source, field: "IDAT")
        }
        var out = [Float](repeating: 0, count: n * c)
        // Interleaved (H, W, C) samples → planar (C, H, W) floats. 1/2/4-bit gray arrives widened
        // and scaled to 0...255 by libpng (v · 255 / (2^d - 1), exact), so the 8-bit mapping applies.
        out.withUnsafeMutableBufferPointer { ob in
            guard let o = ob.baseAddress else { return }
            if img.bit_depth == 16 {
                let p = px.bindMemory(to: UInt16.self, capacity: n * c)
                for k in 0..<c { for i in 0..<n { o[k * n + i] = Float(p[i * c + k]) / 65535 } }
            } else {
                let p = px.bindMemory(to: UInt8.self, capacity: n * c)
                for k in 0..<c { for i in 0..<n { o[k * n + i] = Float(p[i * c + k]) / 255 } }
            }
        }
        return XRImage(width: w, height: h, channels: c, bitDepth: Int(img.bit_depth), pixels: out)
    }

    /// Read and decode a PNG file (see `decode`).
    public static func read(_ url: URL, maxPixels: Int = PNGCodec.defaultMaxPixels) throws -> XRImage {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw XRError("cannot read file: \(error.localizedDescription)", file: url.path)
        }
        return try decode(data, source: url.path, maxPixels: maxPixels)
    }

    /// Gray, 8 bits; `pixels` (H, W) row-major.
    public static func encodeGray8(width: Int, height: Int, pixels: [UInt8]) throws -> Data {
        try encode(pixels, width: width, height: height, channels: 1, depth: 8)
    }
    /// Gray, 16 bits (written big-endian as PNG requires); `pixels` (H, W) row-major.
    public static func encodeGray16(width: Int, height: Int, pixels: [UInt16]) throws -> Data {
        try encode(pixels, width: width, height: height, channels: 1, depth: 16)
    }
    /// RGB, 8 bits per sample; `pixels` (H, W, 3) interleaved.
    public static func encodeRGB8(width: Int, height: Int, pixels: [UInt8]) throws -> Data {
        try encode(pixels, width: width, height: height, channels: 3, depth: 8)
    }
    /// RGBA, 8 bits per sample; `pixels` (H, W, 4) interleaved.
    public static func encodeRGBA8(width: Int, height: Int, pixels: [UInt8]) throws -> Data {
        try encode(pixels, width: width, height: height, channels: 4, depth: 8)
    }

    static func encode<T>(_ pixels: [T], width: Int, height: Int, channels: Int, depth: Int) throws -> Data {
        // PNG's limit is 2^31 - 1 per side; the product check keeps the count arithmetic exact.
        let (wh, o1) = width.multipliedReportingOverflow(by: height)
        let (count, o2) = wh.multipliedReportingOverflow(by: channels)
        guard width > 0, height > 0, width <= Int(Int32.max), height <= Int(Int32.max), !o1, !o2, pixels.count == count else {
            throw XRError("PNG encode: \(pixels.count) samples do not fill \(width)×\(height)×\(channels)", field: "pixels")
        }
        var buf: UnsafeMutablePointer<UInt8>? = nil
        var size = 0
        var err = [CChar](repeating: 0, count: 256)
        let rc = pixels.withUnsafeBytes { raw in
            xrpng_encode(raw.baseAddress, UInt32(width), UInt32(height), Int32(channels), Int32(depth), &buf, &size, &err, 256)
        }
        defer { free(buf) }
        guard rc == 0, let buf else {
            let msg = String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw XRError("PNG encode failed: \(msg)", field: "pixels")
        }
        return Data(bytes: buf, count: size)
    }

    /// Write encoded PNG bytes atomically (temporary file, then rename).
    public static func write(_ data: Data, to url: URL) throws {
        try AtomicFile.write(data, to: url)
    }
}
