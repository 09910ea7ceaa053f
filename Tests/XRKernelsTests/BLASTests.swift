import XCTest
import XRKernels
import XRTensor
import TestSupport

final class BLASTests: XCTestCase {
    /// sgemm against a plain triple loop, all four transpose combinations, ragged sizes.
    func testSgemmMatchesNaive() {
        var rng = XRRandom(seed: 5)
        for (m, n, k) in [(1, 1, 1), (3, 5, 7), (17, 9, 33), (64, 31, 15)] {
            for ta in [false, true] {
                for tb in [false, true] {
                    let a = (0..<(m * k)).map { _ in rng.nextGaussian() }
                    let b = (0..<(k * n)).map { _ in rng.nextGaussian() }
                    var c = [Float](repeating: 0, count: m * n)
                    BLAS.sgemm(&c, a, transA: ta, b, transB: tb, m: m, n: n, k: k)
                    var ref = [Float](repeating: 0, count: m * n)
                    for i in 0..<m {
                        for j in 0..<n {
                            var s: Float = 0
                            for p in 0..<k {
                                let av = ta ? a[p * m + i] : a[i * k + p]
                                let bv = tb ? b[j * k + p] : b[p * n + j]
                                s += av * bv
                            }
                            ref[i * n + j] = s
                        }
                    }
                    assertClose(c, ref, rel: 1e-5, "sgemm m=\(m) n=\(n) k=\(k) tA=\(ta) tB=\(tb)")
                }
            }
        }
    }

    /// beta = 0 ignores C's old contents (NaN and infinities included) and leaves the padding of a
    /// strided C alone; beta = 1 and alpha ≠ 1 accumulate as BLAS does.
    func testBetaZeroOverwritesAndStridedPaddingIsUntouched() {
        var rng = XRRandom(seed: 9)
        let m = 13, n = 11, k = 7, ldc = 16
        let a = (0..<(m * k)).map { _ in rng.nextGaussian() }, b = (0..<(k * n)).map { _ in rng.nextGaussian() }
        var ref = [Float](repeating: 0, count: m * n)
        for i in 0..<m { for j in 0..<n { for p in 0..<k { ref[i * n + j] += a[i * k + p] * b[p * n + j] } } }
        var c = [Float](repeating: .nan, count: m * ldc)
        for i in 0..<m { c[i * ldc + 3] = .infinity; c[i * ldc + n + 2] = 42 }
        BLAS.sgemm(&c, a, b, m: m, n: n, k: k, ldc: ldc)
        assertClose((0..<(m * n)).map { c[($0 / n) * ldc + $0 % n] }, ref, rel: 1e-5, "beta 0 over NaN / inf")
        for i in 0..<m {
            XCTAssertEqual(c[i * ldc + n + 2], 42, "padding column of row \(i) changed")
            XCTAssertTrue(c[i * ldc + n].isNaN, "padding column of row \(i) changed")
        }
        // Accumulate: C = 0.5·AB + 1·C.
        BLAS.sgemm(&c, a, b, m: m, n: n, k: k, alpha: 0.5, beta: 1, ldc: ldc)
        assertClose((0..<(m * n)).map { c[($0 / n) * ldc + $0 % n] }, ref.map { $0 * 1.5 }, rel: 1e-5, "alpha 0.5, beta 1")
        // beta other than 0 or 1 still scales C.
        var d = [Float](repeating: 2, count: m * n)
        BLAS.sgemm(&d, a, b, m: m, n: n, k: k, beta: -0.5)
        assertClose(d, ref.map { $0 - 1 }, rel: 1e-5, "beta -0.5")
    }
}

/// Restarting with better OpenBLAS kernels: only when OpenBLAS chose legacy ones, the CPU has
/// AVX2 + FMA (or AVX-512) and the user has not chosen.
final class BLASCoreTests: XCTestCase {
    func testPreferredCore() {
        let avx2: Set<String> = ["sse3", "avx", "avx2", "fma"]
        let avx512 = avx2.union(["avx512f", "avx512bw", "avx512dq", "avx512vl"])
        XCTAssertEqual(BLASCore.preferredCore(current: "Prescott", flags: avx2, environment: [:]), "Haswell")
        XCTAssertEqual(BLASCore.preferredCore(current: "Prescott", flags: avx512, environment: [:]), "SkylakeX")
        XCTAssertNil(BLASCore.preferredCore(current: "Haswell", flags: avx512, environment: [:]), "already AVX2 kernels")
        XCTAssertNil(BLASCore.preferredCore(current: "Prescott", flags: avx512, environment: ["OPENBLAS_CORETYPE": "Prescott"]), "the user's choice")
        XCTAssertNil(BLASCore.preferredCore(current: "Prescott", flags: ["sse3", "avx"], environment: [:]), "no AVX2 + FMA")
        XCTAssertFalse(BLASCore.name.isEmpty)
    }
}

/// Kernel threads flush denormals to zero (a denormal operand costs a microcode assist per
/// operation on many x86 CPUs).
final class DenormalTests: XCTestCase {
    func testWorkersFlushDenormals() {
        let n = 64
        var flushed = [Bool](repeating: false, count: n), products = [Float](repeating: -1, count: n)
        let half = [Float](repeating: 0.5, count: n) // not a compile-time constant
        flushed.withUnsafeMutableBufferPointer { fp in
            products.withUnsafeMutableBufferPointer { pp in
                let f = SendablePointer(fp.baseAddress!), p = SendablePointer(pp.baseAddress!)
                Parallel.ranges(n, minChunk: 1) { r in
                    for i in r {
                        f.p[i] = Parallel.flushesDenormals
                        p.p[i] = Float.leastNormalMagnitude * half[i] // a denormal without flushing
                    }
                }
            }
        }
        XCTAssertEqual(flushed, [Bool](repeating: true, count: n))
        XCTAssertEqual(products, [Float](repeating: 0, count: n))
    }
}
