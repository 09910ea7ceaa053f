import XCTest
import XRKernels
import XRTensor
import TestSupport

final class PackedGEMMTests: XCTestCase {
    /// The microkernel path against the plain product on ragged shapes: rows not a multiple of the
    /// 6-row strip, columns not a multiple of the 16-column panel, depths that need several passes
    /// (> 1,024), both packings, overwrite and accumulate, padded row strides.
    func testMatchesReferenceOnRaggedShapes() {
        var rng = XRRandom(seed: 21)
        for (m, k, n) in [(1, 1, 1), (5, 3, 15), (6, 17, 16), (7, 64, 17), (13, 1030, 40), (197, 192, 48), (23, 2500, 33)] {
            let a = (0..<(m * k)).map { _ in rng.nextGaussian() }
            let b = (0..<(k * n)).map { _ in rng.nextGaussian() } // (k, n)
            var w = [Float](repeating: 0, count: n * k) // (n, k) = Bᵀ
            for p in 0..<k { for j in 0..<n { w[j * k + p] = b[p * n + j] } }
            let ref = Reference.matmul(a, b, rows: m, k: k, n: n)
            let packs = [PackedMatrix(b, rows: k, cols: n), PackedMatrix(transposing: w, rows: n, cols: k)]
            for (which, pb) in packs.enumerated() {
                for p in 0..<k { for j in 0..<n { XCTAssertEqual(pb.value(row: p, col: j), b[p * n + j]) } }
                // Padded strides: A and C rows carry 3 extra floats that must stay untouched.
                let lda = k + 3, ldc = n + 3
                var ap = [Float](repeating: .nan, count: m * lda)
                for i in 0..<m { for p in 0..<k { ap[i * lda + p] = a[i * k + p] } }
                for accumulate in [false, true] {
                    let start = (0..<(m * ldc)).map { _ in rng.nextGaussian() }
                    var c = start
                    ap.withUnsafeBufferPointer { ab in
                        c.withUnsafeMutableBufferPointer { cb in
                            packedGEMM(cb.baseAddress!, ldc: ldc, ab.baseAddress!, lda: lda, pb, rows: m, columns: 0..<n, accumulate: accumulate)
                        }
                    }
                    var got = [Float](), want = [Float]()
                    for i in 0..<m {
                        for j in 0..<n { got.append(c[i * ldc + j]); want.append(ref[i * n + j] + (accumulate ? start[i * ldc + j] : 0)) }
                        for j in n..<ldc { XCTAssertEqual(c[i * ldc + j], start[i * ldc + j], "padding written m=\(m) n=\(n)") }
                    }
                    assertClose(got, want, rel: 1e-5, "packed m=\(m) k=\(k) n=\(n) packing=\(which) accumulate=\(accumulate)")
                    // A read transposed: X = Aᵀ (k, m) row-major with padded rows, the same product.
                    let ldx = m + 2
                    var x = [Float](repeating: .nan, count: k * ldx)
                    for i in 0..<m { for p in 0..<k { x[p * ldx + i] = a[i * k + p] } }
                    var ct = start
                    x.withUnsafeBufferPointer { xb in
                        ct.withUnsafeMutableBufferPointer { cb in
                            packedGEMM(
                                cb.baseAddress!, ldc: ldc, xb.baseAddress!, lda: ldx, pb, rows: m, columns: 0..<n, accumulate: accumulate, transposedA: true)
                        }
                    }
                    var gotT = [Float]()
                    for i in 0..<m {
                        for j in 0..<n { gotT.append(ct[i * ldc + j]) }
                        for j in n..<ldc { XCTAssertEqual(ct[i * ldc + j], start[i * ldc + j], "padding written (transposed A) m=\(m) n=\(n)") }
                    }
                    assertClose(gotT, want, rel: 1e-5, "packed, A transposed, m=\(m) k=\(k) n=\(n) packing=\(which) accumulate=\(accumulate)")
                }
            }
        }
    }

    /// A column range computes those columns only; the parallel product gives the same result
    /// split by rows or by columns, and its epilogue sees every block exactly once.
    func testColumnRangesAndParallelSplits() {
        var rng = XRRandom(seed: 22)
        let m = 41, k = 70, n = 83
        let a = (0..<(m * k)).map { _ in rng.nextGaussian() }
        let w = (0..<(n * k)).map { _ in rng.nextGaussian() }
        let pb = PackedMatrix(transposing: w, rows: n, cols: k)
        var b = [Float](repeating: 0, count: k * n)
        for j in 0..<n { for p in 0..<k { b[p * n + j] = w[j * k + p] } }
        let ref = Reference.matmul(a, b, rows: m, k: k, n: n)

        var c = [Float](repeating: -7, count: m * n)
        a.withUnsafeBufferPointer { ab in
            c.withUnsafeMutableBufferPointer { cb in
                packedGEMM(cb.baseAddress!, ldc: n, ab.baseAddress!, lda: k, pb, rows: m, columns: 32..<70)
            }
        }
        for i in 0..<m {
            for j in 0..<n {
                if (32..<70).contains(j) { XCTAssertEqual(c[i * n + j], ref[i * n + j], accuracy: 1e-4) } else { XCTAssertEqual(c[i * n + j], -7) }
            }
        }

        // 41 and 301 rows: row blocks claimed by the workers, the last one ragged.
        let tall = 301
        let aTall = (0..<(tall * k)).map { _ in rng.nextGaussian() }
        let refTall = Reference.matmul(aTall, b, rows: tall, k: k, n: n)
        for (rows, input, expected) in [(m, a, ref), (tall, aTall, refTall)] {
            for workers in [1, 2, 3] {
                Parallel.with(workers: workers) {
                    for split in [false, true] {
                        var out = [Float](repeating: .nan, count: rows * n)
                        var seen = [Int](repeating: 0, count: rows * n)
                        var blockRows: [Int] = []
                        let lock = NSLock()
                        input.withUnsafeBufferPointer { ab in
                            out.withUnsafeMutableBufferPointer { ob in
                                packedProduct(ob.baseAddress!, ab.baseAddress!, pb, rows: rows, splitColumns: split) { r, cols in
                                    lock.lock(); for i in r { for j in cols { seen[i * n + j] += 1 } }; blockRows.append(r.count); lock.unlock()
                                }
                            }
                        }
                        assertClose(out, expected, rel: 1e-5, "packedProduct rows=\(rows) workers=\(workers) splitColumns=\(split)")
                        // A column range: those columns only, the rest untouched.
                        var part = [Float](repeating: -7, count: rows * n)
                        input.withUnsafeBufferPointer { ab in
                            part.withUnsafeMutableBufferPointer { ob in
                                packedProduct(ob.baseAddress!, ab.baseAddress!, pb, rows: rows, splitColumns: split, columns: 32..<70)
                            }
                        }
                        for i in 0..<rows {
                            for j in 0..<n {
                                if (32..<70).contains(j) {
                                    XCTAssertEqual(part[i * n + j], expected[i * n + j], accuracy: 1e-4)
                                } else {
                                    XCTAssertEqual(part[i * n + j], -7)
                                }
                            }
                        }
                        XCTAssertEqual(Set(seen), [1], "epilogue coverage rows=\(rows) workers=\(workers) splitColumns=\(split)")
                        if !split {
                            // Row blocks: at most 96 rows, multiples of 6 but the last, and enough of them
                            // (four per worker) for a slowed worker's share to move to the others.
                            XCTAssertTrue(blockRows.allSatisfy { $0 <= 96 }, "\(blockRows)")
                            XCTAssertEqual(blockRows.filter { $0 % 6 != 0 }.count, rows % 6 == 0 ? 0 : 1, "\(blockRows)")
                            XCTAssertGreaterThanOrEqual(blockRows.count, min(4 * workers, (rows + 5) / 6), "\(blockRows)")
                        }
                    }
                }
            }
        }
    }

    /// Epilogues fused into the kernel's stores (bias; bias + GELU; bias, LayerScale and residual)
    /// against the product followed by the plain elementwise definitions: full and partial panels,
    /// several depth passes (> 1,024), row blocks and column groups on 1–3 workers, a column range
    /// written from its first column, optional bias / scale, a padded residual whose padding stays.
    func testFusedEpiloguesMatchSeparatePasses() {
        var rng = XRRandom(seed: 24)
        for (m, k, n) in [(13, 70, 48), (13, 70, 40), (20, 1500, 35), (301, 64, 83)] {
            let a = (0..<(m * k)).map { _ in rng.nextGaussian() }
            let w = (0..<(n * k)).map { _ in rng.nextGaussian() * 0.2 }
            let pb = PackedMatrix(transposing: w, rows: n, cols: k)
            var b = [Float](repeating: 0, count: k * n)
            for j in 0..<n { for p in 0..<k { b[p * n + j] = w[j * k + p] } }
            let y = Reference.matmul(a, b, rows: m, k: k, n: n)
            let bias = (0..<n).map { _ in rng.nextGaussian() }, scale = (0..<n).map { _ in rng.nextGaussian() }
            let ld = n + 5
            let start = (0..<(m * ld)).map { _ in rng.nextGaussian() }
            func gelu(_ v: Float) -> Float { Float(0.5 * Double(v) * (1 + erf(Double(v) / 2.0.squareRoot()))) }
            for workers in [1, 2, 3] {
                Parallel.with(workers: workers) {
                    for split in [false, true] {
                        a.withUnsafeBufferPointer { ab in
                            bias.withUnsafeBufferPointer { bb in
                                scale.withUnsafeBufferPointer { sb in
                                    let what = "m=\(m) k=\(k) n=\(n) workers=\(workers) splitColumns=\(split)"
                                    var out = [Float](repeating: .nan, count: m * n)
                                    out.withUnsafeMutableBufferPointer { ob in
                                        packedProduct(ob.baseAddress!, ab.baseAddress!, pb, rows: m, splitColumns: split, finish: .bias(bb.baseAddress!))
                                    }
                                    assertClose(out, (0..<(m * n)).map { y[$0] + bias[$0 % n] }, rel: 1e-5, "bias \(what)")
                                    for withBias in [false, true] {
                                        out.withUnsafeMutableBufferPointer { ob in
                                            packedProduct(
                                                ob.baseAddress!, ab.baseAddress!, pb, rows: m, splitColumns: split,
                                                finish: .biasGELU(withBias ? bb.baseAddress! : nil))
                                        }
                                        assertClose(
                                            out, (0..<(m * n)).map { gelu(y[$0] + (withBias ? bias[$0 % n] : 0)) }, rel: 2e-5,
                                            "bias + GELU (bias \(withBias)) \(what)")
                                        var residual = start
                                        residual.withUnsafeMutableBufferPointer { rb in
                                            out.withUnsafeMutableBufferPointer { ob in
                                                packedProduct(
                                                    ob.baseAddress!, ab.baseAddress!, pb, rows: m, splitColumns: split,
                                                    finish: .biasScaleResidual(
                                                        bias: withBias ? bb.baseAddress! : nil, scale: withBias ? sb.baseAddress! : nil,
                                                        residual: rb.baseAddress!, ld: ld))
                                            }
                                        }
                                        var got = [Float](), want = [Float]()
                                        for i in 0..<m {
                                            for j in 0..<n {
                                                got.append(residual[i * ld + j])
                                                want.append(start[i * ld + j] + (withBias ? scale[j] * (y[i * n + j] + bias[j]) : y[i * n + j]))
                                            }
                                            for j in n..<ld { XCTAssertEqual(residual[i * ld + j], start[i * ld + j], "residual padding \(what)") }
                                        }
                                        assertClose(got, want, rel: 1e-5, "bias, scale + residual (bias \(withBias)) \(what)")
                                    }
                                }
                            }
                        }
                    }
                }
            }
            // A column range written from its first column: the bias is indexed by B's columns.
            let cols = 16..<min(n, 45)
            var part = [Float](repeating: .nan, count: m * cols.count)
            a.withUnsafeBufferPointer { ab in
                bias.withUnsafeBufferPointer { bb in
                    part.withUnsafeMutableBufferPointer { pp in
                        packedGEMM(
                            pp.baseAddress!, ldc: cols.count, ab.baseAddress!, lda: k, pb, rows: m, columns: cols,
                            outputFromFirstColumn: true, finish: .biasGELU(bb.baseAddress!))
                    }
                }
            }
            assertClose(
                part,
                (0..<(m * cols.count)).map { i in
                    let j = cols.lowerBound + i % cols.count; return gelu(y[i / cols.count * n + j] + bias[j])
                },
                rel: 2e-5, "column range \(cols) m=\(m) n=\(n)")
        }
    }

    /// Strided, scaled packing and a slice of the inner dimension written to a compact output — how
    /// attention multiplies a tile of keys or values packed once per head.
    func testInnerSliceStridesAndCompactOutput() {
        var rng = XRRandom(seed: 23)
        let T = 75, D = 12, ld = 40 // T rows of D values inside rows of 40
        let rowsBuf = (0..<(T * ld)).map { _ in rng.nextGaussian() }
        let keys = PackedMatrix(k: D, n: T), values = PackedMatrix(k: T, n: D)
        keys.fillTransposed(rowsBuf, ld: ld, scale: 0.5) // B = 0.5 · Kᵀ (D × T)
        values.fill(rowsBuf, ld: ld) // B = V (T × D)
        for t in 0..<T {
            for d in 0..<D {
                XCTAssertEqual(keys.value(row: d, col: t), 0.5 * rowsBuf[t * ld + d])
                XCTAssertEqual(values.value(row: t, col: d), rowsBuf[t * ld + d])
            }
        }
        let m = 9
        // Scores for keys 32..<75 only, written from column 0 of a compact (m, 43) tile.
        let q = (0..<(m * D)).map { _ in rng.nextGaussian() }
        var tile = [Float](repeating: .nan, count: m * 43)
        q.withUnsafeBufferPointer { qb in
            tile.withUnsafeMutableBufferPointer { tb in
                packedGEMM(tb.baseAddress!, ldc: 43, qb.baseAddress!, lda: D, keys, rows: m, columns: 32..<75, outputFromFirstColumn: true)
            }
        }
        var want = [Float]()
        for i in 0..<m {
            for t in 32..<75 { var s = 0.0; for d in 0..<D { s += Double(q[i * D + d]) * 0.5 * Double(rowsBuf[t * ld + d]) }; want.append(Float(s)) }
        }
        assertClose(tile, want, rel: 1e-5, "compact key tile")
        // acc += P (m, 30) · V[40..<70, :]
        let pTile = (0..<(m * 30)).map { _ in rng.nextGaussian() }
        let start = (0..<(m * D)).map { _ in rng.nextGaussian() }
        var acc = start
        pTile.withUnsafeBufferPointer { pb in
            acc.withUnsafeMutableBufferPointer { ab in
                packedGEMM(ab.baseAddress!, ldc: D, pb.baseAddress!, lda: 30, values, rows: m, columns: 0..<D, inner: 40..<70, accumulate: true)
            }
        }
        want = []
        for i in 0..<m {
            for d in 0..<D {
                var s = Double(start[i * D + d]); for t in 0..<30 { s += Double(pTile[i * 30 + t]) * Double(rowsBuf[(40 + t) * ld + d]) }; want.append(Float(s))
            }
        }
        assertClose(acc, want, rel: 1e-5, "value slice accumulate")
    }

    /// Repacking in place follows new values (how trainable weights are refreshed).
    func testRefillFollowsNewValues() {
        let k = 5, n = 20
        var w = (0..<(n * k)).map { Float($0) }
        let pb = PackedMatrix(transposing: w, rows: n, cols: k)
        XCTAssertEqual(pb.value(row: 2, col: 17), w[17 * k + 2])
        w = w.map { -$0 }
        pb.fillTransposed(w)
        XCTAssertEqual(pb.value(row: 2, col: 17), w[17 * k + 2])
        XCTAssertEqual(pb.value(row: 4, col: 19), w[19 * k + 4])
    }
}
