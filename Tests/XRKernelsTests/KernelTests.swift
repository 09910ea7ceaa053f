import Foundation
import XCTest
import XRKernels
import XRTensor
import TestSupport

/// Fast kernels against the plain references, on ragged shapes (not multiples of 8).
final class KernelTests: XCTestCase {
    var rng = XRRandom(seed: 11)
    func randn(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in rng.nextGaussian() * scale } }

    func testLayerNorm() {
        for (r, c) in [(1, 1), (3, 7), (5, 8), (4, 37), (2, 129)] {
            let x = randn(r * c, scale: 3).map { $0 + 5 }, w = randn(c), b = randn(c)
            var out = [Float](repeating: 0, count: r * c)
            layerNormForward(&out, x, w, b, rows: r, cols: c, eps: 1e-6)
            assertClose(out, Reference.layerNorm(x, weight: w, bias: b, rows: r, cols: c, eps: 1e-6), rel: 1e-6, "layernorm \(r)x\(c)")
        }
    }

    func testGELUWithBias() {
        for (r, c) in [(1, 3), (3, 13), (2, 64), (5, 67)] {
            let x = randn(r * c, scale: 3), bias = randn(c)
            var y = x
            biasGELUForward(&y, bias: bias, rows: r, cols: c)
            var shifted = x
            for i in 0..<r { for j in 0..<c { shifted[i * c + j] += bias[j] } }
            let ref = Reference.gelu(shifted)
            for i in 0..<y.count { XCTAssertEqual(y[i], ref[i], accuracy: 5e-7 * max(1, abs(ref[i])), "gelu \(shifted[i])") }
        }
    }

    func testExpAcrossRange() {
        let xs: [Float] = [-87, -50, -10.5, -1, -0.3, 0, 1e-4, 0.7, 3.3, 20, 80]
        for x in xs {
            let v = simdExp(SIMD8(repeating: x))[0]
            XCTAssertEqual(Double(v), exp(Double(x)), accuracy: exp(Double(x)) * 3e-7, "exp(\(x))")
        }
    }

    /// The rational erf against the C library's on a dense grid through and past its clamp at ±4
    /// (fixtures/fit_erf.py: 2.7e-7 at worst), odd, and NaN kept NaN.
    func testErfAcrossRange() {
        var worst = 0.0
        for i in 0...24_000 {
            let x = Float(-6 + Double(i) * 0.0005)
            let v = simdErf(SIMD8(repeating: x))
            worst = max(worst, abs(Double(v[0]) - erf(Double(x))))
            XCTAssertEqual(v[0], -simdErf(SIMD8(repeating: -x))[0], "erf is odd at \(x)")
        }
        XCTAssertLessThan(worst, 4e-7, "largest |erf error| on [-6, 6]")
        XCTAssertEqual(simdErf(SIMD8(repeating: 30))[0], 1, accuracy: 3e-7)
        XCTAssertTrue(simdErf(SIMD8(repeating: .nan))[0].isNaN)
    }

    func testSoftmax() {
        for (r, c) in [(1, 1), (2, 5), (3, 8), (4, 197), (1, 1370)] {
            var x = randn(r * c, scale: 4)
            let ref = Reference.softmax(x, rows: r, cols: c)
            softmaxRows(&x, rows: r, cols: c)
            assertClose(x, ref, rel: 1e-6, "softmax \(r)x\(c)")
            // Without the last pass: the same rows times their sums.
            var y = randn(r * c, scale: 4), inv = [Float](repeating: 0, count: r)
            let refY = Reference.softmax(y, rows: r, cols: c)
            softmaxRowsUnnormalised(&y, rows: r, cols: c, inverseSums: &inv)
            for i in 0..<(r * c) { y[i] *= inv[i / c] }
            assertClose(y, refY, rel: 1e-6, "unnormalised softmax \(r)x\(c)")
        }
    }

    /// Against the plain reference; odd head counts (1 × 3, 3 × 1) split each head's queries across
    /// the workers (2 and 3 of them).
    func testAttention() {
        for workers in [2, 3] {
            Parallel.with(workers: workers) {
                for (b, t, c, h) in [
                    (1, 1, 8, 2), (2, 7, 12, 3), (1, 37, 48, 4), (2, 50, 64, 4), (1, 601, 24, 2), (2, 530, 16, 1),
                    (1, 37, 36, 3), (3, 20, 16, 1), (1, 5, 8, 1)
                ] {
                    let qkv = randn(b * t * 3 * c)
                    var out = [Float](repeating: 0, count: b * t * c)
                    var scores = [Float](repeating: 0, count: attentionWorkspaceSize(tokens: t, headDim: c / h, workers: Parallel.workers))
                    var kept = [Float](repeating: 0, count: b * t * c), p = [Float](repeating: .nan, count: b * h * t * t)
                    BLAS.with(threads: 1) { // the kernel splits heads across workers itself
                        attentionForward(&out, qkv, scores: &scores, batch: b, tokens: t, channels: c, heads: h)
                        // Keeping the probabilities (training): whole score rows at any length, the same output.
                        attentionForward(&kept, qkv, scores: &scores, batch: b, tokens: t, channels: c, heads: h, probabilities: &p)
                    }
                    let ref = Reference.attention(qkv, batch: b, tokens: t, channels: c, heads: h)
                    assertClose(out, ref, rel: 1e-5, "attention b\(b) t\(t) c\(c) h\(h), \(workers) workers")
                    assertClose(kept, ref, rel: 1e-5, "attention keeping probabilities b\(b) t\(t) c\(c) h\(h), \(workers) workers")
                    for row in 0..<(b * h * t) {
                        let sum = p[(row * t)..<((row + 1) * t)].reduce(0, +)
                        XCTAssertEqual(sum, 1, accuracy: 1e-4, "probability row \(row) sums to \(sum)")
                    }
                }
            }
        }
    }

    func testParallelLinearWithEpilogueMatchesSerial() {
        let r = 37, k = 19, n = 23
        let x = randn(r * k), w = randn(n * k), bias = randn(n)
        var out = [Float](repeating: 0, count: r * n), ref = out
        BLAS.sgemm(&ref, x, w, transB: true, m: r, n: n, k: k)
        for i in 0..<r { for j in 0..<n { ref[i * n + j] += bias[j] } }
        BLAS.with(threads: 1) {
            out.withUnsafeMutableBufferPointer { o in
                let op = SendablePointer(o.baseAddress!)
                bias.withUnsafeBufferPointer { bp in
                    let b = SendablePointer(UnsafeMutablePointer(mutating: bp.baseAddress!))
                    linearForward(o.baseAddress!, x, w, rows: r, inFeatures: k, outFeatures: n) { rows in
                        addBias(op.p + rows.lowerBound * n, b.p, rows: rows.count, cols: n)
                    }
                }
            }
        }
        assertClose(out, ref, rel: 1e-6, "parallel linear + bias")
    }

    /// The output-feature split (one image's rows): each worker's column block gets its epilogue
    /// with the row stride of the whole output; ragged widths, blocks of 16, fewer columns than
    /// two blocks (one worker).
    func testColumnSplitLinearWithStridedEpiloguesMatchesSerial() {
        BLAS.with(threads: 1) {
            for (r, k, n) in [(5, 19, 23), (13, 32, 100), (3, 8, 129), (197, 24, 72)] {
                let x = randn(r * k), w = randn(n * k), bias = randn(n), scale = randn(n), res0 = randn(r * n)
                var lin = [Float](repeating: 0, count: r * n)
                BLAS.sgemm(&lin, x, w, transB: true, m: r, n: n, k: k)
                // GELU(x Wᵀ + b) and residual + scale ⊙ (x Wᵀ + b), each through the column split.
                var gelu = [Float](repeating: .nan, count: r * n), y = [Float](repeating: .nan, count: r * n), res = res0
                gelu.withUnsafeMutableBufferPointer { g in
                    let gp = SendablePointer(g.baseAddress!)
                    linearForwardColumns(g.baseAddress!, x, w, rows: r, inFeatures: k, outFeatures: n) { c in
                        bias.withUnsafeBufferPointer {
                            biasGELUForward(gp.p + c.lowerBound, bias: $0.baseAddress! + c.lowerBound, rows: r, cols: c.count, ld: n)
                        }
                    }
                }
                y.withUnsafeMutableBufferPointer { yb in
                    res.withUnsafeMutableBufferPointer { rb in
                        let yp = SendablePointer(yb.baseAddress!), rp = SendablePointer(rb.baseAddress!)
                        linearForwardColumns(yb.baseAddress!, x, w, rows: r, inFeatures: k, outFeatures: n) { c in
                            bias.withUnsafeBufferPointer { b in
                                scale.withUnsafeBufferPointer { s in
                                    biasScaleResidual(
                                        rp.p + c.lowerBound, yp.p + c.lowerBound, bias: b.baseAddress! + c.lowerBound, scale: s.baseAddress! + c.lowerBound,
                                        rows: r, cols: c.count, ld: n)
                                }
                            }
                        }
                    }
                }
                var shifted = lin, refRes = res0
                for i in 0..<r { for j in 0..<n { shifted[i * n + j] += bias[j]; refRes[i * n + j] += scale[j] * shifted[i * n + j] } }
                assertClose(gelu, Reference.gelu(shifted), rel: 1e-5, "column split + GELU \(r)x\(k)x\(n)")
                assertClose(res, refRes, rel: 1e-5, "column split + bias/scale/residual \(r)x\(k)x\(n)")
                assertClose(y, lin, rel: 1e-6, "column split product \(r)x\(k)x\(n)")
            }
        }
    }

    func testBiasScaleResidual() {
        let r = 3, c = 19
        let y = randn(r * c), bias = randn(c), scale = randn(c)
        var x = randn(r * c)
        var ref = x
        for i in 0..<r { for j in 0..<c { ref[i * c + j] += scale[j] * (y[i * c + j] + bias[j]) } }
        biasScaleResidual(&x, y, bias: bias, scale: scale, rows: r, cols: c)
        assertClose(x, ref, rel: 1e-6, "bias+scale+residual")
    }

    func testPatchifyMatchesConvolution() {
        // A conv with stride = kernel = P equals im2col followed by one GEMM.
        let b = 2, ch = 3, h = 8, w = 12, p = 4, cOut = 5
        let px = randn(b * ch * h * w), wt = randn(cOut * ch * p * p)
        let n = (h / p) * (w / p), k = ch * p * p
        var cols = [Float](repeating: 0, count: b * n * k)
        patchify(&cols, px, batch: b, channels: ch, height: h, width: w, patch: p)
        var out = [Float](repeating: 0, count: b * n * cOut)
        BLAS.sgemm(&out, cols, wt, transB: true, m: b * n, n: cOut, k: k)
        for bi in 0..<b {
            for gy in 0..<(h / p) {
                for gx in 0..<(w / p) {
                    for o in 0..<cOut {
                        var s: Float = 0
                        for c in 0..<ch {
                            for dy in 0..<p {
                                for dx in 0..<p {
                                    s += px[((bi * ch + c) * h + gy * p + dy) * w + gx * p + dx] * wt[((o * ch + c) * p + dy) * p + dx]
                                }
                            }
                        }
                        XCTAssertEqual(out[((bi * (h / p) + gy) * (w / p) + gx) * cOut + o], s, accuracy: 1e-4)
                    }
                }
            }
        }
    }
}

/// The resampling kernel against torch.nn.functional.interpolate (fixtures/make_vit_fixtures.py).
final class ResampleTests: XCTestCase {
    func testMatchesTorchInterpolate() throws {
        let f = try SafeTensorsFile(contentsOf: Fixtures.url("vit/resample.safetensors"))
        let x = try f.tensor("input")
        let (c, h, w) = (x.shape[0], x.shape[1], x.shape[2])
        var checked = 0
        for name in f.names where name != "input" {
            let want = try f.tensor(name)
            let (oh, ow) = (want.shape[1], want.shape[2])
            var out = [Float](repeating: 0, count: c * oh * ow)
            if name.hasPrefix("aa_") {
                resample(
                    &out, x.scalars, channels: c, inH: h, inW: w, outH: oh, outW: ow,
                    filter: name.hasPrefix("aa_bicubic") ? .bicubic : .bilinear, antialias: true)
            } else if name.hasPrefix("bicubic_scale_") {
                let parts = name.dropFirst("bicubic_scale_".count).split(separator: "_").compactMap { Double($0) }
                resample(
                    &out, x.scalars, channels: c, inH: h, inW: w, outH: oh, outW: ow,
                    filter: .bicubic, antialias: false, scaleFactor: (parts[0], parts[1]))
            } else {
                resample(&out, x.scalars, channels: c, inH: h, inW: w, outH: oh, outW: ow, filter: .bicubic, antialias: false)
            }
            assertClose(out, want.scalars, rel: 1e-6, name)
            checked += 1
        }
        XCTAssertEqual(checked, 14)
    }
}
