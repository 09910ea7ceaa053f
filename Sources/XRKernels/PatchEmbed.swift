// Patch embedding as one GEMM. B batch, P patch size, gh × gw patch grid, N = gh*gw,
// K = 3*P*P, C channels.

/// cols (B*N, K) = im2col(pixels (B, 3, H, W)) with column order (channel, py, px), matching a
/// conv weight (C, 3, P, P) flattened to (C, K).
public func patchify(
    _ cols: UnsafeMutablePointer<Float>, _ pixels: UnsafePointer<Float>,
    batch: Int, channels: Int, height: Int, width: Int, patch P: Int
) {
    let gh = height / P, gw = width / P, K = channels * P * P
    for b in 0..<batch {
        for gy in 0..<gh {
            for gx in 0..<gw {
                let row = cols + ((b * gh + gy) * gw + gx) * K
                for c in 0..<channels {
                    for py in 0..<P {
                        let src = pixels + ((b * channels + c) * height + gy * P + py) * width + gx * P
                        (row + (c * P + py) * P).update(from: src, count: P)
                    }
                }
            }
        }
    }
}
