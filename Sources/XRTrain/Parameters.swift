// Parameters for training: values, gradients only for trainable ones, and the naming that
// checkpoints, PEFT adapters and optimiser groups share.
import Foundation
import XRTensor
import XRKernels

/// One named tensor of the model. `grad` exists only while the parameter is trainable.
public final class Parameter: @unchecked Sendable {
    public let name: String
    public let shape: [Int]
    public let value: Buffer
    public private(set) var grad: Buffer?
    public var count: Int { value.count }
    /// Changes whenever the values are replaced through `assign` or the parameter becomes
    /// trainable or frozen, so copies derived from a frozen parameter (packed weights) know
    /// when they are stale. The optimiser only updates trainable parameters, whose values are
    /// never copied.
    public private(set) var version = 0

    /// A parameter named `name` of `shape`, zero or holding `values`; frozen until `trainable` is set.
    public init(_ name: String, _ shape: [Int], _ values: [Float]? = nil) {
        self.name = name
        self.shape = shape
        value = values.map { Buffer($0) } ?? Buffer(shape.reduce(1, *))
    }

    public var trainable: Bool {
        get { grad != nil }
        set {
            if newValue != (grad != nil) { version &+= 1 }
            grad = newValue ? (grad ?? Buffer(count)) : nil
        }
    }

    /// Replace the values (count must match).
    public func assign(_ values: [Float]) {
        precondition(values.count == count, "\(name): \(values.count) values for \(count)")
        value.p.update(from: values, count: count)
        version &+= 1
    }

    public var tensor: Tensor { Tensor(shape: shape, scalars: value.array) }

    /// Weight decay applies to matrices (and conv kernels), not to biases, norms, LayerScale,
    /// the class token or position embeddings — timm's and PEFT's convention.
    public var decays: Bool { shape.count >= 2 && !name.hasSuffix("pos_embed") && !name.hasSuffix("cls_token") && !name.hasSuffix("reg_token") }
}
