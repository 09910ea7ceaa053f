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

    /// GPT-2's tanh GELU: the forward against the formula in float64, the backward against finite
    /// differences (37 values: four 8-lane blocks and a scalar tail).
    func testGELUTanhBackward() {
        let n = 37
        let u = rand(n, 4), w = rand(n)
        func f(_ u: [Float]) -> [Float] { var y = u; geluTanhForward(&y, count: n); return y }
        let c = (2 / Double.pi).squareRoot()
        let ref = u.map { x -> Float in
            let v = Double(x); return Float(0.5 * v * (1 + tanh(c * (v + 0.044715 * v * v * v))))
        }
        assertClose(f(u), ref, rel: 1e-5, "tanh GELU forward")
        var d = w
        geluTanhBackward(&d, preActivation: u, count: n)
        assertGrad(d, numeric(u, w, h: 1e-2, f), "dgelu (tanh)")
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
        for (B, T, H, D) in [(2, 7, 3, 4), (1, 5, 2, 8), (2, 37, 3, 20)] { // the last: several ragged 16-column panels
            let C = H * D
            // The forward and the backward share one scratch, sized for both (as TrainableViT does).
            var scratch = [Float](
                repeating: 0,
                count: max(
                    attentionTrainingScratchSize(tokens: T, headDim: D, workers: Parallel.workers),
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
            for b in 0..<B {
                for h in 0..<H {
                    for i in 0..<T {
                        var s = [Double](repeating: 0, count: T)
                        for j in 0..<T {
                            for d in 0..<D { s[j] += Double(qkv[(b * T + i) * 3 * C + h * D + d]) * Double(qkv[(b * T + j) * 3 * C + C + h * D + d]) }
                        }
                        let m = s.max()!
                        let e = s.map { exp(($0 - m) / Double(D).squareRoot()) }, z = e.reduce(0, +)
                        for d in 0..<D {
                            ref[(b * T + i) * C + h * D + d] = Float(
                                (0..<T).reduce(0.0) { $0 + e[$1] / z * Double(qkv[(b * T + $1) * 3 * C + 2 * C + h * D + d]) })
                        }
                    }
                }
            }
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
            var scratch = [Float](
                repeating: 0,
                count: max(
                    attentionTrainingScratchSize(tokens: T, headDim: D, workers: Parallel.workers),
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
            assertClose(out, (0..<B).flatMap { full[($0 * T) * C..<($0 * T + 1) * C] }, rel: 1e-5, "class-token forward")
            assertClose(p, (0..<(B * H)).flatMap { pFull[$0 * T * T..<$0 * T * T + T] }, rel: 1e-5, "class-token probabilities")
            var dFull = [Float](repeating: 0, count: B * T * 3 * C)
            var w = [Float](repeating: 0, count: B * T * C)
            for b in 0..<B { for j in 0..<C { w[b * T * C + j] = g[b * C + j] } }
            attentionTrainingBackward(dqkv: &dFull, dout: w, qkv: qkv, probabilities: pFull, scratch: &scratch, batch: B, tokens: T, heads: H, headDim: D)
            var d = [Float](repeating: .nan, count: B * T * 3 * C) // every value must be written
            classTokenAttentionBackward(dqkv: &d, dout: g, qkv: qkv, probabilities: p, scratch: &scratch, batch: B, tokens: T, heads: H, headDim: D)
            assertClose(d, dFull, rel: 1e-5, "class-token dqkv B=\(B) T=\(T) H=\(H) D=\(D)")
            assertGrad(d, numeric(qkv, g, f), "class-token dqkv by finite differences")
        }
    }

    /// The masked attention over separate q, k, v buffers, as a text decoder runs it: causal
    /// self-attention over one fused (T, 3C) buffer, and cross-attention from (Tq, C) queries to a
    /// (Tk, 2C) key/value buffer with per-item key lengths. Forward against a float64 reference,
    /// backward against finite differences; every gradient value is written.
    func testMaskedAttentionBackward() {
        for (B, Tq, Tk, H, D, causal) in [(2, 6, 6, 3, 4, true), (1, 11, 11, 2, 9, true), (2, 5, 7, 2, 4, false), (3, 4, 9, 1, 10, false)] {
            let C = H * D, what = "B=\(B) Tq=\(Tq) Tk=\(Tk) H=\(H) D=\(D) causal=\(causal)"
            // Self-attention: q, k, v side by side in rows of 3C. Cross-attention: queries in rows
            // of C, keys and values side by side in rows of 2C (one buffer: queries, then keys/values).
            let ldq = causal ? 3 * C : C, ldk = causal ? 3 * C : 2 * C
            let qCount = B * Tq * ldq, kvOffset = causal ? C : qCount
            let count = causal ? qCount : qCount + B * Tk * ldk
            let keyLengths: [Int]? = causal ? nil : (0..<B).map { max(1, Tk - 2 * $0) }
            let x = rand(count), w = rand(B * Tq * C)
            var scratch = [Float](repeating: 0, count: max(1, Parallel.workers) * Tq * Tk)
            func forward(_ x: [Float], _ p: inout [Float]) -> [Float] {
                var out = [Float](repeating: 0, count: B * Tq * C)
                withSingleThreadedBLAS {
                    x.withUnsafeBufferPointer { xb in
                        let b = xb.baseAddress!
                        maskedAttentionForward(
                            out: &out, ldo: C, q: b, ldq: ldq, k: b + kvOffset, ldk: ldk, v: b + kvOffset + C, ldv: ldk,
                            probabilities: &p, batch: B, queries: Tq, keys: Tk, heads: H, headDim: D,
                            causal: causal, keyLengths: keyLengths)
                    }
                }
                return out
            }
            func f(_ x: [Float]) -> [Float] { var p = [Float](repeating: 0, count: B * H * Tq * Tk); return forward(x, &p) }
            var p = [Float](repeating: .nan, count: B * H * Tq * Tk)
            let out = forward(x, &p)
            // Reference: softmax over the keys each query may see (j ≤ i when causal, j < length).
            var ref = [Float](repeating: 0, count: B * Tq * C)
            for b in 0..<B {
                for h in 0..<H {
                    for i in 0..<Tq {
                        let limit = min(keyLengths?[b] ?? Tk, causal ? i + 1 : Tk)
                        let s = (0..<limit).map { j in
                            (0..<D).reduce(0.0) { $0 + Double(x[(b * Tq + i) * ldq + h * D + $1]) * Double(x[kvOffset + (b * Tk + j) * ldk + h * D + $1]) }
                                / Double(D).squareRoot()
                        }
                        let m = s.max() ?? 0, e = s.map { exp($0 - m) }, z = e.reduce(0, +)
                        for d in 0..<D {
                            ref[(b * Tq + i) * C + h * D + d] = Float(
                                (0..<limit).reduce(0.0) { $0 + e[$1] / z * Double(x[kvOffset + (b * Tk + $1) * ldk + C + h * D + d]) })
                        }
                    }
                }
            }
            assertClose(out, ref, rel: 1e-5, "masked attention forward \(what)")
            var dx = [Float](repeating: .nan, count: count)
            withSingleThreadedBLAS {
                x.withUnsafeBufferPointer { xb in
                    dx.withUnsafeMutableBufferPointer { db in
                        let b = xb.baseAddress!, d = db.baseAddress!
                        maskedAttentionBackward(
                            dq: d, dk: d + kvOffset, dv: d + kvOffset + C, dout: w, ldo: C,
                            q: b, ldq: ldq, k: b + kvOffset, ldk: ldk, v: b + kvOffset + C, ldv: ldk,
                            probabilities: p, scratch: &scratch, batch: B, queries: Tq, keys: Tk, heads: H, headDim: D)
                    }
                }
            }
            XCTAssertFalse(dx.contains { $0.isNaN }, "every gradient value written \(what)")
            assertGrad(dx, numeric(x, w, f), "masked attention dq, dk, dv \(what)")
        }
    }

    /// Causal attention in blocks of queries (each block's products over the keys its last query
    /// sees) against the plain formula and finite differences, with blocks that split the
    /// sequence unevenly, one query per block, and padded keys (a sequence with none valid).
    func testCausalAttentionInBlocks() {
        for (B, T, H, D, block, lengths) in [(2, 11, 2, 4, 3, [11, 11]), (2, 10, 1, 5, 4, [10, 6]), (3, 8, 1, 4, 1, [8, 3, 0])] {
            let C = H * D, ld = 3 * C, what = "B=\(B) T=\(T) H=\(H) D=\(D) block=\(block) lengths=\(lengths)"
            let x = rand(B * T * ld), w = rand(B * T * C)
            var scratch = [Float](repeating: 0, count: max(1, Parallel.workers) * T * T)
            func forward(_ x: [Float], _ p: inout [Float]) -> [Float] {
                var out = [Float](repeating: .nan, count: B * T * C)
                withSingleThreadedBLAS {
                    x.withUnsafeBufferPointer { xb in
                        let b = xb.baseAddress!
                        maskedAttentionForward(
                            out: &out, ldo: C, q: b, ldq: ld, k: b + C, ldk: ld, v: b + 2 * C, ldv: ld, probabilities: &p,
                            batch: B, queries: T, keys: T, heads: H, headDim: D, causal: true, keyLengths: lengths, causalBlock: block)
                    }
                }
                return out
            }
            func f(_ x: [Float]) -> [Float] { var p = [Float](repeating: .nan, count: B * H * T * T); return forward(x, &p) }
            var p = [Float](repeating: .nan, count: B * H * T * T)
            let out = forward(x, &p)
            var ref = [Float](repeating: 0, count: B * T * C)
            for b in 0..<B {
                for h in 0..<H {
                    for i in 0..<T {
                        let limit = min(lengths[b], i + 1)
                        let s = (0..<limit).map { j in
                            (0..<D).reduce(0.0) { $0 + Double(x[(b * T + i) * ld + h * D + $1]) * Double(x[(b * T + j) * ld + C + h * D + $1]) }
                                / Double(D).squareRoot()
                        }
                        let m = s.max() ?? 0, e = s.map { exp($0 - m) }, z = e.reduce(0, +)
                        for d in 0..<D {
                            ref[(b * T + i) * C + h * D + d] = Float(
                                (0..<limit).reduce(0.0) { $0 + e[$1] / z * Double(x[(b * T + $1) * ld + 2 * C + h * D + d]) })
                        }
                        for j in limit..<T { XCTAssertEqual(p[((b * H + h) * T + i) * T + j], 0, "masked probability \(what)") }
                    }
                }
            }
            assertClose(out, ref, rel: 1e-5, "causal attention forward \(what)")
            var dx = [Float](repeating: .nan, count: x.count)
            withSingleThreadedBLAS {
                x.withUnsafeBufferPointer { xb in
                    dx.withUnsafeMutableBufferPointer { db in
                        let b = xb.baseAddress!, d = db.baseAddress!
                        maskedAttentionBackward(
                            dq: d, dk: d + C, dv: d + 2 * C, dout: w, ldo: C, q: b, ldq: ld, k: b + C, ldk: ld, v: b + 2 * C, ldv: ld,
                            probabilities: p, scratch: &scratch, batch: B, queries: T, keys: T, heads: H, headDim: D, causal: true, causalBlock: block)
                    }
                }
            }
            XCTAssertFalse(dx.contains { $0.isNaN }, "every gradient value written \(what)")
            assertGrad(dx, numeric(x, w, f), "causal attention dq, dk, dv \(what)")
        }
    }
}

/// RoPE and SwiGLU against plain formulas, and their backwards by the rotation's inverse and by
/// finite differences.
final class EVAKernelTests: XCTestCase {
    func testRopeAnglesFollowTimmsLayout() {
        // D = 8: F = 2 frequencies per axis, bands 1 and 1/100; 2×3 grid rescaled to a 4×4 reference.
        let (s, c) = ropeAngles(gridHeight: 2, gridWidth: 3, headDim: 8, reference: (4, 4))
        for r in 0..<2 {
            for col in 0..<3 {
                let y = Double(r) / 2 * 4, x = Double(col) / 3 * 4
                let want = [y, y / 100, x, x / 100]
                for j in 0..<4 {
                    XCTAssertEqual(Double(s[(r * 3 + col) * 4 + j]), sin(want[j]), accuracy: 1e-6)
                    XCTAssertEqual(Double(c[(r * 3 + col) * 4 + j]), cos(want[j]), accuracy: 1e-6)
                }
            }
        }
    }

    func testRopeRotatesPatchQueriesAndKeysOnlyAndItsBackwardInvertsIt() {
        let B = 2, T = 4, C = 8, H = 2, N = T - 1
        let qkv0 = (0..<(B * T * 3 * C)).map { _ in Float.random(in: -2...2) }
        let (s, c) = ropeAngles(gridHeight: 1, gridWidth: N, headDim: C / H, reference: nil)
        var qkv = qkv0
        qkv.withUnsafeMutableBufferPointer { ropeForward($0.baseAddress!, sin: s, cos: c, batch: B, tokens: T, prefix: 1, channels: C, heads: H) }
        for b in 0..<B {
            for t in 0..<T {
                let row = (b * T + t) * 3 * C
                // The class token and every value row are untouched.
                if t == 0 { XCTAssertEqual(Array(qkv[row..<(row + 3 * C)]), Array(qkv0[row..<(row + 3 * C)])) }
                XCTAssertEqual(Array(qkv[(row + 2 * C)..<(row + 3 * C)]), Array(qkv0[(row + 2 * C)..<(row + 3 * C)]))
                guard t > 0 else { continue }
                for part in 0..<2 {
                    for h in 0..<H {
                        for j in 0..<(C / H / 2) {
                            let i = row + part * C + h * (C / H) + 2 * j, a = qkv0[i], bb = qkv0[i + 1]
                            let sn = s[(t - 1) * 2 + j], cs = c[(t - 1) * 2 + j]
                            XCTAssertEqual(qkv[i], a * cs - bb * sn, accuracy: 1e-6)
                            XCTAssertEqual(qkv[i + 1], bb * cs + a * sn, accuracy: 1e-6)
                        }
                    }
                }
            }
        }
        // The rotation is orthogonal: its backward (the transpose) brings the input back.
        qkv.withUnsafeMutableBufferPointer { ropeBackward($0.baseAddress!, sin: s, cos: c, batch: B, tokens: T, prefix: 1, channels: C, heads: H) }
        assertClose(qkv, qkv0, rel: 1e-6, "RoPE backward ∘ forward")
    }

    func testSwiGLUForwardAndFiniteDifferenceBackward() {
        let R = 3, M = 11 // ragged: one 8-lane block and a tail
        let u = (0..<(R * 2 * M)).map { _ in Float.random(in: -4...4) }
        let dout = (0..<(R * M)).map { _ in Float.random(in: -1...1) }
        func forward(_ u: [Float]) -> [Float] {
            var y = [Float](repeating: 0, count: R * M)
            u.withUnsafeBufferPointer { up in y.withUnsafeMutableBufferPointer { swiGLUForward($0.baseAddress!, up.baseAddress!, rows: R, hidden: M) } }
            return y
        }
        let y = forward(u)
        for r in 0..<R {
            for j in 0..<M {
                let g = Double(u[r * 2 * M + j]), v = Double(u[r * 2 * M + M + j])
                XCTAssertEqual(Double(y[r * M + j]), g / (1 + exp(-g)) * v, accuracy: 1e-5)
            }
        }
        var du = [Float](repeating: 0, count: R * 2 * M)
        du.withUnsafeMutableBufferPointer { swiGLUBackward($0.baseAddress!, dout: dout, u, rows: R, hidden: M) }
        let eps: Float = 1e-2
        for i in stride(from: 0, to: u.count, by: 3) {
            var up = u, dn = u
            up[i] += eps; dn[i] -= eps
            let lp = zip(forward(up), dout).reduce(0) { $0 + Double($1.0 * $1.1) }
            let ln = zip(forward(dn), dout).reduce(0) { $0 + Double($1.0 * $1.1) }
            XCTAssertEqual(Double(du[i]), (lp - ln) / Double(2 * eps), accuracy: 2e-3, "du[\(i)]")
        }
    }
}
