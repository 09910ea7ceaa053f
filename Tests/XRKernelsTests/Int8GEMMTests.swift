import XCTest
import XRKernels
import XRTensor
import TestSupport

final class Int8GEMMTests: XCTestCase {
    /// Σ_k a[r, k] · w[j, k] in Int64 — the integer truth (a (m, k) codes, w (n, k) codes).
    private func int64Product(_ a: [UInt8], _ w: [Int8], m: Int, k: Int, n: Int) -> [Int64] {
        var c = [Int64](repeating: 0, count: m * n)
        for r in 0..<m { for j in 0..<n { for p in 0..<k { c[r * n + j] += Int64(a[r * k + p]) * Int64(w[j * k + p]) } } }
        return c
    }

    /// Runs the integer product with padded strides (A and C rows carry 3 extra elements that must
    /// stay untouched) and compares it with the Int64 sums exactly.
    private func checkInteger(_ a: [UInt8], _ w: [Int8], m: Int, k: Int, n: Int, kernel: Int8Kernel, _ what: String) {
        let packed = Int8PackedMatrix(codes: w, scales: [Float](repeating: 1, count: n), rows: n, cols: k)
        for p in 0..<k { for j in 0..<n { XCTAssertEqual(packed.code(row: p, col: j), w[j * k + p]) } }
        for j in 0..<n { XCTAssertEqual(Int64(packed.columnSums[j]), (0..<k).reduce(Int64(0)) { $0 + Int64(w[j * k + $1]) }) }
        let lda = k + 3, ldc = n + 3
        var ap = [UInt8](repeating: 255, count: m * lda)
        for r in 0..<m { for p in 0..<k { ap[r * lda + p] = a[r * k + p] } }
        var c = [Int32](repeating: -7, count: m * ldc)
        int8IntegerProduct(&c, ap, packed, rows: m, lda: lda, ldc: ldc, kernel: kernel)
        let want = int64Product(a, w, m: m, k: k, n: n)
        var mismatches = 0
        for r in 0..<m {
            for j in 0..<n where Int64(c[r * ldc + j]) != want[r * n + j] {
                if mismatches == 0 { XCTFail("\(what) \(kernel) m=\(m) k=\(k) n=\(n): (\(r), \(j)) = \(c[r * ldc + j]), want \(want[r * n + j])") }
                mismatches += 1
            }
            for j in n..<ldc { XCTAssertEqual(c[r * ldc + j], -7, "\(what): padding column written") }
        }
        XCTAssertEqual(mismatches, 0, "\(what) \(kernel) m=\(m) k=\(k) n=\(n): mismatching entries")
    }

    /// Random codes over each kernel's whole range on ragged shapes: one row, rows not a multiple
    /// of the 6-row strip, columns not a multiple of 16, depths not a multiple of 4.
    func testIntegerProductEqualsInt64ReferenceOnRandomCodes() {
        var rng = XRRandom(seed: 25)
        for kernel in Int8Kernel.available {
            for (m, k, n) in [(1, 1, 1), (1, 5, 3), (5, 3, 15), (6, 17, 16), (7, 64, 17), (13, 1030, 40), (3, 4099, 33)] {
                let a = (0..<(m * k)).map { _ in UInt8(rng.next() % UInt64(kernel.activationMax + 1)) }
                let w = (0..<(n * k)).map { _ in Int8(truncatingIfNeeded: rng.next()) }
                checkInteger(a, w, m: m, k: k, n: n, kernel: kernel, "random")
            }
        }
    }

    /// Saturation edges: every activation at the kernel's maximum against all −128 / all −127 /
    /// all 127 weights and alternating signs (the sums vpmaddubsw would saturate with 8-bit
    /// activations: 2 · 255 · 128 > 32,767), over a depth whose int32 sums reach 10⁸.
    func testIntegerProductAtSaturationEdges() {
        for kernel in Int8Kernel.available {
            let top = UInt8(kernel.activationMax)
            for (m, k, n) in [(1, 4099, 17), (7, 771, 33)] {
                let full = [UInt8](repeating: top, count: m * k)
                let alternating = (0..<(m * k)).map { $0 % 2 == 0 ? top : 0 }
                for (name, value) in [("-128", Int8(-128)), ("-127", -127), ("127", 127)] {
                    let w = [Int8](repeating: value, count: n * k)
                    checkInteger(full, w, m: m, k: k, n: n, kernel: kernel, "all max × \(name)")
                    checkInteger(alternating, w, m: m, k: k, n: n, kernel: kernel, "alternating max × \(name)")
                }
                let signs = (0..<(n * k)).map { $0 % 2 == 0 ? Int8(-128) : 127 }
                checkInteger(full, signs, m: m, k: k, n: n, kernel: kernel, "all max × alternating ±")
                checkInteger([UInt8](repeating: 0, count: m * k), signs, m: m, k: k, n: n, kernel: kernel, "zero activations")
            }
        }
    }

    /// The 8-bit VNNI kernel (`u8`: codes 0...255 on vpdpbusd, no int16 step) against the Int64
    /// sums where the AVX2 kernel would saturate: all-255 activations × all −128 weights, up to the
    /// longest depth `Int8PackedMatrix` takes (65,536 · 255 · −128 = −2,139,095,040, just inside
    /// int32), ragged shapes, and the same codes on `i16` (the other exact 8-bit kernel).
    func testEightBitVNNIKernelEqualsInt64Reference() throws {
        guard Int8Kernel.u8.isAvailable else {
            throw XCTSkip("this CPU runs no AVX-512 VNNI + VL (or XRLAB_INT8_PATH=avx2 is set): the u8 kernel is not used here")
        }
        XCTAssertEqual(Int8Kernel.default, .u8, "with VNNI the default kernel takes 8-bit activations")
        XCTAssertEqual(Int8Kernel.eightBit, .u8)
        for (m, k, n) in [(1, 65536, 16), (7, 3072, 17), (13, 771, 40)] {
            let full = [UInt8](repeating: 255, count: m * k)
            checkInteger(full, [Int8](repeating: -128, count: n * k), m: m, k: k, n: n, kernel: .u8, "all 255 × -128")
            checkInteger(full, [Int8](repeating: 127, count: n * k), m: m, k: k, n: n, kernel: .u8, "all 255 × 127")
        }
        var rng = XRRandom(seed: 28)
        for (m, k, n) in [(1, 5, 3), (6, 17, 16), (7, 64, 17), (13, 1030, 40)] {
            let a = (0..<(m * k)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let w = (0..<(n * k)).map { _ in Int8(truncatingIfNeeded: rng.next()) }
            checkInteger(a, w, m: m, k: k, n: n, kernel: .u8, "random 8-bit")
            checkInteger(a, w, m: m, k: k, n: n, kernel: .i16, "random 8-bit")
        }
        // Quantised end to end: the same 8-bit codes on u8 and i16 give the same floats.
        let (m, k, n) = (20, 300, 48)
        let x = inputs(m: m, k: k, &rng), w = (0..<(n * k)).map { _ in rng.nextGaussian() * 0.1 }
        let packed = Int8PackedMatrix(transposing: w, rows: n, cols: k)
        var y8 = [Float](repeating: .nan, count: m * n), y16 = y8
        int8Product(&y8, x, packed, rows: m, kernel: .u8)
        int8Product(&y16, x, packed, rows: m, kernel: .i16)
        XCTAssertEqual(y8, y16, "u8 and i16 quantise to the same 8-bit codes and sum them exactly")
    }

    /// The AVX2 fallback (no VNNI, or `XRLAB_INT8_PATH=avx2`): the default kernel keeps 7-bit
    /// activations, the 8-bit layers run on `i16`, and `u8` is not offered.
    func testDefaultKernelFollowsThePathChosenAtRunTime() {
        XCTAssertEqual(Int8Kernel.default, Int8Kernel.hasVNNI ? .u8 : .u7)
        XCTAssertEqual(Int8Kernel.default.activationMax, Int8Kernel.hasVNNI ? 255 : 127)
        XCTAssertEqual(Int8Kernel.eightBit, Int8Kernel.hasVNNI ? .u8 : .i16)
        XCTAssertEqual(Int8Kernel.available.contains(.u8), Int8Kernel.hasVNNI)
        XCTAssertTrue(Int8Kernel.summary.hasPrefix(Int8Kernel.default.rawValue), Int8Kernel.summary)
    }

    /// A row quantised as `xr_quantize_rows` does (same float operations): codes, scale, zero point.
    private func quantise(_ x: ArraySlice<Float>, qmax: Int) -> (codes: [Int], scale: Float, zero: Int) {
        let lo = min(0, x.min() ?? 0), hi = max(0, x.max() ?? 0)
        var s = (hi - lo) / Float(qmax)
        if !(s > 0) || !s.isFinite { s = 1 }
        let z = Int(max(0, min(Float(qmax), (-lo / s).rounded(.toNearestOrEven))))
        let inv = 1 / s
        return (x.map { max(0, min(qmax, Int((($0 * inv).rounded(.toNearestOrEven))) + z)) }, s, z)
    }

    /// Inputs with a zero row, an outlier row, negative-only and positive-only rows.
    private func inputs(m: Int, k: Int, _ rng: inout XRRandom) -> [Float] {
        var x = (0..<(m * k)).map { _ in rng.nextGaussian() }
        if m > 1 { for p in 0..<k { x[k + p] = 0 } }
        if m > 2 { x[2 * k + k / 2] = 40 }
        if m > 3 { for p in 0..<k { x[3 * k + p] = -abs(x[3 * k + p]) } }
        if m > 4 { for p in 0..<k { x[4 * k + p] = abs(x[4 * k + p]) + 0.5 } }
        return x
    }

    /// The dequantised product against the fp32 product, per element within the bound of
    /// `int8Product`'s doc comment: sw[n] / 2 · Σ|x| + sa[m] / 2 · Σ|ŵ| (plus fp32 rounding,
    /// 1e-5 · Σ|x · w|); and against the fp32 product of the dequantised operands x̂ · ŵᵀ (the
    /// same numbers up to rounding). Both kernels, both splits, one and two workers.
    func testDequantisedProductWithinQuantisationBound() {
        var rng = XRRandom(seed: 26)
        for kernel in Int8Kernel.available {
            for (m, k, n) in [(1, 7, 5), (7, 64, 17), (13, 771, 40), (300, 97, 33)] {
                let x = inputs(m: m, k: k, &rng)
                var w = (0..<(n * k)).map { _ in rng.nextGaussian() * 0.05 }
                for p in 0..<k { w[p] = 0 } // an all-zero output channel
                let packed = Int8PackedMatrix(transposing: w, rows: n, cols: k)
                var wq = [Float](repeating: 0, count: n * k) // ŵ (n, k)
                for j in 0..<n { for p in 0..<k { wq[j * k + p] = packed.scales[j] * Float(packed.code(row: p, col: j)) } }
                var xq = [Float](repeating: 0, count: m * k), sa = [Float](repeating: 0, count: m)
                for r in 0..<m {
                    let q = quantise(x[(r * k)..<((r + 1) * k)], qmax: kernel.activationMax)
                    sa[r] = q.scale
                    for p in 0..<k { xq[r * k + p] = q.scale * Float(q.codes[p] - q.zero) }
                }
                let dq = PackedMatrix(transposing: wq, rows: n, cols: k)
                var ref = [Float](repeating: 0, count: m * n)
                packedProduct(&ref, xq, dq, rows: m)
                for workers in [1, 2] {
                    for split in [false, true] {
                        var y = [Float](repeating: .nan, count: m * n)
                        Parallel.with(workers: workers) { int8Product(&y, x, packed, rows: m, kernel: kernel, splitColumns: split) }
                        let what = "\(kernel) m=\(m) k=\(k) n=\(n) workers=\(workers) splitColumns=\(split)"
                        assertClose(y, ref, rel: 1e-5, "\(what) vs x̂ · ŵᵀ")
                        var worst = 0.0
                        for r in 0..<m {
                            for j in 0..<n {
                                var exact = 0.0, sx = 0.0, sw = 0.0, sxw = 0.0
                                for p in 0..<k {
                                    exact += Double(x[r * k + p]) * Double(w[j * k + p])
                                    sx += abs(Double(x[r * k + p]))
                                    sw += abs(Double(wq[j * k + p]))
                                    sxw += abs(Double(x[r * k + p]) * Double(w[j * k + p]))
                                }
                                let bound = Double(packed.scales[j]) / 2 * sx + Double(sa[r]) / 2 * sw + 1e-5 * sxw + 1e-7
                                let err = abs(Double(y[r * n + j]) - exact)
                                worst = max(worst, err / bound)
                                XCTAssertLessThanOrEqual(err, bound, "\(what): (\(r), \(j)) = \(y[r * n + j]), exact \(exact)")
                            }
                        }
                        XCTAssertLessThanOrEqual(worst, 1, what)
                    }
                }
            }
        }
    }

    /// Every epilogue case on the int8 product, both splits: equal to the fp32 epilogue kernels
    /// (`addBias`, `biasGELUForward`, `biasScaleResidual`) run on the dequantised product; the
    /// residual's padding columns untouched.
    func testEpiloguesMatchFP32EpiloguesOnDequantisedValues() {
        var rng = XRRandom(seed: 27)
        for kernel in Int8Kernel.available {
            for (m, k, n) in [(1, 33, 20), (7, 130, 48), (300, 64, 37)] {
                let x = inputs(m: m, k: k, &rng)
                let w = (0..<(n * k)).map { _ in rng.nextGaussian() * 0.1 }
                let bias = (0..<n).map { _ in rng.nextGaussian() }, scale = (0..<n).map { _ in rng.nextGaussian() }
                let residual0 = (0..<(m * n)).map { _ in rng.nextGaussian() }
                let packed = Int8PackedMatrix(transposing: w, rows: n, cols: k)
                var plain = [Float](repeating: 0, count: m * n)
                int8Product(&plain, x, packed, rows: m, kernel: kernel)
                bias.withUnsafeBufferPointer { bp in
                    scale.withUnsafeBufferPointer { sp in
                        let b = bp.baseAddress!, s = sp.baseAddress!
                        for split in [false, true] {
                            let what = "\(kernel) m=\(m) k=\(k) n=\(n) splitColumns=\(split)"
                            // bias
                            var y = [Float](repeating: .nan, count: m * n), want = plain
                            int8Product(&y, x, packed, rows: m, kernel: kernel, splitColumns: split, finish: .bias(b))
                            addBias(&want, b, rows: m, cols: n)
                            XCTAssertEqual(y, want, "\(what) bias")
                            // bias + GELU, with and without the bias
                            for withBias in [true, false] {
                                want = plain
                                int8Product(&y, x, packed, rows: m, kernel: kernel, splitColumns: split, finish: .biasGELU(withBias ? b : nil))
                                biasGELUForward(&want, bias: withBias ? b : nil, rows: m, cols: n)
                                XCTAssertEqual(y, want, "\(what) biasGELU bias=\(withBias)")
                            }
                            // LayerScale + residual into a residual with padded rows
                            let ld = n + 2
                            var res = [Float](repeating: 0, count: m * ld)
                            for r in 0..<m { for j in 0..<n { res[r * ld + j] = residual0[r * n + j] } }
                            for r in 0..<m { for j in n..<ld { res[r * ld + j] = 9 } }
                            var wantRes = res
                            res.withUnsafeMutableBufferPointer { rp in
                                int8Product(
                                    &y, x, packed, rows: m, kernel: kernel, splitColumns: split,
                                    finish: .biasScaleResidual(bias: b, scale: s, residual: rp.baseAddress!, ld: ld))
                            }
                            wantRes.withUnsafeMutableBufferPointer { rp in
                                plain.withUnsafeBufferPointer { pp in
                                    for r in 0..<m {
                                        XRKernels.biasScaleResidual(rp.baseAddress! + r * ld, pp.baseAddress! + r * n, bias: b, scale: s, rows: 1, cols: n)
                                    }
                                }
                            }
                            XCTAssertEqual(res, wantRes, "\(what) biasScaleResidual")
                        }
                    }
                }
            }
        }
    }

    /// `columns`: only those output columns computed (equal to the full product's, bias applied
    /// at their absolute index), the others untouched, on both splits and with a row stride.
    func testColumnRangeEqualsTheFullProductsColumns() {
        var rng = XRRandom(seed: 31)
        for (m, k, n, cols) in [(5, 40, 96, 32..<96), (300, 24, 80, 16..<40), (3, 17, 48, 0..<16)] {
            let x = inputs(m: m, k: k, &rng)
            let w = (0..<(n * k)).map { _ in rng.nextGaussian() * 0.1 }, bias = (0..<n).map { _ in rng.nextGaussian() }
            let packed = Int8PackedMatrix(transposing: w, rows: n, cols: k)
            bias.withUnsafeBufferPointer { bp in
                var full = [Float](repeating: 0, count: m * n)
                int8Product(&full, x, packed, rows: m, finish: .bias(bp.baseAddress!))
                for split in [false, true] {
                    var y = [Float](repeating: .nan, count: m * n)
                    int8Product(&y, x, packed, rows: m, splitColumns: split, columns: cols, finish: .bias(bp.baseAddress!))
                    for r in 0..<m {
                        for j in 0..<n {
                            let got = y[r * n + j], what = "m=\(m) n=\(n) columns=\(cols) split=\(split) (\(r), \(j))"
                            if cols.contains(j) { XCTAssertEqual(got, full[r * n + j], what) } else { XCTAssertTrue(got.isNaN, what) }
                        }
                    }
                }
            }
        }
    }
}
