/// A dense, row-major float32 tensor held in a Swift array.
///
/// xrlab computes in f32; checkpoints stored as F16 / BF16 are widened on load.
/// Shapes are written down as arrays of dimension sizes, outermost first.
public struct Tensor: Sendable, Equatable {
    public var shape: [Int]
    public var scalars: [Float]

    public init(shape: [Int], scalars: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        precondition(
            Limits.elementCount(shape) == scalars.count,
            "shape \(shape) needs \(Limits.elementCount(shape).map(String.init) ?? "more than Int.max") scalars, got \(scalars.count)")
        self.shape = shape
        self.scalars = scalars
    }

    public init(zeros shape: [Int]) {
        guard let n = Limits.elementCount(shape) else { preconditionFailure("shape \(shape) has more than Int.max elements") }
        self.init(shape: shape, scalars: [Float](repeating: 0, count: n))
    }

    /// Number of scalars (product of the shape).
    public var count: Int { scalars.count }
    public var rank: Int { shape.count }

    /// Same scalars, new shape (the element count must agree).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, scalars: scalars)
    }
}

/// Human-readable shape, e.g. `(197, 768)`.
public func describeShape(_ shape: [Int]) -> String {
    "(" + shape.map(String.init).joined(separator: ", ") + ")"
}

/// IEEE half-precision bits → f32, in integer arithmetic. Exact for every value, subnormal
/// halves included, whatever the thread's denormal mode: kernel threads run with denormals
/// flushed to zero, under which a floating-point conversion could turn fp16 subnormals
/// (common in fp16 checkpoints) into zeros.
@inline(__always)
public func floatFromHalf(bits h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = UInt32((h >> 10) & 0x1F), mantissa = UInt32(h & 0x3FF)
    switch exponent {
    case 0x1F: return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) // inf, NaN
    case 0 where mantissa == 0: return Float(bitPattern: sign) // ±0
    case 0: // subnormal: normalise
        var m = mantissa, e: UInt32 = 127 - 14
        while m & 0x400 == 0 { m <<= 1; e -= 1 }
        return Float(bitPattern: sign | (e << 23) | ((m & 0x3FF) << 13))
    default: return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
    }
}
