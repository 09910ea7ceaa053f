import ArgumentParser
import Foundation
import XRTensor
import XRKernels
import XRTrain
import XRReport

/// `xrlab bench report`: report decoder training-step time and greedy decoding speed
/// (bench/report_peers.py compares PyTorch + transformers).
struct BenchReport: RenamedCommand {
    static let oldName = "bench-report", newName = "bench report"
    static let configuration = CommandConfiguration(commandName: "report", abstract: "Time report-decoder training steps and greedy decoding (random weights).")
    @Option(name: .long, help: "Decoder layers.") var layers: Int = 6
    @Option(name: .long, help: "Decoder width.") var dim: Int = 384
    @Option(name: .long, help: "Heads.") var heads: Int = 6
    @Option(name: .long, help: "Vocabulary.") var vocab: Int = 8000
    @Option(name: .long, help: "Batch (training).") var batch: Int = 8
    @Option(name: .long, help: "Tokens per report (training).") var tokens: Int = 128
    @Option(name: .long, help: "Visual tokens.") var visual: Int = 197
    @Option(name: .long, help: "Visual width.") var visualDim: Int = 384
    @Option(name: .long, help: "Tokens to decode greedily.") var decode: Int = 128
    @Option(name: .long, help: "Minimum seconds per measurement.") var seconds: Double = 10
    @OptionGroup var threadsOption: ThreadsOption
    @Option(name: .long, help: "cross_attention or prefix (the visual tokens precede the text).") var visualInput: DecoderConfig.VisualInput = .cross_attention
    /// Where the training step's matrix products run.
    enum Products: String, CaseIterable, ExpressibleByArgument { case packed, blas }
    @Option(name: .long, help: "packed (weights packed once per pass, the packed kernel) or blas (OpenBLAS sgemm): the training step's matrix products.")
    var products: Products = .blas
    @Flag(
        name: .long,
        help: "Interleaved turns (bench/report_peers.py): answer `run SECONDS` (training steps) and `decode SECONDS` (greedy decoding) lines on standard input."
    )
    var serve = false
    @Flag(
        name: .long,
        help: "Time each phase of the training step (forward per product, attention, LM loss, backward per product, AdamW) and print a table instead.")
    var phases = false
    func run() throws {
        try runReportingErrors {
            threadsOption.apply()
            let prefix = visualInput == .prefix
            let c = DecoderConfig(
                vocab: vocab, positions: max(tokens, decode + 1) + (prefix ? visual : 0), dim: dim, layers: layers, heads: heads,
                visualDim: visualDim, visualPrefix: prefix)
            // GPT-2's initialisation, as report training starts from.
            let t = try ReportTraining.initialTensors(c, seed: 3, from: nil)
            var rng = XRRandom(seed: 3)
            let m = try ReportDecoder(config: c, tensors: t, source: "random")
            m.packedProducts = products == .packed
            let vis = (0..<(batch * visual * visualDim)).map { _ in rng.nextGaussian() }
            let ids = (0..<(batch * tokens)).map { _ in rng.nextInt(below: vocab) }
            let opt = AdamW(weightDecay: 0.01)
            func step() throws {
                m.phases?.start()
                m.zeroGrad()
                m.phases?.lap("zero gradients")
                try m.forward(visual: vis, visualTokens: visual, ids: ids, batch: batch, returnLogits: false)
                _ = m.lossAndBackward(labels: ids)
                opt.update(m.parameters, lr: 1e-5)
                m.phases?.lap("AdamW")
            }
            try step()
            if phases {
                try printPhases(m, step: step)
                return
            }
            var o = GenerationOptions()
            o.maxNewTokens = decode
            let v1 = Array(vis[0..<(visual * visualDim)])
            /// Greedy decoding for at least `seconds` (after one warm-up sequence): tokens per second.
            func decodingSpeed(_ seconds: Double) throws -> Double {
                _ = try m.generate(visual: v1, visualTokens: visual, prompt: [0], eos: -1, options: o)
                var produced = 0
                let start = Date()
                while Date().timeIntervalSince(start) < seconds || produced == 0 {
                    produced += try m.generate(visual: v1, visualTokens: visual, prompt: [0], eos: -1, options: o).ids.count
                }
                return Double(produced) / Date().timeIntervalSince(start)
            }
            var k = 0, elapsed = 0.0, tps: Double? = nil
            if serve {
                let decodeCommand: (Double?) throws -> [String: Any] = { s in
                    let v = try decodingSpeed(s ?? seconds)
                    tps = v
                    return ["decode_tokens_per_s": v]
                }
                (k, elapsed) = try serveTurns(unit: "steps", perCall: 1, work: step, commands: ["decode": decodeCommand])
            } else {
                let start = Date()
                while Date().timeIntervalSince(start) < seconds || k < 2 { try step(); k += 1 }
                elapsed = Date().timeIntervalSince(start)
                tps = try decodingSpeed(seconds)
            }
            var result: [String: Any] = [
                "tool": "xrlab", "visual_input": visualInput.rawValue, "products": products.rawValue,
                "seconds_per_step": k > 0 ? elapsed / Double(k) : 0, "steps": k, "seconds": elapsed,
                "peak_rss_mb": peakRSSMegabytes(), "blas_core": BLASCore.name
            ]
            if let tps { result["decode_tokens_per_s"] = tps }
            try printJSONLine(result)
        }
    }

    /// Training steps for `seconds` (at least two) with every phase timed; prints a Markdown table
    /// of milliseconds per step and share of the step per phase, slowest first.
    private func printPhases(_ m: ReportDecoder, step: () throws -> Void) throws {
        let p = StepPhases()
        m.phases = p
        defer { m.phases = nil }
        var k = 0
        let start = Date()
        while Date().timeIntervalSince(start) < seconds || k < 2 { try step(); k += 1 }
        let wall = Date().timeIntervalSince(start) / Double(k), total = p.total / Double(k)
        print(
            "training step: \(k) steps, \(String(format: "%.1f", wall * 1000)) ms per step (\(String(format: "%.1f", total * 1000)) ms in the phases), \(Parallel.workers) threads, OpenBLAS \(BLASCore.name), products \(products.rawValue)"
        )
        print("")
        print("| phase | ms per step | share |")
        print("|---|---:|---:|")
        for name in p.names.sorted(by: { p.seconds[$0, default: 0] > p.seconds[$1, default: 0] }) {
            let t = p.seconds[name, default: 0] / Double(k)
            print("| \(name) | \(String(format: "%.1f", t * 1000)) | \(String(format: "%.1f%%", 100 * t / max(total, 1e-12))) |")
        }
    }
}
