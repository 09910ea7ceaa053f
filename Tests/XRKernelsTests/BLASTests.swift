import XCTest
import XRKernels
import XRTensor
import TestSupport

final class BLASTests: XCTestCase {
    /// sgemm against a plain triple loop, all four transpose combinations, ragged sizes.
    func testSgemmMatchesNaive() {
        var rng = XRRandom(seed: 5)
        for (m, n, k) in [(1, 1, 1), (3, 5, 7), (17, 9, 33), (64, 31, 15)] {
            for ta in [false, true] { for tb in [false, true] {
                let a = (0..<(m * k)).map { _ in rng.nextGaussian() }
                let b = (0..<(k * n)).map { _ in rng.nextGaussian() }
                var c = [Float](repeating: 0, count: m * n)
                BLAS.sgemm(&c, a, transA: ta, b, transB: tb, m: m, n: n, k: k)
                var ref = [Float](repeating: 0, count: m * n)
                for i in 0..<m { for j in 0..<n {
                    var s: Float = 0
                    for p in 0..<k {
                        let av = ta ? a[p * m + i] : a[i * k + p]
                        let bv = tb ? b[j * k + p] : b[p * n + j]
                        s += av * bv
                    }
                    ref[i * n + j] = s
                } }
                assertClose(c, ref, rel: 1e-5, "sgemm m=\(m) n=\(n) k=\(k) tA=\(ta) tB=\(tb)")
            } }
        }
    }
}
