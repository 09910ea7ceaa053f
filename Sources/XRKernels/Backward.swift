// Backward passes of the ViT ops, beside the forwards in this folder, and the forward variants
// that save what the backward needs. R rows, C channels, T tokens, D head dimension.
// Gradients are accumulated (`+=`) into parameter gradients; input gradients are written unless
// `accumulate` says to add.
import Foundation

/// LayerNorm forward that also saves each row's mean and 1/std for the backward.
public func layerNormForward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                             _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
                             rows: Int, cols: Int, eps: Float,
                             mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>) {
    layerNormForward(out, inp, weight, bias, rows: rows, cols: cols, eps: eps)
    for r in 0..<rows {
        let x = inp + r * cols
        var s = 0.0 as Float
        for i in 0..<cols { s += x[i] }
        let m = s / Float(cols)
        var q = 0.0 as Float
        for i in 0..<cols { let d = x[i] - m; q += d * d }
        mean[r] = m
        rstd[r] = 1 / (q / Float(cols) + eps).squareRoot()
    }
}

/// LayerNorm backward. x̂ = (x − mean)·rstd, g = dy ⊙ weight:
/// dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)); dweight += Σ_rows dy ⊙ x̂; dbias += Σ_rows dy.
public func layerNormBackward(dx: UnsafeMutablePointer<Float>?, accumulate: Bool, dy: UnsafePointer<Float>,
                              x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                              mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                              dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?,
                              rows: Int, cols: Int) {
    let n = Float(cols)
    for r in 0..<rows {
        let xr = x + r * cols, g = dy + r * cols, m = mean[r], s = rstd[r]
        // The two row sums in vector lanes (scalar float reductions do not vectorise).
        var g8 = SIMD8<Float>(repeating: 0), gx8 = SIMD8<Float>(repeating: 0)
        let m8 = SIMD8<Float>(repeating: m), s8 = SIMD8<Float>(repeating: s)
        var i = 0
        while i + 8 <= cols {
            let xh = (UnsafeRawPointer(xr + i).loadUnaligned(as: SIMD8<Float>.self) - m8) * s8
            let gw = UnsafeRawPointer(g + i).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(weight + i).loadUnaligned(as: SIMD8<Float>.self)
            g8 += gw
            gx8 = gx8.addingProduct(gw, xh)
            i += 8
        }
        var sumG = g8.sum(), sumGX = gx8.sum()
        while i < cols {
            let xh = (xr[i] - m) * s, gw = g[i] * weight[i]
            sumG += gw; sumGX += gw * xh
            i += 1
        }
        if let dweight { for i in 0..<cols { dweight[i] += g[i] * ((xr[i] - m) * s) } }
        if let dbias { for i in 0..<cols { dbias[i] += g[i] } }
        guard let dx else { continue }
        let a = sumG / n, b = sumGX / n
        let o = dx + r * cols
        for i in 0..<cols {
            let xh = (xr[i] - m) * s
            let v = s * (g[i] * weight[i] - a - xh * b)
            if accumulate { o[i] += v } else { o[i] = v }
        }
    }
}

/// d GELU(u) / du = Φ(u) + u·φ(u) for the exact (erf) GELU; du = dy ⊙ GELU'(u), in place on dy.
public func geluBackward(_ dy: UnsafeMutablePointer<Float>, preActivation u: UnsafePointer<Float>, count: Int) {
    let invSqrt2: Float = 0.707_106_781_186_547_5, invSqrt2Pi: Float = 0.398_942_280_401_432_7
    let n8 = count & ~7
    var i = 0
    while i < n8 {
        let v = UnsafeRawPointer(u + i).loadUnaligned(as: SIMD8<Float>.self)
        let d = UnsafeRawPointer(dy + i).loadUnaligned(as: SIMD8<Float>.self)
        let (e, g) = simdErfAndGaussian(v * invSqrt2)   // g = exp(−u²/2)
        let cdf = 0.5 * (1 + e), pdf = g * invSqrt2Pi
        UnsafeMutableRawPointer(dy + i).storeBytes(of: d * (cdf + v * pdf), as: SIMD8<Float>.self)
        i += 8
    }
    if i < count {
        var v = SIMD8<Float>(), d = SIMD8<Float>()
        for j in i..<count { v[j - i] = u[j]; d[j - i] = dy[j] }
        let (e, gauss) = simdErfAndGaussian(v * invSqrt2)
        let g = d * (0.5 * (1 + e) + v * (gauss * invSqrt2Pi))
        for j in i..<count { dy[j] = g[j - i] }
    }
}

/// Softmax backward over rows: dx = scale · p ⊙ (dy − Σ_j dy_j p_j), written into dy.
public func softmaxBackward(_ dy: UnsafeMutablePointer<Float>, probabilities p: UnsafePointer<Float>, rows: Int, cols: Int, scale: Float = 1) {
    for r in 0..<rows {
        let d = dy + r * cols, q = p + r * cols
        // Σ dy·p in vector lanes (a scalar float reduction does not vectorise).
        var s8 = SIMD8<Float>(repeating: 0)
        var j = 0
        while j + 8 <= cols {
            s8 = s8.addingProduct(UnsafeRawPointer(d + j).loadUnaligned(as: SIMD8<Float>.self), UnsafeRawPointer(q + j).loadUnaligned(as: SIMD8<Float>.self))
            j += 8
        }
        var s = s8.sum()
        while j < cols { s += d[j] * q[j]; j += 1 }
        if scale == 1 { for j in 0..<cols { d[j] = q[j] * (d[j] - s) } } else { for j in 0..<cols { d[j] = scale * q[j] * (d[j] - s) } }
    }
}

/// Column sums: out (C) += Σ_rows x (R, C) — the gradient of a bias.
public func addColumnSums(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, rows: Int, cols: Int) {
    for r in 0..<rows {
        let p = x + r * cols
        for i in 0..<cols { out[i] += p[i] }
    }
}

/// Scratch floats `attentionTrainingBackward` needs for `workers` workers: per worker a T × T
/// block and one head's packings (a D × T and a T × D operand).
public func attentionTrainingScratchSize(tokens T: Int, headDim D: Int, workers: Int) -> Int {
    max(1, workers) * (T * T + PackedMatrix.alignedStorage(k: D, n: T) + PackedMatrix.alignedStorage(k: T, n: D))
}

/// Runs `body(next, scratch, wide, tall)` once per worker over the (batch, head) pairs, claimed
/// one at a time (`Parallel.claiming`), each worker with its own block of `scratch` and its two
/// packings.
private func claimingHeads(_ pairs: Int, scratch: UnsafeMutablePointer<Float>, tokens T: Int, headDim D: Int,
                           _ body: (() -> Int?, UnsafeMutablePointer<Float>, PackedMatrix, PackedMatrix) -> Void) {
    let size = attentionTrainingScratchSize(tokens: T, headDim: D, workers: 1), sc = SendablePointer(scratch)
    Parallel.claiming(pairs) { w, next in
        let ws = sc.p + w * size
        let packs = ws + T * T
        let wide = PackedMatrix(k: D, n: T, in: packs)
        let tall = PackedMatrix(k: T, n: D, in: packs + PackedMatrix.alignedStorage(k: D, n: T))
        withoutActuallyEscaping(next) { next in body(next, ws, wide, tall) }
    }
}

/// Backward of attention over a fused qkv buffer (`attentionForward` with `probabilities`):
/// dqkv (B·T, 3C) from dout (B·T, C), with P (B, H, T, T) saved.
/// dV = Pᵀ dO; dP = dO Vᵀ; dS = scale · P ⊙ (dP − rowsum(dP ⊙ P)); dQ = dS K; dK = dSᵀ Q — each
/// product on the packed-operand kernel (Pᵀ and dSᵀ read in place, as transposed A operands).
/// `scratch` holds `attentionTrainingScratchSize` floats.
public func attentionTrainingBackward(dqkv: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                      qkv: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
                                      scratch: UnsafeMutablePointer<Float>,
                                      batch B: Int, tokens T: Int, heads H: Int, headDim D: Int) {
    let C = H * D, ld = 3 * C, scale = 1 / Float(D).squareRoot()
    let dq = SendablePointer(dqkv), dO = SendablePointer(UnsafeMutablePointer(mutating: dout))
    let q = SendablePointer(UnsafeMutablePointer(mutating: qkv)), pp = SendablePointer(UnsafeMutablePointer(mutating: probabilities))
    claimingHeads(B * H, scratch: scratch, tokens: T, headDim: D) { next, ws, wide, tall in
        let dp = ws
        while let bh = next() {
            let b = bh / H, h = bh % H
            let base = q.p + b * T * ld + h * D, dbase = dq.p + b * T * ld + h * D
            let p = pp.p + bh * T * T, go = dO.p + b * T * C + h * D
            // dV (T, D) = Pᵀ (T, T) · dO (T, D)
            tall.fill(go, ld: C)
            packedGEMM(dbase + 2 * C, ldc: ld, p, lda: T, tall, rows: T, columns: 0..<D, transposedA: true)
            // dP (T, T) = dO (T, D) · Vᵀ, then dS
            wide.fillTransposed(base + 2 * C, ld: ld)
            packedGEMM(dp, ldc: T, go, lda: C, wide, rows: T, columns: 0..<T)
            softmaxBackward(dp, probabilities: p, rows: T, cols: T, scale: scale)
            // dQ = dS · K ; dK = dSᵀ · Q
            tall.fill(base + C, ld: ld)
            packedGEMM(dbase, ldc: ld, dp, lda: T, tall, rows: T, columns: 0..<D)
            tall.fill(base, ld: ld)
            packedGEMM(dbase + C, ldc: ld, dp, lda: T, tall, rows: T, columns: 0..<D, transposedA: true)
        }
    }
}

/// The class token's row of `attentionForward` (saving its probabilities): for each image only query row 0 (keys and
/// values of every token), for a last block whose other rows no output reads. out (B, C): one
/// row per image; probabilities (B, H, T): the class token's softmax row per head.
public func classTokenAttentionForward(out: UnsafeMutablePointer<Float>, qkv: UnsafePointer<Float>,
                                       probabilities: UnsafeMutablePointer<Float>,
                                       batch B: Int, tokens T: Int, heads H: Int, headDim D: Int) {
    let C = H * D, ld = 3 * C, scale = 1 / Float(D).squareRoot()
    let o = SendablePointer(out), q = SendablePointer(UnsafeMutablePointer(mutating: qkv)), pp = SendablePointer(probabilities)
    Parallel.ranges(B * H) { range in
        for bh in range {
            let b = bh / H, h = bh % H
            let base = q.p + b * T * ld + h * D, p = pp.p + bh * T
            for j in 0..<T { p[j] = scale * dot(base, base + j * ld + C, D) }
            softmaxRows(p, rows: 1, cols: T)
            let y = o.p + b * C + h * D
            y.update(repeating: 0, count: D)
            for j in 0..<T { axpy(p[j], base + j * ld + 2 * C, y, D) }
        }
    }
}

/// Backward of `classTokenAttentionForward`: dqkv (B·T, 3C), every row written, from dout (B, C),
/// the gradient of the class-token rows only. Per head, with p the saved row and dO its gradient:
/// dV_j = p_j dO; dS_j = p_j (dO·v_j − Σ_i p_i dO·v_i); dQ_0 = scale Σ_j dS_j k_j; dK_j = scale dS_j q_0;
/// query gradients of the other rows are zero.
public func classTokenAttentionBackward(dqkv: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                        qkv: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
                                        scratch: UnsafeMutablePointer<Float>,
                                        batch B: Int, tokens T: Int, heads H: Int, headDim D: Int) {
    let C = H * D, ld = 3 * C, scale = 1 / Float(D).squareRoot()
    let dq = SendablePointer(dqkv), dO = SendablePointer(UnsafeMutablePointer(mutating: dout))
    let q = SendablePointer(UnsafeMutablePointer(mutating: qkv)), pp = SendablePointer(UnsafeMutablePointer(mutating: probabilities))
    let sc = SendablePointer(scratch)
    Parallel.claiming(B * H) { w, next in
        let ds = sc.p + w * T
        while let bh = next() {
            let b = bh / H, h = bh % H
            let base = q.p + b * T * ld + h * D, dbase = dq.p + b * T * ld + h * D
            let p = pp.p + bh * T, g = dO.p + b * C + h * D
            var s = 0 as Float
            for j in 0..<T {
                ds[j] = dot(g, base + j * ld + 2 * C, D)
                s += ds[j] * p[j]
            }
            for j in 0..<T { ds[j] = scale * p[j] * (ds[j] - s) }
            dbase.update(repeating: 0, count: D)
            for j in 0..<T {
                let row = dbase + j * ld
                if j > 0 { row.update(repeating: 0, count: D) }
                axpy(ds[j], base + j * ld + C, dbase, D)
                scaled(base, ds[j], row + C, D)
                scaled(g, p[j], row + 2 * C, D)
            }
        }
    }
}

@inline(__always)
private func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var s8 = SIMD8<Float>(), i = 0
    while i + 8 <= n {
        s8 = s8.addingProduct(UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self), UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self))
        i += 8
    }
    var s = s8.sum()
    while i < n { s += a[i] * b[i]; i += 1 }
    return s
}

/// y += a · x over n floats.
@inline(__always)
private func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    var i = 0
    let av = SIMD8<Float>(repeating: a)
    while i + 8 <= n {
        let v = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self).addingProduct(av, UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self))
        UnsafeMutableRawPointer(y + i).storeBytes(of: v, as: SIMD8<Float>.self)
        i += 8
    }
    while i < n { y[i] += a * x[i]; i += 1 }
}

/// y = a · x over n floats.
@inline(__always)
private func scaled(_ x: UnsafePointer<Float>, _ a: Float, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    var i = 0
    while i + 8 <= n {
        UnsafeMutableRawPointer(y + i).storeBytes(of: UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self) * a, as: SIMD8<Float>.self)
        i += 8
    }
    while i < n { y[i] = a * x[i]; i += 1 }
}

/// LayerNorm parameter gradients over a range of columns (so workers can split columns):
/// dweight[i] += Σ_r dy[r, i] · x̂[r, i]; dbias[i] += Σ_r dy[r, i].
public func layerNormParameterGradients(dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?,
                                        dy: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                        mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                                        rows: Int, cols: Int, columns: Range<Int>) {
    for r in 0..<rows {
        let g = dy + r * cols, xr = x + r * cols, m = mean[r], s = rstd[r]
        if let dweight { for i in columns { dweight[i] += g[i] * (xr[i] - m) * s } }
        if let dbias { for i in columns { dbias[i] += g[i] } }
    }
}

/// Multi-head attention with separate query / key / value buffers (row strides ldq, ldk, ldv;
/// head h at column h·D), for causal self-attention and cross-attention. Queries (B·Tq rows),
/// keys and values (B·Tk rows); `causal` masks key j > query i; `keyLengths[b]` masks keys at or
/// beyond it. Saves the probabilities (B, H, Tq, Tk). out (B·Tq, H·D) with stride ldo.
public func attentionForward(out: UnsafeMutablePointer<Float>, ldo: Int,
                             q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int, v: UnsafePointer<Float>, ldv: Int,
                             probabilities: UnsafeMutablePointer<Float>, batch B: Int, queries Tq: Int, keys Tk: Int, heads H: Int, headDim D: Int,
                             causal: Bool, keyLengths: [Int]? = nil) {
    let scale = 1 / Float(D).squareRoot()
    let o = SendablePointer(out), qp = SendablePointer(UnsafeMutablePointer(mutating: q)), kp = SendablePointer(UnsafeMutablePointer(mutating: k))
    let vp = SendablePointer(UnsafeMutablePointer(mutating: v)), pp = SendablePointer(probabilities)
    Parallel.ranges(B * H) { range in
        for bh in range {
            let b = bh / H, h = bh % H
            let p = pp.p + bh * Tq * Tk
            BLAS.sgemm(p, qp.p + b * Tq * ldq + h * D, kp.p + b * Tk * ldk + h * D, transB: true, m: Tq, n: Tk, k: D, alpha: scale, lda: ldq, ldb: ldk, ldc: Tk)
            let len = keyLengths?[b] ?? Tk
            for i in 0..<Tq {
                let row = p + i * Tk
                let limit = min(len, causal ? i + 1 : Tk)
                for j in limit..<Tk { row[j] = -.infinity }
                if limit == 0 { for j in 0..<Tk { row[j] = 0 } ; continue }
                softmaxRows(row, rows: 1, cols: Tk)
            }
            BLAS.sgemm(o.p + b * Tq * ldo + h * D, p, vp.p + b * Tk * ldv + h * D, m: Tq, n: D, k: Tk, lda: Tk, ldb: ldv, ldc: ldo)
        }
    }
}

/// Backward of `attentionForward`: dq, dk, dv (same strides as their inputs) from dout, with the
/// saved probabilities. dq is written; dk and dv are written (each key row belongs to one batch item).
public func attentionBackward(dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
                              dout: UnsafePointer<Float>, ldo: Int,
                              q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int, v: UnsafePointer<Float>, ldv: Int,
                              probabilities: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>,
                              batch B: Int, queries Tq: Int, keys Tk: Int, heads H: Int, headDim D: Int) {
    let scale = 1 / Float(D).squareRoot()
    let dqp = SendablePointer(dq), dkp = SendablePointer(dk), dvp = SendablePointer(dv), dO = SendablePointer(UnsafeMutablePointer(mutating: dout))
    let qp = SendablePointer(UnsafeMutablePointer(mutating: q)), kp = SendablePointer(UnsafeMutablePointer(mutating: k))
    let vp = SendablePointer(UnsafeMutablePointer(mutating: v)), pp = SendablePointer(UnsafeMutablePointer(mutating: probabilities)), sc = SendablePointer(scratch)
    let chunks = max(1, min(Parallel.workers, B * H)), per = (B * H + chunks - 1) / chunks
    Parallel.ranges(chunks) { workers in
        for w in workers {
            let dp = sc.p + w * Tq * Tk
            for bh in (w * per)..<min(B * H, (w + 1) * per) {
                let b = bh / H, h = bh % H
                let p = pp.p + bh * Tq * Tk, go = dO.p + b * Tq * ldo + h * D
                BLAS.sgemm(dvp.p + b * Tk * ldv + h * D, p, transA: true, go, m: Tk, n: D, k: Tq, lda: Tk, ldb: ldo, ldc: ldv)
                BLAS.sgemm(dp, go, vp.p + b * Tk * ldv + h * D, transB: true, m: Tq, n: Tk, k: D, lda: ldo, ldb: ldv, ldc: Tk)
                softmaxBackward(dp, probabilities: p, rows: Tq, cols: Tk)
                BLAS.sgemm(dqp.p + b * Tq * ldq + h * D, dp, kp.p + b * Tk * ldk + h * D, m: Tq, n: D, k: Tk, alpha: scale, lda: Tk, ldb: ldk, ldc: ldq)
                BLAS.sgemm(dkp.p + b * Tk * ldk + h * D, dp, transA: true, qp.p + b * Tq * ldq + h * D, m: Tk, n: D, k: Tq, alpha: scale, lda: Tk, ldb: ldq, ldc: ldk)
            }
        }
    }
}

/// y clamped to [-15, 15] with masked selects (the generic `clamped` is not specialised and runs scalar).
@inline(__always)
func clamp15(_ y: SIMD8<Float>) -> SIMD8<Float> {
    let lo = SIMD8<Float>(repeating: -15), hi = SIMD8<Float>(repeating: 15)
    return y.replacing(with: lo, where: y .< lo).replacing(with: hi, where: y .> hi)
}

/// GPT-2's GELU ("gelu_new"): 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))), in place; and its
/// backward dy ← dy · GELU'(u). tanh(y) = 1 − 2 / (e^{2y} + 1), SIMD with `simdExp`.
public func geluTanhForward(_ x: UnsafeMutablePointer<Float>, count: Int) {
    let c: Float = 0.797_884_560_802_865_4
    let n8 = count & ~7
    var i = 0
    while i < n8 {
        let u = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
        let y = c * (u + 0.044715 * u * u * u)
        let t = 1 - 2 / (simdExp(2 * clamp15(y)) + 1)
        UnsafeMutableRawPointer(x + i).storeBytes(of: 0.5 * u * (1 + t), as: SIMD8<Float>.self)
        i += 8
    }
    while i < count { let u = x[i]; x[i] = 0.5 * u * (1 + tanhf(c * (u + 0.044715 * u * u * u))); i += 1 }
}

public func geluTanhBackward(_ dy: UnsafeMutablePointer<Float>, preActivation u: UnsafePointer<Float>, count: Int) {
    let c: Float = 0.797_884_560_802_865_4
    let n8 = count & ~7
    var i = 0
    while i < n8 {
        let x = UnsafeRawPointer(u + i).loadUnaligned(as: SIMD8<Float>.self)
        let x2 = x * x
        let y = c * (x + 0.044715 * x2 * x)
        let t = 1 - 2 / (simdExp(2 * clamp15(y)) + 1)
        let inner = c * (1 + 0.134145 * x2)
        let d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * inner
        let g = UnsafeRawPointer(dy + i).loadUnaligned(as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(dy + i).storeBytes(of: g * d, as: SIMD8<Float>.self)
        i += 8
    }
    while i < count {
        let x = u[i], x2 = x * x
        let t: Float = tanhf(c * (x + 0.044715 * x2 * x))
        let inner: Float = c * (1 + 0.134145 * x2)
        let d: Float = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * inner
        dy[i] *= d
        i += 1
    }
}
