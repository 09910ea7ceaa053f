import XCTest
import XRTensor

final class RandomTests: XCTestCase {
    func testDeterministicAndSeedSensitive() {
        var a = XRRandom(seed: 42), b = XRRandom(seed: 42), c = XRRandom(seed: 43)
        let xa = (0..<8).map { _ in a.next() }
        XCTAssertEqual(xa, (0..<8).map { _ in b.next() })
        XCTAssertNotEqual(xa, (0..<8).map { _ in c.next() })
    }

    func testUniformIntegersCoverRangeEvenly() {
        var r = XRRandom(seed: 7)
        var counts = [Int](repeating: 0, count: 10)
        for _ in 0..<100_000 { counts[r.nextInt(below: 10)] += 1 }
        for c in counts { XCTAssertEqual(Double(c), 10_000, accuracy: 500) }
    }

    func testGaussianMoments() {
        var r = XRRandom(seed: 1)
        let xs = (0..<50_000).map { _ in Double(r.nextGaussian()) }
        let mean = xs.reduce(0, +) / Double(xs.count)
        let varc = xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(xs.count)
        XCTAssertEqual(mean, 0, accuracy: 0.02)
        XCTAssertEqual(varc, 1, accuracy: 0.03)
    }

    func testShuffleIsPermutation() {
        var r = XRRandom(seed: 3)
        var a = Array(0..<100)
        r.shuffle(&a)
        XCTAssertNotEqual(a, Array(0..<100))
        XCTAssertEqual(a.sorted(), Array(0..<100))
    }
}
