import Foundation

/// NumPy `.npy` files (format 1.0 written; 1.0–3.0 read), for Python users and for features
/// extracted elsewhere. Reference: numpy.lib.format.
public enum NPY {
    /// Serialise as little-endian float32, C order, format 1.0.
    public static func encode(_ t: Tensor) -> Data {
        let shape = t.shape.count == 1 ? "(\(t.shape[0]),)" : "(" + t.shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shape), }"
        let total = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - total % 64) % 64) + "\n"
        var out = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        withUnsafeBytes(of: UInt16(header.utf8.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: Array(header.utf8))
        let le = t.scalars.map { $0.bitPattern.littleEndian }
        le.withUnsafeBytes { out.append(contentsOf: $0) }
        return out
    }

    public static func write(_ t: Tensor, to url: URL) throws {
        try AtomicFile.write(encode(t), to: url)
    }

    /// Read `<f4`, `<f8`, `<f2`, `<i4`, `<i8`, `|u1` arrays in C order as f32.
    public static func read(_ url: URL) throws -> Tensor {
        let data: Data
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw XRError("cannot read: \(error.localizedDescription)", file: url.path)
        }
        return try decode(data, source: url.path)
    }

    public static func decode(_ data: Data, source: String) throws -> Tensor {
        let bytes = [UInt8](data.prefix(12))
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1...5]) == Array("NUMPY".utf8) else {
            throw XRError("not a .npy file (bad magic)", file: source, field: "magic")
        }
        let major = bytes[6]
        let headerLen: Int, headerStart: Int
        switch major {
        case 1:
            headerLen = Int(bytes[8]) | Int(bytes[9]) << 8; headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw XRError("truncated header", file: source, field: "header") }
            headerLen = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24; headerStart = 12
        default:
            throw XRError("unsupported .npy format version \(major)", file: source, field: "version")
        }
        guard data.count >= headerStart + headerLen else {
            throw XRError("truncated header", file: source, field: "header")
        }
        let header = String(decoding: data[data.startIndex + headerStart..<data.startIndex + headerStart + headerLen], as: UTF8.self)
        func value(_ key: String) -> String? {
            guard let r = header.range(of: "'\(key)':") else { return nil }
            return String(header[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let d = value("descr"), let q1 = d.firstIndex(of: "'"),
            let q2 = d[d.index(after: q1)...].firstIndex(of: "'")
        else {
            throw XRError("header has no descr", file: source, field: "descr")
        }
        let descr = String(d[d.index(after: q1)..<q2])
        guard let fo = value("fortran_order") else { throw XRError("header has no fortran_order", file: source, field: "fortran_order") }
        if fo.hasPrefix("True") {
            throw XRError(
                "Fortran-ordered arrays are not supported", file: source, field: "fortran_order",
                hint: "save with numpy.ascontiguousarray(x) first")
        }
        guard let s = value("shape"), let open = s.firstIndex(of: "("), let close = s[open...].firstIndex(of: ")") else {
            throw XRError("header has no shape", file: source, field: "shape")
        }
        var shape: [Int] = []
        for part in s[s.index(after: open)..<close].split(separator: ",") {
            let p = part.trimmingCharacters(in: .whitespaces)
            if p.isEmpty { continue }
            guard let n = Int(p), n >= 0 else { throw XRError("bad dimension '\(p)'", file: source, field: "shape") }
            shape.append(n)
        }
        let size: Int
        switch descr {
        case "<f4", "<i4": size = 4
        case "<f8", "<i8": size = 8
        case "<f2": size = 2
        case "|u1", "<u1", "|i1": size = 1
        default:
            throw XRError(
                "unsupported dtype '\(descr)'", file: source, field: "descr",
                hint: "save as float32 (numpy: x.astype('<f4'))")
        }
        let start = headerStart + headerLen
        // The shape comes from the file: multiply with overflow checks and compare with the bytes present.
        guard let count = Limits.elementCount(shape), case let (needed, false) = count.multipliedReportingOverflow(by: size) else {
            throw XRError("shape \(describeShape(shape)) of \(descr) is too large to address", file: source, field: "shape")
        }
        guard data.count - start >= needed else {
            throw XRError(
                "data has \(data.count - start) bytes, shape \(describeShape(shape)) of \(descr) needs \(needed)",
                file: source, field: "data", hint: "the file is truncated")
        }
        var out = [Float](repeating: 0, count: count)
        var inexact: Int64? = nil
        func exact(_ v: Int64) -> Float {
            if v > 1 << 24 || v < -(1 << 24) { if inexact == nil { inexact = v } }
            return Float(v)
        }
        data.withUnsafeBytes { raw in
            guard let b = raw.baseAddress else { return }
            let p = b + start
            for i in 0..<count {
                switch descr {
                case "<f4": out[i] = Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))
                case "<f8": out[i] = Float(Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))))
                case "<f2": out[i] = floatFromHalf(bits: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)))
                case "<i4": out[i] = exact(Int64(Int32(littleEndian: p.loadUnaligned(fromByteOffset: i * 4, as: Int32.self))))
                case "<i8": out[i] = exact(Int64(littleEndian: p.loadUnaligned(fromByteOffset: i * 8, as: Int64.self)))
                case "|i1": out[i] = Float(p.load(fromByteOffset: i, as: Int8.self))
                default: out[i] = Float(p.load(fromByteOffset: i, as: UInt8.self))
                }
            }
        }
        if let v = inexact {
            throw XRError(
                "\(descr) value \(v) cannot be represented exactly as f32", file: source, field: "data",
                hint: "integer arrays are read as f32; values must lie within ±2^24")
        }
        return Tensor(shape: shape, scalars: out)
    }
}
