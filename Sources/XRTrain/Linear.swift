// A linear layer y = x Wᵀ + b with an optional LoRA branch + s · (x Aᵀ) Bᵀ (PEFT's layout:
// lora_A (r, in), lora_B (out, r), s = alpha / r), forward and backward on OpenBLAS, or on the
// packed kernel for frozen weights and for trainable ones between `beginPackedProducts` and
// `endPackedProducts`.
import Foundation
import XRTensor
import XRKernels

public final class LoRA: @unchecked Sendable {
    public let a: Parameter // (r, in)
    public let b: Parameter // (out, r)
    public let rank: Int
    public let alpha: Double
    /// Dropout probability on the branch input while training.
    public var dropout: Float = 0
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

/// A LoRA site's saved activations: z = x' Aᵀ (R, r), and with dropout the dropped input x' and
/// the scaled mask (R, in).
final class LoRAActivations {
    let z: Buffer
    let xd: Buffer?
    let mask: Buffer?
    init(z: Buffer, xd: Buffer?, mask: Buffer?) { self.z = z; self.xd = xd; self.mask = mask }
}

public final class Linear: @unchecked Sendable {
    public let name: String
    public let weight: Parameter // (out, in)
    public let bias: Parameter?
    public var lora: LoRA?
    public let inFeatures: Int, outFeatures: Int
    /// A frozen weight packed for `packedGEMM`, as Wᵀ (forward) and as W (input gradient), and
    /// the weight version it was packed from. Trainable weights change every step and go
    /// through OpenBLAS, unless packed for one pass (`beginPackedProducts`).
    private var packs: [Bool: (version: Int, matrix: PackedMatrix)] = [:]

    /// The frozen weight packed as Wᵀ (`transposed`, for out = inp · Wᵀ) or as W (for
    /// dinp = dout · W), packed again when its values changed; nil while it is trainable.
    private func packed(transposed: Bool) -> PackedMatrix? {
        guard weight.grad == nil else {
            packs = [:]
            return stepPack?.transposed == transposed ? stepPack?.matrix : nil
        }
        if let p = packs[transposed], p.version == weight.version { return p.matrix }
        let m =
            transposed
            ? PackedMatrix(transposing: weight.value.p, rows: outFeatures, cols: inFeatures)
            : PackedMatrix(weight.value.p, rows: outFeatures, cols: inFeatures)
        packs[transposed] = (weight.version, m)
        return m
    }

    /// A trainable weight packed for one pass (`beginPackedProducts`), until `endPackedProducts`.
    private var stepPack: (transposed: Bool, matrix: PackedMatrix)?
    /// Packings kept between passes so they are filled, not allocated, each time.
    private var stepPackStorage: [Bool: PackedMatrix] = [:]

    /// Packs the weight from its current values — as Wᵀ for the forward (`transposed`) or as W for
    /// the input gradient — so its products run on the packed kernel until `endPackedProducts`,
    /// also while it is trainable (a frozen weight is packed anyway). The caller brackets one
    /// forward or one backward with the pair, so a packing never outlives an optimiser update.
    func beginPackedProducts(transposed: Bool) {
        guard weight.grad != nil else { return }
        let m =
            stepPackStorage[transposed]
            ?? (transposed ? PackedMatrix(k: inFeatures, n: outFeatures) : PackedMatrix(k: outFeatures, n: inFeatures))
        stepPackStorage[transposed] = m
        if transposed { m.fillTransposed(weight.value.p) } else { m.fill(weight.value.p) }
        stepPack = (transposed, m)
    }

    /// Products of a trainable weight go back to OpenBLAS (`beginPackedProducts`).
    func endPackedProducts() { stepPack = nil }

    /// The weight packed as Wᵀ for `packedProduct` while it is frozen (the block forward the
    /// encoder shares reads it); nil while it is trainable.
    var frozenPack: PackedMatrix? { packed(transposed: true) }

    init(_ name: String, weight: Parameter, bias: Parameter?, inFeatures: Int? = nil) {
        self.name = name
        self.weight = weight
        self.bias = bias
        outFeatures = weight.shape[0]
        self.inFeatures = inFeatures ?? weight.shape[1]
    }

    /// out (R, out) = inp (R, in) Wᵀ (no LoRA) finished by `finish` (fused into the packed kernel's
    /// stores for a frozen weight, a pass over each finished block on OpenBLAS), then
    /// `epilogue(rows, columns)` on each finished block.
    func product(
        _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, rows: Int, finish: PackedEpilogue = .none,
        epilogue: (Range<Int>, Range<Int>) -> Void = { _, _ in }
    ) {
        if let w = packed(transposed: true) {
            packedProduct(out, inp, w, rows: rows, finish: finish, epilogue: epilogue)
        } else {
            let O = outFeatures, o = SendablePointer(out)
            linearForward(out, inp, weight.value.p, rows: rows, inFeatures: inFeatures, outFeatures: O) { r in
                finish.advanced(rows: r.lowerBound).apply(o.p + r.lowerBound * O, ldc: O, rows: r.count, columns: 0..<O)
                epilogue(r, 0..<O)
            }
        }
    }

    /// out (R, out) = inp (R, in) Wᵀ + b (+ LoRA: s · (x' Aᵀ) Bᵀ with x' = inp, or inp with
    /// dropout when `dropoutSeed` is given). Rows are split across workers; BLAS must be single-threaded.
    func forward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, rows: Int, lora act: LoRAActivations?, dropoutSeed: UInt64? = nil) {
        let o = SendablePointer(out), I = inFeatures, O = outFeatures
        var x = SendablePointer(UnsafeMutablePointer(mutating: inp))
        if rows == 1 && lora == nil {
            // One row (decoding): a matrix-vector product without GEMM packing, its output
            // features split across workers (it is bound by reading the weights).
            let w = SendablePointer(weight.value.p), xi = x
            Parallel.ranges(O, minChunk: 256) { r in
                BLAS.sgemv(o.p + r.lowerBound, w.p + r.lowerBound * I, xi.p, m: r.count, n: I)
            }
            if let bias { addBias(out, bias.value.p, rows: 1, cols: O) }
            return
        }
        product(out, inp, rows: rows, finish: bias.map { .bias($0.value.p) } ?? .none)
        guard let lora, let act else { return }
        if let seed = dropoutSeed, lora.dropout > 0, let xd = act.xd, let mask = act.mask {
            // Inverted dropout: keep with probability 1 − p, scale kept values by 1 / (1 − p).
            var rng = XRRandom(seed: seed, stream: [0xD409])
            let keep = 1 - lora.dropout, scale = 1 / keep
            for i in 0..<(rows * I) {
                let m: Float = rng.nextFloat() < keep ? scale : 0
                mask.p[i] = m
                xd.p[i] = x.p[i] * m
            }
            x = SendablePointer(xd.p)
        } else if let mask = act.mask {
            mask.p.update(repeating: 1, count: rows * I)
            act.xd!.p.update(from: x.p, count: rows * I)
        }
        let z = SendablePointer(act.z.p)
        Parallel.ranges(rows, minChunk: 16) { r in
            let n = r.count, lo = r.lowerBound
            BLAS.sgemm(z.p + lo * lora.rank, x.p + lo * I, lora.a.value.p, transB: true, m: n, n: lora.rank, k: I)
            BLAS.sgemm(o.p + lo * O, z.p + lo * lora.rank, lora.b.value.p, transB: true, m: n, n: O, k: lora.rank, alpha: lora.scaling, beta: 1)
        }
    }

    /// Gradients of the trainable parts from dout (R, out); dinp (R, in) written (or added) when given.
    /// `scratch` holds R · r floats when the layer has LoRA. With `packScratch` (at least
    /// `PackedMatrix.alignedStorage(k: R, n: in)` floats) the weight gradient runs on the packed
    /// kernel: inp packed there, dout read in place. BLAS must be single-threaded.
    func backward(
        dinp: UnsafeMutablePointer<Float>?, accumulate: Bool, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>,
        rows: Int, lora act: LoRAActivations?, scratch: UnsafeMutablePointer<Float>, packScratch: UnsafeMutablePointer<Float>? = nil
    ) {
        let I = inFeatures, O = outFeatures
        let dO = SendablePointer(UnsafeMutablePointer(mutating: dout)), x = SendablePointer(UnsafeMutablePointer(mutating: inp))
        if let g = weight.grad, let packScratch, rows > 0 {
            // dW (O, I) += doutᵀ inp with inp packed as B (R, I).
            let b = PackedMatrix(k: rows, n: I, in: packScratch)
            b.fill(inp)
            packedProductTransposedA(g.p, dout, b, rows: O, lda: O, accumulate: true)
        } else if let g = weight.grad {
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
        if let lora, let act {
            let s = lora.scaling, k = lora.rank, z = act.z.p
            let xin = SendablePointer(act.xd?.p ?? x.p) // the branch's (dropped) input
            if let g = lora.b.grad { BLAS.sgemm(g.p, dout, transA: true, z, m: O, n: k, k: rows, alpha: s, beta: 1) }
            let sc = SendablePointer(scratch)
            Parallel.ranges(rows, minChunk: 16) { r in
                BLAS.sgemm(sc.p + r.lowerBound * k, dO.p + r.lowerBound * O, lora.b.value.p, m: r.count, n: k, k: O, alpha: s)
            }
            if let g = lora.a.grad {
                let gp = SendablePointer(g.p)
                Parallel.ranges(I, minChunk: 32) { r in
                    BLAS.sgemm(gp.p + r.lowerBound, sc.p, transA: true, xin.p + r.lowerBound, m: k, n: r.count, k: rows, beta: 1, lda: k, ldb: I, ldc: I)
                }
            }
            dz = sc
        }
        guard let dinp else { return }
        let di = SendablePointer(dinp)
        if let w = packed(transposed: false) {
            packedProduct(dinp, dout, w, rows: rows, accumulate: accumulate)
        } else {
            Parallel.ranges(rows, minChunk: 16) { r in
                let lo = r.lowerBound
                BLAS.sgemm(di.p + lo * I, dO.p + lo * O, weight.value.p, m: r.count, n: I, k: O, beta: accumulate ? 1 : 0)
            }
        }
        guard let lora, let dz, let act else { return }
        if let mask = act.mask, let xd = act.xd {
            // Through the dropout: dx += (dz A) ⊙ mask (xd is free now and holds dz A).
            let t = SendablePointer(xd.p), m = SendablePointer(mask.p)
            Parallel.ranges(rows, minChunk: 16) { r in
                let lo = r.lowerBound
                BLAS.sgemm(t.p + lo * I, dz.p + lo * lora.rank, lora.a.value.p, m: r.count, n: I, k: lora.rank)
                for j in (lo * I)..<(r.upperBound * I) { di.p[j] += t.p[j] * m.p[j] }
            }
        } else {
            Parallel.ranges(rows, minChunk: 16) { r in
                let lo = r.lowerBound
                BLAS.sgemm(di.p + lo * I, dz.p + lo * lora.rank, lora.a.value.p, m: r.count, n: I, k: lora.rank, beta: 1)
            }
        }
    }
}
