import ArgumentParser
import Foundation
import XRTensor
import XRKernels
import XRModels

/// `xrlab bench gemm`: the encoder's linear-layer products on OpenBLAS against xrlab's packed
/// kernel, same inputs, same process — the evidence for running frozen weights on `packedGEMM`.
struct BenchGEMM: RenamedCommand {
    static let oldName = "bench-gemm", newName = "bench gemm"
    static let configuration = CommandConfiguration(
        commandName: "gemm",
        abstract: "Time out = inp · Wᵀ at ViT linear-layer shapes: OpenBLAS (as xrlab called it before packing) vs the packed kernel.",
        discussion: """
            For each shape (rows × in → out) prints the best time of: OpenBLAS sgemm with rows or output features split across \
            the workers (BLAS single-threaded, C cleared with memset), and `packedProduct` on weights packed once, split by rows \
            or by output features. One JSON object per shape, then a Markdown table. Default shapes: ViT-Ti/S/B at one image \
            (197 rows) and eight (1,576 rows). With --precision int8 also `int8Product` on weights quantised once, on each integer \
            kernel (u7: vpmaddubsw, i16: vpmaddwd), the activations' quantisation inside the timed call, its rate given as \
            GFLOP/s-equivalent (2 · rows · in · out / time) and its relative L2 difference from the fp32 product.
            """)

    @Option(name: .long, help: "Shapes as ROWSxINxOUT, comma-separated (default: the ViT-Ti/S/B linear layers at 197 and 1,576 rows).")
    var shapes: String?

    @Option(name: .long, help: "Seconds per measurement (best of five rounds of this length).")
    var seconds: Double = 0.3

    @Option(name: .long, help: "fp32, or int8 to time the int8 product on both integer kernels beside the fp32 ones.")
    var precision: Precision = .fp32

    @OptionGroup var threadsOption: ThreadsOption
    var threads: Int { threadsOption.threads }

    static let defaultShapes: [(Int, Int, Int)] = {
        var s: [(Int, Int, Int)] = []
        for rows in [197, 1576] {
            for c in [192, 384, 768] { s += [(rows, c, 3 * c), (rows, c, c), (rows, c, 4 * c), (rows, 4 * c, c)] }
        }
        return s
    }()

    func parseShapes() throws -> [(Int, Int, Int)] {
        guard let shapes else { return Self.defaultShapes }
        return try shapes.split(separator: ",").map { item in
            let v = item.split(separator: "x").compactMap { Int($0) }
            guard v.count == 3, v.allSatisfy({ $0 > 0 }) else {
                throw XRError("shape '\(item)' is not ROWSxINxOUT with positive sizes", field: "--shapes")
            }
            return (v[0], v[1], v[2])
        }
    }

    func run() throws {
        try runReportingErrors {
            guard seconds >= 0 else { throw XRError("--seconds must be ≥ 0, got \(seconds)", field: "--seconds") }
            let list = try parseShapes()
            threadsOption.apply()
            BLAS.threads = 1 // as inside the encoder: xrlab splits the work, OpenBLAS runs one thread per call
            var rows: [String] = [], int8Rows: [String] = []
            var rng = XRRandom(seed: 3)
            for (m, k, n) in list {
                let a = (0..<(m * k)).map { _ in rng.nextGaussian() }, w = (0..<(n * k)).map { _ in rng.nextGaussian() * 0.05 }
                var c = [Float](repeating: 0, count: m * n)
                let packed = w.withUnsafeBufferPointer { PackedMatrix(transposing: $0.baseAddress!, rows: n, cols: k) }
                func time(_ body: (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>) -> Void) -> Double {
                    a.withUnsafeBufferPointer { ap in
                        w.withUnsafeBufferPointer { wp in
                            c.withUnsafeMutableBufferPointer { cp in
                                body(cp.baseAddress!, ap.baseAddress!, wp.baseAddress!)
                                var best = Double.infinity
                                for _ in 0..<5 {
                                    var reps = 0
                                    let start = Date()
                                    repeat {
                                        body(cp.baseAddress!, ap.baseAddress!, wp.baseAddress!); reps += 1
                                    } while Date().timeIntervalSince(start) < seconds
                                    best = min(best, Date().timeIntervalSince(start) / Double(reps))
                                }
                                return best
                            }
                        }
                    }
                }
                var t = [
                    time { o, x, wt in linearForward(o, x, wt, rows: m, inFeatures: k, outFeatures: n) },
                    time { o, x, wt in linearForwardColumns(o, x, wt, rows: m, inFeatures: k, outFeatures: n) },
                    time { o, x, _ in packedProduct(o, x, packed, rows: m, splitColumns: false) },
                    time { o, x, _ in packedProduct(o, x, packed, rows: m, splitColumns: true) }
                ]
                var errors: [Double] = []
                if precision == .int8 {
                    let q = w.withUnsafeBufferPointer { Int8PackedMatrix(transposing: $0.baseAddress!, rows: n, cols: k) }
                    var fp32 = [Float](repeating: 0, count: m * n), y = fp32
                    packedProduct(&fp32, a, packed, rows: m)
                    for kernel in [Int8Kernel.u7, .i16] {
                        t.append(time { o, x, _ in int8Product(o, x, q, rows: m, kernel: kernel) })
                        int8Product(&y, a, q, rows: m, kernel: kernel)
                        var num = 0.0, den = 0.0
                        for i in 0..<(m * n) { num += Double(y[i] - fp32[i]) * Double(y[i] - fp32[i]); den += Double(fp32[i]) * Double(fp32[i]) }
                        errors.append((num / max(den, 1e-30)).squareRoot())
                    }
                }
                let flop = 2 * Double(m) * Double(n) * Double(k)
                let g = t.map { flop / $0 / 1e9 }
                let ratio = min(t[0], t[1]) / min(t[2], t[3])
                var result: [String: Any] = [
                    "rows": m, "in": k, "out": n, "threads": threads, "blas_core": BLASCore.name,
                    "openblas_rows_ms": t[0] * 1e3, "openblas_columns_ms": t[1] * 1e3,
                    "packed_rows_ms": t[2] * 1e3, "packed_columns_ms": t[3] * 1e3,
                    "speedup_best_vs_best": ratio
                ]
                if precision == .int8 {
                    result["int8_u7_ms"] = t[4] * 1e3
                    result["int8_i16_ms"] = t[5] * 1e3
                    result["int8_u7_rel_l2"] = errors[0]
                    result["int8_i16_rel_l2"] = errors[1]
                    let best = min(t[2], t[3])
                    int8Rows.append(
                        String(
                            format: "| %d × %d → %d | %.0f | %.0f | %.3f ms (%.0f) | %.3f ms (%.0f) | %.2f× | %.1e / %.1e |",
                            m, k, n, flop / min(t[0], t[1]) / 1e9, flop / best / 1e9, t[4] * 1e3, g[4], t[5] * 1e3, g[5],
                            best / min(t[4], t[5]), errors[0], errors[1]))
                }
                let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
                rows.append(
                    String(
                        format: "| %d × %d → %d | %.3f ms (%.0f) | %.3f ms (%.0f) | %.3f ms (%.0f) | %.3f ms (%.0f) | %.2f× |",
                        m, k, n, t[0] * 1e3, g[0], t[1] * 1e3, g[1], t[2] * 1e3, g[2], t[3] * 1e3, g[3], ratio))
            }
            print(
                "\n| rows × in → out | OpenBLAS, rows split (GFLOP/s) | OpenBLAS, output features split | packed, rows split | packed, output features split | best packed vs best OpenBLAS |"
            )
            print("|---|---:|---:|---:|---:|---:|")
            rows.forEach { print($0) }
            if precision == .int8 {
                print(
                    "\n| rows × in → out | OpenBLAS best GFLOP/s | fp32 packed best GFLOP/s | int8 u7 (GFLOP/s-eq.) | int8 i16 (GFLOP/s-eq.) | best int8 vs best fp32 packed | rel. L2 vs fp32 (u7 / i16) |"
                )
                print("|---|---:|---:|---:|---:|---:|---:|")
                int8Rows.forEach { print($0) }
            }
        }
    }
}
