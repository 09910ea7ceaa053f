// The arithmetic an encoder's linear layers run in, and a frozen linear layer's weight packed
// for it. Everything else in the encoder (patch embedding, attention, softmax, LayerNorm, RoPE,
// SwiGLU) stays fp32 whatever the precision.
import Foundation
import XRTensor
import XRKernels

/// The precision of an inference encoder's linear layers (qkv, proj, fc1, fc2 of every block).
/// Recipes spell it `model.precision`, the CLI `--precision`, package manifests `precision`.
public enum Precision: String, Codable, Sendable, CaseIterable {
    /// fp32 weights on the packed fp32 kernel (`packedProduct`).
    case fp32
    /// Weights quantised once at load per output channel to symmetric int8, activations per row
    /// on the fly, int32 products dequantised in the same fused epilogues (`int8Product`). The
    /// fp32 weights of those layers are not kept.
    case int8

    /// Parses a user's spelling ("fp32" / "int8", any case), or nil.
    public init?(parsing text: String) { self.init(rawValue: text.lowercased()) }

    /// What a feature computed at this precision depends on beyond the weights and the image, for
    /// the feature cache's key: nothing for fp32; for int8 the activation code range of the kernel
    /// chosen at run time ("int8-a255" with 8-bit activations on AVX-512 VNNI, "int8-a127" on the
    /// AVX2 fallback), so features from the two never share an entry.
    public var featureIdentity: String {
        switch self {
        case .fp32: return rawValue
        case .int8: return "int8-a\(Int8Kernel.default.activationMax)"
        }
    }

    /// What the linear layers run on at this precision on this CPU, for `bench` and `inspect`:
    /// "packed fp32 kernel", or the default int8 kernel with its activation range
    /// (`Int8Kernel.summary`, chosen at run time: 8-bit activations on AVX-512 VNNI, 7-bit on AVX2).
    public var kernelSummary: String {
        switch self {
        case .fp32: return "packed fp32 kernel"
        case .int8: return "int8 kernel \(Int8Kernel.summary)"
        }
    }

    /// The accepted spellings, for error messages: "fp32, int8".
    public static var spellings: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

/// A frozen linear layer's weight W (out, in), packed once for the product of its precision.
public enum PackedLinear: @unchecked Sendable {
    case fp32(PackedMatrix)
    case int8(Int8PackedMatrix)

    /// W (n, k) row-major — (out, in), as PyTorch stores it — packed for `precision`.
    public init(transposing w: UnsafePointer<Float>, rows n: Int, cols k: Int, precision: Precision) {
        switch precision {
        case .fp32: self = .fp32(PackedMatrix(transposing: w, rows: n, cols: k))
        case .int8: self = .int8(Int8PackedMatrix(transposing: w, rows: n, cols: k))
        }
    }

    /// The precision the weight is packed for.
    public var precision: Precision {
        switch self {
        case .fp32: return .fp32
        case .int8: return .int8
        }
    }

    /// Output features (W's rows).
    public var n: Int {
        switch self {
        case let .fp32(p): return p.n
        case let .int8(p): return p.n
        }
    }

    /// W (n, k) row-major: the weight itself for fp32, its dequantised codes sw[j] · qw[j, k] for int8.
    public func transposedValues() -> [Float] {
        switch self {
        case let .fp32(p): return p.transposedValues()
        case let .int8(p):
            var w = [Float](repeating: 0, count: p.n * p.k)
            for j in 0..<p.n { for kk in 0..<p.k { w[j * p.k + kk] = p.scales[j] * Float(p.code(row: kk, col: j)) } }
            return w
        }
    }

    /// out (rows, n; rows `ldc` apart) = inp (rows, k; rows `lda` apart) · Wᵀ, only `columns` of
    /// it when given (starting at a multiple of 16), with `finish` fused into the stores — on
    /// `packedProduct` or `int8Product` by the weight's precision (int8 on `int8Kernel`).
    public func product(
        _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, rows: Int, lda: Int? = nil, ldc: Int? = nil,
        columns: Range<Int>? = nil, finish: PackedEpilogue = .none, int8Kernel: Int8Kernel = .default
    ) {
        switch self {
        case let .fp32(p): packedProduct(out, inp, p, rows: rows, lda: lda, ldc: ldc, columns: columns, finish: finish)
        case let .int8(p): int8Product(out, inp, p, rows: rows, lda: lda, ldc: ldc, kernel: int8Kernel, columns: columns, finish: finish)
        }
    }
}
