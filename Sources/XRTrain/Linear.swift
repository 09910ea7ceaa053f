// A linear layer y = x Wᵀ + b with an optional LoRA branch + s · (x Aᵀ) Bᵀ (PEFT's layout:
// lora_A (r, in), lora_B (out, r), s = alpha / r), forward and backward on OpenBLAS.
import Foundation
import XRKernels

public final class LoRA: @unchecked Sendable {
    public let a: Parameter   // (r, in)
    public let b: Parameter   // (out, r)
    public let rank: Int
    public let alpha: Double
    public var scaling: Float { Float(alpha / Double(rank)) }
    init(prefix: String, rank: Int, alpha: Double, inFeatures: Int, outFeatures: Int, a: [Float]) {
        self.rank = rank
        self.alpha = alpha
        self.a = Parameter(prefix + ".lora_A.weight", [rank, inFeatures], a)
        self.b = Parameter(prefix + ".lora_B.weight", [outFeatures, rank])
        self.a.trainable = true
        self.b.trainable = true
    }
}

public final class Linear: @unchecked Sendable {
    public let name: String
    public let weight: Parameter   // (out, in)
    public let bias: Parameter?
    public var lora: LoRA?
    public let inFeatures: Int, outFeatures: Int

    init(_ name: String, weight: Parameter, bias: Parameter?) {
        self.name = name
        self.weight = weight
        self.bias = bias
        outFeatures = weight.shape[0]
        inFeatures = weight.shape[1]
    }

    /// out (R, out) = inp (R, in) Wᵀ + b (+ LoRA, whose x Aᵀ (R, r) is kept in `loraCache`).
    func forward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, rows: Int, loraCache: UnsafeMutablePointer<Float>?) {
        BLAS.sgemm(out, inp, weight.value.p, transB: true, m: rows, n: outFeatures, k: inFeatures)
        if let bias { addBias(out, bias.value.p, rows: rows, cols: outFeatures) }
        if let lora, let z = loraCache {
            BLAS.sgemm(z, inp, lora.a.value.p, transB: true, m: rows, n: lora.rank, k: inFeatures)
            BLAS.sgemm(out, z, lora.b.value.p, transB: true, m: rows, n: outFeatures, k: lora.rank, alpha: lora.scaling, beta: 1)
        }
    }

    /// Gradients of the trainable parts from dout (R, out); dinp (R, in) written (or added) when given.
    /// `scratch` holds R · r floats when the layer has LoRA.
    func backward(dinp: UnsafeMutablePointer<Float>?, accumulate: Bool, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>,
                  rows: Int, loraCache: UnsafeMutablePointer<Float>?, scratch: UnsafeMutablePointer<Float>) {
        if let g = weight.grad {
            BLAS.sgemm(g.p, dout, transA: true, inp, m: outFeatures, n: inFeatures, k: rows, beta: 1)
        }
        if let bias, let g = bias.grad { addColumnSums(g.p, dout, rows: rows, cols: outFeatures) }
        var dz: UnsafeMutablePointer<Float>? = nil
        if let lora, let z = loraCache {
            let s = lora.scaling
            if let g = lora.b.grad { BLAS.sgemm(g.p, dout, transA: true, z, m: outFeatures, n: lora.rank, k: rows, alpha: s, beta: 1) }
            BLAS.sgemm(scratch, dout, lora.b.value.p, m: rows, n: lora.rank, k: outFeatures, alpha: s)
            if let g = lora.a.grad { BLAS.sgemm(g.p, scratch, transA: true, inp, m: lora.rank, n: inFeatures, k: rows, beta: 1) }
            dz = scratch
        }
        guard let dinp else { return }
        BLAS.sgemm(dinp, dout, weight.value.p, m: rows, n: inFeatures, k: outFeatures, beta: accumulate ? 1 : 0)
        if let lora, let dz { BLAS.sgemm(dinp, dz, lora.a.value.p, m: rows, n: inFeatures, k: lora.rank, beta: 1) }
    }
}
