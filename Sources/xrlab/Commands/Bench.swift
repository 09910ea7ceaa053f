import ArgumentParser
import Foundation
import XRTensor
import XRKernels
import XRModels
import XRPipeline

/// `xrlab bench encoder|train|gemm|report`: the speed benchmarks, each printing JSON.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Speed benchmarks: the encoder, training steps, linear-layer products, the report decoder.",
        discussion: "Without a subcommand, `xrlab bench OPTIONS` runs `xrlab bench encoder OPTIONS`.",
        subcommands: [Bench.self, BenchTrain.self, BenchGEMM.self, BenchReport.self],
        defaultSubcommand: Bench.self)
}

/// `xrlab bench encoder`: timings for the speed benchmarks (bench/vit_peers.py compares them with
/// PyTorch and ONNX Runtime in the same run).
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encoder",
        abstract: "Time the ViT encoder (random weights of a preset) and an sgemm ceiling at its shapes.",
        discussion: "Prints one JSON object: images/s, GFLOP/s, sgemm GFLOP/s at the model's matrix shapes, peak RSS.")

    @Option(name: .long, help: "Encoder preset (vitTiny16, vitSmall16, vitBase16, vitBase14at518, …).")
    var preset: String = "vitBase16"

    @Option(name: .long, help: "Images per forward pass.")
    var batch: Int = 8

    @Option(name: .long, help: "Image size (square).")
    var size: Int?

    @Option(name: .long, help: "Minimum seconds of timed forward passes.")
    var seconds: Double = 10

    @Option(name: .long, help: "Precision of the encoder's linear layers: fp32 or int8 (GFLOP/s then counts int8 operations as flops).")
    var precision: Precision = .fp32

    @Flag(
        name: .long,
        help:
            "Time nothing: run the batch once at --precision and once on the same weights at fp32, and print each image's cosine similarity of pooled and cls (min and mean) as JSON."
    )
    var checkAgainstFp32 = false

    @OptionGroup var threadsOption: ThreadsOption
    var threads: Int { threadsOption.threads }

    @Flag(name: .long, help: "Skip the sgemm ceiling measurement.")
    var noCeiling = false

    @Flag(
        name: .long,
        help:
            "Compute only the class-token output (what a CLS-feature probe reads, and what the peer benchmark's PyTorch / ONNX Runtime models return): the last block's attention, projection and MLP run on the class token alone; GFLOP/s counts the work actually done."
    )
    var classTokenOnly = false

    @Flag(
        name: .long,
        help:
            "Serve timed turns on standard input for an interleaved comparison (bench/vit_peers.py): after the warm-up, each line `run SECONDS` times forward passes for that long (at least one) and prints {\"images\", \"seconds\"}; `ceiling [SECONDS]` measures the sgemm ceiling (each of the model's three shapes for a third of SECONDS, default 1.5 s each) and prints {\"sgemm_gflops\"}; at the end of input the summary JSON (peak RSS) is printed."
    )
    var serve = false

    @Option(
        name: .long,
        help: "Linear layers with at most this many token rows split output features across the cores instead of rows (0: always rows; for A/B runs).")
    var columnSplitRows: Int = packedColumnSplitRows

    func run() throws {
        try runReportingErrors {
            threadsOption.apply()
            guard columnSplitRows >= 0 else { throw XRError("--column-split-rows must be ≥ 0, got \(columnSplitRows)", field: "--column-split-rows") }
            packedColumnSplitRows = columnSplitRows
            guard let config = try resolvePreset(preset) else { return }
            let s = size ?? config.imageSize
            let model = ViT.random(config, precision: precision)
            var rng = XRRandom(seed: 1)
            let pixels = (0..<(batch * 3 * s * s)).map { _ in rng.nextGaussian() }
            if checkAgainstFp32 {
                let got = try model.forward(pixels: pixels, batch: batch, height: s, width: s, classTokenOnly: classTokenOnly)
                let want = try ViT.random(config).forward(pixels: pixels, batch: batch, height: s, width: s, classTokenOnly: classTokenOnly)
                let C = config.dim
                func cosines(_ a: Tensor, _ b: Tensor) -> [Double] {
                    (0..<batch).map { PrecisionCheck.cosine(a.scalars[($0 * C)..<(($0 + 1) * C)], b.scalars[($0 * C)..<(($0 + 1) * C)]) }
                }
                let pooled = cosines(got.pooled, want.pooled), cls = cosines(got.cls, want.cls)
                try printJSONLine([
                    "tool": "xrlab", "preset": preset, "batch": batch, "size": s, "precision": precision.rawValue, "kernel": precision.kernelSummary,
                    "pooled_cosine_min": pooled.min() ?? .nan, "pooled_cosine_mean": pooled.reduce(0, +) / Double(batch),
                    "cls_cosine_min": cls.min() ?? .nan, "cls_cosine_mean": cls.reduce(0, +) / Double(batch)
                ])
                return
            }
            _ = try model.forward(pixels: pixels, batch: batch, height: s, width: s, classTokenOnly: classTokenOnly) // warm-up
            let forward = { _ = try model.forward(pixels: pixels, batch: batch, height: s, width: s, classTokenOnly: classTokenOnly) }
            let flopsPerImage = model.flopsPerImage(height: s, width: s, classTokenOnly: classTokenOnly)
            let tokens = batch * ((s / config.patchSize) * (s / config.patchSize) + 1 + config.numRegisters)
            let ceiling = { (seconds: Double) in
                // The MLP's input product has M outputs (EVA-02's SwiGLU: 2M, gate and value).
                let mlp = config.blockKind == .eva02 ? 2 * config.mlpHidden : config.mlpHidden
                return sgemmCeiling(m: tokens, k: config.dim, ns: [config.dim, 3 * config.dim, mlp], seconds: seconds)
            }
            if serve {
                let (images, seconds) = try serveTurns(
                    unit: "images", perCall: batch, reply: ["flops_per_image": flopsPerImage], work: forward,
                    commands: ["ceiling": { ["sgemm_gflops": ceiling($0 ?? 4.5)] }])
                try printJSONLine([
                    "tool": "xrlab", "preset": preset, "batch": batch, "size": s, "threads": threads, "images": images,
                    "seconds": seconds, "class_token_only": classTokenOnly, "precision": precision.rawValue, "kernel": precision.kernelSummary,
                    "peak_rss_mb": peakRSSMegabytes(),
                    "blas_core": BLASCore.name
                ])
                return
            }
            var n = 0
            let start = Date()
            while Date().timeIntervalSince(start) < seconds || n < 3 {
                try forward()
                n += 1
            }
            let elapsed = Date().timeIntervalSince(start)
            let ips = Double(n * batch) / elapsed
            let gflops = ips * flopsPerImage / 1e9
            var result: [String: Any] = [
                "tool": "xrlab", "preset": preset, "batch": batch, "size": s, "threads": threads,
                "images_per_s": ips, "gflops": gflops, "iterations": n, "class_token_only": classTokenOnly, "precision": precision.rawValue,
                "kernel": precision.kernelSummary,
                "peak_rss_mb": peakRSSMegabytes(), "blas_core": BLASCore.name
            ]
            if !noCeiling { result["sgemm_gflops"] = ceiling(4.5) }
            try printJSONLine(result)
        }
    }

    /// Best sgemm rate over the model's linear-layer shapes (M tokens × K → N), each timed for an
    /// equal share of `seconds` (at least one product after a warm-up one).
    func sgemmCeiling(m: Int, k: Int, ns: [Int], seconds: Double) -> Double {
        let secondsEach = seconds / Double(ns.count)
        var best = 0.0
        for n in ns {
            let a = [Float](repeating: 0.5, count: m * k), b = [Float](repeating: 0.25, count: n * k)
            var c = [Float](repeating: 0, count: m * n)
            BLAS.sgemm(&c, a, b, transB: true, m: m, n: n, k: k)
            var reps = 0
            let start = Date()
            while reps < 1 || Date().timeIntervalSince(start) < secondsEach {
                BLAS.sgemm(&c, a, b, transB: true, m: m, n: n, k: k)
                reps += 1
            }
            best = max(best, 2 * Double(m) * Double(n) * Double(k) * Double(reps) / Date().timeIntervalSince(start) / 1e9)
        }
        return best
    }
}

/// Peak resident set size of this process image, in MB: VmHWM from /proc/self/status, which
/// starts afresh at exec (getrusage's ru_maxrss does not: it keeps the parent's peak).
func peakRSSMegabytes() -> Double {
    if let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
        let kb = Double(line.split(separator: " ").dropFirst().first ?? "")
    {
        return kb / 1024
    }
    var u = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &u)
    return Double(u.ru_maxrss) / 1024
}
