// The data-element cursor of the DICOM parser (PS3.5 section 7: explicit / implicit VR, both byte
// orders, undefined lengths, encapsulated pixel data fragments).
import Foundation
import XRTensor

/// A cursor over data elements.
struct Reader {
    let bytes: [UInt8]
    var pos: Int
    var bigEndian: Bool
    var explicit: Bool
    let source: String
    var encapsulated = false
    var fragments: [Range<Int>] = []
    var frameOffsets: [Int] = []
    var fragmentOffsets: [Int] = []
    /// Elements of the first item of the VOI LUT Sequence (0028,3010), when present.
    var voiLUTItem: [UInt32: [UInt8]]? = nil

    struct Element { var tag: UInt32; var value: [UInt8]; var range: Range<Int> }

    func u16(_ at: Int, big: Bool) -> Int { big ? Int(bytes[at]) << 8 | Int(bytes[at + 1]) : Int(bytes[at + 1]) << 8 | Int(bytes[at]) }
    func u32(_ at: Int, big: Bool) -> Int {
        big
            ? Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
            : Int(bytes[at + 3]) << 24 | Int(bytes[at + 2]) << 16 | Int(bytes[at + 1]) << 8 | Int(bytes[at])
    }

    func peekGroup() -> Int { u16(pos, big: false) }

    func tagName(_ t: UInt32) -> String { String(format: "(%04X,%04X)", t >> 16, t & 0xFFFF) }

    /// Read one element; sequences and undefined-length items are skipped (value empty).
    mutating func element(keepPixelRange: Bool = false) throws -> Element {
        let start = pos
        guard pos + 8 <= bytes.count else {
            throw XRError("truncated data element at byte \(pos)", file: source, field: "byte \(pos)")
        }
        // Meta group is always little endian even in big-endian files.
        let big = bigEndian && u16(pos, big: false) != 0x0002
        let group = u16(pos, big: big), elem = u16(pos + 2, big: big)
        let tag = UInt32(group) << 16 | UInt32(elem)
        var length: Int
        var vr = ""
        if explicit || group == 0x0002 {
            vr = String(decoding: bytes[(pos + 4)..<(pos + 6)], as: UTF8.self)
            if ["OB", "OD", "OF", "OL", "OW", "SQ", "UC", "UR", "UT", "UN", "OV"].contains(vr) {
                guard pos + 12 <= bytes.count else { throw XRError("truncated header of element \(tagName(tag))", file: source, field: tagName(tag)) }
                length = u32(pos + 8, big: big)
                pos += 12
            } else {
                length = u16(pos + 6, big: big)
                pos += 8
            }
        } else {
            length = u32(pos + 4, big: big)
            pos += 8
        }
        if length == 0xFFFF_FFFF {
            if tag == DICOMFile.pixelData {
                guard encapsulated else {
                    throw XRError(
                        "pixel data is encapsulated (compressed) but the transfer syntax says uncompressed",
                        file: source, field: tagName(tag))
                }
                try readFragments()
                return Element(tag: tag, value: [], range: start..<pos)
            }
            let seqStart = pos
            try skipUndefined(tag: tag)
            if tag == 0x0028_3010 { voiLUTItem = try firstItem(seqStart..<pos) }
            return Element(tag: tag, value: [], range: start..<pos)
        }
        guard pos + length <= bytes.count else {
            throw XRError(
                "element \(tagName(tag)) declares \(length) bytes but only \(bytes.count - pos) remain",
                file: source, field: tag == DICOMFile.pixelData ? "(7FE0,0010) Pixel Data" : tagName(tag),
                hint: "the file is truncated")
        }
        let range = pos..<(pos + length)
        if tag == 0x0028_3010 { voiLUTItem = try firstItem(range) }
        let keep = tag == DICOMFile.pixelData || vr == "SQ" ? [] : Array(bytes[range])
        pos += length
        return Element(tag: tag, value: keep, range: range)
    }

    /// Encapsulated pixel data: a basic offset table item, then one item per fragment, then the
    /// sequence delimitation item (PS3.5 A.4).
    mutating func readFragments() throws {
        var first = true
        var firstFragmentItem = -1
        while pos + 8 <= bytes.count {
            let item = pos
            let g = u16(pos, big: false), e = u16(pos + 2, big: false), len = u32(pos + 4, big: false)
            pos += 8
            if g == 0xFFFE && e == 0xE0DD { return }
            guard g == 0xFFFE && e == 0xE000, len != 0xFFFF_FFFF, pos + len <= bytes.count else {
                throw XRError(
                    "malformed or truncated encapsulated pixel data", file: source, field: "(7FE0,0010) Pixel Data",
                    hint: "the file is truncated or the fragment items are damaged")
            }
            if first {
                // Basic Offset Table: one 32-bit offset per frame (or empty).
                frameOffsets = stride(from: pos, to: pos + len - 3, by: 4).map { u32($0, big: false) }
            } else {
                if firstFragmentItem < 0 { firstFragmentItem = item }
                fragments.append(pos..<(pos + len))
                fragmentOffsets.append(item - firstFragmentItem)
            }
            first = false
            pos += len
        }
        throw XRError(
            "encapsulated pixel data runs past the end of the file", file: source, field: "(7FE0,0010) Pixel Data",
            hint: "the file is truncated")
    }

    /// The elements of the first item in a sequence's value bytes.
    func firstItem(_ range: Range<Int>) throws -> [UInt32: [UInt8]] {
        var r = self
        r.pos = range.lowerBound
        guard r.pos + 8 <= range.upperBound, u16(r.pos, big: bigEndian) == 0xFFFE, u16(r.pos + 2, big: bigEndian) == 0xE000 else { return [:] }
        let len = u32(r.pos + 4, big: bigEndian)
        r.pos += 8
        let end = len == 0xFFFF_FFFF ? range.upperBound : min(range.upperBound, r.pos + len)
        var out: [UInt32: [UInt8]] = [:]
        while r.pos + 8 <= end {
            if u16(r.pos, big: bigEndian) == 0xFFFE { break } // item / sequence delimiter
            let e = try r.element()
            out[e.tag] = e.value
        }
        return out
    }

    /// Skip an undefined-length sequence: items until the Sequence Delimitation Item.
    mutating func skipUndefined(tag: UInt32) throws {
        while pos + 8 <= bytes.count {
            let g = u16(pos, big: bigEndian), e = u16(pos + 2, big: bigEndian)
            let len = u32(pos + 4, big: bigEndian)
            pos += 8
            if g == 0xFFFE && e == 0xE0DD { return } // sequence delimitation
            if g == 0xFFFE && e == 0xE000 { // item
                if len == 0xFFFF_FFFF {
                    // Elements until the Item Delimitation Item.
                    while pos + 8 <= bytes.count {
                        if u16(pos, big: bigEndian) == 0xFFFE && u16(pos + 2, big: bigEndian) == 0xE00D { pos += 8; break }
                        _ = try element()
                    }
                } else {
                    pos += len
                }
                continue
            }
            throw XRError("malformed sequence", file: source, field: tagName(tag))
        }
        throw XRError("sequence \(tagName(tag)) runs past the end of the file", file: source, field: tagName(tag))
    }
}
