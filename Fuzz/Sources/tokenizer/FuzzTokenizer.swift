// tokenizer.json (Hugging Face byte-level BPE): loading, then encoding and decoding a fixed text
// with special tokens, as `xrlab tokenizer encode` and report training do.
import Foundation
import FuzzSupport
import XRText

let text = "FINDINGS: No focal consolidation. <|endoftext|> Heart size normal; 2.5 cm nodule.\nIMPRESSION: <pad> clear lungs ☃"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let url = Scratch.file("tokenizer.json", fuzzData(bytes, size))
    guard let tok = try? BPETokenizer.load(url) else { return 0 }
    let ids = tok.encode(text)
    _ = tok.decode(ids)
    _ = tok.decode(ids, skipSpecial: true)
    _ = tok.decode(Array(0..<min(tok.size, 1024)))
    return 0
}

@_cdecl("fuzz_tokenizer_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, fuzzOne)
}
