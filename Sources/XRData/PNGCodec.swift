import Foundation
import CXRPNG
import XRTensor

/// A decoded image: channel-planar (C, H, W) floats in [0, 1], mapped by the full range of
/// the source bit depth (v / 255 for 8-bit, v / 65535 for 16-bit), so 16-bit X-rays keep
/// their full precision.
public struct XRImage: Sendable, Equatable {
    public var width: Int
    public var height: Int
    /// 1 (gray) or 3 (RGB).
    public var channels: Int
    /// 8 or 16 (bit depths below 8 are widened to 8).
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
}

/// PNG reading and writing through libpng.
public enum PNGCodec {
    /// Decode PNG bytes. Gray, gray+alpha, RGB, RGBA and palette images of any bit depth;
    /// alpha is dropped, palettes expanded. `maxPixels` is checked against the declared size
    /// before any pixel memory is allocated.
    public static func decode(_ data: Data, source: String, maxPixels: Int = 100_000_000) throws -> XRImage {
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
        var out = [Float](repeating: 0, count: n * c)
        guard let px = img.pixels else { throw XRError("cannot decode PNG: no pixel data", file: source, field: "IDAT") }
        // 1/2/4-bit gray is widened and scaled to 0...255 by libpng, so 8-bit mapping applies.
        if img.bit_depth == 16 {
            let p = px.bindMemory(to: UInt16.self, capacity: n * c)
            for i in 0..<n { for k in 0..<c { out[k * n + i] = Float(p[i * c + k]) / 65535 } }
        } else {
            let p = px.bindMemory(to: UInt8.self, capacity: n * c)
            for i in 0..<n { for k in 0..<c { out[k * n + i] = Float(p[i * c + k]) / 255 } }
        }
        return XRImage(width: w, height: h, channels: c, bitDepth: Int(img.bit_depth), pixels: out)
    }

    /// Read and decode a PNG file.
    public static func read(_ url: URL, maxPixels: Int = 100_000_000) throws -> XRImage {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw XRError("cannot read file: \(error.localizedDescription)", file: url.path)
        }
        return try decode(data, source: url.path, maxPixels: maxPixels)
    }

    public static func encodeGray8(width: Int, height: Int, pixels: [UInt8]) throws -> Data {
        try encode(pixels, width: width, height: height, channels: 1, depth: 8)
    }
    public static func encodeGray16(width: Int, height: Int, pixels: [UInt16]) throws -> Data {
        try encode(pixels, width: width, height: height, channels: 1, depth: 16)
    }
    /// Interleaved RGB, 8 bits per sample.
    public static func encodeRGB8(width: Int, height: Int, pixels: [UInt8]) throws -> Data {
        try encode(pixels, width: width, height: height, channels: 3, depth: 8)
    }
    /// Interleaved RGBA, 8 bits per sample.
    public static func encodeRGBA8(width: Int, height: Int, pixels: [UInt8]) throws -> Data {
        try encode(pixels, width: width, height: height, channels: 4, depth: 8)
    }

    static func encode<T>(_ pixels: [T], width: Int, height: Int, channels: Int, depth: Int) throws -> Data {
        guard width > 0, height > 0, pixels.count == width * height * channels else {
            throw XRError("PNG encode: \(pixels.count) samples for \(width)×\(height)×\(channels)", field: "pixels")
        }
        var buf: UnsafeMutablePointer<UInt8>? = nil
        var size = 0
        var err = [CChar](repeating: 0, count: 256)
        let rc = pixels.withUnsafeBytes { raw in
            xrpng_encode(raw.baseAddress, UInt32(width), UInt32(height), Int32(channels), Int32(depth), &buf, &size, &err, 256)
        }
        defer { free(buf) }
        guard rc == 0, let buf else {
            throw XRError("PNG encode failed: \(String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))")
        }
        return Data(bytes: buf, count: size)
    }

    /// Write encoded PNG bytes atomically.
    public static func write(_ data: Data, to url: URL) throws {
        try AtomicFile.write(data, to: url)
    }
}
