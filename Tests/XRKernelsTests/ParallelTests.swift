import XCTest
import Foundation
import XRKernels

/// The pool behind `Parallel.ranges` and `Parallel.claiming`: every item runs exactly once, for
/// any worker count, job after job; nested calls run serially inside a range; callers on several
/// threads at once each get their own job done; a slowed worker takes fewer claimed items.
final class ParallelTests: XCTestCase {
    func testEveryItemOnceJobAfterJob() {
        for workers in [2, 3, 5, 2] {
            Parallel.with(workers: workers) {
                for job in 0..<400 {
                    let n = 1 + (job * 7) % 50
                    var hits = [Int](repeating: 0, count: n)
                    hits.withUnsafeMutableBufferPointer { h in
                        let p = SendablePointer(h.baseAddress!)
                        Parallel.ranges(n) { r in for i in r { p.p[i] += 1 } }
                    }
                    XCTAssertEqual(Set(hits), [1], "workers \(workers), job \(job), n \(n)")
                }
            }
        }
    }

    func testClaimingHandsOutEveryItemOnce() {
        for workers in [1, 2, 3, 5] {
            Parallel.with(workers: workers) {
                for job in 0..<300 {
                    let n = (job * 7) % 41 // 0 included
                    var hits = [Int](repeating: 0, count: n)
                    var owners = [Int](repeating: -1, count: n)
                    var calls = [Int](repeating: 0, count: workers)
                    hits.withUnsafeMutableBufferPointer { h in
                        owners.withUnsafeMutableBufferPointer { o in
                            calls.withUnsafeMutableBufferPointer { c in
                                let p = SendablePointer(h.baseAddress!), op = SendablePointer(o.baseAddress!), cp = SendablePointer(c.baseAddress!)
                                Parallel.claiming(n) { worker, next in
                                    cp.p[worker] += 1
                                    while let i = next() { p.p[i] += 1; op.p[i] = worker }
                                }
                            }
                        }
                    }
                    XCTAssertTrue(hits.allSatisfy { $0 == 1 }, "workers \(workers), job \(job), n \(n): \(hits)")
                    // Each worker index runs its body once, and only the indices of running workers appear.
                    let running = max(1, min(workers, n))
                    XCTAssertEqual(calls, (0..<workers).map { $0 < running ? 1 : 0 }, "workers \(workers), n \(n)")
                    XCTAssertTrue(owners.allSatisfy { (0..<running).contains($0) })
                }
            }
        }
    }

    /// A worker held up on one item (here by sleeping, as a core lost to another process would be)
    /// leaves the remaining items to the others instead of a fixed half of them.
    func testSlowWorkerTakesFewerItems() {
        let n = 40
        var owners = [Int](repeating: -1, count: n)
        Parallel.with(workers: 2) {
            owners.withUnsafeMutableBufferPointer { o in
                let op = SendablePointer(o.baseAddress!)
                Parallel.claiming(n) { worker, next in
                    while let i = next() {
                        op.p[i] = worker
                        if i == 0 { Thread.sleep(forTimeInterval: 0.3) }
                    }
                }
            }
        }
        let slow = owners[0]
        XCTAssertEqual(owners.filter { $0 == slow }.count, 1, "the worker that slept on item 0 took more: \(owners)")
        XCTAssertTrue(owners.allSatisfy { $0 == 0 || $0 == 1 })
    }

    func testNestedRangesRunInsideTheirRange() {
        let n = 64
        var hits = [Int](repeating: 0, count: n * n)
        hits.withUnsafeMutableBufferPointer { h in
            let p = SendablePointer(h.baseAddress!)
            Parallel.ranges(n) { outer in
                for i in outer {
                    Parallel.ranges(n) { inner in for j in inner { p.p[i * n + j] += 1 } }
                }
            }
        }
        XCTAssertEqual(Set(hits), [1])
    }

    func testCallersOnSeveralThreads() {
        let group = DispatchGroup()
        let totals = Totals()
        for t in 0..<4 {
            group.enter()
            Thread.detachNewThread {
                var total = 0
                for job in 0..<300 {
                    let n = 10 + (job + t) % 30
                    var parts = [Int](repeating: 0, count: n)
                    parts.withUnsafeMutableBufferPointer { b in
                        let p = SendablePointer(b.baseAddress!)
                        Parallel.ranges(n) { r in for i in r { p.p[i] = i } }
                    }
                    total += parts.reduce(0, +) - n * (n - 1) / 2
                }
                totals.add(total)
                group.leave()
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 120), .success, "callers on four threads did not finish")
        XCTAssertEqual(totals.values, [0, 0, 0, 0])
    }
}

/// The scoped settings: `Parallel.with(workers:)`, `BLAS.with(threads:)` and
/// `withSingleThreadedBLAS` put the previous value back after the body, nested or not, and also
/// when the body throws.
final class ScopedSettingsTests: XCTestCase {
    struct Failure: Error {}

    func testWorkersRestoredAfterBodyAndWhenItThrows() throws {
        let outside = Parallel.workers
        let inner = try Parallel.with(workers: 3) { () throws -> Int in
            XCTAssertEqual(Parallel.workers, 3)
            XCTAssertThrowsError(
                try Parallel.with(workers: 5) { () throws -> Void in
                    XCTAssertEqual(Parallel.workers, 5)
                    throw Failure()
                })
            XCTAssertEqual(Parallel.workers, 3, "restored after a throwing body")
            return Parallel.with(workers: 0) { Parallel.workers }
        }
        XCTAssertEqual(inner, 1, "at least one worker")
        XCTAssertEqual(Parallel.workers, outside)
    }

    func testBLASThreadsRestoredAfterBodyAndWhenItThrows() throws {
        let outside = BLAS.threads
        try BLAS.with(threads: 2) { () throws -> Void in
            let two = BLAS.threads // OpenBLAS may be built for fewer threads than asked
            XCTAssertThrowsError(
                try BLAS.with(threads: 1) { () throws -> Void in
                    XCTAssertEqual(BLAS.threads, 1)
                    throw Failure()
                })
            XCTAssertEqual(BLAS.threads, two, "restored after a throwing body")
            BLAS.with(threads: 1) { XCTAssertEqual(BLAS.threads, 1) }
            XCTAssertEqual(BLAS.threads, two)
        }
        XCTAssertEqual(BLAS.threads, outside)
    }

    func testSingleThreadedBLASOnlyWhileSeveralWorkers() throws {
        try BLAS.with(threads: 2) { () throws -> Void in
            let two = BLAS.threads
            try Parallel.with(workers: 2) { () throws -> Void in
                XCTAssertThrowsError(
                    try withSingleThreadedBLAS { () throws -> Void in
                        XCTAssertEqual(BLAS.threads, 1)
                        throw Failure()
                    })
                XCTAssertEqual(BLAS.threads, two)
            }
            Parallel.with(workers: 1) {
                withSingleThreadedBLAS { XCTAssertEqual(BLAS.threads, two, "one worker: OpenBLAS keeps its threads") }
            }
        }
    }
}

private final class Totals: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [Int] = []
    func add(_ v: Int) { lock.lock(); list.append(v); lock.unlock() }
    var values: [Int] { lock.lock(); defer { lock.unlock() }; return list }
}
