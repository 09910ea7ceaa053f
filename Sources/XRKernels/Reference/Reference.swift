// Plain, obviously-correct loops in Double precision, kept forever as the yardstick for the
// SIMD / BLAS kernels. Slow on purpose; used only by tests.
import Foundation

public enum Reference {
    /// C (rows, n) = A (rows, k) · B (k, n), row-major: the definition `packedGEMM` is tested against.
    public static func matmul(_ a: [Float], _ b: [Float], rows: Int, k: Int, n: Int) -> [Float] {
        var c = [Float](repeating: 0, count: rows * n)
        for i in 0..<rows {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k { s += Double(a[i * k + p]) * Double(b[p * n + j]) }
                c[i * n + j] = Float(s)
            }
        }
        return c
    }

    /// (R, C) LayerNorm.
    public static func layerNorm(_ x: [Float], weight: [Float], bias: [Float], rows: Int, cols: Int, eps: Float) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        for r in 0..<rows {
            let row = (0..<cols).map { Double(x[r * cols + $0]) }
            let mean = row.reduce(0, +) / Double(cols)
            let v = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(cols)
            for j in 0..<cols {
                out[r * cols + j] = Float((row[j] - mean) / (v + Double(eps)).squareRoot() * Double(weight[j]) + Double(bias[j]))
            }
        }
        return out
    }

    /// Exact GELU with libm erf.
    public static func gelu(_ x: [Float]) -> [Float] {
        x.map { v in Float(0.5 * Double(v) * (1 + erf(Double(v) / 2.0.squareRoot()))) }
    }

    /// Row softmax.
    public static func softmax(_ x: [Float], rows: Int, cols: Int) -> [Float] {
        var out = x
        for r in 0..<rows {
            let row = (0..<cols).map { Double(x[r * cols + $0]) }
            let m = row.max() ?? 0
            let e = row.map { exp($0 - m) }
            let s = e.reduce(0, +)
            for j in 0..<cols { out[r * cols + j] = Float(e[j] / s) }
        }
        return out
    }

    /// Multi-head attention over packed qkv (B*T, 3C) → (B*T, C).
    public static func attention(_ qkv: [Float], batch: Int, tokens T: Int, channels C: Int, heads H: Int) -> [Float] {
        let D = C / H
        var out = [Float](repeating: 0, count: batch * T * C)
        for b in 0..<batch {
            for h in 0..<H {
                for i in 0..<T {
                    var s = [Double](repeating: 0, count: T)
                    for j in 0..<T {
                        var d = 0.0
                        for k in 0..<D {
                            d += Double(qkv[(b * T + i) * 3 * C + h * D + k]) * Double(qkv[(b * T + j) * 3 * C + C + h * D + k])
                        }
                        s[j] = d / Double(D).squareRoot()
                    }
                    let m = s.max() ?? 0
                    let e = s.map { exp($0 - m) }
                    let z = e.reduce(0, +)
                    for k in 0..<D {
                        var acc = 0.0
                        for j in 0..<T { acc += e[j] / z * Double(qkv[(b * T + j) * 3 * C + 2 * C + h * D + k]) }
                        out[(b * T + i) * C + h * D + k] = Float(acc)
                    }
                }
            }
        }
        return out
    }
}
