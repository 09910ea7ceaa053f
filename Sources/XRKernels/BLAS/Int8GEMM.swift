// int8 linear layers: out = inp · Wᵀ with W quantised once per output channel and inp per row on
// the fly, products in int32 on AVX2 or AVX-512 VNNI (CXRCPU `int8gemm.c`), dequantised on the way out.
// M rows (tokens), K inner (in features), N columns (out features).
//
// Quantisation (symmetric weights, asymmetric activations — the scheme of ONNX Runtime's
// `quantize_dynamic` and PyTorch's dynamic quantisation):
//   weight   W[n, k] ≈ sw[n] · qw[n, k],      qw ∈ −127...127,  sw[n] = max_k |W[n, k]| / 127
//   input    x[m, k] ≈ sa[m] · (qa[m, k] − za[m]),  qa ∈ 0...qmax,  sa[m] = (max(0, x) − min(0, x)) / qmax
//   product  y[m, n] ≈ sa[m] · sw[n] · (Σ_k qa·qw − za[m] · Σ_k qw[n, k])
// The column sums Σ_k qw[n, k] are kept with the packing, so the zero point costs one multiply-add
// per output instead of a pass over the inputs. `Reference`-style int64 sums are the tests' truth.
import CXRCPU

/// The integer instruction sequence an int8 product runs on, which sets the activations' code range.
public enum Int8Kernel: String, Sendable, CaseIterable {
    /// vpmaddubsw (u8 × s8, pairs summed into int16) then vpmaddwd by ones: 32 multiply-adds in
    /// three instructions. Activations are quantised to 7 bits (qmax 127) so no int16 pair sum
    /// can saturate (2 · 127 · 128 < 32,768). On CPUs with AVX-512 VNNI + VL the same codes run
    /// on vpdpbusd (int32 results identical to the three-instruction sequence).
    case u7
    /// vpdpbusd (AVX-512 VNNI on ymm): four u8 × s8 products added straight into int32, no int16
    /// step, so all 8 activation bits (qmax 255) are exact. Runs only where the C kernel found
    /// AVX-512 VNNI + VL at run time (`isAvailable`).
    case u8
    /// Codes widened to int16 and multiplied with vpmaddwd (int32 pair sums, exact for any 8-bit
    /// codes): 32 multiply-adds in four instructions plus the weights' widening. Activations use
    /// all 8 bits (qmax 255). Runs on every AVX2 CPU.
    case i16

    /// The largest activation code: 127 for `u7`, 255 for `u8` and `i16`.
    public var activationMax: Int { self == .u7 ? 127 : 255 }

    /// Whether this CPU runs the kernel: `u8` needs the VNNI path of `xr_int8_u7_path()` (found
    /// once with cpuid; `XRLAB_INT8_PATH=avx2` in the environment forces the AVX2 path), the
    /// others need AVX2 only.
    public var isAvailable: Bool { self != .u8 || Int8Kernel.hasVNNI }

    /// True when the u8 products run on vpdpbusd (AVX-512 VNNI + VL found and not overridden).
    public static var hasVNNI: Bool { xr_int8_u7_path() != Int32(XR_INT8_AVX2) }

    /// The fastest kernel with 8-bit activations on this CPU: `u8` on VNNI, else `i16`.
    public static var eightBit: Int8Kernel { hasVNNI ? .u8 : .i16 }

    /// The kernel `int8Product` uses unless told otherwise: `u8` where VNNI runs (the fastest
    /// kernel here, and 8-bit activations), else `u7` (~1.3× `i16` on AVX2, both at their
    /// instruction-throughput limit; `xrlab bench gemm --precision int8` times them,
    /// docs/benchmarks.md "int8 products"). The activations' qmax follows from it.
    nonisolated(unsafe) public static var `default`: Int8Kernel = hasVNNI ? .u8 : .u7

    /// The kernels this CPU runs, in `allCases` order.
    public static var available: [Int8Kernel] { allCases.filter(\.isAvailable) }

    /// One line for `bench` / `inspect`: the default kernel, its instructions and activation range.
    public static var summary: String {
        let k = Int8Kernel.default
        let how: String
        switch k {
        case .u7: how = hasVNNI ? "vpdpbusd, AVX-512 VNNI" : "vpmaddubsw + vpmaddwd, AVX2"
        case .u8: how = "vpdpbusd, AVX-512 VNNI"
        case .i16: how = "vpmaddwd on int16, AVX2"
        }
        return "\(k.rawValue) (\(how); activation codes 0...\(k.activationMax))"
    }
}

/// A linear layer's weight W (n, k) quantised per output channel to symmetric int8 and laid out
/// for `int8Product`: ⌈n / 16⌉ panels of 16 columns, each ⌈k / 4⌉ quads of 64 bytes (column t's
/// four consecutive k at bytes 4t...4t+3), padding zero. 64-byte aligned. k ≤ 65,536 keeps every
/// int32 sum exact (|Σ (qa − za) · qw| ≤ k · 255 · 128).
public final class Int8PackedMatrix: @unchecked Sendable {
    /// Inner dimension (W's columns, the layer's in features).
    public let k: Int
    /// Output columns (W's rows, the layer's out features).
    public let n: Int
    /// 16-column panels.
    public let panels: Int
    /// Groups of four along k (k padded with zeros to 4 · quads).
    public let quads: Int
    /// Dequantisation scale of each output column, sw (n).
    public let scales: [Float]
    /// Σ_k qw[j, k] of each output column (n): the zero-point compensation.
    public let columnSums: [Int32]
    let data: UnsafeMutablePointer<Int8>

    /// Codes `codes` (n, k) row-major with scales (n), laid out as they are — for weights
    /// quantised elsewhere and for tests of the integer kernel (any int8 code, −128 included).
    public init(codes: UnsafePointer<Int8>, scales: [Float], rows n: Int, cols k: Int) {
        precondition(k > 0 && n > 0 && k <= 65536, "Int8PackedMatrix: operand k=\(k) n=\(n) (need 1...65,536 and n > 0)")
        precondition(scales.count == n, "Int8PackedMatrix: \(scales.count) scales for \(n) columns")
        self.k = k
        self.n = n
        panels = (n + 15) / 16
        quads = (k + 3) / 4
        self.scales = scales
        let count = panels * quads * 64
        data = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 64).bindMemory(to: Int8.self, capacity: count)
        data.initialize(repeating: 0, count: count)
        var sums = [Int32](repeating: 0, count: n)
        for j in 0..<n {
            let panel = data + (j / 16) * quads * 64 + (j % 16) * 4
            var s: Int32 = 0
            for kk in 0..<k {
                let q = codes[j * k + kk]
                panel[(kk / 4) * 64 + kk % 4] = q
                s += Int32(q)
            }
            sums[j] = s
        }
        columnSums = sums
    }

    /// W (n, k) row-major — a linear layer's weight (out, in) — quantised per output channel:
    /// qw = rint(W / sw) with sw = max |W[j, :]| / 127 (1 for an all-zero row), so
    /// |W − sw · qw| ≤ sw / 2.
    public convenience init(transposing w: UnsafePointer<Float>, rows n: Int, cols k: Int) {
        var codes = [Int8](repeating: 0, count: n * k), scales = [Float](repeating: 1, count: n)
        for j in 0..<n {
            let row = UnsafeBufferPointer(start: w + j * k, count: k)
            let top = row.reduce(Float(0)) { max($0, abs($1)) }
            let s = top > 0 && top.isFinite ? top / 127 : 1
            scales[j] = s
            for kk in 0..<k {
                let v = (row[kk] / s).rounded(.toNearestOrEven)
                codes[j * k + kk] = v.isNaN ? 0 : Int8(max(-127, min(127, v)))
            }
        }
        self.init(codes: codes, scales: scales, rows: n, cols: k)
    }

    deinit { data.deallocate() }

    /// The code of B = Wᵀ at (row, col), i.e. qw[col, row], read back from the panels.
    public func code(row: Int, col: Int) -> Int8 { data[((col / 16) * quads + row / 4) * 64 + (col % 16) * 4 + row % 4] }
}

/// Activation codes of one product in the kernel's layout, with each row's scale and zero point.
private struct QuantisedRows {
    let kernel: Int8Kernel
    let stride: Int // codes per row (4 · quads)
    let codes: UnsafeMutableRawPointer
    let scales: UnsafeMutablePointer<Float>
    let zeros: UnsafeMutablePointer<Int32>

    init(rows: Int, quads: Int, kernel: Int8Kernel) {
        self.kernel = kernel
        stride = 4 * quads
        let width = kernel == .i16 ? 2 : 1
        codes = UnsafeMutableRawPointer.allocate(byteCount: max(1, rows * stride * width), alignment: 64)
        scales = .allocate(capacity: max(1, rows))
        zeros = .allocate(capacity: max(1, rows))
    }

    func deallocate() {
        codes.deallocate()
        scales.deallocate()
        zeros.deallocate()
    }

    /// Rows `r` of C's columns of panels `p` (int32, `ldc` apart) from rows `r` of the codes.
    func multiply(_ b: Int8PackedMatrix, rows r: Range<Int>, panels p: Range<Int>, into c: UnsafeMutablePointer<Int32>, ldc: Int) {
        precondition(kernel.isAvailable, "int8 kernel \(kernel.rawValue) needs AVX-512 VNNI + VL, which this CPU lacks")
        let width = kernel == .i16 ? 2 : 1
        xr_int8_gemm(
            kernel == .i16 ? 1 : 0, r.count, b.quads, codes + r.lowerBound * stride * width, stride, b.data, p.lowerBound, p.upperBound,
            c, ldc)
    }
}

/// C (rows, b.n; int32, rows `ldc` apart, default b.n) = A · B exactly, for activation codes A
/// (rows, b.k; rows `lda` apart, default b.k) and B's int8 codes, on `kernel` (every code at most
/// `kernel.activationMax`; the kernel must be `isAvailable`). The integer core of `int8Product`, on the calling thread.
public func int8IntegerProduct(
    _ c: UnsafeMutablePointer<Int32>, _ a: UnsafePointer<UInt8>, _ b: Int8PackedMatrix, rows: Int,
    lda: Int? = nil, ldc: Int? = nil, kernel: Int8Kernel = .default
) {
    let lda = lda ?? b.k, ldc = ldc ?? b.n
    if rows <= 0 { return }
    let q = QuantisedRows(rows: rows, quads: b.quads, kernel: kernel)
    defer { q.deallocate() }
    for r in 0..<rows {
        for kk in 0..<q.stride {
            let v = kk < b.k ? a[r * lda + kk] : 0
            precondition(Int(v) <= kernel.activationMax, "int8IntegerProduct: code \(v) above \(kernel.activationMax) for \(kernel)")
            if kernel == .i16 {
                q.codes.storeBytes(of: Int16(v), toByteOffset: 2 * (r * q.stride + kk), as: Int16.self)
            } else {
                q.codes.storeBytes(of: v, toByteOffset: r * q.stride + kk, as: UInt8.self)
            }
        }
    }
    let tileColumns = 16 * b.panels
    withUnsafeTemporaryAllocation(of: Int32.self, capacity: 6 * tileColumns) { buffer in
        guard let tile = buffer.baseAddress else { return }
        var r = 0
        while r < rows {
            let n = min(6, rows - r)
            q.multiply(b, rows: r..<(r + n), panels: 0..<b.panels, into: tile, ldc: tileColumns)
            for i in 0..<n { (c + (r + i) * ldc).update(from: tile + i * tileColumns, count: b.n) }
            r += n
        }
    }
}

/// Rows per block of `int8Product`'s int32 scratch (blocks of at most 96 rows × 64 columns, 24 KiB).
private let int8BlockRows = 96

/// out (rows, b.n; rows `ldc` apart, default b.n) = inp (rows, b.k; rows `lda` apart, default b.k)
/// · B, in int8: each row of inp quantised on the fly (see the file header), int32 products on
/// `kernel`, dequantised, then `finish` applied to each 64-column block while it is in cache
/// (`PackedEpilogue.apply`, the same code the fp32 product runs; with `.biasScaleResidual` the
/// result goes to the residual and out holds the dequantised product). Split across the workers
/// by output columns when `splitColumns` (default: rows ≤ `packedColumnSplitRows`), else by rows,
/// like `packedProduct`. Only `columns` of out are computed and written when given (starting at a
/// multiple of 16, as for `packedProduct`).
///
/// Error bound (from the quantisation steps, before fp32 rounding): with per-element errors
/// |x − sa · (qa − za)| ≤ sa / 2 and |W − sw · qw| ≤ sw / 2, and x·w − x̂·ŵ = x · (w − ŵ) + (x − x̂) · ŵ,
///   |y[m, n] − x[m, :] · W[n, :]| ≤ sw[n] / 2 · Σ_k |x[m, k]| + sa[m] / 2 · Σ_k |ŵ[n, k]|.
/// The integer sums themselves are exact (`int8IntegerProduct`).
public func int8Product(
    _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ b: Int8PackedMatrix, rows: Int,
    lda: Int? = nil, ldc: Int? = nil, kernel: Int8Kernel = .default, splitColumns: Bool? = nil,
    columns: Range<Int>? = nil, finish: PackedEpilogue = .none
) {
    let lda = lda ?? b.k, ldc = ldc ?? b.n, columns = columns ?? 0..<b.n
    precondition(columns.lowerBound % 16 == 0 && columns.upperBound <= b.n, "int8Product: columns \(columns) of \(b.n)")
    if rows <= 0 || columns.isEmpty { return }
    let firstPanel = columns.lowerBound / 16, lastPanel = (columns.upperBound + 15) / 16
    let q = QuantisedRows(rows: rows, quads: b.quads, kernel: kernel)
    defer { q.deallocate() }
    let x = SendablePointer(UnsafeMutablePointer(mutating: inp)), o = SendablePointer(out)
    let wide: Int32 = kernel == .i16 ? 1 : 0, width = kernel == .i16 ? 2 : 1
    Parallel.ranges(rows, minChunk: 16) { r in
        xr_quantize_rows(
            x.p + r.lowerBound * lda, lda, r.count, b.k, q.stride, Int32(kernel.activationMax), q.codes + r.lowerBound * q.stride * width, wide,
            q.scales + r.lowerBound, q.zeros + r.lowerBound)
    }
    // One block: rows r × panels p (≤ 96 × 4) into the scratch, then dequantised into out and finished.
    func block(_ r: Range<Int>, _ p: Range<Int>, _ tile: UnsafeMutablePointer<Int32>) {
        q.multiply(b, rows: r, panels: p, into: tile, ldc: 64)
        let c0 = p.lowerBound * 16, c1 = min(columns.upperBound, p.upperBound * 16)
        b.scales.withUnsafeBufferPointer { sw in
            b.columnSums.withUnsafeBufferPointer { cs in
                guard let sums = cs.baseAddress, let scales = sw.baseAddress else { return }
                for (i, row) in r.enumerated() {
                    let sa = q.scales[row], za = q.zeros[row], t = tile + i * 64, y = o.p + row * ldc
                    var j = c0
                    while j + 8 <= c1 {
                        let acc = UnsafeRawPointer(t + j - c0).loadUnaligned(as: SIMD8<Int32>.self)
                        let sum = UnsafeRawPointer(sums + j).loadUnaligned(as: SIMD8<Int32>.self)
                        let s = UnsafeRawPointer(scales + j).loadUnaligned(as: SIMD8<Float>.self)
                        let v = SIMD8<Float>(acc &- za &* sum) * (sa * s)
                        UnsafeMutableRawPointer(y + j).storeBytes(of: v, as: SIMD8<Float>.self)
                        j += 8
                    }
                    while j < c1 {
                        y[j] = Float(t[j - c0] &- za &* cs[j]) * (sa * sw[j])
                        j += 1
                    }
                }
            }
        }
        finish.advanced(rows: r.lowerBound).apply(o.p + r.lowerBound * ldc, ldc: ldc, rows: r.count, columns: c0..<c1)
    }
    if splitColumns ?? (rows <= packedColumnSplitRows) {
        let panels = lastPanel - firstPanel
        let group = max(1, min(4, panels / (4 * Parallel.workers))), groups = (panels + group - 1) / group
        Parallel.claiming(groups) { _, next in
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: int8BlockRows * 64) { buffer in
                guard let tile = buffer.baseAddress else { return }
                while let g = next() {
                    var r = 0
                    while r < rows {
                        let r1 = min(rows, r + int8BlockRows)
                        block(r..<r1, (firstPanel + g * group)..<min(lastPanel, firstPanel + (g + 1) * group), tile)
                        r = r1
                    }
                }
            }
        }
    } else {
        let chunkRows = packedChunkRows(rows, workers: Parallel.workers), chunks = (rows + chunkRows - 1) / chunkRows
        Parallel.claiming(chunks) { _, next in
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: int8BlockRows * 64) { buffer in
                guard let tile = buffer.baseAddress else { return }
                while let i = next() {
                    let r = (i * chunkRows)..<min(rows, (i + 1) * chunkRows)
                    var p = firstPanel
                    while p < lastPanel {
                        block(r, p..<min(lastPanel, p + 4), tile)
                        p += 4
                    }
                }
            }
        }
    }
}
