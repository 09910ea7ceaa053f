import XCTest
@testable import XRTrain

/// Losses against their definitions and central differences.
final class LossTests: XCTestCase {
    func testBinaryCrossEntropyWithLogits() {
        let z: [Float] = [-30, -2, -0.1, 0, 0.7, 3, 40], y: [Float] = [0, 1, 0, 1, 1, 0, 1]
        let (loss, d) = Loss.binaryCrossEntropy(logits: z, targets: y)
        // Definition: mean of −[y log σ(z) + (1 − y) log(1 − σ(z))], computed stably.
        var want = 0.0
        for (a, b) in zip(z, y) {
            let p = 1 / (1 + exp(-Double(a)))
            want -= Double(b) * log(max(p, 1e-300)) + (1 - Double(b)) * log(max(1 - p, 1e-300))
        }
        XCTAssertEqual(loss, want / Double(z.count), accuracy: 1e-9)
        for i in z.indices where abs(z[i]) < 10 {
            var a = z, b = z
            a[i] += 1e-3; b[i] -= 1e-3
            let num = (Loss.binaryCrossEntropy(logits: a, targets: y).loss - Loss.binaryCrossEntropy(logits: b, targets: y).loss) / 2e-3
            XCTAssertEqual(Double(d[i]), num, accuracy: 1e-4)
        }
        // Label smoothing moves targets to y(1 − ε) + ε/2.
        let s = Loss.binaryCrossEntropy(logits: [0], targets: [1], smoothing: 0.2)
        XCTAssertEqual(Double(s.dlogits[0]), 0.5 - 0.9, accuracy: 1e-7)
    }

    func testCrossEntropyWithSmoothingGradient() {
        let logits: [Float] = [0.3, -1, 2, 0.5, 0.5, -0.2], labels = [2, 0]
        let (_, d) = Loss.crossEntropy(logits: logits, labels: labels, classes: 3, smoothing: 0.1)
        for i in logits.indices {
            var a = logits, b = logits
            a[i] += 1e-3; b[i] -= 1e-3
            let num = (Loss.crossEntropy(logits: a, labels: labels, classes: 3, smoothing: 0.1).loss
                       - Loss.crossEntropy(logits: b, labels: labels, classes: 3, smoothing: 0.1).loss) / 2e-3
            XCTAssertEqual(Double(d[i]), num, accuracy: 1e-5)
        }
    }
}
