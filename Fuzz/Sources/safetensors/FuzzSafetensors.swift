// safetensors: header parsing and checks when the file is opened (feature matrices, checkpoints,
// package heads), then every tensor converted to f32 as the readers do.
import Foundation
import FuzzSupport
import XRTensor

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let url = Scratch.file("fuzz.safetensors", fuzzData(bytes, size))
    if let f = try? SafeTensorsFile(contentsOf: url) {
        for name in f.names { _ = try? f.tensor(name) }
    }
    return 0
}

@_cdecl("fuzz_safetensors_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, fuzzOne)
}
