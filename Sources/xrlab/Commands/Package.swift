import ArgumentParser
import Foundation
import XRTensor
import XRData
import XRModels
import XRPipeline
import XRPackage

/// Default registry folder: $XRLAB_REGISTRY, else ./models.
func defaultRegistry() -> String { ProcessInfo.processInfo.environment["XRLAB_REGISTRY"] ?? "models" }

/// `xrlab pack`: a run directory → NAME-X.Y.Z.xrpkg in the registry.
struct PackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pack",
        abstract: "Package a run's model (fitted head, thresholds, evaluation, card) as a versioned archive.",
        discussion: """
            Fits the run's method on the training rows (all of them, or --shots per class as in a study
            cell), chooses per-label thresholds on held-out validation rows (Youden's J), evaluates on
            the test rows with bootstrap intervals and subgroups, and writes REGISTRY/NAME-X.Y.Z.xrpkg:
            manifest.json, weights/head.safetensors, MODEL_CARD.md and SHA256SUMS. Segmentation runs
            package a linear_decoder (or a tuned cell's encoder with its decoder: --method lora, last_k,
            … with --shots), detection runs a box_head (fitted on --shots images with a box and
            as many without, as the study cell, or on every training image), retrieval runs their
            gallery; the manifest records the kind and the exact preprocessing. The same run packs
            to the same bytes. Existing versions are never overwritten.
            """)

    @Argument(help: "Run directory (the output folder of `xrlab run`).")
    var runDirectory: String
    @Option(name: .long, help: "Package name.")
    var name: String
    @Option(name: .long, help: "Version X.Y.Z.")
    var version: String?
    @Option(name: .long, help: "patch, minor or major: the next version after the registry's latest.")
    var bump: SemanticVersion.Part?
    @Option(name: .long, help: "Method setting (logistic, knn-k20, prototype); default: the run's best at its largest shot count.")
    var method: String?
    @Option(name: .long, help: "Train on this many examples per class (the study cell's draw); default: all training rows.")
    var shots: Int?
    @Option(name: .long, help: "Seed of the shot draw and the validation split.")
    var seed: Int = 0
    @Option(name: .long, help: "Share of training patients held out to choose thresholds (all-rows training).")
    var validationFraction: Double = 0.2
    @Option(name: .long, help: "Registry folder (default $XRLAB_REGISTRY or ./models).")
    var registry: String = defaultRegistry()
    @Option(name: .long, help: "gzip or zstd.")
    var compression: PackCompression = .gzip
    @Flag(name: .long, help: "Include merged encoder weights (adapter methods).")
    var merged = false
    @Option(name: .long, help: "Sign the package with this private key (model.sig).")
    var sign: String?
    @Flag(name: .long, help: "No progress output.")
    var quiet = false

    func run() throws {
        try runReportingErrors {
            guard validationFraction > 0, validationFraction < 1 else {
                throw XRError("--validation-fraction must be between 0 and 1, got \(validationFraction)", field: "--validation-fraction")
            }
            var o = PackOptions(name: name, registry: URL(fileURLWithPath: registry))
            o.version = version
            o.bump = bump?.rawValue
            o.fit.method = method
            o.fit.shots = shots
            o.fit.seed = seed
            o.fit.validationFraction = validationFraction
            o.compression = compression.compression
            o.merged = merged
            o.quiet = quiet
            o.signingKey = try sign.map(loadSigningKey)
            let r = try Packer.pack(runDirectory: URL(fileURLWithPath: runDirectory), options: o)
            print(
                "packed \(r.manifest.name) \(r.manifest.version) (\(r.manifest.method.name), \(r.manifest.heads.count) head\(r.manifest.heads.count == 1 ? "" : "s"))"
            )
            for e in r.manifest.evaluation {
                let m = r.manifest.recipe.primary_metric
                print(
                    "  \(e.task): \(m) \(e.metrics[m].map { ModelCard.est($0) } ?? "—")\(r.manifest.heads.first { $0.task == e.task }?.threshold.map { String(format: ", threshold %.4f", $0) } ?? "")"
                )
            }
            print("archive: \(r.archive.path)")
            print("sha256:  \(r.sha256)")
            if let k = o.signingKey { print("signed:  key id \(k.publicKey.keyID)") }
        }
    }
}

/// `xrlab verify`.
struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check a package: signature (--trust), safe archive, checksums, manifest schema, head tensors, and the base encoder on disk (--base).",
        discussion: """
            PACKAGE is an .xrpkg archive or an unpacked package folder. With trusted keys (--trust or
            XRLAB_TRUSTED_KEYS) the package must carry a signature (model.sig) by one of them that
            covers exactly its files; the refusal names what failed: unsigned, unknown key, bad
            signature, a changed, missing or uncovered file, a malformed bundle.
            """)
    @Argument(help: "Package (.xrpkg) or unpacked package folder.")
    var package: String
    @Option(name: .long, help: "Base encoder (checkpoint folder or .safetensors) or, for feature packages, the feature file.")
    var base: String?
    @Option(name: .long, parsing: .upToNextOption, help: ArgumentHelp(trustHelp))
    var trust: [String] = []

    func run() throws {
        try runReportingErrors {
            let (_, lines) = try PackageReader.verify(
                URL(fileURLWithPath: package), base: base.map { URL(fileURLWithPath: $0) },
                trust: try TrustedKey.resolve(trust))
            for l in lines { print("ok  \(l)") }
        }
    }
}

/// `xrlab inspect`.
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Print a package's signer, manifest and model card.")
    @Argument(help: "Package (.xrpkg) or unpacked package folder.")
    var package: String
    @Flag(name: .long, help: "Print only the manifest JSON.")
    var json = false
    @Option(name: .long, parsing: .upToNextOption, help: ArgumentHelp(trustHelp))
    var trust: [String] = []

    func run() throws {
        try runReportingErrors {
            let p = try PackageReader.open(URL(fileURLWithPath: package), trust: try TrustedKey.resolve(trust))
            if !json {
                print("signature: \(p.signature.summary)")
                if p.manifest.base_encoder.kind == "encoder" {
                    let precision = p.manifest.base_encoder.encoderPrecision
                    print("precision: \(precision.rawValue) (the base encoder's linear layers; here on the \(precision.kernelSummary))")
                }
                print("kind:      \(p.manifest.packageKind.rawValue)")
                for line in ModelCard.heads(p.manifest) { print("head:      \(line)") }
                print("")
            }
            print(String(decoding: p.entries["manifest.json"]!, as: UTF8.self), terminator: "")
            if !json { print("\n" + p.card, terminator: "") }
        }
    }
}

/// `xrlab diff`.
struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "diff", abstract: "Show what changed between two packages.")
    @Argument(help: "Older package.")
    var a: String
    @Argument(help: "Newer package.")
    var b: String

    func run() throws {
        try runReportingErrors {
            let pa = try PackageReader.open(URL(fileURLWithPath: a)), pb = try PackageReader.open(URL(fileURLWithPath: b))
            let lines = PackageReader.diff(pa, pb)
            if lines.isEmpty { print("no differences") }
            for l in lines { print(l) }
        }
    }
}

/// `xrlab unpack`.
struct UnpackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unpack", abstract: "Check a package and extract it into a new folder.")
    @Argument(help: "Package (.xrpkg).")
    var package: String
    @Option(name: .long, help: "Destination folder (must not exist).")
    var to: String
    @Option(name: .long, parsing: .upToNextOption, help: ArgumentHelp(trustHelp))
    var trust: [String] = []

    func run() throws {
        try runReportingErrors {
            let p = try PackageReader.unpack(URL(fileURLWithPath: package), to: URL(fileURLWithPath: to), trust: try TrustedKey.resolve(trust))
            print("unpacked \(p.manifest.name) \(p.manifest.version) (\(p.sizes.count) files) into \(to)")
        }
    }
}

/// `xrlab predict`.
struct PredictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Apply a package to images: packaged preprocessing, base encoder and heads → probabilities, masks, boxes or neighbours.",
        discussion: """
            INPUTS are PNG / DICOM files, folders (walked recursively) or manifest CSVs (--image-column).
            The base encoder must be the one the package records (its SHA-256 is checked). Classification
            columns: path, then per binary label LABEL_probability and LABEL_decision (1 at or above the
            packaged threshold), per multiclass task p_CLASS and predicted. Segmentation packages write a
            mask PNG per image at its original size into --masks DIR and the columns path, mask,
            foreground_fraction. Detection packages write one row per predicted box (path, box, x, y,
            width, height, score; image pixels, highest score first) into --boxes FILE.csv and the
            columns path, image_score, peak_x, peak_y, boxes; --heatmaps DIR adds each image's heatmap
            PNG (255 = probability 1) and an overlay PNG (heatmap red, boxes yellow).
            Retrieval packages write path, task, rank, neighbour, labels, similarity
            for the --top-k nearest gallery images. The encoder's linear layers run at the
            precision the package records (fp32, or int8 for packages made from a model.precision: int8
            recipe) unless --precision says otherwise.
            """)
    @Option(name: .long, help: "Package (.xrpkg).")
    var package: String
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Trusted public key file or folder (repeat for several); default $XRLAB_TRUSTED_KEYS. With either, the package must be signed by one of them."))
    var trust: [String] = []
    @Option(name: .long, help: "Base encoder: checkpoint folder or .safetensors file.")
    var base: String?
    @Option(name: .long, help: "For packages built on precomputed features: a feature file (.safetensors / .npy).")
    var features: String?
    @Argument(help: "Images, folders or manifest CSVs.")
    var inputs: [String] = []
    @Option(name: .long, help: "Manifest column holding image paths.")
    var imageColumn: String = "path"
    @Option(name: .long, help: "Output CSV (default: standard output).")
    var out: String?
    @Flag(name: .long, help: "Leave unreadable images out (listed on stderr) instead of failing.")
    var skipBad = false
    @Option(name: .long, help: "Images per forward pass.")
    var batchSize: Int = 8
    @Option(name: .long, help: "Segmentation packages: folder for the predicted mask PNGs.")
    var masks: String?
    @Option(name: .long, help: "Detection packages: CSV of the predicted boxes (path, box, x, y, width, height, score).")
    var boxes: String?
    @Option(name: .long, help: "Detection packages: folder for each image's heatmap PNG and overlay PNG.")
    var heatmaps: String?
    @Option(name: .long, help: "Retrieval packages: neighbours per image (default: the packaged number).")
    var topK: Int?
    @Option(name: .long, help: "Precision of the base encoder's linear layers: fp32 or int8 (default: the package's).")
    var precision: Precision?
    @OptionGroup var work: WorkOptions

    func run() throws {
        try runReportingErrors {
            work.apply()
            let p = try PackageReader.open(URL(fileURLWithPath: package), trust: try TrustedKey.resolve(trust))
            let result: Prediction
            try Predictor.checkOutputs(p.manifest.packageKind, masks: masks, boxes: boxes, heatmaps: heatmaps)
            if let features {
                let (x, ids) = try Predictor.loadFeatures(URL(fileURLWithPath: features), representation: p.manifest.base_encoder.representation)
                result = try Predictor.predict(p, features: x, ids: ids, topK: topK)
            } else {
                guard let base else { throw XRError("pass --base MODEL (the package's base encoder)", field: "--base") }
                guard !inputs.isEmpty else { throw XRError("no inputs: pass images, folders or a manifest CSV", field: "inputs") }
                var list: [ImageInput] = []
                for i in inputs { list += try InputList.resolve(URL(fileURLWithPath: i), column: imageColumn) }
                var o = EmbedOptions()
                o.batchSize = batchSize
                o.skipBad = skipBad
                o.quiet = work.quiet
                if let precision, precision != p.manifest.base_encoder.encoderPrecision {
                    FileHandle.standardError.write(
                        Data(
                            "warning: the package's heads were fit on \(p.manifest.base_encoder.encoderPrecision.rawValue) features; running the encoder at \(precision.rawValue)\n"
                                .utf8))
                }
                result = try Predictor.predict(
                    p, base: URL(fileURLWithPath: base), inputs: list, options: o, masks: masks, topK: topK,
                    precision: precision, boxes: boxes, heatmaps: heatmaps)
            }
            if let masks { try result.writeMasks(to: URL(fileURLWithPath: masks), classValues: p.manifest.segmentation?.mask_classes) }
            if let heatmaps { try result.writeHeatmaps(to: URL(fileURLWithPath: heatmaps)) }
            if let boxes {
                try result.writeBoxes(to: URL(fileURLWithPath: boxes))
                if !work.quiet { FileHandle.standardError.write(Data("wrote \(result.boxes.count) boxes to \(boxes)\n".utf8)) }
            }
            for w in result.warnings { FileHandle.standardError.write(Data("warning: \(w)\n".utf8)) }
            for f in result.failed { FileHandle.standardError.write(Data("skipped: \(f.id): \(f.reason)\n".utf8)) }
            if let out {
                try AtomicFile.write(result.csv, to: URL(fileURLWithPath: out))
                if !work.quiet { FileHandle.standardError.write(Data("wrote \(result.rows.count) rows to \(out)\n".utf8)) }
            } else {
                print(result.csv, terminator: "")
            }
        }
    }
}
