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

    init(_ name: String, weight: Parameter, bias: Parameter?, inFeatures: Int? = nil) {
        self.name = name
        self.weight = weight
        self.bias = bias
        outFeatures = weight.shape[0]
        self.inFeatures = inFeatures ?? weight.shape[1]
    }

    /// out (R, out) = inp (R, in) Wᵀ + b (+ LoRA, whose x Aᵀ (R, r) is kept in `loraCache`).
    /// Rows are split across workers; BLAS must be single-threaded.
    func forward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, rows: Int, loraCache: UnsafeMutablePointer<Float>?) {
        let o = SendablePointer(out), x = SendablePointer(UnsafeMutablePointer(mutating: inp)), z = loraCache.map { SendablePointer($0) }
        let I = inFeatures, O = outFeatures
        Parallel.ranges(rows, minChunk: 16) { r in
            let n = r.count, lo = r.lowerBound
            BLAS.sgemm(o.p + lo * O, x.p + lo * I, weight.value.p, transB: true, m: n, n: O, k: I)
            if let bias { addBias(o.p + lo * O, bias.value.p, rows: n, cols: O) }
            if let lora, let z {
                BLAS.sgemm(z.p + lo * lora.rank, x.p + lo * I, lora.a.value.p, transB: true, m: n, n: lora.rank, k: I)
                BLAS.sgemm(o.p + lo * O, z.p + lo * lora.rank, lora.b.value.p, transB: true, m: n, n: O, k: lora.rank, alpha: lora.scaling, beta: 1)
            }
        }
    }

    /// Gradients of the trainable parts from dout (R, out); dinp (R, in) written (or added) when given.
    /// `scratch` holds R · r floats when the layer has LoRA. BLAS must be single-threaded.
    func backward(dinp: UnsafeMutablePointer<Float>?, accumulate: Bool, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>,
                  rows: Int, loraCache: UnsafeMutablePointer<Float>?, scratch: UnsafeMutablePointer<Float>) {
        let I = inFeatures, O = outFeatures
        let dO = SendablePointer(UnsafeMutablePointer(mutating: dout)), x = SendablePointer(UnsafeMutablePointer(mutating: inp))
        if let g = weight.grad {
            // dW (O, I) += doutᵀ inp, split over output features.
            let gp = SendablePointer(g.p)
            Parallel.ranges(O, minChunk: 8) { r in
                BLAS.sgemm(gp.p + r.lowerBound * I, dO.p + r.lowerBound, transA: true, x.p, m: r.count, n: I, k: rows, beta: 1, lda: O)
            }
        }
        if let bias, let g = bias.grad {
            let gp = SendablePointer(g.p)
            Parallel.ranges(O, minChunk: 64) { r in
                for row in 0..<rows { let d = dO.p + row * O; for i in r { gp.p[i] += d[i] } }
            }
        }
        var dz: SendablePointer<Float>? = nil
        if let lora, let z = loraCache {
            let s = lora.scaling, k = lora.rank
            if let g = lora.b.grad { BLAS.sgemm(g.p, dout, transA: true, z, m: O, n: k, k: rows, alpha: s, beta: 1) }
            let sc = SendablePointer(scratch)
            Parallel.ranges(rows, minChunk: 16) { r in
                BLAS.sgemm(sc.p + r.lowerBound * k, dO.p + r.lowerBound * O, lora.b.value.p, m: r.count, n: k, k: O, alpha: s)
            }
            if let g = lora.a.grad {
                let gp = SendablePointer(g.p)
                Parallel.ranges(I, minChunk: 32) { r in
                    BLAS.sgemm(gp.p + r.lowerBound, sc.p, transA: true, x.p + r.lowerBound, m: k, n: r.count, k: rows, beta: 1, lda: k, ldb: I, ldc: I)
                }
            }
            dz = sc
        }
        guard let dinp else { return }
        let di = SendablePointer(dinp)
        Parallel.ranges(rows, minChunk: 16) { r in
            let lo = r.lowerBound
            BLAS.sgemm(di.p + lo * I, dO.p + lo * O, weight.value.p, m: r.count, n: I, k: O, beta: accumulate ? 1 : 0)
            if let lora, let dz { BLAS.sgemm(di.p + lo * I, dz.p + lo * lora.rank, lora.a.value.p, m: r.count, n: I, k: lora.rank, beta: 1) }
        }
    }
}
