import XCTest
import XRKernels
import TestSupport

/// Every backward kernel against central finite differences of its forward (in float64 sums
/// of a random projection of the output), on small ragged shapes.
final class BackwardKernelTests: XCTestCase {
    var rng = SystemRandomNumberGenerator()
    func rand(_ n: Int, _ s: Float = 1) -> [Float] { (0..<n).map { _ in Float.random(in: -s...s, using: &rng) } }

    /// Numerical gradient of L(x) = Σ w ⊙ f(x) at x, step h.
    func numeric(_ x: [Float], _ w: [Float], h: Float = 1e-2, _ f: ([Float]) -> [Float]) -> [Float] {
        (0..<x.count).map { i in
            var a = x, b = x
            a[i] += h; b[i] -= h
            let fa = f(a), fb = f(b)
            var s = 0.0
            for j in 0..<w.count { s += Double(w[j]) * (Double(fa[j]) - Double(fb[j])) }
            return Float(s / Double(2 * h))
        }
    }

    func assertGrad(_ got: [Float], _ want: [Float], _ what: String, tol: Double = 2e-3) {
        let (rel, maxAbs, i) = relativeL2(got, want)
        XCTAssertLessThan(rel, tol, "\(what): relative L2 \(rel), max |diff| \(maxAbs) at \(i)")
    }

    func testLayerNormBackward() {
        let R = 5, C = 13
        let x = rand(R * C, 2), wt = rand(C).map { 1 + 0.3 * $0 }, bs = rand(C), w = rand(R * C)
        func f(_ x: [Float], _ wt: [Float], _ bs: [Float]) -> [Float] {
            var y = [Float](repeating: 0, count: R * C)
            layerNormForward(&y, x, wt, bs, rows: R, cols: C, eps: 1e-6)
            return y
        }
        var y = [Float](repeating: 0, count: R * C), mean = [Float](repeating: 0, count: R), rstd = mean
        layerNormForward(&y, x, wt, bs, rows: R, cols: C, eps: 1e-6, mean: &mean, rstd: &rstd)
        XCTAssertEqual(y, f(x, wt, bs))
        var dx = [Float](repeating: 0, count: R * C), dw = [Float](repeating: 0, count: C), db = dw
        layerNormBackward(dx: &dx, accumulate: false, dy: w, x: x, weight: wt, mean: mean, rstd: rstd, dweight: &dw, dbias: &db, rows: R, cols: C)
        assertGrad(dx, numeric(x, w) { f($0, wt, bs) }, "dx")
        assertGrad(dw, numeric(wt, w) { f(x, $0, bs) }, "dweight")
        assertGrad(db, numeric(bs, w) { f(x, wt, $0) }, "dbias")
    }

    func testGELUBackward() {
        let n = 37
        let u = rand(n, 4), w = rand(n)
        func f(_ u: [Float]) -> [Float] { var y = u; biasGELUForward(&y, bias: nil, rows: 1, cols: n); return y }
        var d = w
        geluBackward(&d, preActivation: u, count: n)
        assertGrad(d, numeric(u, w, h: 1e-2, f), "dgelu")
    }

    func testSoftmaxBackward() {
        let R = 3, C = 11
        let x = rand(R * C, 3), w = rand(R * C)
        func f(_ x: [Float]) -> [Float] { var y = x; softmaxRows(&y, rows: R, cols: C); return y }
        var d = w
        softmaxBackward(&d, probabilities: f(x), rows: R, cols: C)
        assertGrad(d, numeric(x, w, f), "dsoftmax")
    }

    func testAttentionBackward() {
        for (B, T, H, D) in [(2, 7, 3, 4), (1, 5, 2, 8), (2, 37, 3, 20)] {   // the last: several ragged 16-column panels
            let C = H * D
            // The forward and the backward share one scratch, sized for both (as TrainableViT does).
            var scratch = [Float](repeating: 0, count: max(attentionTrainingScratchSize(tokens: T, headDim: D, workers: Parallel.workers),
                                                           attentionWorkspaceSize(tokens: T, headDim: D, workers: Parallel.workers)))
            let qkv = rand(B * T * 3 * C), w = rand(B * T * C)
            func f(_ q: [Float]) -> [Float] {
                var out = [Float](repeating: 0, count: B * T * C), p = [Float](repeating: 0, count: B * H * T * T)
                attentionForward(&out, q, scores: &scratch, batch: B, tokens: T, channels: C, heads: H, probabilities: &p)
                return out
            }
            var out = [Float](repeating: 0, count: B * T * C), p = [Float](repeating: 0, count: B * H * T * T)
            attentionForward(&out, qkv, scores: &scratch, batch: B, tokens: T, channels: C, heads: H, probabilities: &p)
            // The forward agrees with a plain reference.
            var ref = [Float](repeating: 0, count: B * T * C)
            for b in 0..<B { for h in 0..<H { for i in 0..<T {
                var s = [Double](repeating: 0, count: T)
                for j in 0..<T { for d in 0..<D { s[j] += Double(qkv[(b * T + i) * 3 * C + h * D + d]) * Double(qkv[(b * T + j) * 3 * C + C + h * D + d]) } }
                let m = s.max()!
                let e = s.map { exp(($0 - m) / Double(D).squareRoot()) }, z = e.reduce(0, +)
                for d in 0..<D { ref[(b * T + i) * C + h * D + d] = Float((0..<T).reduce(0.0) { $0 + e[$1] / z * Double(qkv[(b * T + $1) * 3 * C + 2 * C + h * D + d]) }) }
            } } }
            assertClose(out, ref, rel: 1e-5, "attention forward")
            var dq = [Float](repeating: 0, count: B * T * 3 * C)
            attentionTrainingBackward(dqkv: &dq, dout: w, qkv: qkv, probabilities: p, scratch: &scratch, batch: B, tokens: T, heads: H, headDim: D)
            assertGrad(dq, numeric(qkv, w, f), "dqkv B=\(B) T=\(T) H=\(H) D=\(D)")
        }
    }

    /// The class-token attention equals row 0 of the full attention, and its backward equals the
    /// full backward with the other rows' output gradient zero (and finite differences).
    func testClassTokenAttentionMatchesFullAttention() {
        for (B, T, H, D) in [(2, 7, 3, 4), (1, 13, 2, 12), (3, 5, 1, 9)] {
            let C = H * D
            // The forward and the backward share one scratch, sized for both (as TrainableViT does).
            var scratch = [Float](repeating: 0, count: max(attentionTrainingScratchSize(tokens: T, headDim: D, workers: Parallel.workers),
                                                           attentionWorkspaceSize(tokens: T, headDim: D, workers: Parallel.workers)))
            let qkv = rand(B * T * 3 * C), g = rand(B * C)
            var full = [Float](repeating: 0, count: B * T * C), pFull = [Float](repeating: 0, count: B * H * T * T)
            attentionForward(&full, qkv, scores: &scratch, batch: B, tokens: T, channels: C, heads: H, probabilities: &pFull)
            func f(_ q: [Float]) -> [Float] {
                var out = [Float](repeating: 0, count: B * C), p = [Float](repeating: 0, count: B * H * T)
                classTokenAttentionForward(out: &out, qkv: q, probabilities: &p, batch: B, tokens: T, heads: H, headDim: D)
                return out
            }
            var out = [Float](repeating: 0, count: B * C), p = [Float](repeating: 0, count: B * H * T)
            classTokenAttentionForward(out: &out, qkv: qkv, probabilities: &p, batch: B, tokens: T, heads: H, headDim: D)
            assertClose(out, (0..<B).flatMap { full[($0 * T) * C ..< ($0 * T + 1) * C] }, rel: 1e-5, "class-token forward")
            assertClose(p, (0..<(B * H)).flatMap { pFull[$0 * T * T ..< $0 * T * T + T] }, rel: 1e-5, "class-token probabilities")
            var dFull = [Float](repeating: 0, count: B * T * 3 * C)
            var w = [Float](repeating: 0, count: B * T * C)
            for b in 0..<B { for j in 0..<C { w[b * T * C + j] = g[b * C + j] } }
            attentionTrainingBackward(dqkv: &dFull, dout: w, qkv: qkv, probabilities: pFull, scratch: &scratch, batch: B, tokens: T, heads: H, headDim: D)
            var d = [Float](repeating: .nan, count: B * T * 3 * C)   // every value must be written
            classTokenAttentionBackward(dqkv: &d, dout: g, qkv: qkv, probabilities: p, scratch: &scratch, batch: B, tokens: T, heads: H, headDim: D)
            assertClose(d, dFull, rel: 1e-5, "class-token dqkv B=\(B) T=\(T) H=\(H) D=\(D)")
            assertGrad(d, numeric(qkv, g, f), "class-token dqkv by finite differences")
        }
    }
}
