// DICOM RLE Lossless (PS3.5 Annex G).
import Foundation
import XRTensor

enum RLE {
    /// Decode the first frame: a 64-byte header (segment count, up to 15 segment offsets, little
    /// endian), then one PackBits segment per byte plane — most significant byte first — each
    /// giving rows × columns bytes. Returns native little-endian samples.
    static func decodeFrame(
        data: Data, fragments: [Range<Int>], rows: Int, columns: Int, bytesPerSample: Int,
        source: String
    ) throws -> [UInt8] {
        let field = "(7FE0,0010) Pixel Data (RLE)"
        guard let frag = fragments.first else { throw XRError("no RLE fragment", file: source, field: field) }
        let b = [UInt8](data[data.startIndex + frag.lowerBound..<data.startIndex + frag.upperBound])
        guard b.count >= 64 else { throw XRError("RLE header is truncated", file: source, field: field) }
        func u32(_ i: Int) -> Int { Int(b[i]) | Int(b[i + 1]) << 8 | Int(b[i + 2]) << 16 | Int(b[i + 3]) << 24 }
        let segments = u32(0)
        guard segments == bytesPerSample else {
            throw XRError("RLE frame has \(segments) segments, expected \(bytesPerSample) for grayscale", file: source, field: field)
        }
        let n = rows * columns
        var out = [UInt8](repeating: 0, count: n * bytesPerSample)
        for s in 0..<segments {
            let start = u32(4 + 4 * s)
            let end = s + 1 < segments ? u32(8 + 4 * s) : b.count
            guard start >= 64, start <= end, end <= b.count else {
                throw XRError("RLE segment \(s) offsets out of range", file: source, field: field)
            }
            // Segment 0 holds the most significant bytes; output is little endian.
            let lane = bytesPerSample - 1 - s
            var i = start, o = 0
            while i < end && o < n {
                let c = Int(Int8(bitPattern: b[i])); i += 1
                if c >= 0 {
                    let count = c + 1
                    guard i + count <= end else { throw XRError("RLE literal run past the segment end", file: source, field: field) }
                    for k in 0..<min(count, n - o) { out[(o + k) * bytesPerSample + lane] = b[i + k] }
                    i += count; o += count
                } else if c != -128 {
                    let count = 1 - c
                    guard i < end else { throw XRError("RLE replicate run past the segment end", file: source, field: field) }
                    for k in 0..<min(count, n - o) { out[(o + k) * bytesPerSample + lane] = b[i] }
                    i += 1; o += count
                }
            }
            guard o >= n else {
                throw XRError("RLE segment \(s) decodes to \(o) bytes; \(rows) × \(columns) needs \(n)", file: source, field: field)
            }
        }
        return out
    }
}
