// The values a PyTorch checkpoint's pickle may build: plain data, allowed global names,
// storages and tensor views. Containers are reference types, as in Python (the pickle mutates
// a dict after storing it in its memo); a container becomes read-only once it is placed inside
// another one, which rules out cycles and keeps recorded nesting depths exact.
import Foundation

/// Element types of PyTorch storages.
public enum TorchDType: String, Sendable, CaseIterable {
    case float32, float16, bfloat16, float64, int64, int32, int16, int8, uint8, bool

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16, .int16: return 2
        case .int8, .uint8, .bool: return 1
        }
    }

    /// The storage classes `torch.save` names in persistent ids (`torch.FloatStorage`, …), by
    /// their name within `torch`. `UntypedStorage` holds bytes.
    static let storageClasses: [String: TorchDType] = [
        "FloatStorage": .float32, "HalfStorage": .float16, "BFloat16Storage": .bfloat16, "DoubleStorage": .float64,
        "LongStorage": .int64, "IntStorage": .int32, "ShortStorage": .int16, "CharStorage": .int8,
        "ByteStorage": .uint8, "BoolStorage": .bool, "UntypedStorage": .uint8
    ]
}

/// A storage named by a persistent id `('storage', <storage class>, key, location, numel)`:
/// the bytes live in the archive entry `<prefix>/data/<key>`.
public struct TorchStorageRef: Sendable, Equatable {
    public var key: String
    public var dtype: TorchDType
    /// Elements of `dtype` the storage declares.
    public var numel: Int
}

/// A tensor: a strided view of a storage (`torch._utils._rebuild_tensor_v2` arguments), checked
/// to lie inside its storage.
public struct TorchTensorRef: Sendable, Equatable {
    public var storage: TorchStorageRef
    /// In elements.
    public var offset: Int
    public var shape: [Int]
    /// In elements, one per dimension.
    public var strides: [Int]
    public var count: Int { shape.reduce(1, *) }
}

/// A Python list under construction or built.
public final class PickleList: @unchecked Sendable {
    public internal(set) var items: [PickleValue] = []
    var depth = 1
    var nested = false
}

/// A Python dict (or `collections.OrderedDict`), in insertion order. A string key set twice
/// keeps its first position and its last value, as in Python.
public final class PickleDict: @unchecked Sendable {
    public internal(set) var keys: [PickleValue] = []
    public internal(set) var values: [PickleValue] = []
    var stringIndex: [String: Int] = [:]
    var depth = 1
    var nested = false

    /// The value of a string key.
    public subscript(key: String) -> PickleValue? { stringIndex[key].map { values[$0] } }

    func set(_ k: PickleValue, _ v: PickleValue) {
        if case .string(let s) = k, let i = stringIndex[s] { values[i] = v; return }
        if case .string(let s) = k { stringIndex[s] = keys.count }
        keys.append(k)
        values.append(v)
    }
}

/// An immutable Python tuple.
public final class PickleTuple: @unchecked Sendable {
    public let items: [PickleValue]
    let depth: Int
    init(_ items: [PickleValue]) {
        self.items = items
        depth = 1 + (items.map(\.depth).max() ?? 0)
    }
}

/// A value the interpreter builds.
public enum PickleValue: Sendable {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple(PickleTuple)
    case list(PickleList)
    case dict(PickleDict)
    /// A name from the allow-list (`module.name`); never imported, only compared.
    case global(String)
    case storage(TorchStorageRef)
    case tensor(TorchTensorRef)

    /// Nesting depth: 0 for scalars, 1 + the deepest element for containers.
    var depth: Int {
        switch self {
        case .tuple(let t): return t.depth
        case .list(let l): return l.depth
        case .dict(let d): return d.depth
        case .tensor: return 1
        default: return 0
        }
    }

    /// What the value is, for error messages.
    public var kind: String {
        switch self {
        case .none: return "None"
        case .bool: return "a bool"
        case .int: return "an int"
        case .float: return "a float"
        case .string(let s): return "the string '\(s.prefix(40))'"
        case .bytes: return "bytes"
        case .tuple(let t): return "a tuple of \(t.items.count)"
        case .list(let l): return "a list of \(l.items.count)"
        case .dict(let d): return "a dict of \(d.keys.count)"
        case .global(let g): return "the global \(g)"
        case .storage: return "a storage"
        case .tensor: return "a tensor"
        }
    }
}
