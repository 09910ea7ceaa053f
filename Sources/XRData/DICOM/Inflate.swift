import Foundation
import CZlib
import XRTensor

/// Raw DEFLATE (RFC 1951) through zlib, for the Deflated Explicit VR Little Endian syntax.
enum Inflate {
    static func raw(_ input: [UInt8], source: String, limit: Int = 2_000_000_000) throws -> [UInt8] {
        var stream = z_stream()
        guard inflateInit2_(&stream, -15, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw XRError("cannot initialise zlib", file: source, field: "deflated data set")
        }
        defer { inflateEnd(&stream) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var status: Int32 = Z_OK
        var input = input
        try input.withUnsafeMutableBufferPointer { inp in
            stream.next_in = inp.baseAddress
            stream.avail_in = UInt32(inp.count)
            repeat {
                try chunk.withUnsafeMutableBufferPointer { c in
                    stream.next_out = c.baseAddress
                    stream.avail_out = UInt32(c.count)
                    status = inflate(&stream, Z_NO_FLUSH)
                    guard status == Z_OK || status == Z_STREAM_END else {
                        throw XRError("deflated data set is corrupt (zlib status \(status))", file: source, field: "deflated data set")
                    }
                    out.append(contentsOf: c.prefix(c.count - Int(stream.avail_out)))
                }
                if out.count > limit { throw XRError("inflated data set exceeds \(limit) bytes", file: source, field: "deflated data set") }
            } while status != Z_STREAM_END && (stream.avail_in > 0 || stream.avail_out == 0)
        }
        guard status == Z_STREAM_END else {
            throw XRError("deflated data set is truncated", file: source, field: "deflated data set")
        }
        return out
    }
}
