import XCTest
import Foundation
import XRKernels

/// The pool behind `Parallel.ranges`: every item runs exactly once, for any worker count, job after
/// job; nested calls run serially inside a range; callers on several threads at once each get
/// their own job done.
final class ParallelTests: XCTestCase {
    func testEveryItemOnceJobAfterJob() {
        let saved = Parallel.workers
        defer { Parallel.workers = saved }
        for workers in [2, 3, 5, 2] {
            Parallel.workers = workers
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

private final class Totals: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [Int] = []
    func add(_ v: Int) { lock.lock(); list.append(v); lock.unlock() }
    var values: [Int] { lock.lock(); defer { lock.unlock() }; return list }
}
