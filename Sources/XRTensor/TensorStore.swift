import Foundation

/// A checkpoint file seen as named tensors, whatever its format (safetensors, PyTorch `.pt`):
/// what model loaders read weights through.
public protocol TensorStore: AnyObject, Sendable {
    /// The file the tensors come from.
    var url: URL { get }
    /// Tensor names, sorted.
    var names: [String] { get }
    /// The shape of a tensor, or nil when there is no tensor of that name.
    func shape(_ name: String) -> [Int]?
    /// The tensor converted to f32.
    func tensor(_ name: String) throws -> Tensor
}

extension SafeTensorsFile: TensorStore {
    public func shape(_ name: String) -> [Int]? { info(name)?.shape }
}
