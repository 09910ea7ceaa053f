import Foundation
import CZlib
import XRData

/// Raw DEFLATE of bytes (for writing deflated-syntax fixtures).
public func deflateRaw(_ input: [UInt8]) -> [UInt8] {
    var s = z_stream()
    _ = deflateInit2_(&s, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
    var inp = input
    var out = [UInt8](repeating: 0, count: input.count + 1024)
    inp.withUnsafeMutableBufferPointer { i in
        out.withUnsafeMutableBufferPointer { o in
            s.next_in = i.baseAddress; s.avail_in = UInt32(i.count)
            s.next_out = o.baseAddress; s.avail_out = UInt32(o.count)
            _ = deflate(&s, Z_FINISH)
        }
    }
    let n = out.count - Int(s.avail_out)
    deflateEnd(&s)
    return Array(out.prefix(n))
}

/// PackBits with literal runs only (valid RLE, not optimal).
public func packBits(_ b: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    var i = 0
    while i < b.count {
        let n = min(128, b.count - i)
        out.append(UInt8(n - 1))
        out += b[i..<(i + n)]
        i += n
    }
    if out.count % 2 == 1 { out.append(0x80) } // no-op byte pads to even length
    return out
}

/// Writes small DICOM Part-10 files for tests: every supported transfer syntax, planted identifiers.
public struct DICOMWriter {
    public init() {}
    public var syntax = TransferSyntax.explicitLittle
    public var rows = 3, columns = 4, bitsAllocated = 16, bitsStored = 12, signed = false
    public var photometric = "MONOCHROME2"
    public var pixels: [Int] = []
    public var extra: [(UInt16, UInt16, String, String)] = [] // group, element, VR, string value (groups < 0028)
    public var strings: [(UInt16, UInt16, String, String)] = [] // group 0028 string elements (window, rescale, …)
    public var padding: Int? = nil
    /// VOI LUT Sequence with one item: first mapped value, output bits, LUT entries.
    public var voiLUT: (first: Int, bits: Int, data: [Int])? = nil
    public var omitPixels = false
    /// Encapsulated pixel data written as given (compressed syntaxes other than RLE): fragments,
    /// and the Basic Offset Table entries (empty: an empty table).
    public var fragments: [[UInt8]]? = nil
    public var offsetTable: [Int] = []

    public func data() -> Data {
        var out = Data(count: 128)
        out.append(contentsOf: Array("DICM".utf8))
        // Meta group: explicit VR little endian.
        var meta = Data()
        func le16(_ v: Int) -> [UInt8] { [UInt8(v & 255), UInt8(v >> 8 & 255)] }
        func le32(_ v: Int) -> [UInt8] { [UInt8(v & 255), UInt8(v >> 8 & 255), UInt8(v >> 16 & 255), UInt8(v >> 24 & 255)] }
        var ts = Array(syntax.utf8); if ts.count % 2 == 1 { ts.append(0) }
        meta.append(contentsOf: le16(0x0002) + le16(0x0010) + Array("UI".utf8) + le16(ts.count) + ts)
        out.append(contentsOf: le16(0x0002) + le16(0x0000) + Array("UL".utf8) + le16(4) + le32(meta.count))
        out.append(meta)
        let big = syntax == TransferSyntax.explicitBig, explicit = syntax != TransferSyntax.implicitLittle
        // (RLE and deflated files use explicit little endian for their data elements.)
        func u16(_ v: Int) -> [UInt8] { big ? [UInt8(v >> 8 & 255), UInt8(v & 255)] : le16(v) }
        func u32(_ v: Int) -> [UInt8] { big ? [UInt8(v >> 24 & 255), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] : le32(v) }
        func element(_ g: Int, _ e: Int, _ vr: String, _ value: [UInt8]) {
            var v = value; if v.count % 2 == 1 { v.append(vr == "UI" ? 0 : 0x20) }
            out.append(contentsOf: u16(g) + u16(e))
            if explicit {
                out.append(contentsOf: Array(vr.utf8))
                if ["OB", "OW", "SQ", "UN", "UT"].contains(vr) { out.append(contentsOf: [0, 0] + u32(v.count)) } else { out.append(contentsOf: u16(v.count)) }
            } else {
                out.append(contentsOf: u32(v.count))
            }
            out.append(contentsOf: v)
        }
        for (g, e, vr, s) in extra.sorted(by: { ($0.0, $0.1) < ($1.0, $1.1) }) where g < 0x0028 { element(Int(g), Int(e), vr, Array(s.utf8)) }
        var group28: [(Int, String, [UInt8])] = [
            (0x0002, "US", u16(1)), (0x0004, "CS", Array(photometric.utf8)), (0x0010, "US", u16(rows)),
            (0x0011, "US", u16(columns)), (0x0100, "US", u16(bitsAllocated)), (0x0101, "US", u16(bitsStored)),
            (0x0102, "US", u16(bitsStored - 1)), (0x0103, "US", u16(signed ? 1 : 0))
        ]
        if let padding { group28.append((0x0120, "US", u16(padding))) }
        if let lut = voiLUT {
            func el(_ e: Int, _ vr: String, _ v: [UInt8]) -> [UInt8] {
                var out = u16(0x0028) + u16(e)
                if explicit { out += Array(vr.utf8) + (vr == "OW" ? [0, 0] + u32(v.count) : u16(v.count)) } else { out += u32(v.count) }
                return out + v
            }
            let item = el(0x3002, "US", u16(lut.data.count) + u16(lut.first) + u16(lut.bits)) + el(0x3006, "OW", lut.data.flatMap { u16($0) })
            group28.append((0x3010, "SQ", u16(0xFFFE) + u16(0xE000) + u32(item.count) + item))
        }
        for (_, e, vr, v) in strings { group28.append((Int(e), vr, Array(v.utf8))) }
        for (e, vr, v) in group28.sorted(by: { $0.0 < $1.0 }) { element(0x0028, e, vr, v) }
        if !omitPixels, let fragments {
            out.append(contentsOf: le16(0x7FE0) + le16(0x0010) + Array("OB".utf8) + [0, 0] + le32(0xFFFF_FFFF))
            out.append(contentsOf: le16(0xFFFE) + le16(0xE000) + le32(4 * offsetTable.count) + offsetTable.flatMap { le32($0) })
            for f in fragments {
                let even = f.count % 2 == 1 ? f + [0] : f
                out.append(contentsOf: le16(0xFFFE) + le16(0xE000) + le32(even.count) + even)
            }
            out.append(contentsOf: le16(0xFFFE) + le16(0xE0DD) + le32(0))
        } else if !omitPixels && syntax == TransferSyntax.rle {
            // Encapsulated: empty offset table item, one fragment (64-byte header + segments), delimiter.
            let bps = bitsAllocated / 8
            var segments: [[UInt8]] = []
            for s in 0..<bps {
                let shift = 8 * (bps - 1 - s)
                segments.append(packBits(pixels.map { UInt8(truncatingIfNeeded: ($0 & ((1 << bitsAllocated) - 1)) >> shift) }))
            }
            var frag = le32(bps)
            var off = 64
            for s in 0..<15 { frag += le32(s < bps ? off : 0); if s < bps { off += segments[s].count } }
            for seg in segments { frag += seg }
            out.append(contentsOf: le16(0x7FE0) + le16(0x0010) + Array("OB".utf8) + [0, 0] + le32(0xFFFF_FFFF))
            out.append(contentsOf: le16(0xFFFE) + le16(0xE000) + le32(0))
            out.append(contentsOf: le16(0xFFFE) + le16(0xE000) + le32(frag.count) + frag)
            out.append(contentsOf: le16(0xFFFE) + le16(0xE0DD) + le32(0))
        } else if !omitPixels {
            var px: [UInt8] = []
            for v in pixels {
                let u = v & ((1 << bitsAllocated) - 1)
                px += bitsAllocated == 16 ? u16(u) : [UInt8(u)]
            }
            element(0x7FE0, 0x0010, bitsAllocated == 16 ? "OW" : "OB", px)
        }
        if syntax == TransferSyntax.deflatedExplicitLittle {
            let metaEnd = 132 + 12 + meta.count
            return out.prefix(metaEnd) + Data(deflateRaw(Array(out.dropFirst(metaEnd))))
        }
        return out
    }
}
