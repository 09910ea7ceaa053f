// PyTorch checkpoints (`torch.save`, `.pt` / `.pth` / `.bin`) read as named f32 tensors without
// executing their pickle: the zip container (TorchZip), the pickle (TorchPickle), then the state
// dict chosen and each tensor's strided view copied out of its storage.
import Foundation
import XRTensor

/// A `torch.save` checkpoint's state dict, validated when opened: every tensor view lies inside
/// its storage, every storage is present with the bytes its declaration needs. Tensors are
/// converted to f32 on access (fp16, bf16, f64; integers within ±2^24), from any strides and
/// offsets; several tensors may share one storage.
///
/// The state dict is the first of `module`, `model`, `model_ema`, `state_dict` that holds
/// tensors, else the top level; `stateDictKey` chooses one (`.` for the top level). Its keys
/// must all be strings and its values all tensors.
public final class TorchCheckpoint: TensorStore, @unchecked Sendable {
    public let url: URL
    public let names: [String]
    /// The top-level key the state dict was read from (nil: the top level).
    public let stateDictKey: String?
    private let refs: [String: TorchTensorRef]
    private let storages: [String: [UInt8]]
    private let bigEndian: Bool

    /// Keys searched for a state dict, in order.
    public static let stateDictKeys = ["module", "model", "model_ema", "state_dict"]
    /// File extensions read as PyTorch checkpoints.
    public static let extensions: Set<String> = ["pt", "pth", "bin"]

    /// Whether a path names a PyTorch checkpoint by its extension.
    public static func isTorchFile(_ url: URL) -> Bool { extensions.contains(url.pathExtension.lowercased()) }

    /// Open a checkpoint file.
    public convenience init(contentsOf url: URL, stateDictKey: String? = nil) throws {
        guard FileManager.default.isReadableFile(atPath: url.path) else {
            throw XRError("cannot read checkpoint", file: url.path)
        }
        let head =
            (try? FileHandle(forReadingFrom: url)).flatMap { h -> Data? in
                defer { try? h.close() }; return try? h.read(upToCount: 16)
            } ?? Data()
        try self.init(archive: TorchZip(source: .file(url), path: url.path), head: head, url: url, stateDictKey: stateDictKey)
    }

    /// Parse a checkpoint held in memory (`source` names it in errors).
    public convenience init(data: Data, source: String = "<memory>", stateDictKey: String? = nil) throws {
        try self.init(
            archive: TorchZip(source: .memory(data), path: source), head: data.prefix(16),
            url: URL(fileURLWithPath: source), stateDictKey: stateDictKey)
    }

    private init(archive: TorchZip, head: Data, url: URL, stateDictKey: String?) throws {
        self.url = url
        let path = archive.path
        try Self.checkMagic(Array(head), path: path)

        // Pass 1: the entry names, the pickle and the byte order.
        var entries = Set<String>()
        var pickle: [UInt8]? = nil, pickleName = ""
        var byteorder: [UInt8]? = nil
        try archive.forEach { name, read in
            guard entries.insert(name).inserted else { throw XRError("zip entry appears twice", file: path, field: name) }
            if name.hasSuffix("/data.pkl") && name.dropLast(9).split(separator: "/").count == 1 {
                guard pickle == nil else { throw XRError("archive holds more than one data.pkl", file: path, field: name) }
                let b = try read(TorchZip.maxPickleBytes + 1)
                guard b.count <= TorchZip.maxPickleBytes else {
                    throw XRError("data.pkl is larger than \(TorchZip.maxPickleBytes >> 20) MiB", file: path, field: name)
                }
                pickle = b; pickleName = name
            } else if name.hasSuffix("/byteorder") {
                byteorder = try read(16)
            }
        }
        guard let pickle else {
            if entries.contains(where: { $0.hasSuffix("constants.pkl") || $0.contains("/code/") }) {
                throw XRError(
                    "this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint", file: path,
                    hint: "save the weights with torch.save(model.state_dict(), path) and read that")
            }
            throw XRError("zip archive has no <name>/data.pkl, so it is not a torch.save checkpoint", file: path, field: "data.pkl")
        }
        let prefix = String(pickleName.dropLast("data.pkl".count))
        switch byteorder.map({ String(decoding: $0, as: UTF8.self) }) {
        case nil, "little": bigEndian = false
        case "big": bigEndian = true
        case let other?: throw XRError("unknown byte order '\(other.prefix(16))'", file: path, field: prefix + "byteorder")
        }

        let root = try TorchPickle.load(pickle, source: path)
        let (key, dict) = try Self.stateDict(root, key: stateDictKey, path: path)
        self.stateDictKey = key
        var refs: [String: TorchTensorRef] = [:]
        var declared: [String: TorchStorageRef] = [:]
        for (k, v) in zip(dict.keys, dict.values) {
            guard case .string(let name) = k else {
                throw XRError("state dict key is \(k.kind), not a string", file: path, field: key ?? "top level")
            }
            guard case .tensor(let t) = v else {
                throw XRError(
                    "state dict entry is \(v.kind), not a tensor", file: path, field: name,
                    hint: "the state dict must map parameter names to tensors; choose another with --state-dict-key")
            }
            if let d = declared[t.storage.key], d != t.storage {
                throw XRError(
                    "storage '\(t.storage.key)' is declared twice differently (\(d.dtype.rawValue) × \(d.numel), \(t.storage.dtype.rawValue) × \(t.storage.numel))",
                    file: path, field: name)
            }
            declared[t.storage.key] = t.storage
            refs[name] = t
        }

        // Pass 2: the storages the state dict uses, each exactly as long as declared.
        var storages: [String: [UInt8]] = [:]
        let dataPrefix = prefix + "data/"
        try archive.forEach { name, read in
            guard name.hasPrefix(dataPrefix), let s = declared[String(name.dropFirst(dataPrefix.count))] else { return }
            let need = s.numel * s.dtype.size
            let b = try read(need + 1)
            guard b.count == need else {
                throw XRError(
                    "storage '\(s.key)' holds \(b.count > need ? "more than \(need)" : "\(b.count)") bytes, but \(s.numel) \(s.dtype.rawValue) elements need \(need)",
                    file: path, field: name, hint: "the file is truncated or corrupt")
            }
            storages[s.key] = b
        }
        for s in declared.values where storages[s.key] == nil {
            throw XRError(
                "storage '\(s.key)' is missing from the archive (no entry \(dataPrefix + s.key))", file: path,
                field: dataPrefix + s.key, hint: "the file is truncated or corrupt")
        }
        self.refs = refs
        self.storages = storages
        names = refs.keys.sorted()
    }

    /// Refuse formats other than the zip container by name.
    static func checkMagic(_ b: [UInt8], path: String) throws {
        if b.starts(with: [0x50, 0x4B, 0x03, 0x04]) || b.starts(with: [0x50, 0x4B, 0x05, 0x06]) { return }
        if b.starts(with: [0x80]) {
            throw XRError(
                "this is the legacy torch.save format (PyTorch < 1.6, not a zip archive), which xrlab does not read",
                file: path, hint: "re-save it with a current PyTorch: torch.save(torch.load(path, weights_only=True), new_path)")
        }
        throw XRError(
            "not a PyTorch checkpoint: the file does not start with a zip header", file: path,
            hint: "xrlab reads torch.save files (a zip archive), .safetensors files and Hugging Face / timm folders")
    }

    /// The state dict inside the top-level object.
    static func stateDict(_ root: PickleValue, key: String?, path: String) throws -> (String?, PickleDict) {
        guard case .dict(let top) = root else {
            throw XRError("the checkpoint holds \(root.kind), not a dict of tensors", file: path)
        }
        func holdsTensors(_ d: PickleDict) -> Bool { d.values.contains { if case .tensor = $0 { return true } else { return false } } }
        let topKeys = top.keys.map { if case .string(let s) = $0 { return s } else { return $0.kind } }
        if let key {
            if key == "." { return (nil, top) }
            guard let v = top[key] else {
                throw XRError(
                    "no top-level key '\(key)' (keys: \(topKeys.prefix(20).joined(separator: ", ")))", file: path,
                    field: "--state-dict-key", hint: "pass one of the keys, or '.' for the top level")
            }
            guard case .dict(let d) = v else {
                throw XRError("'\(key)' holds \(v.kind), not a state dict", file: path, field: key)
            }
            return (key, d)
        }
        for k in stateDictKeys {
            if case .dict(let d)? = top[k], holdsTensors(d) { return (k, d) }
        }
        if holdsTensors(top) { return (nil, top) }
        throw XRError(
            "no state dict found: none of \(stateDictKeys.joined(separator: ", ")) or the top level holds tensors (top-level keys: \(topKeys.prefix(20).joined(separator: ", ")))",
            file: path, hint: "pass --state-dict-key with the key that holds the weights")
    }

    public func shape(_ name: String) -> [Int]? { refs[name]?.shape }

    /// The tensor's storage dtype, as saved.
    public func dtype(_ name: String) -> TorchDType? { refs[name]?.storage.dtype }

    /// The tensor converted to f32 (row-major, whatever its strides).
    public func tensor(_ name: String) throws -> Tensor {
        guard let r = refs[name], let bytes = storages[r.storage.key] else {
            throw XRError("no tensor named '\(name)'", file: url.path, field: name)
        }
        var out = [Float](repeating: 0, count: r.count)
        if out.isEmpty { return Tensor(shape: r.shape, scalars: out) }
        let dtype = r.storage.dtype, size = dtype.size, swap = bigEndian && size > 1
        var inexact: Int64? = nil
        bytes.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            func word<T: FixedWidthInteger>(_ e: Int, _: T.Type) -> T {
                let v = base.loadUnaligned(fromByteOffset: e * size, as: T.self)
                return swap ? v.byteSwapped : v
            }
            func value(_ e: Int) -> Float {
                switch dtype {
                case .float32: return Float(bitPattern: word(e, UInt32.self))
                case .float64: return Float(Double(bitPattern: word(e, UInt64.self)))
                case .float16: return floatFromHalf(bits: word(e, UInt16.self))
                case .bfloat16: return Float(bitPattern: UInt32(word(e, UInt16.self)) << 16)
                case .int64, .int32, .int16:
                    let v: Int64 = dtype == .int64 ? word(e, Int64.self) : dtype == .int32 ? Int64(word(e, Int32.self)) : Int64(word(e, Int16.self))
                    if (v > 1 << 24 || v < -(1 << 24)) && inexact == nil { inexact = v }
                    return Float(v)
                case .int8: return Float(Int8(bitPattern: base.load(fromByteOffset: e, as: UInt8.self)))
                case .uint8, .bool: return Float(base.load(fromByteOffset: e, as: UInt8.self))
                }
            }
            // Walk the view row by row: an odometer over the outer dimensions, the last one inner.
            let rank = r.shape.count
            let inner = rank == 0 ? 1 : r.shape[rank - 1], innerStride = rank == 0 ? 0 : r.strides[rank - 1]
            var index = [Int](repeating: 0, count: max(rank - 1, 0))
            var start = r.offset, o = 0
            while o < out.count {
                var e = start
                for _ in 0..<inner { out[o] = value(e); o += 1; e += innerStride }
                var d = rank - 2
                while d >= 0 {
                    index[d] += 1; start += r.strides[d]
                    if index[d] < r.shape[d] { break }
                    start -= index[d] * r.strides[d]; index[d] = 0; d -= 1
                }
            }
        }
        if let v = inexact {
            throw XRError(
                "\(dtype.rawValue) value \(v) cannot be represented exactly as f32", file: url.path, field: name,
                hint: "integer tensors are read as f32; values must lie within ±2^24")
        }
        return Tensor(shape: r.shape, scalars: out)
    }
}
