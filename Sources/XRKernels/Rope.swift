// Rotary position embeddings (RoPE) on the patch tokens of a fused qkv buffer, 2-D axial form as in
// EVA-02 (Fang et al. 2023) and timm's `RotaryEmbeddingCat` / `apply_rot_embed_cat`: forward and
// backward. B batch, T tokens (prefix + patches), N patches (gh·gw), C channels, H heads,
// D = C/H head dim, F = D/4 frequencies per axis.
import Foundation

/// sin and cos of the rotation angles of an (gh, gw) patch grid, each (N, D/2): one angle per
/// pair of channels (2j, 2j+1) of a head. Pairs j < F turn with the row coordinate y, pairs
/// j ≥ F with the column coordinate x, at frequency 1 / temperature^(i/F), i = j mod F —
/// timm's layout (`build_rotary_pos_embed`, `in_pixels=False`, `grid_indexing='ij'`,
/// interleaved pairs). With `reference` (timm / EVA `ref_feat_shape`) the coordinates are
/// rescaled so the grid spans the reference grid: y = r / gh · refH, x = c / gw · refW, so a
/// model keeps the angles it was trained with at any input size. Computed in Float with the
/// same operation order as timm's float32 code.
public func ropeAngles(
    gridHeight gh: Int, gridWidth gw: Int, headDim D: Int, reference: (height: Int, width: Int)?,
    temperature: Float = 10_000
) -> (sin: [Float], cos: [Float]) {
    precondition(D % 4 == 0 && D > 0, "ropeAngles: head dim \(D) is not a positive multiple of 4")
    let F = D / 4, half = D / 2
    let bands = (0..<F).map { 1 / powf(temperature, Float($0) / Float(F)) }
    func coordinate(_ i: Int, _ size: Int, _ ref: Int?) -> Float {
        guard let ref else { return Float(i) }
        return Float(i) / Float(size) * Float(ref)
    }
    var s = [Float](repeating: 0, count: gh * gw * half), c = s
    for r in 0..<gh {
        let y = coordinate(r, gh, reference?.height)
        for col in 0..<gw {
            let x = coordinate(col, gw, reference?.width)
            let base = (r * gw + col) * half
            for i in 0..<F {
                let ay = y * bands[i], ax = x * bands[i]
                s[base + i] = sinf(ay); c[base + i] = cosf(ay)
                s[base + F + i] = sinf(ax); c[base + F + i] = cosf(ax)
            }
        }
    }
    return (s, c)
}

/// Rotate the queries and keys of the patch tokens in place: for each image, token t ≥ `prefix`
/// (patch n = t − prefix), head h and pair j of q and of k,
///
///     (a, b) ← (a cos θ − b sin θ, b cos θ + a sin θ),   θ = angle(n, j)
///
/// — timm's `x * cos + rot(x) * sin` with rot(x) = (−x₁, x₀, −x₃, x₂, …). Prefix tokens (the
/// class token) are left as they are; values are never rotated.
/// qkv (B·T, 3C) rows [q | k | v]; sin, cos (N, D/2) from `ropeAngles`, N = T − prefix.
public func ropeForward(
    _ qkv: UnsafeMutablePointer<Float>, sin: UnsafePointer<Float>, cos: UnsafePointer<Float>,
    batch B: Int, tokens T: Int, prefix: Int, channels C: Int, heads H: Int
) {
    rotate(qkv, sin: sin, cos: cos, batch: B, tokens: T, prefix: prefix, channels: C, heads: H, sign: 1)
}

/// Backward of `ropeForward`: the rotation is orthogonal, so the gradient of the rotated q and k
/// turns back by −θ: (da, db) ← (da cos θ + db sin θ, db cos θ − da sin θ), in place on dqkv
/// (B·T, 3C) (whose v columns and prefix rows are left as they are).
public func ropeBackward(
    _ dqkv: UnsafeMutablePointer<Float>, sin: UnsafePointer<Float>, cos: UnsafePointer<Float>,
    batch B: Int, tokens T: Int, prefix: Int, channels C: Int, heads H: Int
) {
    rotate(dqkv, sin: sin, cos: cos, batch: B, tokens: T, prefix: prefix, channels: C, heads: H, sign: -1)
}

private func rotate(
    _ qkv: UnsafeMutablePointer<Float>, sin: UnsafePointer<Float>, cos: UnsafePointer<Float>,
    batch B: Int, tokens T: Int, prefix: Int, channels C: Int, heads H: Int, sign: Float
) {
    let D = C / H, half = D / 2, N = T - prefix
    precondition(D * H == C && D % 2 == 0 && N >= 0, "rope: \(C) channels, \(H) heads, \(T) tokens, prefix \(prefix)")
    let q = SendablePointer(qkv), sp = SendablePointer(UnsafeMutablePointer(mutating: sin))
    let cp = SendablePointer(UnsafeMutablePointer(mutating: cos))
    Parallel.ranges(B * N, minChunk: 16) { range in
        for bn in range {
            let b = bn / N, n = bn % N
            let row = q.p + (b * T + prefix + n) * 3 * C
            let s = sp.p + n * half, c = cp.p + n * half
            // q (columns 0..<C) and k (C..<2C), each H heads of D/2 pairs sharing one angle table.
            for part in 0..<2 {
                for h in 0..<H {
                    let v = row + part * C + h * D
                    for j in 0..<half {
                        let a = v[2 * j], bb = v[2 * j + 1], sn = sign * s[j], cs = c[j]
                        v[2 * j] = a * cs - bb * sn
                        v[2 * j + 1] = bb * cs + a * sn
                    }
                }
            }
        }
    }
}
