// A pickle interpreter for PyTorch checkpoints that executes nothing. It understands the
// protocol 2–5 opcodes `torch.save` emits and builds plain data (dict, OrderedDict, list, tuple,
// numbers, strings, None) and tensors. Globals are names checked against a short allow-list,
// never imported; REDUCE applies only to the allowed callables, interpreted here; BUILD only
// sets (and drops) the attributes of an OrderedDict (a state dict's `_metadata`). Everything
// else is an error that names the global, the opcode and the file.
import Foundation
import XRTensor

/// Reads the pickle inside a PyTorch checkpoint (`data.pkl`) without executing it.
public enum TorchPickle {
    /// Deepest container nesting accepted (a state dict needs 3 or 4).
    public static let maxDepth = 100
    /// Largest tensor rank accepted.
    public static let maxRank = 64

    /// Callables REDUCE may apply, interpreted by xrlab.
    static let callables: Set<String> = [
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_parameter"
    ]

    /// Every global a checkpoint may name: the callables above and the storage classes.
    public static let allowedGlobals: Set<String> =
        callables
        .union(TorchDType.storageClasses.keys.map { "torch.\($0)" })
        .union(["torch.storage.UntypedStorage"])

    /// Interpret `bytes` (the contents of `data.pkl`); `source` names the file in errors.
    /// - Throws: `XRError` naming the file and the byte offset for a disallowed global, an
    ///   unsupported opcode, truncation, malformed tensor arguments or excessive nesting.
    public static func load(_ bytes: [UInt8], source: String) throws -> PickleValue {
        var m = Machine(bytes: bytes, source: source)
        return try m.run()
    }
}

/// The interpreter state: input, stack, mark stack and memo.
struct Machine {
    let bytes: [UInt8]
    let source: String
    var pos = 0
    var opStart = 0
    var stack: [PickleValue] = []
    var marks: [Int] = []
    var memo: [Int: PickleValue] = [:]

    init(bytes: [UInt8], source: String) {
        self.bytes = bytes
        self.source = source
    }

    func fail(_ message: String, hint: String? = nil) -> XRError {
        XRError(message, file: source, field: "data.pkl byte \(opStart)", hint: hint)
    }

    func refuse(_ global: String, _ what: String) -> XRError {
        XRError(
            "\(what) '\(global)' is not allowed; nothing was imported or executed", file: source,
            field: "data.pkl global \(global)",
            hint: "xrlab reads checkpoints holding tensors and plain data only (collections.OrderedDict, torch._utils tensor rebuilds, "
                + "torch storage classes); save the weights alone, e.g. torch.save(model.state_dict(), path), in a trusted environment")
    }

    // MARK: input

    mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
        guard n >= 0, n <= bytes.count - pos else {
            throw fail("pickle is truncated: \(n) bytes needed, \(bytes.count - pos) left", hint: "the file is incomplete or corrupt")
        }
        defer { pos += n }
        return bytes[pos..<pos + n]
    }

    mutating func uint(_ n: Int) throws -> UInt64 {
        var v: UInt64 = 0
        for (i, b) in try take(n).enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
        return v
    }

    /// A length field, checked against what is left of the input before anything is allocated.
    mutating func length(_ n: Int) throws -> Int {
        let v = try uint(n)
        guard v <= UInt64(bytes.count - pos) else {
            throw fail(
                "declared length \(v) runs past the end of the pickle (\(bytes.count - pos) bytes left)",
                hint: "the file is truncated or corrupt")
        }
        return Int(v)
    }

    mutating func line() throws -> String {
        guard let end = bytes[pos...].firstIndex(of: 0x0A), end - pos <= 256 else {
            throw fail("GLOBAL name is not terminated by a newline within 256 bytes")
        }
        defer { pos = end + 1 }
        return String(decoding: bytes[pos..<end], as: UTF8.self)
    }

    mutating func utf8(_ n: Int) throws -> String {
        let s = try take(n)
        guard let str = String(validating: s, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
        return str
    }

    /// Two's-complement little-endian integer (LONG1 / LONG4); must fit in 64 bits.
    mutating func long(_ n: Int) throws -> Int {
        let b = try take(n)
        if b.isEmpty { return 0 }
        let negative = (b.last ?? 0) & 0x80 != 0
        let fill: UInt8 = negative ? 0xFF : 0
        guard b.dropFirst(8).allSatisfy({ $0 == fill }) else { throw fail("integer of \(n) bytes does not fit in 64 bits") }
        var v: UInt64 = negative ? UInt64.max : 0
        for (i, x) in b.prefix(8).enumerated() {
            v &= ~(UInt64(0xFF) << (8 * UInt64(i)))
            v |= UInt64(x) << (8 * UInt64(i))
        }
        let r = Int64(bitPattern: v)
        guard (r < 0) == negative else { throw fail("integer of \(n) bytes does not fit in 64 bits") }
        return Int(r)
    }

    // MARK: stack

    mutating func pop() throws -> PickleValue {
        guard let v = stack.popLast() else { throw fail("stack underflow") }
        if let m = marks.last, stack.count < m { throw fail("stack underflow past a MARK") }
        return v
    }

    mutating func popMark() throws -> [PickleValue] {
        guard let m = marks.popLast() else { throw fail("no MARK on the stack") }
        guard m <= stack.count else { throw fail("stack underflow past a MARK") }
        let items = Array(stack[m...])
        stack.removeSubrange(m...)
        return items
    }

    mutating func push(_ v: PickleValue) throws {
        guard v.depth <= TorchPickle.maxDepth else {
            throw fail(
                "containers nested deeper than \(TorchPickle.maxDepth) levels", hint: "a state dict needs only a few levels; the file is not a plain checkpoint"
            )
        }
        stack.append(v)
    }

    func top() throws -> PickleValue {
        guard let v = stack.last, stack.count > (marks.last ?? 0) else { throw fail("stack underflow") }
        return v
    }

    /// Mark containers placed inside another as read-only (see the file header) and check depth.
    func nest(_ items: [PickleValue], into depth: inout Int) throws {
        for v in items {
            switch v {
            case .list(let l): l.nested = true
            case .dict(let d): d.nested = true
            default: break
            }
            depth = max(depth, v.depth + 1)
        }
        guard depth <= TorchPickle.maxDepth else {
            throw fail(
                "containers nested deeper than \(TorchPickle.maxDepth) levels", hint: "a state dict needs only a few levels; the file is not a plain checkpoint"
            )
        }
    }

    func tuple(_ items: [PickleValue]) throws -> PickleValue {
        var d = 1
        try nest(items, into: &d)
        return .tuple(PickleTuple(items))
    }

    func append(_ items: [PickleValue], to target: PickleValue) throws {
        guard case .list(let l) = target else { throw fail("APPEND to \(target.kind), not a list") }
        guard !l.nested else { throw fail("a list is changed after being placed in another container (cyclic or unusual pickle)") }
        for v in items { if case .list(let x) = v, x === l { throw fail("a list is appended to itself") } }
        try nest(items, into: &l.depth)
        l.items += items
    }

    func setItems(_ items: [PickleValue], in target: PickleValue) throws {
        guard case .dict(let d) = target else { throw fail("SETITEM on \(target.kind), not a dict") }
        guard !d.nested else { throw fail("a dict is changed after being placed in another container (cyclic or unusual pickle)") }
        guard items.count % 2 == 0 else { throw fail("SETITEMS with an odd number of items") }
        for v in items { if case .dict(let x) = v, x === d { throw fail("a dict is stored in itself") } }
        try nest(items, into: &d.depth)
        for i in stride(from: 0, to: items.count, by: 2) { d.set(items[i], items[i + 1]) }
    }

    // MARK: run

    mutating func run() throws -> PickleValue {
        while true {
            opStart = pos
            let op = try take(1).first ?? 0
            switch op {
            case 0x80: // PROTO
                let v = try uint(1)
                guard v <= 5 else { throw fail("pickle protocol \(v) is newer than 5") }
            case 0x95: _ = try uint(8) // FRAME: a length hint only
            case 0x2E: // STOP
                guard stack.count == 1, marks.isEmpty else { throw fail("STOP with \(stack.count) values on the stack") }
                return stack[0]
            case 0x28: marks.append(stack.count) // MARK
            case 0x7D: try push(.dict(PickleDict())) // EMPTY_DICT
            case 0x5D: try push(.list(PickleList())) // EMPTY_LIST
            case 0x29: try push(.tuple(PickleTuple([]))) // EMPTY_TUPLE
            case 0x4E: try push(.none)
            case 0x88: try push(.bool(true))
            case 0x89: try push(.bool(false))
            case 0x4B: try push(.int(Int(try uint(1)))) // BININT1
            case 0x4D: try push(.int(Int(try uint(2)))) // BININT2
            case 0x4A: try push(.int(Int(Int32(truncatingIfNeeded: try uint(4))))) // BININT
            case 0x8A: let n = Int(try uint(1)); try push(.int(try long(n))) // LONG1
            case 0x8B: // LONG4
                let n = try uint(4)
                guard n <= 64 else { throw fail("LONG4 of \(n) bytes is too large") }
                try push(.int(try long(Int(n))))
            case 0x47: // BINFLOAT (big-endian)
                let b = try take(8)
                try push(.float(Double(bitPattern: b.reduce(UInt64(0)) { ($0 << 8) | UInt64($1) })))
            case 0x58: let n = try length(4); try push(.string(try utf8(n))) // BINUNICODE
            case 0x8C: let n = try length(1); try push(.string(try utf8(n))) // SHORT_BINUNICODE
            case 0x8D: let n = try length(8); try push(.string(try utf8(n))) // BINUNICODE8
            case 0x54, 0x55: // BINSTRING, SHORT_BINSTRING (Python 2 str, read as Latin-1)
                let n = try length(op == 0x54 ? 4 : 1)
                try push(.string(String(try take(n).map { Character(Unicode.Scalar($0)) })))
            case 0x42: let n = try length(4); try push(.bytes(Array(try take(n)))) // BINBYTES
            case 0x43: let n = try length(1); try push(.bytes(Array(try take(n)))) // SHORT_BINBYTES
            case 0x8E, 0x96: let n = try length(8); try push(.bytes(Array(try take(n)))) // BINBYTES8, BYTEARRAY8
            case 0x74: try push(try tuple(try popMark())) // TUPLE
            case 0x85: let a = try pop(); try push(try tuple([a])) // TUPLE1
            case 0x86: let b = try pop(), a = try pop(); try push(try tuple([a, b])) // TUPLE2
            case 0x87: let c = try pop(), b = try pop(), a = try pop(); try push(try tuple([a, b, c])) // TUPLE3
            case 0x6C: // LIST
                let items = try popMark(), l = PickleList()
                try append(items, to: .list(l))
                try push(.list(l))
            case 0x64: // DICT
                let items = try popMark(), d = PickleDict()
                try setItems(items, in: .dict(d))
                try push(.dict(d))
            case 0x61: let v = try pop(); try append([v], to: try top()) // APPEND
            case 0x65: let items = try popMark(); try append(items, to: try top()) // APPENDS
            case 0x73: let v = try pop(), k = try pop(); try setItems([k, v], in: try top()) // SETITEM
            case 0x75: let items = try popMark(); try setItems(items, in: try top()) // SETITEMS
            case 0x71: memo[Int(try uint(1))] = try top() // BINPUT
            case 0x72: memo[Int(try uint(4))] = try top() // LONG_BINPUT
            case 0x94: memo[memo.count] = try top() // MEMOIZE
            case 0x68, 0x6A: // BINGET, LONG_BINGET
                let i = Int(try uint(op == 0x68 ? 1 : 4))
                guard let v = memo[i] else { throw fail("memo entry \(i) is read before it is written") }
                try push(v)
            case 0x30: _ = try pop() // POP
            case 0x31: _ = try popMark() // POP_MARK
            case 0x32: try push(try top()) // DUP
            case 0x63: // GLOBAL
                let module = try line(), name = try line()
                try push(try global(module, name))
            case 0x93: // STACK_GLOBAL
                let n = try pop(), m = try pop()
                guard case .string(let name) = n, case .string(let module) = m else {
                    throw fail("STACK_GLOBAL needs two strings, got \(m.kind) and \(n.kind)")
                }
                try push(try global(module, name))
            case 0x52: // REDUCE
                let args = try pop(), callable = try pop()
                try push(try reduce(callable, args))
            case 0x62: // BUILD
                let state = try pop(), target = try top()
                try build(target, state)
            case 0x81, 0x92: // NEWOBJ, NEWOBJ_EX
                if op == 0x92 { _ = try pop() }
                _ = try pop()
                let cls = try pop()
                if case .global(let g) = cls { throw refuse(g, "creating an object of class") }
                throw fail("NEWOBJ on \(cls.kind)")
            case 0x51: // BINPERSID
                try push(try persistent(try pop()))
            case 0x69, 0x6F: throw fail("INST / OBJ opcodes (protocol 0 object creation) are not allowed; nothing was executed")
            case 0x82, 0x83, 0x84: throw fail("extension-registry globals (EXT1/2/4) are not allowed; nothing was imported")
            default:
                throw fail(
                    String(format: "unsupported pickle opcode 0x%02x", op),
                    hint: "checkpoints written by torch.save (pickle protocol 2-5) are read; the file may be corrupt or written some other way")
            }
        }
    }

    // MARK: globals and calls

    func global(_ module: String, _ name: String) throws -> PickleValue {
        let full = "\(module).\(name)"
        guard TorchPickle.allowedGlobals.contains(full) else { throw refuse(full, "the global") }
        return .global(full)
    }

    func ints(_ v: PickleValue, _ what: String) throws -> [Int] {
        guard case .tuple(let t) = v else { throw fail("\(what) is \(v.kind), not a tuple of ints") }
        guard t.items.count <= TorchPickle.maxRank else { throw fail("\(what) has \(t.items.count) dimensions (at most \(TorchPickle.maxRank))") }
        return try t.items.map {
            guard case .int(let i) = $0, i >= 0 else { throw fail("\(what) holds \($0.kind), not a non-negative int") }
            return i
        }
    }

    func reduce(_ callable: PickleValue, _ argsValue: PickleValue) throws -> PickleValue {
        guard case .global(let g) = callable else { throw fail("REDUCE applies \(callable.kind), which is not callable") }
        guard TorchPickle.callables.contains(g) else { throw refuse(g, "calling") }
        guard case .tuple(let t) = argsValue else { throw fail("REDUCE of \(g) with \(argsValue.kind) as arguments") }
        let a = t.items
        switch g {
        case "collections.OrderedDict":
            let d = PickleDict()
            if a.isEmpty { return .dict(d) }
            guard a.count == 1, case .list(let l) = a[0] else { throw fail("collections.OrderedDict called with \(a.count) arguments") }
            var items: [PickleValue] = []
            for p in l.items {
                guard case .tuple(let kv) = p, kv.items.count == 2 else { throw fail("collections.OrderedDict item is \(p.kind), not a pair") }
                items += kv.items
            }
            try setItems(items, in: .dict(d))
            return .dict(d)
        case "torch._utils._rebuild_parameter":
            guard a.count == 3, case .tensor = a[0] else { throw fail("\(g) expects (tensor, requires_grad, hooks)") }
            try noHooks(a[2], g)
            return a[0]
        default: // _rebuild_tensor_v2 (storage, offset, size, stride, requires_grad, hooks[, metadata]) / _rebuild_tensor
            let v2 = g.hasSuffix("_v2")
            guard v2 ? (a.count == 6 || a.count == 7) : a.count == 4 else {
                throw fail("\(g) called with \(a.count) arguments")
            }
            guard case .storage(let s) = a[0] else { throw fail("\(g): first argument is \(a[0].kind), not a storage") }
            guard case .int(let offset) = a[1], offset >= 0 else { throw fail("\(g): storage offset is \(a[1].kind)") }
            let shape = try ints(a[2], "tensor size"), strides = try ints(a[3], "tensor stride")
            guard shape.count == strides.count else {
                throw fail("tensor size has \(shape.count) dimensions but its stride \(strides.count)")
            }
            if v2 {
                try noHooks(a[5], g)
                if a.count == 7 {
                    switch a[6] {
                    case .dict, .none: break
                    default: throw fail("\(g): tensor metadata is \(a[6].kind), not a dict")
                    }
                }
            }
            // Checked arithmetic: the element count and the last element the view touches.
            var count = 1, last = offset
            for (n, st) in zip(shape, strides) {
                let (c, o1) = count.multipliedReportingOverflow(by: n)
                guard !o1 else { throw fail("tensor size \(describeShape(shape)) overflows") }
                count = c
                if n > 0 {
                    let (span, o2) = (n - 1).multipliedReportingOverflow(by: st)
                    let (l, o3) = last.addingReportingOverflow(span)
                    guard !o2, !o3 else { throw fail("tensor view \(describeShape(shape)) with strides \(describeShape(strides)) overflows") }
                    last = l
                }
            }
            if count > 0 && last >= s.numel {
                throw fail(
                    "tensor \(describeShape(shape)) (offset \(offset), strides \(describeShape(strides))) reaches element \(last) of storage '\(s.key)', which holds \(s.numel)",
                    hint: "the storage is shorter than its tensor: the file is corrupt")
            }
            return .tensor(TorchTensorRef(storage: s, offset: offset, shape: shape, strides: strides))
        }
    }

    func noHooks(_ v: PickleValue, _ g: String) throws {
        guard case .dict(let d) = v, d.keys.isEmpty else {
            throw fail("\(g): backward hooks are \(v.kind); only an empty OrderedDict is accepted")
        }
    }

    /// BUILD sets an object's state. Only an OrderedDict's attributes (a state dict's
    /// `_metadata`) are accepted, and dropped: they carry nothing xrlab uses.
    func build(_ target: PickleValue, _ state: PickleValue) throws {
        guard case .dict = target else {
            let origin: String
            switch target {
            case .tensor: origin = "a tensor (made by torch._utils._rebuild_tensor_v2)"
            case .global(let g): origin = "the global \(g)"
            default: origin = target.kind
            }
            throw fail(
                "BUILD (setting object state) on \(origin) is not allowed; nothing was executed",
                hint: "xrlab reads checkpoints holding tensors and plain data only")
        }
        guard case .dict = state else {
            throw fail("BUILD on a dict with \(state.kind) as state; only attributes given as a dict are accepted")
        }
    }

    /// `('storage', <storage class>, key, location, numel)`.
    func persistent(_ pid: PickleValue) throws -> PickleValue {
        guard case .tuple(let t) = pid, t.items.count == 5, case .string("storage") = t.items[0] else {
            throw fail("persistent id is \(pid.kind), not ('storage', class, key, location, numel)")
        }
        guard case .global(let cls) = t.items[1], cls.hasPrefix("torch."),
            let dtype = TorchDType.storageClasses[String(cls.split(separator: ".").last ?? "")]
        else {
            throw fail("persistent id names \(t.items[1].kind), not a storage class")
        }
        guard case .string(let key) = t.items[2] else { throw fail("storage key is \(t.items[2].kind)") }
        guard !key.isEmpty, key.count <= 128, key != ".", key != "..",
            key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == ".") })
        else {
            throw XRError(
                "storage key '\(key.prefix(80))' is not a plain name inside the archive's data/ folder", file: source,
                field: "data.pkl storage key", hint: "the file is corrupt or crafted")
        }
        guard case .int(let numel) = t.items[4], numel >= 0 else { throw fail("storage '\(key)' declares \(t.items[4].kind) elements") }
        guard numel.multipliedReportingOverflow(by: dtype.size).overflow == false else {
            throw fail("storage '\(key)' declares \(numel) elements, too many to address")
        }
        return .storage(TorchStorageRef(key: key, dtype: dtype, numel: numel))
    }
}
