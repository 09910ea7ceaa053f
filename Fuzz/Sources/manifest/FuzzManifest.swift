// CSV manifests: the CSV reader, the image list `xrlab embed` takes from a manifest, and the
// checks of `xrlab check` (splits, patients, hashes, labels) on the same table.
import Foundation
import FuzzSupport
import XRData
import XRPipeline

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let url = Scratch.file("manifest.csv", fuzzData(bytes, size))
    _ = try? InputList.resolve(url)
    _ = try? ManifestCheck.run(url)
    return 0
}

@_cdecl("fuzz_manifest_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, fuzzOne)
}
