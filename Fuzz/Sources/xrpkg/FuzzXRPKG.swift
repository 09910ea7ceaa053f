// .xrpkg archives: libarchive under xrlab's defensive reader, checksums, manifest, model card and
// head tensors, as `xrlab verify` / `inspect` read them. A mutated archive almost never passes
// its SHA256SUMS, so each input whose entries can be read is also re-packed with true checksums
// and verified again: that second pass reaches the manifest and head parsers.
import Foundation
import FuzzSupport
import XRTensor
import XRPackage

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let url = Scratch.file("fuzz.xrpkg", fuzzData(bytes, size))
    _ = try? PackageReader.verify(url, base: nil)
    guard var entries = try? TarArchive.read(url) else { return 0 }
    entries.removeAll { $0.name == "SHA256SUMS" }
    let sums = entries.sorted { $0.name < $1.name }.map { "\(SHA256.hex($0.data))  \($0.name)\n" }.joined()
    entries.append(ArchiveEntry(name: "SHA256SUMS", data: Data(sums.utf8)))
    let resigned = url.deletingLastPathComponent().appendingPathComponent("resigned.xrpkg")
    guard (try? TarArchive.write(entries, to: resigned, compression: .none)) != nil else { return 0 }
    _ = try? PackageReader.verify(resigned, base: nil)
    return 0
}

@_cdecl("fuzz_xrpkg_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, fuzzOne)
}
