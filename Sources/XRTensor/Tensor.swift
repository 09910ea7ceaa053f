/// A dense, row-major float32 tensor held in a Swift array.
///
/// xrlab computes in f32; checkpoints stored as F16 / BF16 are widened on load.
/// Shapes are written down as arrays of dimension sizes, outermost first.
public struct Tensor: Sendable, Equatable {
    public var shape: [Int]
    public var scalars: [Float]

    public init(shape: [Int], scalars: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        precondition(Limits.elementCount(shape) == scalars.count,
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
