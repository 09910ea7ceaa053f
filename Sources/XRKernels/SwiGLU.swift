// SwiGLU (Shazeer 2020), the gated MLP activation of EVA-02: forward and backward. R rows,
// M hidden features; the gate and value halves come from one product with 2M outputs.
import Foundation

/// out (R, M) = SiLU(g) ⊙ v with u (R, 2M) = [g | v] per row (timm `GluMlp` with
/// `gate_last=False`, EVA's `SwiGLU`: `silu(w1 x) * w2 x`), SiLU(g) = g / (1 + e^(−g)).
/// `out` may not alias `u`.
public func swiGLUForward(_ out: UnsafeMutablePointer<Float>, _ u: UnsafePointer<Float>, rows R: Int, hidden M: Int) {
    let o = SendablePointer(out), i = SendablePointer(UnsafeMutablePointer(mutating: u))
    Parallel.ranges(R, minChunk: 8) { range in
        for r in range {
            let g = i.p + r * 2 * M, v = g + M, y = o.p + r * M
            let m8 = M & ~7
            var j = 0
            while j < m8 {
                let gv = UnsafeRawPointer(g + j).loadUnaligned(as: SIMD8<Float>.self)
                let vv = UnsafeRawPointer(v + j).loadUnaligned(as: SIMD8<Float>.self)
                let sig = 1 / (1 + simdExp(-gv))
                UnsafeMutableRawPointer(y + j).storeBytes(of: gv * sig * vv, as: SIMD8<Float>.self)
                j += 8
            }
            while j < M { y[j] = g[j] / (1 + expf(-g[j])) * v[j]; j += 1 }
        }
    }
}

/// Backward of `swiGLUForward`: du (R, 2M) = [dg | dv] from dout (R, M) and the saved u; with
/// σ = 1 / (1 + e^(−g)), dv = dout ⊙ g σ and dg = dout ⊙ v ⊙ σ (1 + g (1 − σ)). Overwrites du.
public func swiGLUBackward(
    _ du: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, _ u: UnsafePointer<Float>, rows R: Int, hidden M: Int
) {
    for r in 0..<R {
        let g = u + r * 2 * M, v = g + M, d = dout + r * M
        let dg = du + r * 2 * M, dv = dg + M
        for j in 0..<M {
            let sig = 1 / (1 + expf(-g[j]))
            dv[j] = d[j] * g[j] * sig
            dg[j] = d[j] * v[j] * sig * (1 + g[j] * (1 - sig))
        }
    }
}
