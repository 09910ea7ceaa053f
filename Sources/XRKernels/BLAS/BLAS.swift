// The only file in xrlab that imports CBLAS. Every large matrix product goes through here.
import CBLAS

/// Row-major single-precision matrix products on OpenBLAS.
///
/// Shapes: A is (M, K) (or (K, M) when `transA`), B is (K, N) (or (N, K) when `transB`),
/// C is (M, N). Computes `C = alpha * op(A) * op(B) + beta * C`. Leading dimensions default
/// to the packed row-major ones.
public enum BLAS {
    public static func sgemm(
        _ c: UnsafeMutablePointer<Float>,                   // (M, N)
        _ a: UnsafePointer<Float>, transA: Bool = false,    // (M, K) or (K, M)
        _ b: UnsafePointer<Float>, transB: Bool = false,    // (K, N) or (N, K)
        m: Int, n: Int, k: Int,
        alpha: Float = 1, beta: Float = 0,
        lda: Int? = nil, ldb: Int? = nil, ldc: Int? = nil
    ) {
        precondition(m >= 0 && n >= 0 && k >= 0, "sgemm: negative size m=\(m) n=\(n) k=\(k)")
        if m == 0 || n == 0 { return }
        let lda = lda ?? (transA ? m : k)
        let ldb = ldb ?? (transB ? k : n)
        let ldc = ldc ?? n
        cblas_sgemm(CblasRowMajor,
                    transA ? CblasTrans : CblasNoTrans,
                    transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k),
                    alpha, a, Int32(lda), b, Int32(ldb),
                    beta, c, Int32(ldc))
    }

    /// y = alpha * op(A) x + beta * y, A (M, N) row-major.
    public static func sgemv(
        _ y: UnsafeMutablePointer<Float>,
        _ a: UnsafePointer<Float>, trans: Bool = false,
        _ x: UnsafePointer<Float>,
        m: Int, n: Int, alpha: Float = 1, beta: Float = 0
    ) {
        if m == 0 || n == 0 { return }
        cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, Int32(m), Int32(n),
                    alpha, a, Int32(n), x, 1, beta, y, 1)
    }

    /// Double-precision row-major GEMM (used by the probes' Newton / L-BFGS solvers).
    public static func dgemm(
        _ c: UnsafeMutablePointer<Double>,
        _ a: UnsafePointer<Double>, transA: Bool = false,
        _ b: UnsafePointer<Double>, transB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Double = 1, beta: Double = 0,
        lda: Int? = nil, ldb: Int? = nil, ldc: Int? = nil
    ) {
        if m == 0 || n == 0 { return }
        let lda = lda ?? (transA ? m : k)
        let ldb = ldb ?? (transB ? k : n)
        let ldc = ldc ?? n
        cblas_dgemm(CblasRowMajor,
                    transA ? CblasTrans : CblasNoTrans,
                    transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k),
                    alpha, a, Int32(lda), b, Int32(ldb),
                    beta, c, Int32(ldc))
    }

    /// Number of threads OpenBLAS uses. xrlab sets this once so that its own threads and
    /// OpenBLAS's do not oversubscribe the cores.
    public static var threads: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(max(1, newValue))) }
    }
}
