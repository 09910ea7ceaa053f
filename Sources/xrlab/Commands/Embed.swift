import ArgumentParser
import Foundation
import XRTensor
import XRData
import XRModels
import XRPipeline

/// `xrlab embed`: X-ray images → encoder features (safetensors or npy) + a sidecar JSON.
struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Encode X-ray images with a ViT checkpoint and write their features.",
        discussion: """
            MODEL is a Hugging Face folder (config.json + model.safetensors, e.g. RAD-DINO), a timm hub
            folder (config.json with architecture and pretrained_cfg + model.safetensors or
            pytorch_model.bin), or a timm / DINOv2 checkpoint file (.safetensors, or PyTorch .pt / .pth /
            .bin, read without executing its pickle). INPUT is a folder of PNG files (walked recursively)
            or a manifest CSV with a path column. Writes tensors cls (N, C), pooled (N, C) (the model's
            pre-logits feature, timm's forward_head(pre_logits=True)) and patch_mean (N, C) — plus
            last_blocks_cls (N, n, C) with --last-blocks n and patch_tokens (N, T, C) with
            --patch-tokens — and FILE.json listing the inputs row for row, the encoder fingerprint and
            the preprocessing. Features are cached by (weights, preprocessing, precision, image content),
            so a rerun over the same images does no encoder work. --precision int8 runs the blocks'
            linear layers (qkv, proj, fc1, fc2) in int8 (weights quantised per output channel once at
            load, activations per row); the patch embedding, attention, softmax and LayerNorm stay fp32.
            --check-against-fp32 N encodes the first N images at fp32 too and prints, and writes to
            FILE.precision-check.json, each image's cosine similarity of pooled and cls to fp32, the
            mean and the worst image.
            """)

    @Option(name: .long, help: "Checkpoint: Hugging Face or timm folder, .safetensors, .pt, .pth or .bin file.")
    var model: String

    @Option(name: .long, help: "Top-level key of a PyTorch checkpoint holding the state dict ('.' for the top level).")
    var stateDictKey: String?

    @Option(name: .long, help: "Folder of PNG images, a manifest CSV, or one PNG.")
    var input: String

    @Option(name: .long, help: "Output file (.safetensors; with --format npy, the stem of the .npy files).")
    var output: String

    @Option(name: .long, help: "safetensors or npy.")
    var format: EmbedOutput.Format = .safetensors

    @Option(name: .long, help: "Manifest column holding image paths.")
    var imageColumn: String = "path"

    @Flag(name: .long, help: "Also write all patch tokens (N, T, C).")
    var patchTokens = false

    @Option(name: .long, help: "Also write the CLS token of the last n blocks (N, n, C).")
    var lastBlocks: Int = 0

    @Option(name: .long, help: "Images per forward pass.")
    var batchSize: Int = 8

    @Flag(name: .long, help: "Leave unreadable images out (listed in the sidecar) instead of failing.")
    var skipBad = false

    @Option(name: .long, help: "Feature cache folder (default $XRLAB_CACHE or ~/.cache/xrlab/features).")
    var cache: String?

    @Flag(name: .long, help: "Do not read or write the feature cache.")
    var noCache = false

    @Option(name: .long, help: "Named encoder preset for bare checkpoint files (e.g. vitBase16, dinov2Base14).")
    var preset: String?

    @Option(name: .long, help: "Attention heads, for bare checkpoint files without a preset (default dim/64).")
    var heads: Int?

    @Option(name: .long, help: "Precision of the encoder's linear layers: fp32 or int8.")
    var precision: Precision = .fp32

    @Option(name: .long, help: "With --precision int8: also encode the first N images at fp32 and report the cosine of pooled and cls per image.")
    var checkAgainstFp32: Int?

    @OptionGroup var pre: PreprocessingFlags

    @Option(name: .long, help: "Largest image accepted, in pixels (decompression-bomb guard).")
    var maxPixels: Int = 100_000_000

    @Option(name: .long, help: "DICOM pixel values: stored (by Bits Stored), modality (rescaled) or voi (the file's window / LUT).")
    var dicomValues: DICOMFile.Values = .stored

    @OptionGroup var work: WorkOptions

    func validate() throws {
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
        guard lastBlocks >= 0 else { throw ValidationError("--last-blocks must be ≥ 0") }
        if let n = checkAgainstFp32 {
            guard n > 0 else { throw ValidationError("--check-against-fp32 must be positive") }
            guard precision != .fp32 else { throw ValidationError("--check-against-fp32 compares a reduced precision with fp32: pass --precision int8") }
        }
    }

    func run() throws {
        try runReportingErrors {
            work.apply()
            let encoder = try Encoder.load(
                model: URL(fileURLWithPath: model),
                preset: try resolvePreset(preset), heads: heads,
                explicit: try pre.preprocessing(), stateDictKey: stateDictKey, precision: precision)
            try encoder.checkPatchGrid(
                file: pre.size == nil ? model : nil,
                field: pre.size == nil ? "preprocessing (\(encoder.preprocessingSource))" : pre.crop != nil ? "--crop" : "--size")
            let inputs = try InputList.resolve(URL(fileURLWithPath: input), column: imageColumn)
            var options = EmbedOptions()
            options.batchSize = batchSize
            options.patchTokens = patchTokens
            options.lastBlocks = lastBlocks
            options.skipBad = skipBad
            options.maxPixels = maxPixels
            options.quiet = work.quiet
            options.dicomValues = dicomValues
            options.cache = noCache ? nil : FeatureCache(root: cache.map { URL(fileURLWithPath: $0) } ?? FeatureCache.defaultRoot())
            let result = try encoder.embed(inputs, options: options)
            let files = try EmbedOutput.write(
                result, encoder: encoder, modelPath: model,
                format: format,
                to: URL(fileURLWithPath: output), dicomValues: options.dicomValues)
            let c = result.tensors["cls"]?.shape.last ?? 0
            print(
                "embedded \(result.inputs.count) images (\(result.encoded) encoded, \(result.cacheHits) from cache), \(c)-d features, \(encoder.precision.rawValue) linear layers"
            )
            for f in result.failed { print("skipped \(f.id): \(f.reason)") }
            for w in result.warnings { print("warning: \(w)") }
            for f in files { print("wrote \(f.path)") }
            if let n = checkAgainstFp32 {
                let reference = try Encoder.load(
                    model: URL(fileURLWithPath: model), preset: try resolvePreset(preset), heads: heads,
                    explicit: try pre.preprocessing(), stateDictKey: stateDictKey, precision: .fp32)
                let check = try PrecisionCheck.measure(encoder, reference: reference, inputs: inputs, count: n, options: options)
                let url = PrecisionCheck.url(for: URL(fileURLWithPath: output))
                try check.write(to: url)
                print(check.summary)
                print("wrote \(url.path)")
            }
        }
    }
}

/// Preprocessing given on the command line, for models without `preprocessor_config.json`
/// (or to override it).
struct PreprocessingFlags: ParsableArguments {
    @Option(name: .long, help: "Resize so the shorter side is this many pixels.")
    var size: Int?

    @Option(name: .long, help: "Center-crop to this square size (default: --size).")
    var crop: Int?

    @Option(name: .long, help: "Per-channel mean, e.g. 0.485,0.456,0.406 (one value is replicated).")
    var mean: String?

    @Option(name: .long, help: "Per-channel std, e.g. 0.229,0.224,0.225 (one value is replicated).")
    var std: String?

    @Option(name: .long, help: "bicubic or bilinear.")
    var interpolation: Preprocessing.Interpolation = .bicubic

    /// nil when no flag is given; an error when only some of size/mean/std are.
    func preprocessing() throws -> Preprocessing? {
        if size == nil && mean == nil && std == nil && crop == nil { return nil }
        guard let size, let mean, let std else {
            throw XRError("explicit preprocessing needs --size, --mean and --std together", field: "preprocessing")
        }
        return Preprocessing(
            shortestEdge: size, crop: crop ?? size, interpolation: interpolation,
            mean: try triple(mean, "--mean"), std: try triple(std, "--std"))
    }

    private func triple(_ s: String, _ flag: String) throws -> [Float] {
        let v = s.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
        guard !v.isEmpty, v.allSatisfy({ $0 != nil }), v.count == 1 || v.count == 3 else {
            throw XRError("expected one or three comma-separated numbers, got '\(s)'", field: flag)
        }
        let f = v.compactMap { $0 }
        return f.count == 1 ? [f[0], f[0], f[0]] : f
    }
}
