import XCTest
import XRKernels
import XRTensor
import TestSupport

/// `packedProductTransposedA` (weight gradients doutᵀ · inp on the packed kernel) against the plain
/// product and against OpenBLAS's sgemm with A transposed, which it replaces in the report decoder.
final class PackedGradientProductTests: XCTestCase {
    /// Ragged shapes (out rows not a multiple of the 6-row strip or of the row blocks, columns not a
    /// multiple of the 16-column panel, depths over 1,024 that take several passes), padded strides,
    /// overwrite and accumulate, one to three workers. Tolerance: relative L2 1e-5 (fp32 sums in a
    /// different order).
    func testMatchesReferenceAndSgemmOnRaggedShapes() {
        var rng = XRRandom(seed: 31)
        for (depth, m, n) in [(1, 1, 1), (7, 5, 15), (64, 13, 17), (130, 97, 40), (1030, 31, 33), (2100, 200, 18)] {
            // X (depth, m) with rows ldx apart — dout (R, O); B (depth, n) — inp (R, I).
            let ldx = m + 3, ldc = n + 2
            let x = (0..<(depth * ldx)).map { _ in rng.nextGaussian() }
            let b = (0..<(depth * n)).map { _ in rng.nextGaussian() }
            var xt = [Float](repeating: 0, count: m * depth) // Xᵀ (m, depth) compact
            for p in 0..<depth { for i in 0..<m { xt[i * depth + p] = x[p * ldx + i] } }
            let ref = Reference.matmul(xt, b, rows: m, k: depth, n: n)
            let pb = PackedMatrix(b, rows: depth, cols: n)
            for accumulate in [false, true] {
                let start = (0..<(m * ldc)).map { _ in rng.nextGaussian() }
                for workers in [1, 2, 3] {
                    var c = start
                    Parallel.with(workers: workers) {
                        x.withUnsafeBufferPointer { xb in
                            c.withUnsafeMutableBufferPointer { cb in
                                packedProductTransposedA(cb.baseAddress!, xb.baseAddress!, pb, rows: m, lda: ldx, ldc: ldc, accumulate: accumulate)
                            }
                        }
                    }
                    var blas = start
                    x.withUnsafeBufferPointer { xb in
                        b.withUnsafeBufferPointer { bb in
                            blas.withUnsafeMutableBufferPointer { cb in
                                BLAS.sgemm(
                                    cb.baseAddress!, xb.baseAddress!, transA: true, bb.baseAddress!, m: m, n: n, k: depth,
                                    beta: accumulate ? 1 : 0, lda: ldx, ldb: n, ldc: ldc)
                            }
                        }
                    }
                    var got = [Float](), want = [Float](), sgemm = [Float]()
                    for i in 0..<m {
                        for j in 0..<n {
                            got.append(c[i * ldc + j])
                            want.append(ref[i * n + j] + (accumulate ? start[i * ldc + j] : 0))
                            sgemm.append(blas[i * ldc + j])
                        }
                        for j in n..<ldc { XCTAssertEqual(c[i * ldc + j], start[i * ldc + j], "padding written m=\(m) n=\(n)") }
                    }
                    let what = "depth=\(depth) m=\(m) n=\(n) accumulate=\(accumulate) workers=\(workers)"
                    assertClose(got, want, rel: 1e-5, "reference " + what)
                    assertClose(got, sgemm, rel: 1e-5, "sgemm " + what)
                }
            }
        }
    }
}
