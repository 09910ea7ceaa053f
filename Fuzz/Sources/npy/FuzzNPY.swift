// .npy: the NumPy reader behind `features.matrix` in recipes and `embed --format npy` outputs.
import Foundation
import FuzzSupport
import XRTensor

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    _ = try? NPY.decode(fuzzData(bytes, size), source: "fuzz.npy")
    return 0
}

@_cdecl("fuzz_npy_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, fuzzOne)
}
