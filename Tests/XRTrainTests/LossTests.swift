import XCTest
@testable import XRTrain
import XRTensor

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
            let num =
                (Loss.crossEntropy(logits: a, labels: labels, classes: 3, smoothing: 0.1).loss
                    - Loss.crossEntropy(logits: b, labels: labels, classes: 3, smoothing: 0.1).loss) / 2e-3
            XCTAssertEqual(Double(d[i]), num, accuracy: 1e-5)
        }
    }
}

/// AdamW and gradient clipping against their per-element definitions (PyTorch's AdamW: decoupled
/// decay, bias-corrected moments), on lengths that leave SIMD tails and split across workers.
final class OptimizerTests: XCTestCase {
    func testAdamWMatchesTheDefinitionElementByElement() {
        var rng = XRRandom(seed: 21)
        for count in [1, 7, 8, 37, 200_003] {
            let p = Parameter("blocks.0.fc.weight", [1, count], (0..<count).map { _ in rng.nextGaussian() })
            let b = Parameter("blocks.0.fc.bias", [count], (0..<count).map { _ in rng.nextGaussian() })
            p.trainable = true; b.trainable = true
            let opt = AdamW(weightDecay: 0.05)
            var ref = [p.value.array, b.value.array], m = [[Float]](repeating: .init(repeating: 0, count: count), count: 2), v = m
            for step in 1...3 {
                for (k, q) in [p, b].enumerated() { for i in 0..<count { q.grad!.p[i] = rng.nextGaussian() * Float(k + 1) } }
                let grads = [p.grad!.array, b.grad!.array]
                opt.update([p, b], lr: 1e-2)
                let bc1 = 1 - pow(0.9, Double(step)), bc2 = 1 - pow(0.999, Double(step))
                for k in 0..<2 {
                    let wd: Float = [p, b][k].decays ? Float(1 - 1e-2 * 0.05) : 1
                    for i in 0..<count {
                        let g = grads[k][i]
                        ref[k][i] *= wd
                        m[k][i] = 0.9 * m[k][i] + (1 - 0.9) * g
                        v[k][i] = 0.999 * v[k][i] + (1 - 0.999) * g * g
                        ref[k][i] -= Float(1e-2 / bc1) * m[k][i] / (v[k][i].squareRoot() / Float(bc2.squareRoot()) + 1e-8)
                    }
                }
                XCTAssertEqual(p.value.array, ref[0], "weights, \(count) elements, step \(step)")
                XCTAssertEqual(b.value.array, ref[1], "bias, \(count) elements, step \(step)")
            }
            XCTAssertTrue(p.decays && !b.decays, "decay on matrices only")
        }
    }

    func testClipGradNormScalesToTheLimit() {
        var rng = XRRandom(seed: 22)
        let ps = [Parameter("a", [1003]), Parameter("b", [5])]
        for q in ps { q.trainable = true; for i in 0..<q.count { q.grad!.p[i] = rng.nextGaussian() } }
        let want = ps.flatMap { $0.grad!.array }.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        let norm = clipGradNorm(ps, maxNorm: 2)
        XCTAssertEqual(norm, want, accuracy: want * 1e-12)
        let after = ps.flatMap { $0.grad!.array }.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        XCTAssertEqual(after, 2, accuracy: 1e-5)
        XCTAssertEqual(clipGradNorm(ps, maxNorm: 10), after, accuracy: 1e-9, "below the limit nothing changes")
    }
}
