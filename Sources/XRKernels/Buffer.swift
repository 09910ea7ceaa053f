// A float buffer with a stable address, shared by the encoder's parameters (inference and
// training), activations and gradients.
import Foundation

/// A float buffer with a stable address (activations, parameters, gradients).
public final class Buffer: @unchecked Sendable {
    public let p: UnsafeMutablePointer<Float>
    public let count: Int
    public init(_ count: Int) {
        self.count = count
        p = .allocate(capacity: max(count, 1))
        p.initialize(repeating: 0, count: max(count, 1))
    }
    public convenience init(_ values: [Float]) {
        self.init(values.count)
        values.withUnsafeBufferPointer { if let v = $0.baseAddress { p.update(from: v, count: values.count) } }
    }
    deinit { p.deallocate() }
    public var array: [Float] { Array(UnsafeBufferPointer(start: p, count: count)) }
    public func zero() { p.update(repeating: 0, count: count) }
}
