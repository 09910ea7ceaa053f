import Foundation

/// Element types of the safetensors format.
public enum SafeTensorsDType: String, Sendable, CaseIterable, Codable {
    case F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .F64, .I64: return 8
        case .F32, .I32: return 4
        case .F16, .BF16, .I16: return 2
        case .I8, .U8, .BOOL: return 1
        }
    }
}

/// One tensor's entry in a safetensors header.
public struct SafeTensorInfo: Sendable, Equatable {
    public var name: String
    public var dtype: SafeTensorsDType
    public var shape: [Int]
    /// Byte range within the data section (after the header).
    public var byteRange: Range<Int>
}

/// A memory-mapped, fully validated safetensors file.
///
/// Layout (https://github.com/huggingface/safetensors): 8-byte little-endian header length N,
/// N bytes of JSON header `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {…}}`,
/// then the data section. Everything is checked when the file is opened: header bounds, JSON
/// shape, known dtypes, non-negative dims, `end - begin == prod(shape) * size`, offsets inside the
/// data section, and no two tensors overlapping. Tensors are converted to f32 on access.
public final class SafeTensorsFile: @unchecked Sendable {
    public let url: URL
    public let names: [String]
    public let metadata: [String: String]
    private let infos: [String: SafeTensorInfo]
    private let base: UnsafeMutableRawPointer?
    private let mappedLength: Int
    private let dataStart: Int

    /// Largest header accepted (the reference implementation's limit is 100 MB).
    public static let maxHeaderBytes = 100_000_000

    public init(contentsOf url: URL) throws {
        self.url = url
        let path = url.path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw XRError("cannot open: \(String(cString: strerror(errno)))", file: path)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw XRError("cannot stat file", file: path) }
        let size = Int(st.st_size)
        guard size >= 8 else {
            throw XRError(
                "file is \(size) bytes, too short for a safetensors header (8-byte length + JSON)",
                file: path, field: "header length")
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw XRError("cannot memory-map file", file: path)
        }
        base = p
        mappedLength = size
        do {
            let n = p.loadUnaligned(as: UInt64.self).littleEndian
            guard n <= UInt64(size - 8) else {
                throw XRError(
                    "header length \(n) runs past the end of the file (\(size) bytes)",
                    file: path, field: "header length", hint: "the file is truncated or not a safetensors file")
            }
            guard n <= UInt64(Self.maxHeaderBytes) else {
                throw XRError("header length \(n) exceeds the \(Self.maxHeaderBytes)-byte limit", file: path, field: "header length")
            }
            let headerLen = Int(n)
            dataStart = 8 + headerLen
            let headerData = Data(bytesNoCopy: p + 8, count: headerLen, deallocator: .none)
            let parsed = try Self.parseHeader(headerData, dataSize: size - dataStart, path: path)
            infos = parsed.infos
            metadata = parsed.metadata
            names = parsed.infos.keys.sorted()
        } catch {
            munmap(p, size)
            throw error
        }
    }

    deinit {
        if let base { munmap(base, mappedLength) }
    }

    static func parseHeader(_ data: Data, dataSize: Int, path: String) throws
        -> (infos: [String: SafeTensorInfo], metadata: [String: String])
    {
        let obj: Any
        do { obj = try JSONSerialization.jsonObject(with: data) } catch {
            throw XRError(
                "header is not valid JSON", file: path, field: "header",
                hint: "the file is corrupt or not a safetensors file")
        }
        guard let dict = obj as? [String: Any] else {
            throw XRError("header is not a JSON object", file: path, field: "header")
        }
        var metadata: [String: String] = [:]
        var infos: [String: SafeTensorInfo] = [:]
        for (name, value) in dict {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else {
                    throw XRError("__metadata__ must be an object of strings", file: path, field: "__metadata__")
                }
                for (k, v) in m {
                    guard let s = v as? String else {
                        throw XRError("__metadata__ value is not a string", file: path, field: "__metadata__.\(k)")
                    }
                    metadata[k] = s
                }
                continue
            }
            guard let e = value as? [String: Any] else {
                throw XRError("entry is not an object", file: path, field: name)
            }
            guard let dt = e["dtype"] as? String else {
                throw XRError("missing dtype", file: path, field: name)
            }
            guard let dtype = SafeTensorsDType(rawValue: dt) else {
                throw XRError(
                    "unknown dtype '\(dt)'", file: path, field: name,
                    hint: "supported: " + SafeTensorsDType.allCases.map(\.rawValue).joined(separator: ", "))
            }
            guard let shapeAny = e["shape"] as? [Any] else {
                throw XRError("missing or malformed shape", file: path, field: name)
            }
            var shape: [Int] = []
            for d in shapeAny {
                guard let n = d as? NSNumber, n.doubleValue == n.doubleValue.rounded(), n.doubleValue >= 0,
                    n.doubleValue < 9e15
                else {
                    throw XRError("shape has a negative or non-integer dimension: \(shapeAny)", file: path, field: name)
                }
                shape.append(n.intValue)
            }
            guard let off = e["data_offsets"] as? [Any], off.count == 2,
                let b = (off[0] as? NSNumber)?.int64Value, let en = (off[1] as? NSNumber)?.int64Value
            else {
                throw XRError("missing or malformed data_offsets", file: path, field: name)
            }
            guard b >= 0, en >= b else {
                throw XRError("data_offsets [\(b), \(en)] are not an increasing pair", file: path, field: name)
            }
            guard en <= Int64(dataSize) else {
                throw XRError(
                    "data_offsets [\(b), \(en)] lie outside the \(dataSize)-byte data section",
                    file: path, field: name, hint: "the file is truncated or corrupt")
            }
            guard let bytes = Limits.byteCount(shape, bytesPerElement: dtype.size) else {
                throw XRError("shape \(describeShape(shape)) is too large", file: path, field: name)
            }
            guard Int64(bytes) == en - b else {
                throw XRError(
                    "shape \(describeShape(shape)) of \(dtype.rawValue) needs \(bytes) bytes but data_offsets span \(en - b)",
                    file: path, field: name)
            }
            infos[name] = SafeTensorInfo(name: name, dtype: dtype, shape: shape, byteRange: Int(b)..<Int(en))
        }
        let sorted = infos.values.filter { !$0.byteRange.isEmpty }.sorted { $0.byteRange.lowerBound < $1.byteRange.lowerBound }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.byteRange.upperBound > b.byteRange.lowerBound {
            throw XRError(
                "tensor data overlaps '\(a.name)' (bytes \(a.byteRange.lowerBound)..<\(a.byteRange.upperBound))",
                file: path, field: b.name)
        }
        return (infos, metadata)
    }

    public func info(_ name: String) -> SafeTensorInfo? { infos[name] }
    public func contains(_ name: String) -> Bool { infos[name] != nil }

    /// The tensor converted to f32.
    public func tensor(_ name: String) throws -> Tensor {
        guard let info = infos[name] else {
            throw XRError("no tensor named '\(name)'", file: url.path, field: name)
        }
        let count = info.shape.reduce(1, *)
        var out = [Float](repeating: 0, count: count)
        guard let base else { return Tensor(shape: info.shape, scalars: out) }
        let src = UnsafeRawPointer(base) + dataStart + info.byteRange.lowerBound
        // Integers are converted only where f32 holds them exactly (|v| ≤ 2^24).
        var inexact: Int64? = nil
        func exact(_ v: Int64) -> Float {
            if v > 1 << 24 || v < -(1 << 24) { if inexact == nil { inexact = v } }
            return Float(v)
        }
        out.withUnsafeMutableBufferPointer { dst in
            switch info.dtype {
            case .F32:
                for i in 0..<count { dst[i] = Float(bitPattern: src.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self).littleEndian) }
            case .F64:
                for i in 0..<count { dst[i] = Float(Double(bitPattern: src.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self).littleEndian)) }
            case .F16:
                for i in 0..<count { dst[i] = floatFromHalf(bits: src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self).littleEndian) }
            case .BF16:
                for i in 0..<count { dst[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self).littleEndian) << 16) }
            case .I64:
                for i in 0..<count { dst[i] = exact(Int64(littleEndian: src.loadUnaligned(fromByteOffset: i * 8, as: Int64.self))) }
            case .I32:
                for i in 0..<count { dst[i] = exact(Int64(Int32(littleEndian: src.loadUnaligned(fromByteOffset: i * 4, as: Int32.self)))) }
            case .I16:
                for i in 0..<count { dst[i] = Float(Int16(littleEndian: src.loadUnaligned(fromByteOffset: i * 2, as: Int16.self))) }
            case .I8:
                for i in 0..<count { dst[i] = Float(src.load(fromByteOffset: i, as: Int8.self)) }
            case .U8, .BOOL:
                for i in 0..<count { dst[i] = Float(src.load(fromByteOffset: i, as: UInt8.self)) }
            }
        }
        if let v = inexact {
            throw XRError(
                "\(info.dtype.rawValue) value \(v) cannot be represented exactly as f32", file: url.path, field: name,
                hint: "integer tensors are read as f32; values must lie within ±2^24")
        }
        return Tensor(shape: info.shape, scalars: out)
    }
}

/// safetensors writer.
public enum SafeTensors {
    /// Serialise tensors (stored in the given float dtype) with optional string metadata. The
    /// header lists keys sorted, data follows in the same order, and the header is padded with
    /// spaces to a multiple of 8 bytes so the data section stays aligned.
    public static func encode(
        _ tensors: [(String, Tensor)], dtype: SafeTensorsDType = .F32,
        metadata: [String: String] = [:]
    ) throws -> Data {
        guard [.F32, .F16, .BF16].contains(dtype) else {
            throw XRError("writing \(dtype.rawValue) is not supported", field: "dtype", hint: "use F32, F16 or BF16")
        }
        var seen = Set<String>()
        for (n, _) in tensors where !seen.insert(n).inserted {
            throw XRError("duplicate tensor name", field: n)
        }
        let ordered = tensors.sorted { $0.0 < $1.0 }
        var header = "{"
        var parts: [String] = []
        if !metadata.isEmpty {
            let m = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0] ?? ""))" }
            parts.append("\"__metadata__\":{" + m.joined(separator: ",") + "}")
        }
        var offset = 0
        for (name, t) in ordered {
            let bytes = t.count * dtype.size
            parts.append(
                "\(jsonString(name)):{\"dtype\":\"\(dtype.rawValue)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}"
            )
            offset += bytes
        }
        header += parts.joined(separator: ",") + "}"
        var h = Array(header.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        var out = Data(capacity: 8 + h.count + offset)
        withUnsafeBytes(of: UInt64(h.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: h)
        for (_, t) in ordered {
            switch dtype {
            case .F32:
                t.scalars.withUnsafeBufferPointer { buf in
                    var le = [UInt32](repeating: 0, count: buf.count)
                    for i in 0..<buf.count { le[i] = buf[i].bitPattern.littleEndian }
                    le.withUnsafeBytes { out.append(contentsOf: $0) }
                }
            case .F16:
                let le = t.scalars.map { Float16($0).bitPattern.littleEndian }
                le.withUnsafeBytes { out.append(contentsOf: $0) }
            default:
                let le = t.scalars.map { bf16Bits($0).littleEndian }
                le.withUnsafeBytes { out.append(contentsOf: $0) }
            }
        }
        return out
    }

    /// Encode and write atomically.
    public static func write(
        _ tensors: [(String, Tensor)], dtype: SafeTensorsDType = .F32,
        metadata: [String: String] = [:], to url: URL
    ) throws {
        try AtomicFile.write(try encode(tensors, dtype: dtype, metadata: metadata), to: url)
    }

    /// f32 → bf16 with round-to-nearest-even (as torch does); NaN stays NaN.
    public static func bf16Bits(_ x: Float) -> UInt16 {
        if x.isNaN { return 0x7FC0 }
        let b = x.bitPattern
        let rounding = ((b >> 16) & 1) &+ 0x7FFF
        return UInt16(truncatingIfNeeded: (b &+ rounding) >> 16)
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}
