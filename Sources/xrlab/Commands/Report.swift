import ArgumentParser
import Foundation
import XRTensor
import XRPipeline
import XRTrain
import XRText
import XRReport

/// `xrlab report`: train a report generator on paired images and reports, or draft reports.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report", abstract: "Report generation: train a decoder on paired reports, or draft reports for images.",
        subcommands: [Train.self, Generate.self], defaultSubcommand: Generate.self)

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Train a report decoder on a paired manifest (path, split, findings, impression) with a frozen or tuned encoder; score drafts on the test split.",
            discussion: "A checkpoint after every epoch (OUT/checkpoint.safetensors) lets an interrupted run resume: run the same command again.")
        @Option(name: .long, help: "Paired manifest CSV.") var manifest: String
        @Option(name: .long, help: "Encoder checkpoint (folder or .safetensors with its preprocessor_config.json).") var encoder: String
        @Option(name: .long, help: "Output folder.") var out: String
        @Option(name: .long, help: "tokenizer.json (default: train one on the training reports).") var tokenizer: String?
        @Option(name: .long, help: "findings, impression or both.") var target: ReportTarget = .both
        @Option(name: .long, help: "Decoder width.") var dim: Int = 256
        @Option(name: .long, help: "Decoder layers.") var layers: Int = 4
        @Option(name: .long, help: "Attention heads.") var heads: Int = 4
        @Option(name: .long, help: "Maximum report tokens (longer reports are cut and counted).") var maxTokens: Int = 128
        @Option(name: .long, help: "Average-pool the patch grid by this factor.") var pool: Int = 2
        @Option(name: .long, help: "How the decoder reads the visual tokens: cross_attention (every block attends to them) or prefix (they precede the text).")
        var visualInput: DecoderConfig.VisualInput = .cross_attention
        @Option(name: .long, help: "GPT-2-layout safetensors to start from.") var initFrom: String?
        @Option(name: .long, help: "Epochs.") var epochs: Int = 10
        @Option(name: .long, help: "Batch size.") var batchSize: Int = 8
        @Option(name: .long, help: "Peak learning rate.") var lr: Double = 5e-4
        @Option(name: .long, help: "Use only this many training reports (low-data runs).") var trainLimit: Int?
        @Option(name: .long, help: "Encoder: frozen (patch tokens computed once), lora or last_k (tuned with the decoder).") var encoderMethod:
            ReportEncoderSpec.Kind = .frozen
        @Option(name: .long, help: "Encoder LoRA rank (lora).") var rank: Int = 8
        @Option(name: .long, help: "Encoder LoRA target layers, comma-separated (lora).") var targets: String = "qkv"
        @Option(name: .long, help: "Encoder blocks tuned (last_k).") var blocks: Int = 2
        @Option(name: .long, help: "Encoder learning rate as a multiple of --lr (default 1 for lora, 0.1 for last_k).") var encoderLrScale: Double?
        @Option(name: .long, help: "Beam size for the test drafts.") var beams: Int = 3
        @Option(
            name: .long,
            help:
                "METEOR resources for scoring the test drafts: pycocoevalcap's meteor/ directory, meteor-1.5.jar, or a directory with its layout (default: $XRLAB_METEOR_DATA; none: no METEOR)."
        ) var meteorData: String?
        @Option(name: .long, help: "Seed.") var seed: Int = 0
        @OptionGroup var work: WorkOptions
        func run() throws {
            try runReportingErrors {
                work.apply()
                var o = ReportTrainOptions(manifest: URL(fileURLWithPath: manifest), encoder: URL(fileURLWithPath: encoder), output: URL(fileURLWithPath: out))
                o.tokenizer = tokenizer.map { URL(fileURLWithPath: $0) }
                o.visualPrefix = visualInput == .prefix
                o.target = target.rawValue; o.dim = dim; o.layers = layers; o.heads = heads; o.maxTokens = maxTokens; o.pool = pool
                o.initFrom = initFrom.map { URL(fileURLWithPath: $0) }; o.epochs = epochs; o.batchSize = batchSize; o.lr = lr
                o.trainLimit = trainLimit; o.seed = UInt64(seed); o.quiet = work.quiet
                o.meteorData = meteorDataPath(meteorData)
                o.generation.beams = beams; o.generation.noRepeatNGram = 3
                switch encoderMethod {
                case .lora:
                    let lora = LoRASettings(rank: rank, targets: targets.split(separator: ",").map(String.init))
                    o.encoderSpec = .lora(encoderLrScale.map { ReportLoRASpec(lora: lora, lrScale: $0) } ?? ReportLoRASpec(lora: lora))
                case .last_k: o.encoderSpec = .lastK(encoderLrScale.map { ReportLastKSpec(blocks: blocks, lrScale: $0) } ?? ReportLastKSpec(blocks: blocks))
                case .frozen: o.encoderSpec = .frozen
                }
                let r = try ReportTraining.run(o)
                print("trained on \(r.trainReports) reports (\(r.truncated) cut to \(maxTokens) tokens); \(r.testReports) test drafts")
                print(r.metrics.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.4f", $0.value))" }.joined(separator: "  "))
                print(
                    "wrote \(out)/model.json, decoder.safetensors, tokenizer.json, generated.csv"
                        + (o.encoderSpec.isFrozen ? "" : ", encoder_tuned.safetensors (\(r.trainableEncoderParameters) tuned encoder parameters)"))
            }
        }
    }

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "generate", abstract: "Draft a report for each image.")
        @Option(name: .long, help: "Report model folder (from `xrlab report train`).") var model: String
        @Option(name: .long, help: "The encoder the model was trained with.") var base: String
        @Argument(help: "Images (PNG or DICOM).") var images: [String]
        @Option(name: .long, help: "Beam size (1 = greedy).") var beams: Int = 3
        @Option(name: .long, help: "Maximum new tokens.") var maxTokens: Int = 128
        @Option(name: .long, help: "Length penalty exponent.") var lengthPenalty: Double = 1.0
        @Option(name: .long, help: "No repeated n-grams of this size (0 = off).") var noRepeatNgram: Int = 3
        func run() throws {
            try runReportingErrors {
                let m = try ReportModel.load(URL(fileURLWithPath: model))
                let enc = try Encoder.load(model: URL(fileURLWithPath: base))
                var o = GenerationOptions()
                o.beams = beams; o.maxNewTokens = maxTokens; o.lengthPenalty = lengthPenalty; o.noRepeatNGram = noRepeatNgram
                let drafts = try m.generate(images.map { URL(fileURLWithPath: $0) }, encoder: enc, options: o)
                for (i, d) in zip(images, drafts) { print("\(i): \(d)") }
            }
        }
    }
}
