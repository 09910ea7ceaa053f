// PNG: the decoder `xrlab embed` / `predict` / `check` use on image bytes (libpng behind its setjmp guard).
import Foundation
import FuzzSupport
import XRData

/// Smaller than the default (100 M pixels) so that a legal but huge image stays inside the
/// fuzzer's memory limit; the refusal path itself is the same.
let maxPixels = 4_000_000

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let data = fuzzData(bytes, size)
    _ = try? PNGCodec.decode(data, source: "fuzz.png", maxPixels: maxPixels)
    return 0
}

@_cdecl("fuzz_png_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, fuzzOne)
}
