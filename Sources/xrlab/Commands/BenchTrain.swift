import ArgumentParser
import Foundation
import XRTensor
import XRKernels
import XRTrain

/// `xrlab bench train`: seconds per training step (bench/train_peers.py compares PyTorch + PEFT).
struct BenchTrain: RenamedCommand {
    static let oldName = "bench-train", newName = "bench train"
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Time training steps of a random ViT (forward, loss, backward, AdamW).",
        discussion: "Prints one JSON object: seconds per step, trainable parameters, peak RSS.")

    /// The architectures timed (depth 12, patch 16).
    enum Preset: String, CaseIterable, ExpressibleByArgument {
        case vitTiny16, vitSmall16, vitBase16
        var widthAndHeads: (dim: Int, heads: Int) {
            switch self {
            case .vitTiny16: return (192, 3)
            case .vitSmall16: return (384, 6)
            case .vitBase16: return (768, 12)
            }
        }
    }
    /// What trains.
    enum Method: String, CaseIterable, ExpressibleByArgument {
        case lora, last2, full, bitfit, head
        var set: TrainableSet {
            switch self {
            case .lora: return .lora(rank: 8, alpha: 16, targets: ["qkv"])
            case .last2: return .lastBlocks(2)
            case .full: return .full
            case .bitfit: return .bitFit
            case .head: return .head
            }
        }
    }

    @Option(name: .long, help: "Width, depth, heads: vitTiny16, vitSmall16 or vitBase16.")
    var preset: Preset = .vitSmall16
    @Option(name: .long, help: "lora (r=8 on qkv, + head), last2 (last 2 blocks + norm + head), full, bitfit, head.")
    var method: Method = .lora
    @Option(name: .long, help: "Images per step.")
    var batch: Int = 8
    @Option(name: .long, help: "Image size.")
    var size: Int = 224
    @Option(name: .long, help: "Minimum seconds of timed steps.")
    var seconds: Double = 10
    @OptionGroup var threadsOption: ThreadsOption
    var threads: Int { threadsOption.threads }
    @Flag(name: .long, help: "Recompute activations in the backward (less memory).")
    var recompute = false
    @Flag(
        name: .long,
        help:
            "Serve timed turns on standard input for an interleaved comparison (bench/train_peers.py): after the warm-up step, each line `run SECONDS` runs steps for that long (at least one) and prints {\"steps\", \"seconds\"}; at the end of input the summary JSON (peak RSS) is printed."
    )
    var serve = false

    func run() throws {
        try runReportingErrors {
            threadsOption.apply()
            let (dim, heads) = preset.widthAndHeads
            let c = TrainConfig(dim: dim, depth: 12, heads: heads, patch: 16, imageSize: size, mlpHidden: 4 * dim, classes: 2, layerScale: false)
            let model = try TrainableViT.random(c)
            try model.setTrainable(method.set)
            model.recompute = recompute
            var rng = XRRandom(seed: 1)
            let pixels = (0..<(batch * 3 * size * size)).map { _ in rng.nextGaussian() }
            let labels = (0..<batch).map { $0 % 2 }
            let opt = AdamW(weightDecay: 0.05)
            let step = { _ = try trainStep(model, opt, pixels: pixels, labels: labels, lr: 1e-5) }
            try step() // warm-up (allocations)
            var n = 0, elapsed = 0.0
            if serve {
                (n, elapsed) = try serveTurns(unit: "steps", perCall: 1, work: step)
            } else {
                let start = Date()
                while Date().timeIntervalSince(start) < seconds || n < 3 {
                    try step()
                    n += 1
                }
                elapsed = Date().timeIntervalSince(start)
            }
            try printJSONLine([
                "tool": "xrlab", "preset": preset.rawValue, "method": method.rawValue, "batch": batch, "size": size, "threads": threads,
                "seconds_per_step": n > 0 ? elapsed / Double(n) : 0, "recompute": recompute, "steps": n,
                "trainable": model.trainableCount, "peak_rss_mb": peakRSSMegabytes(), "blas_core": BLASCore.name
            ])
        }
    }
}
