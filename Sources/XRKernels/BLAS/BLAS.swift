// The only file in xrlab that imports CBLAS. Every large matrix product goes through here.
import CBLAS
import Foundation

/// Row-major single-precision matrix products on OpenBLAS.
///
/// Shapes: A is (M, K) (or (K, M) when `transA`), B is (K, N) (or (N, K) when `transB`),
/// C is (M, N). Computes `C = alpha * op(A) * op(B) + beta * C`. Leading dimensions default
/// to the packed row-major ones.
public enum BLAS {
    public static func sgemm(
        _ c: UnsafeMutablePointer<Float>, // (M, N)
        _ a: UnsafePointer<Float>, transA: Bool = false, // (M, K) or (K, M)
        _ b: UnsafePointer<Float>, transB: Bool = false, // (K, N) or (N, K)
        m: Int, n: Int, k: Int,
        alpha: Float = 1, beta: Float = 0,
        lda: Int? = nil, ldb: Int? = nil, ldc: Int? = nil
    ) {
        precondition(m >= 0 && n >= 0 && k >= 0, "sgemm: negative size m=\(m) n=\(n) k=\(k)")
        if m == 0 || n == 0 { return }
        let lda = lda ?? (transA ? m : k)
        let ldb = ldb ?? (transB ? k : n)
        let ldc = ldc ?? n
        // With beta = 0 OpenBLAS 0.3.21 first clears C in its `sgemm_beta` kernel, which stores one
        // float at a time (`perf`: 3–5% of a ViT forward or training step). Clearing C here with
        // memset and accumulating with beta = 1 gives the same result (C's old contents, NaN or
        // not, never reach the output); isolated products 0–5% faster (bench/sgemm_modes.c).
        var beta = beta
        if beta == 0 {
            if ldc == n {
                memset(c, 0, m * n * MemoryLayout<Float>.stride)
            } else {
                for r in 0..<m { memset(c + r * ldc, 0, n * MemoryLayout<Float>.stride) }
            }
            beta = 1
        }
        cblas_sgemm(
            CblasRowMajor,
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
        cblas_sgemv(
            CblasRowMajor, trans ? CblasTrans : CblasNoTrans, Int32(m), Int32(n),
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
        cblas_dgemm(
            CblasRowMajor,
            transA ? CblasTrans : CblasNoTrans,
            transB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k),
            alpha, a, Int32(lda), b, Int32(ldb),
            beta, c, Int32(ldc))
    }

    /// Number of threads OpenBLAS uses. xrlab sets this once per process (from `--threads`) so
    /// that its own threads and OpenBLAS's do not oversubscribe the cores; for a part of a process
    /// use `with(threads:_:)`.
    public static var threads: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(max(1, newValue))) }
    }

    /// Run `body` with OpenBLAS on `n` threads (at least one), then put the previous count back,
    /// also when `body` throws. A count that is already `n` is left alone.
    public static func with<Result>(threads n: Int, _ body: () throws -> Result) rethrows -> Result {
        let saved = threads, n = max(1, n)
        if saved == n { return try body() }
        threads = n
        defer { threads = saved }
        return try body()
    }
}

/// Which OpenBLAS kernels run. A DYNAMIC_ARCH OpenBLAS picks its kernels from the CPU model at
/// load time; on virtual machines that report a generic model ("Intel Xeon Processor") OpenBLAS
/// 0.3.21 falls back to its SSE3 `Prescott` kernels although the CPU has AVX2 / AVX-512 — matrix
/// products then run several times slower. `OPENBLAS_CORETYPE` overrides the choice, but only
/// before the library loads, so `xrlab` restarts itself with it set (`preferredCore`).
public enum BLASCore {
    /// The kernel family in use.
    public static var name: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }

    /// Kernel families that use neither AVX2 nor AVX-512.
    static let legacy: Set<String> = [
        "Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Sandybridge", "Katmai", "Coppermine",
        "Northwood", "Banias", "unknown"
    ]

    /// CPU feature flags (Linux /proc/cpuinfo).
    public static func cpuFlags() -> Set<String> {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
            let colon = line.firstIndex(of: ":")
        else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
    }

    /// The OPENBLAS_CORETYPE to restart with: nil when OpenBLAS already uses AVX2-class kernels,
    /// the user chose one, or the CPU has no AVX2 + FMA.
    public static func preferredCore(
        current: String = name, flags: Set<String> = cpuFlags(),
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> String? {
        guard environment["OPENBLAS_CORETYPE"] == nil, legacy.contains(current) else { return nil }
        if flags.isSuperset(of: ["avx512f", "avx512bw", "avx512dq", "avx512vl"]) { return "SkylakeX" }
        if flags.isSuperset(of: ["avx2", "fma"]) { return "Haswell" }
        return nil
    }
}

/// Dense linear algebra in double precision (LAPACK, as bundled with OpenBLAS).
public enum LAPACK {
    /// Eigen-decomposition of a symmetric (n, n) matrix: eigenvalues ascending, and eigenvectors
    /// as rows of the returned (n, n) matrix (row j is the eigenvector of value j). nil on failure.
    public static func symmetricEigen(_ a: [Double], n: Int) -> (values: [Double], vectors: [Double])? {
        if n == 0 { return ([], []) }
        var m = a // symmetric, so row- and column-major agree
        var w = [Double](repeating: 0, count: n)
        var nn = Int32(n), lda = Int32(n), info: Int32 = 0
        var lwork: Int32 = -1, liwork: Int32 = -1
        var wq = [Double](repeating: 0, count: 1), iq = [Int32](repeating: 0, count: 1)
        "V".withCString { jobz in
            "U".withCString { uplo in
                dsyevd_(jobz, uplo, &nn, &m, &lda, &w, &wq, &lwork, &iq, &liwork, &info)
            }
        }
        guard info == 0 else { return nil }
        lwork = Int32(wq[0]); liwork = iq[0]
        var work = [Double](repeating: 0, count: Int(lwork)), iwork = [Int32](repeating: 0, count: Int(liwork))
        "V".withCString { jobz in
            "U".withCString { uplo in
                dsyevd_(jobz, uplo, &nn, &m, &lda, &w, &work, &lwork, &iwork, &liwork, &info)
            }
        }
        guard info == 0 else { return nil }
        // Column j of the column-major result is eigenvector j = row j of `m` read row-major.
        return (w, m)
    }

    /// Solve A x = b for symmetric positive-definite A (n, n) by Cholesky. nil if A is not
    /// positive definite.
    public static func choleskySolve(_ a: [Double], _ b: [Double], n: Int) -> [Double]? {
        var m = a, x = b
        var nn = Int32(n), lda = Int32(n), nrhs: Int32 = 1, info: Int32 = 0
        "L".withCString { uplo in dpotrf_(uplo, &nn, &m, &lda, &info) }
        guard info == 0 else { return nil }
        "L".withCString { uplo in dpotrs_(uplo, &nn, &nrhs, &m, &lda, &x, &lda, &info) }
        return info == 0 ? x : nil
    }
}
