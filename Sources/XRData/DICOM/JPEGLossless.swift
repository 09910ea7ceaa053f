// JPEG Lossless, Huffman coded (ITU-T T.81 Process 14, Annex H): the codec of the DICOM
// transfer syntaxes 1.2.840.10008.1.2.4.57 (any predictor) and .70 (predictor 1, "SV1").
//
// A sample x at row y, column i is predicted from its decoded neighbours
//     Rc Rb
//     Ra  x          (Ra = left, Rb = above, Rc = above-left)
// by the scan's selection value (1 Ra, 2 Rb, 3 Rc, 4 Ra+Rb−Rc, 5 Ra+((Rb−Rc)>>1),
// 6 Rb+((Ra−Rc)>>1), 7 (Ra+Rb)>>1); the first sample of the image (and of every restart
// interval) is predicted by 2^(P−Pt−1), the rest of the first row by Ra, the first column by Rb
// (T.81 H.1.2.1). The Huffman-coded difference is added modulo 2^16, then shifted left by the
// point transform Pt.
import Foundation
import XRTensor

enum JPEGLossless {
    /// A decoded single-component frame: P-bit samples (0 ..< 2^P), row-major (rows, columns).
    struct Frame {
        var precision: Int
        var rows: Int
        var columns: Int
        var samples: [UInt16] // (rows * columns)
    }

    /// Canonical Huffman table (T.81 Annex C / F.2.2.3): per code length l in 1...16 the largest
    /// code, and where its values start in `values`.
    struct Huffman {
        var maxCode = [Int](repeating: -1, count: 18)
        var valPtr = [Int](repeating: 0, count: 17)
        var minCode = [Int](repeating: 0, count: 17)
        var values: [UInt8] = []

        init(counts: [Int], values: [UInt8]) {
            self.values = values
            var code = 0, k = 0
            for l in 1...16 {
                valPtr[l] = k
                minCode[l] = code
                code += counts[l - 1]
                k += counts[l - 1]
                maxCode[l] = counts[l - 1] > 0 ? code - 1 : -1
                code <<= 1
            }
            maxCode[17] = Int.max // sentinel
        }
    }

    /// MSB-first bit reader over entropy-coded bytes: removes stuffed zero bytes after 0xFF and
    /// stops at a marker, feeding zero bits past it (counted, so running past the data is caught).
    struct Bits {
        let bytes: [UInt8]
        var pos: Int
        var acc: UInt64 = 0
        var count = 0 // valid bits in acc (left-aligned)
        var fakeBits = 0 // zero bits fed past a marker / the end
        var marker = false

        mutating func fill() {
            while count <= 56 {
                var byte: UInt8 = 0
                if !marker && pos < bytes.count {
                    byte = bytes[pos]
                    if byte == 0xFF {
                        let next = pos + 1 < bytes.count ? bytes[pos + 1] : 0xD9
                        if next == 0 { pos += 2 } else { marker = true; byte = 0; fakeBits += 8 }
                    } else {
                        pos += 1
                    }
                } else {
                    fakeBits += 8
                }
                acc |= UInt64(byte) << UInt64(56 - count)
                count += 8
            }
        }

        @inline(__always) mutating func peek16() -> Int {
            if count < 16 { fill() }
            return Int(acc >> 48)
        }

        @inline(__always) mutating func skip(_ n: Int) { acc <<= UInt64(n); count -= n }

        @inline(__always) mutating func read(_ n: Int) -> Int {
            if n == 0 { return 0 }
            if count < n { fill() }
            let v = Int(acc >> UInt64(64 - n))
            skip(n)
            return v
        }

        /// True when more bits were used than the entropy-coded segment holds.
        var overrun: Bool { count < fakeBits }

        /// At the end of a restart interval: drop the padding bits of the last byte and step over
        /// the restart marker RSTm. False when the marker is not next.
        mutating func restart(expect m: Int) -> Bool {
            if !marker { fill() }
            guard marker, count - fakeBits < 8 else { return false }
            acc = 0; count = 0; fakeBits = 0; marker = false
            guard pos + 1 < bytes.count, bytes[pos] == 0xFF, Int(bytes[pos + 1]) == 0xD0 + m else { return false }
            pos += 2
            return true
        }
    }

    /// Decode a JPEG Lossless codestream (SOI … EOI) with one component. `size` (rows, columns),
    /// when given, must match the frame header — checked before any sample memory is allocated.
    static func decode(_ b: [UInt8], source: String, size: (rows: Int, columns: Int)? = nil) throws -> Frame {
        let field = "(7FE0,0010) Pixel Data (JPEG Lossless)"
        func fail(_ m: String) -> XRError { XRError(m, file: source, field: field) }
        guard b.count >= 4, b[0] == 0xFF, b[1] == 0xD8 else { throw fail("JPEG data does not start with an SOI marker") }
        var pos = 2
        var tables: [Int: Huffman] = [:]
        var precision = 0, rows = 0, columns = 0, componentID = -1
        var restartInterval = 0
        func u16(_ i: Int) -> Int { Int(b[i]) << 8 | Int(b[i + 1]) }
        while true {
            // Markers may be preceded by any number of 0xFF fill bytes.
            guard pos + 1 < b.count, b[pos] == 0xFF else { throw fail("JPEG marker expected at byte \(pos)") }
            while pos + 1 < b.count && b[pos + 1] == 0xFF { pos += 1 }
            guard pos + 3 < b.count else { throw fail("JPEG data is truncated") }
            let marker = Int(b[pos + 1])
            let len = u16(pos + 2)
            let seg = pos + 4
            guard len >= 2, pos + 2 + len <= b.count else { throw fail(String(format: "JPEG segment FF%02X is truncated", marker)) }
            switch marker {
            case 0xC3:
                guard len >= 8 else { throw fail("SOF3 segment is too short") }
                precision = Int(b[seg]); rows = u16(seg + 1); columns = u16(seg + 3)
                let nf = Int(b[seg + 5])
                guard nf == 1, len >= 8 + 3 else { throw fail("JPEG Lossless frame has \(nf) components: only grayscale is read") }
                componentID = Int(b[seg + 6])
                guard (2...16).contains(precision), rows > 0, columns > 0 else {
                    throw fail("JPEG Lossless frame header is invalid (precision \(precision), \(columns)x\(rows))")
                }
                if let size, size != (rows, columns) {
                    throw fail("compressed frame is \(columns)x\(rows), Rows / Columns say \(size.columns)x\(size.rows)")
                }
            case 0xC0...0xCF where marker != 0xC4 && marker != 0xC8 && marker != 0xCC:
                throw fail(String(format: "JPEG frame type SOF%d is not lossless Huffman (SOF3)", marker - 0xC0))
            case 0xC4:
                var p = seg
                while p < pos + 2 + len {
                    guard p + 17 <= pos + 2 + len else { throw fail("DHT segment is truncated") }
                    let id = Int(b[p] & 0x0F) | Int(b[p] >> 4) << 4
                    let counts = (0..<16).map { Int(b[p + 1 + $0]) }
                    let total = counts.reduce(0, +)
                    guard total <= 256, p + 17 + total <= pos + 2 + len else { throw fail("DHT segment is truncated") }
                    tables[id] = Huffman(counts: counts, values: Array(b[(p + 17)..<(p + 17 + total)]))
                    p += 17 + total
                }
            case 0xDD:
                restartInterval = u16(seg)
            case 0xDA:
                guard precision > 0 else { throw fail("JPEG scan before the SOF3 frame header") }
                let ns = Int(b[seg])
                guard ns == 1, len >= 6 + 2 * ns else { throw fail("JPEG scan has \(ns) components: only grayscale is read") }
                guard Int(b[seg + 1]) == componentID else { throw fail("JPEG scan names component \(b[seg + 1]), the frame has \(componentID)") }
                let tableID = Int(b[seg + 2] >> 4) // DC table class 0
                let predictor = Int(b[seg + 3])
                let pt = Int(b[seg + 5] & 0x0F)
                guard let table = tables[tableID] else { throw fail("JPEG scan uses Huffman table \(tableID), which is not defined") }
                guard (1...7).contains(predictor) else { throw fail("JPEG Lossless predictor \(predictor) is not 1–7") }
                guard pt < precision else { throw fail("JPEG point transform \(pt) ≥ precision \(precision)") }
                let samples = try scan(
                    b, start: pos + 2 + len, rows: rows, columns: columns, precision: precision,
                    predictor: predictor, pointTransform: pt, restartInterval: restartInterval,
                    table: table, fail: fail)
                return Frame(precision: precision, rows: rows, columns: columns, samples: samples)
            case 0xD9:
                throw fail("JPEG data ends (EOI) before any scan")
            default:
                break // APPn, COM, DQT, DNL …: not needed
            }
            pos += 2 + len
        }
    }

    /// Decode one non-interleaved scan: rows × columns differences, undone by the predictor.
    static func scan(
        _ b: [UInt8], start: Int, rows: Int, columns: Int, precision: Int, predictor: Int, pointTransform pt: Int,
        restartInterval: Int, table: Huffman, fail: (String) -> XRError
    ) throws -> [UInt16] {
        guard restartInterval == 0 || restartInterval % columns == 0 else {
            throw fail("JPEG restart interval \(restartInterval) is not a whole number of rows (\(columns) samples)")
        }
        let rowsPerInterval = restartInterval == 0 ? Int.max : restartInterval / columns
        var out = [UInt16](repeating: 0, count: rows * columns)
        var bits = Bits(bytes: b, pos: start)
        let initial = 1 << (precision - pt - 1)
        var nextRST = 0
        try out.withUnsafeMutableBufferPointer { o in
            for y in 0..<rows {
                let firstRow = y % rowsPerInterval == 0
                if firstRow && y > 0 {
                    guard bits.restart(expect: nextRST) else { throw fail("JPEG restart marker RST\(nextRST) missing before row \(y)") }
                    nextRST = (nextRST + 1) & 7
                }
                let row = y * columns
                for x in 0..<columns {
                    // Huffman-decode the difference category, then its extra bits.
                    let code16 = bits.peek16()
                    var l = 1
                    while l <= 16 && (code16 >> (16 - l)) > table.maxCode[l] { l += 1 }
                    guard l <= 16 else { throw fail("corrupt JPEG data: invalid Huffman code at row \(y), column \(x)") }
                    let s = Int(table.values[table.valPtr[l] + (code16 >> (16 - l)) - table.minCode[l]])
                    bits.skip(l)
                    var diff: Int
                    if s == 0 {
                        diff = 0
                    } else if s == 16 {
                        diff = 32768
                    } else if s < 16 {
                        diff = bits.read(s)
                        if diff < 1 << (s - 1) { diff -= (1 << s) - 1 }
                    } else {
                        throw fail("corrupt JPEG data: difference category \(s) at row \(y)")
                    }
                    // Prediction (values are stored shifted right by Pt, as in the encoder).
                    let p: Int
                    if firstRow {
                        p = x == 0 ? initial : Int(o[row + x - 1]) >> pt
                    } else if x == 0 {
                        p = Int(o[row - columns]) >> pt
                    } else {
                        let ra = Int(o[row + x - 1]) >> pt, rb = Int(o[row - columns + x]) >> pt, rc = Int(o[row - columns + x - 1]) >> pt
                        switch predictor {
                        case 1: p = ra
                        case 2: p = rb
                        case 3: p = rc
                        case 4: p = ra + rb - rc
                        case 5: p = ra + ((rb - rc) >> 1)
                        case 6: p = rb + ((ra - rc) >> 1)
                        default: p = (ra + rb) >> 1
                        }
                    }
                    o[row + x] = UInt16(truncatingIfNeeded: ((p + diff) & 0xFFFF) << pt)
                }
                if bits.overrun { throw fail("JPEG data ends at row \(y) of \(rows): the pixel data is truncated") }
            }
        }
        return out
    }
}
