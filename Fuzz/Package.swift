// swift-tools-version:6.1
import PackageDescription

// libFuzzer targets for every file format xrlab reads, one executable per format. Built apart
// from the main package because every module (xrlab's included) must be compiled with the
// fuzzer's coverage instrumentation and the address sanitizer:
//
//   swift build --package-path Fuzz -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
//
// or simply Fuzz/run.sh (builds, assembles the seed corpora and runs every target).
let formats = ["png", "dicom", "safetensors", "npy", "torch", "recipe", "manifest", "xrpkg", "tokenizer", "reportcsv", "meteor"]

let package = Package(
    name: "xrlab-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [.package(name: "xrlab", path: "..")],
    targets: [
        // libFuzzer's driver and a scratch directory for readers that take a path.
        .target(name: "FuzzSupport")
    ]
        + formats.map { f in
            .executableTarget(
                name: "fuzz_\(f)", dependencies: ["FuzzSupport", .product(name: "XRLab", package: "xrlab")],
                path: "Sources/\(f)")
        }
)
