// Splitting work across cores. xrlab runs BLAS single-threaded inside the encoder and
// parallelises every op itself (row ranges, heads), so OpenBLAS's threads never spin while
// elementwise work runs and the two never oversubscribe the cores.
import CXRCPU

/// A pointer that may cross into worker closures: the caller guarantees workers touch disjoint
/// ranges.
public struct SendablePointer<T>: @unchecked Sendable {
    public let p: UnsafeMutablePointer<T>
    public init(_ p: UnsafeMutablePointer<T>) { self.p = p }
}

public enum Parallel {
    /// Worker count for encoder ops: set once per process from `--threads`; for a part of a
    /// process use `with(workers:_:)`.
    nonisolated(unsafe) public static var workers = 2

    /// Run `body` with `n` workers (at least one), then put the previous count back, also when
    /// `body` throws.
    public static func with<Result>(workers n: Int, _ body: () throws -> Result) rethrows -> Result {
        let saved = workers
        workers = max(1, n)
        defer { workers = saved }
        return try body()
    }

    /// Run `body` over `n` items split into contiguous ranges, one per worker (at most n / minChunk workers).
    /// The calling thread runs the first range and xrlab's pool threads the others (`xr_parallel_run`:
    /// they spin briefly between ops instead of being woken for each); every thread that runs a
    /// range flushes denormals to zero (`flushDenormals`). Calls from inside a range run serially.
    public static func ranges(_ n: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        let w = max(1, min(workers, n / max(minChunk, 1)))
        if w == 1 { xr_flush_denormals(); body(0..<n); return }
        withoutActuallyEscaping(body) { b in
            var job = RangesJob(n: n, parts: w, body: b)
            withUnsafeMutablePointer(to: &job) { p in
                _ = xr_parallel_run(
                    w,
                    { context, i in
                        let job = context!.assumingMemoryBound(to: RangesJob.self).pointee
                        xr_flush_denormals()
                        job.body((job.n * i / job.parts)..<(job.n * (i + 1) / job.parts))
                    }, p)
            }
        }
    }

    /// Hand out the items 0..<count one at a time: `body(worker, next)` runs once per worker
    /// (`worker` in 0..<workers names the thread's own scratch) and calls `next()` for the next
    /// unclaimed item until it returns nil. Unlike `ranges`' fixed shares, a worker that the
    /// machine slows (another process, a busy hypervisor) takes fewer items instead of holding
    /// the others up.
    public static func claiming(_ count: Int, _ body: (_ worker: Int, _ next: () -> Int?) -> Void) {
        let w = max(1, min(workers, count))
        var next = 0
        if w == 1 {
            xr_flush_denormals()
            body(0) { () -> Int? in
                defer { next += 1 }; return next < count ? next : nil
            }
            return
        }
        withUnsafeMutablePointer(to: &next) { p in
            let counter = SendablePointer(p)
            ranges(w) { r in
                body(r.lowerBound) { () -> Int? in
                    let i = xr_claim(counter.p)
                    return i < count ? i : nil
                }
            }
        }
    }

    /// Flush denormal floats to zero on the calling thread (MXCSR FTZ + DAZ). Training produces
    /// values below 1.2e-38 (vanishing gradients, optimiser moments, underflowing softmax
    /// terms); on many x86 CPUs each operation on one takes a microcode assist, and the matrix
    /// products that meet them ran 3× slower (report decoder training step, 2.7 s → 0.77 s).
    /// Results differ only in values that small.
    public static func flushDenormals() { xr_flush_denormals() }

    /// Whether the calling thread flushes denormals.
    public static var flushesDenormals: Bool { xr_flushes_denormals() != 0 }
}

/// One `ranges` call as the pool threads see it.
private struct RangesJob {
    let n: Int
    let parts: Int
    let body: (Range<Int>) -> Void
}

/// Run `body` with OpenBLAS single-threaded while xrlab splits its ops across more than one
/// worker (so the two kinds of threads do not oversubscribe the cores), then put OpenBLAS's
/// thread count back, also when `body` throws. With one worker OpenBLAS keeps its threads.
public func withSingleThreadedBLAS<Result>(_ body: () throws -> Result) rethrows -> Result {
    Parallel.workers > 1 ? try BLAS.with(threads: 1, body) : try body()
}
