// swift-tools-version:6.1
import PackageDescription

// Every Swift target is compiled for x86-64-v3 (AVX2 + FMA): the SIMD kernels are
// 30-50x slower without it. xrlab therefore needs an AVX2-capable x86-64 CPU.
let simd: [SwiftSetting] = [.unsafeFlags(["-Xcc", "-march=x86-64-v3"])]
// Numeric modules are optimised in debug builds too: unoptimised SIMD loops run 30-100x slower,
// which would make the test suite (built in debug) needlessly slow.
let numeric: [SwiftSetting] = [.unsafeFlags(["-Xcc", "-march=x86-64-v3", "-O"])]

let package = Package(
    name: "xrlab",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "xrlab", targets: ["xrlab"]),
        .library(
            name: "XRLab",
            targets: [
                "XRTensor", "XRTorch", "XRKernels", "XRModels", "XRData", "XRProbe", "XRHeads", "XRRecipes", "XRPipeline", "XRPackage", "XRTrain", "XRText",
                "XRReport"
            ])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        // P-256 ECDSA signatures and SHA-256 / HMAC (BoringSSL on Linux).
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0")
    ],
    targets: [
        // System libraries: thin module maps only.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "COpenJPEG", pkgConfig: "libopenjp2", providers: [.apt(["libopenjp2-7-dev"])]),
        .systemLibrary(name: "CJPEG", pkgConfig: "libjpeg", providers: [.apt(["libjpeg-dev"])]),
        // libarchive: versioned model archives.
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),

        // libpng behind a setjmp guard (libpng reports errors by longjmp, which must not cross Swift frames).
        .target(name: "CXRPNG", dependencies: ["CPNG"]),
        // libjpeg (JPEG Baseline in DICOM) behind the same kind of setjmp guard.
        .target(name: "CXRJPEG", dependencies: ["CJPEG"]),
        // Floating-point control (denormals flushed to zero on every thread that runs kernels).
        .target(name: "CXRCPU"),

        // Storage, shapes, dtypes, safetensors / npy I/O, hashing (swift-crypto), errors. No math.
        .target(name: "XRTensor", dependencies: [.product(name: "Crypto", package: "swift-crypto")], swiftSettings: simd),
        // Pure functions over buffers (forward + backward per op family). Only BLAS/ imports CBLAS.
        .target(name: "XRKernels", dependencies: ["XRTensor", "CBLAS", "CXRCPU"], swiftSettings: numeric),
        // PyTorch checkpoints (torch.save zip + pickle) read as tensors without executing anything.
        .target(name: "XRTorch", dependencies: ["XRTensor", "CArchive"], swiftSettings: simd),
        // One file per model family: config, blocks, checkpoint key map, forward.
        .target(name: "XRModels", dependencies: ["XRTensor", "XRKernels", "XRTorch"], swiftSettings: numeric),
        // PNG / DICOM decoding, preprocessing, manifests.
        .target(name: "XRData", dependencies: ["XRTensor", "XRKernels", "CXRPNG", "CZlib", "COpenJPEG", "CXRJPEG"], swiftSettings: numeric),
        // Few-shot sampling, probes, metrics, bootstrap, subgroups.
        .target(name: "XRProbe", dependencies: ["XRTensor", "XRKernels"], swiftSettings: numeric),
        // Segmentation and detection heads on frozen patch tokens (linear decoder, patch k-NN, box head).
        .target(name: "XRHeads", dependencies: ["XRTensor", "XRKernels", "XRData", "XRProbe", "XRTrain"], swiftSettings: numeric),
        // Feature extraction pipeline (embed) and feature cache.
        .target(name: "XRPipeline", dependencies: ["XRTensor", "XRKernels", "XRModels", "XRData"], swiftSettings: simd),
        // Recipe schema, validation, planner, resumable runner, plots, reports.
        .target(
            name: "XRRecipes",
            dependencies: [
                "XRTensor", "XRKernels", "XRData", "XRModels", "XRProbe", "XRHeads", "XRPipeline", "XRTrain", "XRText", "XRReport",
                .product(name: "Yams", package: "Yams")
            ], swiftSettings: simd),
        // Training: trainable ViT built from a loaded encoder (forward with saved activations, backward), LoRA, losses, AdamW.
        .target(name: "XRTrain", dependencies: ["XRTensor", "XRKernels", "XRModels"], swiftSettings: numeric),
        // Report text: tokenisation and report-generation metrics (METEOR reads its jar / gzip resources with libarchive).
        .target(name: "XRText", dependencies: ["XRTensor", "XRData", "CArchive"], swiftSettings: numeric),
        // Report generation: paired data → decoder training → drafts and scores.
        .target(name: "XRReport", dependencies: ["XRTensor", "XRKernels", "XRData", "XRModels", "XRPipeline", "XRTrain", "XRText"], swiftSettings: simd),
        // Versioned model archives: pack, verify, inspect, diff, unpack, predict.
        .target(
            name: "XRPackage",
            dependencies: [
                "XRTensor", "XRData", "XRModels", "XRProbe", "XRHeads", "XRPipeline", "XRRecipes", "XRTrain", "CArchive",
                .product(name: "Crypto", package: "swift-crypto")
            ], swiftSettings: simd),
        // The command-line tool: parse, validate, dispatch.
        .executableTarget(
            name: "xrlab",
            dependencies: [
                "XRTensor", "XRTorch", "XRKernels", "XRModels", "XRData", "XRProbe", "XRPipeline", "XRRecipes", "XRPackage", "XRTrain", "XRText", "XRReport",
                .product(name: "ArgumentParser", package: "swift-argument-parser")
            ], swiftSettings: simd),

        // `swift package lint-recipes`: validate every recipe in recipes/.
        .plugin(
            name: "LintRecipes",
            capability: .command(intent: .custom(verb: "lint-recipes", description: "Validate every recipe in recipes/ with xrlab validate")),
            dependencies: ["xrlab"]),

        .target(name: "TestSupport", dependencies: ["XRTensor", "XRData", "CZlib"], path: "Tests/TestSupport", swiftSettings: simd),
        .testTarget(name: "XRTensorTests", dependencies: ["XRTensor", "TestSupport"], swiftSettings: simd),
        .testTarget(name: "XRTorchTests", dependencies: ["XRTorch", "XRTensor", "TestSupport"], swiftSettings: simd),
        .testTarget(name: "XRKernelsTests", dependencies: ["XRKernels", "TestSupport"], swiftSettings: simd),
        .testTarget(name: "XRModelsTests", dependencies: ["XRModels", "XRTensor", "TestSupport"], swiftSettings: simd),
        .testTarget(name: "XRDataTests", dependencies: ["XRData", "TestSupport"], swiftSettings: simd),
        .testTarget(name: "XRProbeTests", dependencies: ["XRProbe", "TestSupport"], swiftSettings: simd),
        .testTarget(
            name: "XRHeadsTests", dependencies: ["XRHeads", "XRData", "XRProbe", "XRTensor", "XRTrain", "XRModels", "TestSupport"], swiftSettings: simd),
        .testTarget(name: "XRPipelineTests", dependencies: ["XRPipeline", "XRModels", "XRData", "TestSupport"], swiftSettings: simd),
        .testTarget(
            name: "XRRecipesTests", dependencies: ["XRRecipes", "XRData", "XRTensor", "XRPipeline", "XRText", "TestSupport"], exclude: ["Snapshots"],
            swiftSettings: simd),
        .testTarget(
            name: "XRPackageTests", dependencies: ["XRPackage", "XRRecipes", "XRPipeline", "XRProbe", "XRData", "XRTensor", "TestSupport"], swiftSettings: simd),
        .testTarget(
            name: "XRTrainTests", dependencies: ["XRTrain", "XRKernels", "XRTensor", "XRModels", "XRPipeline", "XRData", "TestSupport"], swiftSettings: simd),
        .testTarget(name: "XRTextTests", dependencies: ["XRText", "XRData", "TestSupport"], swiftSettings: simd),
        .testTarget(
            name: "XRReportTests", dependencies: ["XRReport", "XRTrain", "XRText", "XRData", "XRPipeline", "XRTensor", "TestSupport"], swiftSettings: simd),
        .testTarget(name: "xrlabTests", dependencies: ["TestSupport", "XRPipeline"], swiftSettings: simd)
    ]
)
