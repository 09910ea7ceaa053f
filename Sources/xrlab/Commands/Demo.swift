import ArgumentParser
import Foundation
import XRTensor
import XRPipeline

/// `xrlab demo`: the main job on a fresh machine — generate a small encoder and a synthetic
/// X-ray set, then run the pipeline on them. Nothing is downloaded.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate a demo encoder and X-ray-like images, then run the demo job on them.")

    @Option(name: .long, help: "Folder for the generated model, images and outputs.")
    var dir: String = "demo"

    @Option(name: .long, help: "Number of synthetic patients.")
    var patients: Int = 150

    @Option(name: .long, help: "Threads for matrix products.")
    var threads: Int = 2

    @Flag(name: .long, help: "No progress output.")
    var quiet = false

    func run() throws {
        try runReportingErrors {
            setThreads(threads)
            let root = URL(fileURLWithPath: dir)
            let summary = try DemoData.generate(in: root, patients: patients)
            print("generated \(summary.images) images of \(summary.patients) patients: \(summary.manifest.path)")
            print("generated encoder: \(summary.modelDir.path)")
            let encoder = try Encoder.load(model: summary.modelDir)
            let inputs = try InputList.resolve(summary.manifest)
            var options = EmbedOptions()
            options.quiet = quiet
            options.lastBlocks = 4
            options.cache = FeatureCache(root: root.appendingPathComponent("cache"))
            let result = try encoder.embed(inputs, options: options)
            let out = root.appendingPathComponent("features.safetensors")
            let files = try EmbedOutput.write(result, encoder: encoder, modelPath: summary.modelDir.path,
                                              format: .safetensors, to: out)
            print("embedded \(result.inputs.count) images (\(result.encoded) encoded, \(result.cacheHits) from cache)")
            for f in files { print("wrote \(f.path)") }
        }
    }
}
