// DICOM: content sniffing, Part-10 parsing and pixel decoding (every transfer syntax), as images
// are read by `xrlab embed`, and the pixel hash `xrlab check` / `ingest` compute.
import Foundation
import FuzzSupport
import XRData

let maxPixels = 4_000_000

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let data = fuzzData(bytes, size)
    for values in [DICOMFile.Values.stored, .modality, .voi] {
        _ = try? ImageDecoder.decodeWithWarnings(data, source: "fuzz.dcm", maxPixels: maxPixels, dicomValues: values)
    }
    // `xrlab ingest` hashes the pixels of every DICOM file it lists.
    if let f = try? DICOMFile.parse(data, source: "fuzz.dcm") { _ = try? f.pixelHash() }
    return 0
}

@_cdecl("fuzz_dicom_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, fuzzOne)
}
