// Matrix products against a right-hand operand packed once: frozen weights (packed at load) and
// attention's per-head operands (packed once per head, serving every query row).
//
// OpenBLAS packs both operands of every product into its own panel layout on every call; for a
// ViT's linear layers that repacks the same weights image after image (11% of ViT-Ti's cycles at
// batch 1, all of it on both cores when rows are split). Here a weight is packed once into
// 16-column panels, and an AVX2 + FMA microkernel (6 rows × 16 columns, twelve 8-lane
// accumulators) reads the activations in place, so neither operand is copied per call.
// `Reference.matmul` is the plain definition the kernel is tested against.
import Foundation

/// A matrix B (k, n) laid out for `packedGEMM`: ⌈n / 16⌉ panels of 16 columns, each k-major
/// (16 consecutive floats per row of B), columns past n zero. 64-byte aligned.
public final class PackedMatrix: @unchecked Sendable {
    /// Rows of B (the inner dimension of the product).
    public let k: Int
    /// Columns of B (columns of the product).
    public let n: Int
    /// Number of 16-column panels.
    public let panels: Int
    let data: UnsafeMutablePointer<Float>
    private let owned: Bool

    /// Floats a (k, n) packing occupies.
    public static func storage(k: Int, n: Int) -> Int { (n + 15) / 16 * k * 16 }

    /// Floats of caller memory that always hold a 64-byte-aligned (k, n) packing (`init(k:n:in:)`).
    public static func alignedStorage(k: Int, n: Int) -> Int { storage(k: k, n: n) + 16 }

    /// An unfilled (zero) packing for a (k, n) operand; `fill` or `fillTransposed` sets its values.
    public init(k: Int, n: Int) {
        precondition(k > 0 && n > 0, "PackedMatrix: empty operand k=\(k) n=\(n)")
        self.k = k
        self.n = n
        panels = (n + 15) / 16
        let count = panels * k * 16
        data = UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Float>.stride, alignment: 64)
            .bindMemory(to: Float.self, capacity: count)
        data.initialize(repeating: 0, count: count)
        owned = true
    }

    /// An unfilled (zero) packing in caller memory of `alignedStorage(k:n:)` floats, which must
    /// outlive it — for packings made on every call (attention's keys and values), so they take
    /// no allocation.
    public init(k: Int, n: Int, in memory: UnsafeMutablePointer<Float>) {
        precondition(k > 0 && n > 0, "PackedMatrix: empty operand k=\(k) n=\(n)")
        self.k = k
        self.n = n
        panels = (n + 15) / 16
        let misalignment = Int(bitPattern: memory) & 63
        data = memory + (misalignment == 0 ? 0 : (64 - misalignment) / MemoryLayout<Float>.stride)
        data.update(repeating: 0, count: panels * k * 16)
        owned = false
    }

    deinit { if owned { data.deallocate() } }

    /// B = Wᵀ for W (n, k) row-major — a linear layer's weight (out, in) for `out = inp · Wᵀ`.
    public convenience init(transposing w: UnsafePointer<Float>, rows n: Int, cols k: Int) {
        self.init(k: k, n: n)
        fillTransposed(w)
    }

    /// B (k, n) row-major as it is — e.g. a weight (out, in) for the input gradient `dinp = dout · W`.
    public convenience init(_ b: UnsafePointer<Float>, rows k: Int, cols n: Int) {
        self.init(k: k, n: n)
        fill(b)
    }

    /// Repack from W (n, k) (B = Wᵀ), same shape; W's rows `ld` apart (default k), values times `scale`.
    public func fillTransposed(_ w: UnsafePointer<Float>, ld: Int? = nil, scale: Float = 1) {
        let k = self.k, n = self.n, ld = ld ?? k, k8 = k & ~7
        let s8 = V8(repeating: scale)
        for j in 0..<panels {
            let dst = data + j * k * 16
            let c0 = j * 16, width = min(16, n - c0)
            // Groups of eight whole columns: 8 × 8 blocks of W loaded as rows, transposed in registers,
            // stored as eight panel rows (the scalar loop below wrote one float per cache line).
            let groups = width / 8
            for g in 0..<groups {
                let src = w + (c0 + 8 * g) * ld
                var kk = 0
                while kk < k8 {
                    @inline(__always) func row(_ r: Int) -> V8 { UnsafeRawPointer(src + r * ld + kk).loadUnaligned(as: V8.self) }
                    @inline(__always) func put(_ r: Int, _ x: V8) {
                        UnsafeMutableRawPointer(dst + (kk + r) * 16 + 8 * g).storeBytes(of: x * s8, as: V8.self)
                    }
                    let t = transpose8x8((row(0), row(1), row(2), row(3), row(4), row(5), row(6), row(7)))
                    put(0, t.0); put(1, t.1); put(2, t.2); put(3, t.3); put(4, t.4); put(5, t.5); put(6, t.6); put(7, t.7)
                    kk += 8
                }
                for t in 0..<8 { for kk in k8..<k { dst[kk * 16 + 8 * g + t] = src[t * ld + kk] * scale } }
            }
            for t in (8 * groups)..<width {
                let src = w + (c0 + t) * ld
                for kk in 0..<k { dst[kk * 16 + t] = src[kk] * scale }
            }
        }
    }

    /// Repack from B (k, n), same shape; B's rows `ld` apart (default n).
    public func fill(_ b: UnsafePointer<Float>, ld: Int? = nil) {
        let k = self.k, n = self.n, ld = ld ?? n
        for j in 0..<panels {
            let dst = data + j * k * 16
            let c0 = j * 16, width = min(16, n - c0)
            if width == 16 {
                for kk in 0..<k {
                    let src = UnsafeRawPointer(b + kk * ld + c0), d = UnsafeMutableRawPointer(dst + kk * 16)
                    d.storeBytes(of: src.loadUnaligned(as: SIMD8<Float>.self), as: SIMD8<Float>.self)
                    d.storeBytes(of: src.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self), toByteOffset: 32, as: SIMD8<Float>.self)
                }
            } else {
                for kk in 0..<k { (dst + kk * 16).update(from: b + kk * ld + c0, count: width) }
            }
        }
    }

    /// Bᵀ (n, k) row-major, read back from the panels — the weight `init(transposing:)` packed.
    public func transposedValues() -> [Float] {
        var w = [Float](repeating: 0, count: n * k)
        for j in 0..<n { for kk in 0..<k { w[j * k + kk] = data[((j / 16) * k + kk) * 16 + j % 16] } }
        return w
    }

    /// B's value at (row, col), read back from the panels.
    public func value(row: Int, col: Int) -> Float { data[((col / 16) * k + row) * 16 + col % 16] }
}

private typealias V8 = SIMD8<Float>

/// What a product's final pass does to each finished tile while it is still in registers (the
/// linear layers' elementwise epilogues without a second pass over the output). Column indices
/// of `bias` / `scale` / `residual` are B's (absolute, whatever `columns` range is computed);
/// `residual` rows are the product's rows, `ld` apart.
public enum PackedEpilogue: @unchecked Sendable {
    /// C = A·B.
    case none
    /// C = A·B + bias.
    case bias(UnsafePointer<Float>)
    /// C = GELU(A·B + bias) (`simdGELU`; bias optional).
    case biasGELU(UnsafePointer<Float>?)
    /// residual += scale ⊙ (A·B + bias) (`biasScaleResidual`; bias and scale optional). C holds
    /// only the partial sums of passes before the last (depth > 1,024); the result is in `residual`.
    case biasScaleResidual(bias: UnsafePointer<Float>?, scale: UnsafePointer<Float>?, residual: UnsafeMutablePointer<Float>, ld: Int)

    /// The same epilogue for a product that starts `rows` rows further down.
    public func advanced(rows: Int) -> PackedEpilogue {
        if case let .biasScaleResidual(bias, scale, residual, ld) = self {
            return .biasScaleResidual(bias: bias, scale: scale, residual: residual + rows * ld, ld: ld)
        }
        return self
    }

    /// Applies the epilogue to C[0..<rows, columns] in place (C's column 0 at `c`, rows `ldc` apart),
    /// the unfused way — for tiles narrower than a panel, and for products that do not run on the
    /// packed kernel (trainable weights on OpenBLAS).
    public func apply(_ c: UnsafeMutablePointer<Float>, ldc: Int, rows: Int, columns: Range<Int>) {
        let j = columns.lowerBound, w = columns.count
        switch self {
        case .none: break
        case let .bias(b): addBias(c + j, b + j, rows: rows, cols: w, ld: ldc)
        case let .biasGELU(b): biasGELUForward(c + j, bias: b.map { $0 + j }, rows: rows, cols: w, ld: ldc)
        case let .biasScaleResidual(b, scale, residual, ld):
            for r in 0..<rows {
                XRKernels.biasScaleResidual(
                    residual + r * ld + j, c + r * ldc + j, bias: b.map { $0 + j },
                    scale: scale.map { $0 + j }, rows: 1, cols: w)
            }
        }
    }
}

/// Eight rows of an 8 × 8 block.
private typealias Block8 = (V8, V8, V8, V8, V8, V8, V8, V8)

/// The transpose of an 8 × 8 block: three rounds of unzipping pairs of rows (even lanes of both,
/// then odd lanes of both), each rotating a lane's row / column index bits by one.
@inline(__always)
private func transpose8x8(_ v: Block8) -> Block8 {
    @inline(__always) func even(_ a: V8, _ b: V8) -> V8 { V8(lowHalf: a.evenHalf, highHalf: b.evenHalf) }
    @inline(__always) func odd(_ a: V8, _ b: V8) -> V8 { V8(lowHalf: a.oddHalf, highHalf: b.oddHalf) }
    @inline(__always) func round(_ u: Block8) -> Block8 {
        (even(u.0, u.1), even(u.2, u.3), even(u.4, u.5), even(u.6, u.7), odd(u.0, u.1), odd(u.2, u.3), odd(u.4, u.5), odd(u.6, u.7))
    }
    return round(round(round(v)))
}

/// C[0..<rows, 0..<16] (row stride ldc) = (or +=) A[0..<rows, 0..<kc] (row stride lda) · panel
/// (kc × 16, k-major). rows 1...6; rows past `rows` repeat the last row's loads and are not stored.
@inline(__always)
private func microkernel(
    _ a: UnsafePointer<Float>, lda: Int, rows: Int, _ panel: UnsafePointer<Float>, kc: Int,
    _ c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool,
    epilogue: PackedEpilogue, column: Int
) {
    let a0 = a
    let a1 = a + (rows > 1 ? lda : 0)
    let a2 = a + (rows > 2 ? 2 * lda : 0)
    let a3 = a + (rows > 3 ? 3 * lda : 0)
    let a4 = a + (rows > 4 ? 4 * lda : 0)
    let a5 = a + (rows > 5 ? 5 * lda : 0)
    var c00 = V8(), c01 = V8(), c10 = V8(), c11 = V8(), c20 = V8(), c21 = V8()
    var c30 = V8(), c31 = V8(), c40 = V8(), c41 = V8(), c50 = V8(), c51 = V8()
    var bp = UnsafeRawPointer(panel)
    for kk in 0..<kc {
        let b0 = bp.load(as: V8.self)
        let b1 = bp.load(fromByteOffset: 32, as: V8.self)
        bp += 64
        var x = V8(repeating: a0[kk]); c00 = c00.addingProduct(x, b0); c01 = c01.addingProduct(x, b1)
        x = V8(repeating: a1[kk]); c10 = c10.addingProduct(x, b0); c11 = c11.addingProduct(x, b1)
        x = V8(repeating: a2[kk]); c20 = c20.addingProduct(x, b0); c21 = c21.addingProduct(x, b1)
        x = V8(repeating: a3[kk]); c30 = c30.addingProduct(x, b0); c31 = c31.addingProduct(x, b1)
        x = V8(repeating: a4[kk]); c40 = c40.addingProduct(x, b0); c41 = c41.addingProduct(x, b1)
        x = V8(repeating: a5[kk]); c50 = c50.addingProduct(x, b0); c51 = c51.addingProduct(x, b1)
    }
    store(c, ldc: ldc, rows: rows, accumulate: accumulate, epilogue: epilogue, column: column, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51)
}

/// `microkernel` with A read transposed: A's element (r, kk) at a[kk · lda + r] (A = Xᵀ for X
/// (kc, rows) row-major, e.g. attention's Pᵀ), so each step's six values are contiguous.
@inline(__always)
private func microkernelTransposedA(
    _ a: UnsafePointer<Float>, lda: Int, rows: Int, _ panel: UnsafePointer<Float>, kc: Int,
    _ c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool,
    epilogue: PackedEpilogue, column: Int
) {
    let o1 = rows > 1 ? 1 : 0, o2 = rows > 2 ? 2 : o1, o3 = rows > 3 ? 3 : o2, o4 = rows > 4 ? 4 : o3, o5 = rows > 5 ? 5 : o4
    var c00 = V8(), c01 = V8(), c10 = V8(), c11 = V8(), c20 = V8(), c21 = V8()
    var c30 = V8(), c31 = V8(), c40 = V8(), c41 = V8(), c50 = V8(), c51 = V8()
    var bp = UnsafeRawPointer(panel)
    var ap = a
    for _ in 0..<kc {
        let b0 = bp.load(as: V8.self)
        let b1 = bp.load(fromByteOffset: 32, as: V8.self)
        bp += 64
        var x = V8(repeating: ap[0]); c00 = c00.addingProduct(x, b0); c01 = c01.addingProduct(x, b1)
        x = V8(repeating: ap[o1]); c10 = c10.addingProduct(x, b0); c11 = c11.addingProduct(x, b1)
        x = V8(repeating: ap[o2]); c20 = c20.addingProduct(x, b0); c21 = c21.addingProduct(x, b1)
        x = V8(repeating: ap[o3]); c30 = c30.addingProduct(x, b0); c31 = c31.addingProduct(x, b1)
        x = V8(repeating: ap[o4]); c40 = c40.addingProduct(x, b0); c41 = c41.addingProduct(x, b1)
        x = V8(repeating: ap[o5]); c50 = c50.addingProduct(x, b0); c51 = c51.addingProduct(x, b1)
        ap += lda
    }
    store(c, ldc: ldc, rows: rows, accumulate: accumulate, epilogue: epilogue, column: column, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51)
}

/// Writes (or adds) a microkernel's six 16-wide rows to C, the first `rows` of them, through the
/// epilogue (columns `column` ..< `column` + 16 of B).
@inline(__always)
private func store(
    _ c: UnsafeMutablePointer<Float>, ldc: Int, rows: Int, accumulate: Bool, epilogue: PackedEpilogue, column: Int,
    _ c00: V8, _ c01: V8, _ c10: V8, _ c11: V8, _ c20: V8, _ c21: V8,
    _ c30: V8, _ c31: V8, _ c40: V8, _ c41: V8, _ c50: V8, _ c51: V8
) {
    @inline(__always) func load(_ p: UnsafePointer<Float>, _ offset: Int) -> V8 { UnsafeRawPointer(p + offset).loadUnaligned(as: V8.self) }
    @inline(__always) func row(_ r: Int, _ v0: V8, _ v1: V8, _ finish: (Int, inout V8, inout V8) -> Bool) {
        if r >= rows { return }
        let p = UnsafeMutableRawPointer(c + r * ldc)
        var v0 = v0, v1 = v1
        if accumulate {
            v0 += p.loadUnaligned(as: V8.self)
            v1 += p.loadUnaligned(fromByteOffset: 32, as: V8.self)
        }
        if finish(r, &v0, &v1) {
            p.storeBytes(of: v0, as: V8.self)
            p.storeBytes(of: v1, toByteOffset: 32, as: V8.self)
        }
    }
    // One switch per tile; each case's row function is inlined into its own six stores.
    @inline(__always) func eachRow(_ finish: (Int, inout V8, inout V8) -> Bool) {
        row(0, c00, c01, finish); row(1, c10, c11, finish); row(2, c20, c21, finish)
        row(3, c30, c31, finish); row(4, c40, c41, finish); row(5, c50, c51, finish)
    }
    switch epilogue {
    case .none:
        eachRow { _, _, _ in true }
    case let .bias(b):
        let b0 = load(b, column), b1 = load(b, column + 8)
        eachRow { _, v0, v1 in
            v0 += b0; v1 += b1; return true
        }
    case let .biasGELU(b):
        let b0 = b.map { load($0, column) } ?? V8(), b1 = b.map { load($0, column + 8) } ?? V8()
        eachRow { _, v0, v1 in
            v0 = simdGELU(v0 + b0); v1 = simdGELU(v1 + b1); return true
        }
    case let .biasScaleResidual(b, scale, residual, ld):
        // The order of `biasScaleResidual`: (y + bias) · scale, then added to the residual.
        let b0 = b.map { load($0, column) } ?? V8(), b1 = b.map { load($0, column + 8) } ?? V8()
        let s0 = scale.map { load($0, column) } ?? V8(repeating: 1), s1 = scale.map { load($0, column + 8) } ?? V8(repeating: 1)
        eachRow { r, v0, v1 in
            let q = UnsafeMutableRawPointer(residual + r * ld + column)
            q.storeBytes(of: (v0 + b0) * s0 + q.loadUnaligned(as: V8.self), as: V8.self)
            q.storeBytes(of: (v1 + b1) * s1 + q.loadUnaligned(fromByteOffset: 32, as: V8.self), toByteOffset: 32, as: V8.self)
            return false
        }
    }
}

/// Depth of one pass over the inner dimension: the whole of it up to 1,024, else equal blocks
/// of at most 768 (a 6-row strip of A stays in L1, four panels' blocks in L2).
@inline(__always)
private func depthBlock(_ k: Int) -> Int {
    if k <= 1024 { return k }
    let blocks = (k + 767) / 768
    return (k + blocks - 1) / blocks
}

/// C[rows, columns] = (or += when `accumulate`) A (rows, inner.count; row stride lda) · B[inner, columns],
/// on the calling thread. `c` is C's origin (column 0; row stride ldc), or with `outputFromFirstColumn`
/// the place of C's first computed column. `columns` must start at a multiple of 16 and end at or
/// before b.n; `inner` (default all of B's rows) is the part of the inner dimension A holds. Only
/// C's `columns` are written. `transposedA`: A = Xᵀ with X (inner.count, rows) row-major, `lda`
/// its row stride. `finish` is applied to each tile of the final pass before it is stored (with
/// `.biasScaleResidual` the result goes to its residual instead of C).
public func packedGEMM(
    _ c: UnsafeMutablePointer<Float>, ldc: Int, _ a: UnsafePointer<Float>, lda: Int,
    _ b: PackedMatrix, rows: Int, columns: Range<Int>, inner: Range<Int>? = nil,
    accumulate: Bool = false, outputFromFirstColumn: Bool = false, transposedA: Bool = false,
    finish: PackedEpilogue = .none
) {
    precondition(columns.lowerBound % 16 == 0 && columns.upperBound <= b.n, "packedGEMM: columns \(columns) of \(b.n)")
    let inner = inner ?? 0..<b.k
    precondition(inner.lowerBound >= 0 && inner.upperBound <= b.k, "packedGEMM: inner \(inner) of \(b.k)")
    if rows <= 0 || columns.isEmpty { return }
    if inner.isEmpty {
        if !accumulate { for r in 0..<rows { (c + r * ldc + (outputFromFirstColumn ? 0 : columns.lowerBound)).update(repeating: 0, count: columns.count) } }
        finish.apply(c - (outputFromFirstColumn ? columns.lowerBound : 0), ldc: ldc, rows: rows, columns: columns)
        return
    }
    let k = b.k, depthTotal = inner.count, kc = depthBlock(depthTotal), panelsPerBlock = 4
    let p0 = columns.lowerBound / 16, p1 = (columns.upperBound + 15) / 16
    let cOrigin = outputFromFirstColumn ? columns.lowerBound : 0
    let fullEnd = columns.upperBound % 16 == 0 ? p1 : p1 - 1
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 6 * 16) { tileBuffer in
        let tile = tileBuffer.baseAddress!
        var k0 = 0
        while k0 < depthTotal {
            let depth = min(kc, depthTotal - k0)
            let acc = accumulate || k0 > 0, last = k0 + depth == depthTotal
            var j0 = p0
            while j0 < p1 {
                let j1 = min(p1, j0 + panelsPerBlock)
                var r = 0
                while r < rows {
                    let n = min(6, rows - r)
                    let ar = transposedA ? a + k0 * lda + r : a + r * lda + k0
                    for j in j0..<j1 {
                        let panel = b.data + (j * k + inner.lowerBound + k0) * 16
                        let cr = c + r * ldc + (j * 16 - cOrigin)
                        // The last panel may be partial: its product goes through the 6 × 16 scratch tile.
                        let full = j < fullEnd, width = full ? 16 : columns.upperBound - j * 16
                        if !full { for i in 0..<n { for t in 0..<16 { tile[i * 16 + t] = acc && t < width ? cr[i * ldc + t] : 0 } } }
                        let dst = full ? cr : tile, ldd = full ? ldc : 16
                        // Full panels of the last pass finish in registers; a partial one after its copy-out.
                        let fused = full && last ? finish.advanced(rows: r) : .none
                        if transposedA {
                            microkernelTransposedA(
                                ar, lda: lda, rows: n, panel, kc: depth, dst, ldc: ldd, accumulate: acc,
                                epilogue: fused, column: j * 16)
                        } else {
                            microkernel(
                                ar, lda: lda, rows: n, panel, kc: depth, dst, ldc: ldd, accumulate: acc,
                                epilogue: fused, column: j * 16)
                        }
                        if !full {
                            for i in 0..<n { (cr + i * ldc).update(from: tile + i * 16, count: width) }
                            if last { finish.advanced(rows: r).apply(cr - j * 16, ldc: ldc, rows: n, columns: (j * 16)..<(j * 16 + width)) }
                        }
                    }
                    r += 6
                }
                j0 = j1
            }
            k0 += depth
        }
    }
}

/// Up to this many rows (one image at 224 px: 197 tokens) `packedProduct` splits output features
/// across the cores, so each streams half of the packed weights; above it, rows. `xrlab bench-gemm`
/// times both splits at the models' shapes, `xrlab bench --column-split-rows` (which sets this)
/// whole-model A/B runs (docs/benchmarks.md).
nonisolated(unsafe) public var packedColumnSplitRows = 256

/// Rows per work item when `packedProduct` splits by rows: items are claimed by whichever worker
/// is free (`Parallel.claiming`), and each item's epilogue runs while its block is still in cache.
/// At most 96 rows, fewer (a multiple of 6, at least 6) when that leaves under four blocks per worker.
func packedChunkRows(_ rows: Int, workers: Int) -> Int {
    let perBlock = rows / (4 * max(1, workers))
    return min(96, max(6, perBlock / 6 * 6))
}

/// out (rows, b.n; row stride ldc, default b.n) = (or += when `accumulate`) inp (rows, b.k; row
/// stride lda, default b.k) · B — only `columns` of it when given (starting at a multiple of 16) —
/// split across the workers — by output columns (16-column panels)
/// when `splitColumns` (default: rows ≤ `packedColumnSplitRows`), else by rows (blocks of
/// `packedChunkRows`); the blocks are claimed by whichever worker is free. `finish` is fused into
/// the kernel's stores (`packedGEMM`); `epilogue(rows, columns)` runs on each finished block
/// while it is still in cache.
public func packedProduct(
    _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ b: PackedMatrix, rows: Int,
    lda: Int? = nil, ldc: Int? = nil, accumulate: Bool = false, splitColumns: Bool? = nil,
    columns: Range<Int>? = nil,
    finish: PackedEpilogue = .none, epilogue: (Range<Int>, Range<Int>) -> Void = { _, _ in }
) {
    let lda = lda ?? b.k, ldc = ldc ?? b.n, columns = columns ?? 0..<b.n
    precondition(columns.lowerBound % 16 == 0 && columns.upperBound <= b.n, "packedProduct: columns \(columns) of \(b.n)")
    let o = SendablePointer(out), x = SendablePointer(UnsafeMutablePointer(mutating: inp))
    if splitColumns ?? (rows <= packedColumnSplitRows) {
        // Groups of up to 4 panels (the kernel's block), at least 4 groups per worker.
        let first = columns.lowerBound / 16, panels = (columns.upperBound + 15) / 16 - first
        let group = max(1, min(4, panels / (4 * Parallel.workers))), groups = (panels + group - 1) / group
        Parallel.claiming(groups) { _, next in
            while let g = next() {
                let cols = ((first + g * group) * 16)..<min(columns.upperBound, (first + (g + 1) * group) * 16)
                packedGEMM(o.p, ldc: ldc, x.p, lda: lda, b, rows: rows, columns: cols, accumulate: accumulate, finish: finish)
                epilogue(0..<rows, cols)
            }
        }
    } else {
        let chunkRows = packedChunkRows(rows, workers: Parallel.workers), chunks = (rows + chunkRows - 1) / chunkRows
        Parallel.claiming(chunks) { _, next in
            while let i = next() {
                let r = (i * chunkRows)..<min(rows, (i + 1) * chunkRows)
                packedGEMM(
                    o.p + r.lowerBound * ldc, ldc: ldc, x.p + r.lowerBound * lda, lda: lda, b, rows: r.count,
                    columns: columns, accumulate: accumulate, finish: finish.advanced(rows: r.lowerBound))
                epilogue(r, columns)
            }
        }
    }
}

/// out (m, b.n; row stride ldc, default b.n) = (or += when `accumulate`) Xᵀ · B for X (b.k, m)
/// row-major (row stride lda, default m) — a weight gradient doutᵀ · inp with inp packed, so
/// neither dout nor the gradient is copied — split across the workers by rows of out (blocks of
/// `packedChunkRows`, claimed by whichever worker is free).
public func packedProductTransposedA(
    _ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ b: PackedMatrix, rows m: Int,
    lda: Int? = nil, ldc: Int? = nil, accumulate: Bool = false
) {
    let lda = lda ?? m, ldc = ldc ?? b.n
    precondition(lda >= m && ldc >= b.n, "packedProductTransposedA: lda \(lda) or ldc \(ldc) too small")
    if m <= 0 { return }
    let o = SendablePointer(out), xp = SendablePointer(UnsafeMutablePointer(mutating: x))
    let chunkRows = packedChunkRows(m, workers: Parallel.workers), chunks = (m + chunkRows - 1) / chunkRows
    Parallel.claiming(chunks) { _, next in
        while let i = next() {
            let r = (i * chunkRows)..<min(m, (i + 1) * chunkRows)
            packedGEMM(
                o.p + r.lowerBound * ldc, ldc: ldc, xp.p + r.lowerBound, lda: lda, b, rows: r.count, columns: 0..<b.n,
                accumulate: accumulate, transposedA: true)
        }
    }
}
