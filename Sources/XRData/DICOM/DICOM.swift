// DICOM Part-10 radiographs (PS3.5 data encoding, PS3.10 file format).
import Foundation
import XRTensor

/// Transfer syntaxes by UID, with names for messages.
public enum TransferSyntax {
    public static let implicitLittle = "1.2.840.10008.1.2"
    public static let explicitLittle = "1.2.840.10008.1.2.1"
    public static let deflatedExplicitLittle = "1.2.840.10008.1.2.1.99"
    public static let explicitBig = "1.2.840.10008.1.2.2"
    public static let rle = "1.2.840.10008.1.2.5"
    public static let jpegLossless = "1.2.840.10008.1.2.4.57"
    public static let jpegLosslessSV1 = "1.2.840.10008.1.2.4.70"
    public static let jpeg2000Lossless = "1.2.840.10008.1.2.4.90"
    public static let jpeg2000 = "1.2.840.10008.1.2.4.91"
    public static let jpegBaseline = "1.2.840.10008.1.2.4.50"
    public static let jpegExtended = "1.2.840.10008.1.2.4.51"

    /// Encapsulated (compressed) syntaxes whose pixel data xrlab decodes.
    public static let decodedEncapsulated: Set<String> = [
        rle, jpegLossless, jpegLosslessSV1, jpeg2000Lossless, jpeg2000,
        jpegBaseline, jpegExtended
    ]

    public static let names: [String: String] = [
        implicitLittle: "Implicit VR Little Endian", explicitLittle: "Explicit VR Little Endian",
        deflatedExplicitLittle: "Deflated Explicit VR Little Endian", explicitBig: "Explicit VR Big Endian",
        rle: "RLE Lossless", "1.2.840.10008.1.2.4.50": "JPEG Baseline (Process 1)",
        "1.2.840.10008.1.2.4.51": "JPEG Extended (Process 2 & 4)", "1.2.840.10008.1.2.4.57": "JPEG Lossless (Process 14)",
        "1.2.840.10008.1.2.4.70": "JPEG Lossless (Process 14, SV1)", "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
        "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless", "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
        "1.2.840.10008.1.2.4.91": "JPEG 2000"
    ]

    public static func describe(_ uid: String) -> String { names[uid].map { "\($0) (\(uid))" } ?? uid }
}

/// A parsed DICOM file: the top-level data elements xrlab reads, and the pixel data.
///
/// Transfer syntaxes read: Implicit VR Little Endian, Explicit VR Little Endian, Explicit VR Big
/// Endian, Deflated Explicit VR Little Endian (zlib), and encapsulated pixel data in RLE Lossless
/// (native), JPEG Lossless Process 14 with any predictor incl. SV1 (native), JPEG 2000
/// (OpenJPEG) and 8-bit JPEG Baseline / Extended (libjpeg, lossy). 8–16 bits allocated/stored, signed or unsigned, one sample per pixel, MONOCHROME1
/// and MONOCHROME2; multi-frame files give their first frame (with a warning). Other transfer
/// syntaxes are refused with their name and UID — never decoded wrongly.
public struct DICOMFile: Sendable {
    public var source: String
    public var transferSyntax: String
    /// Top-level elements: tag (group << 16 | element) → raw value bytes (in file byte order).
    var values: [UInt32: [UInt8]]
    var bigEndian: Bool
    /// Byte range of native pixel data in the file, when present.
    var pixelRange: Range<Int>?
    var data: Data
    /// Encapsulated pixel data fragments (byte ranges), for compressed transfer syntaxes.
    var fragments: [Range<Int>] = []
    /// Basic Offset Table: where each frame's first fragment item starts, relative to the first
    /// fragment item (empty when the table is empty).
    var frameOffsets: [Int] = []
    /// Offset of each fragment's item tag relative to the first fragment item.
    var fragmentOffsets: [Int] = []
    public var warnings: [String] = []

    // Tags.
    static let rows: UInt32 = 0x0028_0010, columns: UInt32 = 0x0028_0011, bitsAllocated: UInt32 = 0x0028_0100
    static let bitsStored: UInt32 = 0x0028_0101, highBit: UInt32 = 0x0028_0102, pixelRepresentation: UInt32 = 0x0028_0103
    static let samplesPerPixel: UInt32 = 0x0028_0002, photometric: UInt32 = 0x0028_0004, frames: UInt32 = 0x0028_0008
    static let pixelData: UInt32 = 0x7FE0_0010

    /// Read and parse a file. Errors name the file and the element at fault.
    public static func read(_ url: URL) throws -> DICOMFile {
        let d: Data
        do { d = try Data(contentsOf: url) } catch {
            throw XRError("cannot read file: \(error.localizedDescription)", file: url.path)
        }
        return try parse(d, source: url.path)
    }

    /// True when the bytes look like a DICOM Part-10 file ("DICM" after the 128-byte preamble).
    public static func isDICOM(_ d: Data) -> Bool {
        d.count >= 132 && d[d.startIndex + 128] == 0x44 && d[d.startIndex + 129] == 0x49 && d[d.startIndex + 130] == 0x43 && d[d.startIndex + 131] == 0x4D
    }

    public static func parse(_ data: Data, source: String) throws -> DICOMFile {
        let d = Data(data) // zero-based indices
        guard isDICOM(d) else {
            throw XRError("not a DICOM Part-10 file (no 'DICM' after the 128-byte preamble)", file: source, field: "preamble")
        }
        let bytes = [UInt8](d)
        var r = Reader(bytes: bytes, pos: 132, bigEndian: false, explicit: true, source: source)
        // File meta information: group 0002, always explicit VR little endian.
        var meta: [UInt32: [UInt8]] = [:]
        while r.pos + 4 <= bytes.count, r.peekGroup() == 0x0002 {
            let e = try r.element()
            meta[e.tag] = e.value
        }
        guard let tsBytes = meta[0x0002_0010] else {
            throw XRError("file meta information has no Transfer Syntax UID", file: source, field: "(0002,0010)")
        }
        let ts = string(tsBytes)
        switch ts {
        case TransferSyntax.explicitLittle: break
        case TransferSyntax.implicitLittle: r.explicit = false
        case TransferSyntax.explicitBig: r.bigEndian = true
        case _ where TransferSyntax.decodedEncapsulated.contains(ts): r.encapsulated = true
        case TransferSyntax.deflatedExplicitLittle:
            // Everything after the meta group is raw deflate (RFC 1951).
            let inflated = try Inflate.raw(Array(bytes[r.pos...]), source: source)
            r = Reader(bytes: Array(bytes[..<r.pos]) + inflated, pos: r.pos, bigEndian: false, explicit: true, source: source)
        default:
            // Compressed data this version cannot decode: refuse rather than guess.
            throw XRError(
                "transfer syntax \(TransferSyntax.describe(ts)) is not supported by this xrlab version",
                file: source, field: "(0002,0010) Transfer Syntax UID",
                hint: "convert to an uncompressed transfer syntax (e.g. `gdcmconv --raw in.dcm out.dcm` or `dcmdjpeg`)")
        }
        var values: [UInt32: [UInt8]] = [:]
        var pixelRange: Range<Int>? = nil
        while r.pos < r.bytes.count {
            let e = try r.element(keepPixelRange: true)
            if e.tag == pixelData {
                pixelRange = e.range
            } else {
                values[e.tag] = e.value
            }
        }
        if let item = r.voiLUTItem, !item.isEmpty { for (k, v) in item { values[k | 0x8000_0000] = v } }
        var file = DICOMFile(
            source: source, transferSyntax: ts, values: values, bigEndian: r.bigEndian,
            pixelRange: pixelRange, data: ts == TransferSyntax.deflatedExplicitLittle ? Data(r.bytes) : d)
        file.fragments = r.fragments
        file.frameOffsets = r.frameOffsets
        file.fragmentOffsets = r.fragmentOffsets
        if file.frameCount > 1 {
            file.warnings.append("\(file.frameCount) frames: only the first frame is read")
        }
        return file
    }

    // MARK: element values

    static func string(_ b: [UInt8]) -> String {
        String(decoding: b, as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: " \0"))
    }

    /// A string attribute (trimmed), nil when absent.
    public func string(_ tag: UInt32) -> String? { values[tag].map(Self.string) }

    /// An unsigned short (US) attribute.
    public func us(_ tag: UInt32) -> Int? {
        guard let b = values[tag], b.count >= 2 else { return nil }
        return bigEndian ? Int(b[0]) << 8 | Int(b[1]) : Int(b[1]) << 8 | Int(b[0])
    }

    /// A numeric string (IS / DS); the first of several values.
    public func number(_ tag: UInt32) -> Double? {
        string(tag).flatMap { Double($0.split(separator: "\\").first.map(String.init)?.trimmingCharacters(in: .whitespaces) ?? "") }
    }

    public var modality: String? { string(0x0008_0060) }
    public var bodyPart: String? { string(0x0018_0015) }
    public var viewPosition: String? { string(0x0018_5101) }
    public var patientSex: String? { string(0x0010_0040) }
    public var patientAge: String? { string(0x0010_1010) }
    public var laterality: String? { string(0x0020_0062) ?? string(0x0020_0060) }
    public var studyUID: String? { string(0x0020_000D) }
    public var sopInstanceUID: String? { string(0x0008_0018) }
    /// Identifiers: read only to derive keyed hashes or to join labels — never written out.
    public var patientID: String? { string(0x0010_0020) }
    public var patientName: String? { string(0x0010_0010) }
    public var accessionNumber: String? { string(0x0008_0050) }
    public var patientBirthDate: String? { string(0x0010_0030) }
    /// The date the image was taken: Study Date, else Acquisition, Content or Series Date (YYYYMMDD).
    public var studyDate: String? {
        [0x0008_0020, 0x0008_0022, 0x0008_0023, 0x0008_0021].lazy.compactMap { self.string($0) }.first { !$0.isEmpty }
    }
    public var seriesUID: String? { string(0x0020_000E) }
    public var photometricInterpretation: String? { string(Self.photometric) }
    /// Number of Frames (1 when absent). Multi-frame files are read as their first frame.
    public var frameCount: Int { number(Self.frames).map { max(1, Int($0)) } ?? 1 }

    /// Which pixel values an image is built from.
    public enum Values: String, Sendable, Codable, CaseIterable {
        /// Stored values mapped by the full range of Bits Stored (MONOCHROME1 inverted).
        case stored
        /// Modality values (Rescale Slope / Intercept), mapped by their possible range.
        case modality
        /// Modality values through the file's VOI transform (window centre / width with the
        /// LINEAR, LINEAR_EXACT or SIGMOID function of PS3.3 C.11.2.1.2), output in [0, 1]
        /// (MONOCHROME1 inverted afterwards). Files without a window fall back to `modality`.
        case voi
    }

    /// The first frame as an image in the chosen value space. Pixels equal to Pixel Padding Value
    /// are set to the darkest value and counted in `warnings` of the returned file copy.
    public func image(_ values: Values) throws -> XRImage {
        if values == .stored { return try storedImage() }
        let stored = try storedImage(raw: true)
        let bits = us(Self.bitsStored) ?? us(Self.bitsAllocated) ?? 16
        let signed = (us(Self.pixelRepresentation) ?? 0) == 1
        let slope = number(0x0028_1053) ?? 1, intercept = number(0x0028_1052) ?? 0
        let lo0 = signed ? -Double(1 << (bits - 1)) : 0, hi0 = signed ? Double((1 << (bits - 1)) - 1) : Double((1 << bits) - 1)
        let a = lo0 * slope + intercept, b = hi0 * slope + intercept
        let (lo, hi) = (min(a, b), max(a, b))
        let mono1 = photometricInterpretation == "MONOCHROME1"
        var center = number(0x0028_1050), width = number(0x0028_1051)
        if values == .modality || width == nil || (width ?? 0) <= 0 { center = nil; width = nil }
        let function = (string(0x0028_1056) ?? "LINEAR").uppercased()
        guard ["LINEAR", "LINEAR_EXACT", "SIGMOID"].contains(function) else {
            throw XRError("VOI LUT function \(function) is not supported", file: source, field: "(0028,1056) VOI LUT Function")
        }
        let padding = us(0x0028_0120).map { v -> Int in signed && v >= 1 << 15 ? v - 65536 : v }
        // VOI LUT Sequence (first item): LUT Descriptor (entries, first mapped value, bits) and LUT Data.
        var lut: (first: Int, bits: Int, data: [Int])? = nil
        if values == .voi, let desc = self.values[0x0028_3002 | 0x8000_0000], let raw = self.values[0x0028_3006 | 0x8000_0000], desc.count >= 6 {
            func at(_ b: [UInt8], _ i: Int) -> Int { bigEndian ? Int(b[2 * i]) << 8 | Int(b[2 * i + 1]) : Int(b[2 * i + 1]) << 8 | Int(b[2 * i]) }
            var entries = at(desc, 0); if entries == 0 { entries = 65536 }
            var first = at(desc, 1); if signed && first >= 1 << 15 { first -= 65536 }
            let lutBits = at(desc, 2)
            guard raw.count >= 2 * entries, lutBits >= 1, lutBits <= 16 else {
                throw XRError("VOI LUT Data has \(raw.count / 2) entries, the descriptor says \(entries)", file: source, field: "(0028,3006) LUT Data")
            }
            lut = (first, lutBits, (0..<entries).map { at(raw, $0) })
        }
        var out = [Float](repeating: 0, count: stored.pixels.count)
        for i in 0..<out.count {
            let v = Double(stored.pixels[i]) // raw stored value (signed applied)
            if let padding, Int(v) == padding { out[i] = 0; continue }
            let m = v * slope + intercept
            var y: Double
            if let lut {
                let idx = min(max(Int(m.rounded(.down)) - lut.first, 0), lut.data.count - 1)
                y = Double(lut.data[idx]) / Double((1 << lut.bits) - 1)
            } else if let c = center, let w = width {
                switch function {
                case "LINEAR_EXACT": y = m <= c - w / 2 ? 0 : (m > c + w / 2 ? 1 : (m - c) / w + 0.5)
                case "SIGMOID": y = 1 / (1 + exp(-4 * (m - c) / w))
                default:
                    y = m <= c - 0.5 - (w - 1) / 2 ? 0 : (m > c - 0.5 + (w - 1) / 2 ? 1 : ((m - (c - 0.5)) / max(w - 1, 1e-9) + 0.5))
                }
            } else {
                y = hi > lo ? (m - lo) / (hi - lo) : 0
            }
            out[i] = Float(mono1 ? 1 - y : y)
        }
        return XRImage(width: stored.width, height: stored.height, channels: 1, bitDepth: 16, pixels: out)
    }

    /// SHA-256 (hex) of the first frame's stored values — the text "COLUMNSxROWSxBITS\n" then
    /// each value as a little-endian Int32 — so the same image re-encoded in another transfer
    /// syntax, or with different header elements, has the same content hash.
    /// Refuses a file whose Rows × Columns exceed `maxPixels` (before any pixel memory is allocated).
    public func pixelHash(maxPixels: Int = ImageDecoder.defaultMaxPixels) throws -> String {
        try checkDeclaredSize(maxPixels: maxPixels)
        let img = try storedImage(raw: true)
        var h = SHA256()
        h.update(Array("\(img.width)x\(img.height)x\(us(Self.bitsStored) ?? us(Self.bitsAllocated) ?? 0)\n".utf8))
        var bytes = [UInt8](repeating: 0, count: 4 * img.pixels.count)
        for (i, p) in img.pixels.enumerated() {
            let v = UInt32(bitPattern: Int32(p))
            bytes[4 * i] = UInt8(v & 0xFF); bytes[4 * i + 1] = UInt8(v >> 8 & 0xFF)
            bytes[4 * i + 2] = UInt8(v >> 16 & 0xFF); bytes[4 * i + 3] = UInt8(v >> 24)
        }
        h.update(bytes)
        return hexString(h.finalize())
    }

    /// Stored pixel values of the first frame, mapped to [0, 1] by the full range of Bits Stored
    /// (unsigned: v / (2^bits − 1); signed: (v + 2^(bits−1)) / (2^bits − 1)), with MONOCHROME1
    /// inverted (v' = max − v) so bone is bright, as the shared 16-bit PNGs store them.
    public func storedImage() throws -> XRImage { try storedImage(raw: false) }

    /// Throws when the declared Rows × Columns exceed `maxPixels`.
    func checkDeclaredSize(maxPixels: Int) throws {
        if let r = us(Self.rows), let c = us(Self.columns), r * c > maxPixels {
            throw XRError("declared size \(c)x\(r) exceeds the limit of \(maxPixels) pixels", file: source, field: "(0028,0010) Rows")
        }
    }

    /// `raw`: pixels hold the signed stored values themselves (no mapping, no inversion).
    func storedImage(raw rawValues: Bool) throws -> XRImage {
        guard let rows = us(Self.rows), let cols = us(Self.columns), rows > 0, cols > 0 else {
            throw XRError("missing or zero Rows / Columns", file: source, field: "(0028,0010)/(0028,0011)")
        }
        guard var range = pixelRange else {
            throw XRError("the file has no pixel data", file: source, field: "(7FE0,0010) Pixel Data")
        }
        var pixelBytes = data
        var big = bigEndian
        if TransferSyntax.decodedEncapsulated.contains(transferSyntax) {
            pixelBytes = Data(try decodeFirstFrame(rows: rows, columns: cols))
            range = 0..<pixelBytes.count
            big = false
        }
        let allocated = us(Self.bitsAllocated) ?? 0
        let stored = us(Self.bitsStored) ?? allocated
        let high = us(Self.highBit) ?? (stored - 1)
        let signed = (us(Self.pixelRepresentation) ?? 0) == 1
        let samples = us(Self.samplesPerPixel) ?? 1
        guard allocated == 8 || allocated == 16 else {
            throw XRError("Bits Allocated \(allocated) is not supported (8 or 16)", file: source, field: "(0028,0100) Bits Allocated")
        }
        guard stored >= 1, stored <= allocated, high == stored - 1 || high < allocated else {
            throw XRError(
                "Bits Stored \(stored) / High Bit \(high) inconsistent with Bits Allocated \(allocated)", file: source, field: "(0028,0101) Bits Stored")
        }
        guard samples == 1 else {
            throw XRError("\(samples) samples per pixel: only grayscale radiographs are read", file: source, field: "(0028,0002) Samples per Pixel")
        }
        let photometric = photometricInterpretation ?? "MONOCHROME2"
        guard photometric == "MONOCHROME1" || photometric == "MONOCHROME2" else {
            throw XRError(
                "photometric interpretation \(photometric) is not a grayscale radiograph", file: source, field: "(0028,0004) Photometric Interpretation")
        }
        let bytesPer = allocated / 8, n = rows * cols
        guard range.count >= n * bytesPer else {
            throw XRError(
                "pixel data has \(range.count) bytes; \(rows) × \(cols) × \(allocated) bits needs \(n * bytesPer)",
                file: source, field: "(7FE0,0010) Pixel Data", hint: "the file is truncated, or Rows / Columns / Bits Allocated are wrong")
        }
        let maxValue = Double((1 << stored) - 1)
        let shift = high + 1 - stored
        var out = [Float](repeating: 0, count: n)
        pixelBytes.withUnsafeBytes { raw in
            guard let base = raw.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
            let p = base + range.lowerBound
            for i in 0..<n {
                var v: Int
                if bytesPer == 2 {
                    let b0 = Int(p[2 * i]), b1 = Int(p[2 * i + 1])
                    v = big ? (b0 << 8 | b1) : (b1 << 8 | b0)
                } else {
                    v = Int(p[i])
                }
                v = (v >> shift) & ((1 << stored) - 1)
                if signed && v >= 1 << (stored - 1) { v -= 1 << stored }
                if rawValues { out[i] = Float(v); continue }
                var x = signed ? Double(v + (1 << (stored - 1))) : Double(v)
                if photometric == "MONOCHROME1" { x = maxValue - x }
                out[i] = Float(x / maxValue)
            }
        }
        return XRImage(width: cols, height: rows, channels: 1, bitDepth: 16, pixels: out)
    }
}

extension DICOMFile {
    /// The fragments holding the first frame: up to the second frame's Basic Offset Table entry;
    /// without a table, the first fragment when there is one fragment per frame, else all of them.
    func firstFrameFragments() -> [Range<Int>] {
        if frameOffsets.count >= 2 {
            let k = fragmentOffsets.firstIndex { $0 >= frameOffsets[1] } ?? fragments.count
            return Array(fragments.prefix(max(k, 1)))
        }
        if frameCount > 1 && fragments.count == frameCount { return Array(fragments.prefix(1)) }
        return fragments
    }

    /// Decode the first frame of encapsulated pixel data into native little-endian samples of
    /// Bits Allocated bits (rows × columns of them), ready for the uncompressed path.
    func decodeFirstFrame(rows: Int, columns: Int) throws -> [UInt8] {
        let field = "(7FE0,0010) Pixel Data"
        let allocated = us(Self.bitsAllocated) ?? 0
        guard allocated == 8 || allocated == 16 else {
            throw XRError("Bits Allocated \(allocated) is not supported (8 or 16)", file: source, field: "(0028,0100) Bits Allocated")
        }
        guard !fragments.isEmpty else { throw XRError("encapsulated pixel data has no fragments", file: source, field: field) }
        if transferSyntax == TransferSyntax.rle {
            return try RLE.decodeFrame(
                data: data, fragments: fragments, rows: rows, columns: columns,
                bytesPerSample: allocated / 8, source: source)
        }
        var stream: [UInt8] = []
        data.withUnsafeBytes { raw in
            let b = raw.bindMemory(to: UInt8.self)
            for f in firstFrameFragments() { stream.append(contentsOf: b[f]) }
        }
        let samples: [Int]
        let size: (rows: Int, columns: Int), precision: Int
        if transferSyntax == TransferSyntax.jpeg2000Lossless || transferSyntax == TransferSyntax.jpeg2000 {
            let f = try JPEG2000.decode(stream, source: source, size: (rows, columns))
            samples = f.samples.map { Int($0) }
            size = (f.rows, f.columns); precision = f.precision
        } else if transferSyntax == TransferSyntax.jpegBaseline || transferSyntax == TransferSyntax.jpegExtended {
            let f = try JPEGBaseline.decode(stream, source: source, maxPixels: max(rows * columns, 1))
            samples = f.samples.map { Int($0) }
            size = (f.rows, f.columns); precision = f.precision
        } else {
            let f = try JPEGLossless.decode(stream, source: source, size: (rows, columns))
            samples = f.samples.map { Int($0) }
            size = (f.rows, f.columns); precision = f.precision
        }
        guard size == (rows, columns) else {
            throw XRError(
                "compressed frame is \(size.columns)x\(size.rows), Rows / Columns say \(columns)x\(rows)",
                file: source, field: field)
        }
        guard precision <= allocated else {
            throw XRError(
                "compressed frame has \(precision)-bit samples, Bits Allocated is \(allocated)",
                file: source, field: "(0028,0100) Bits Allocated")
        }
        // Two's complement bit patterns in Bits Allocated bits: signed samples come back signed.
        let mask = (1 << allocated) - 1
        if allocated == 8 { return samples.map { UInt8($0 & mask) } }
        var out = [UInt8](repeating: 0, count: 2 * samples.count)
        for (i, v) in samples.enumerated() {
            out[2 * i] = UInt8(v & 0xFF)
            out[2 * i + 1] = UInt8((v & mask) >> 8)
        }
        return out
    }
}
