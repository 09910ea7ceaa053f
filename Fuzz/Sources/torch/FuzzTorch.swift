// PyTorch checkpoints (.pt / .pth / .bin): the zip container, the restricted pickle interpreter
// and the tensor views it builds, then every tensor converted to f32 as the loaders do.
import Foundation
import FuzzSupport
import XRTorch

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    if let c = try? TorchCheckpoint(data: fuzzData(bytes, size), source: "fuzz.pt") {
        for name in c.names { _ = try? c.tensor(name) }
    }
    return 0
}

@_cdecl("fuzz_torch_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, fuzzOne)
}
