// METEOR resources (`--meteor-data`): the jar (a zip read with libarchive) or a directory with its
// layout, then a METEOR score with them. A directory input is five files in one: function words,
// synsets, exceptions, nonbreaking prefixes and the gzip paraphrase table, in that order,
// separated by `separator`; an input starting with a zip signature is written as the jar.
import Foundation
import FuzzSupport
import XRText

let separator = "\n--xrlab-fuzz-part--\n"
let files = [
    "function/english.words", "synonym/english.synsets", "synonym/english.exceptions",
    "nonbreaking/english.prefixes", "data/paraphrase-en.gz"
]
let candidate = "the heart is normal in size and the lungs are clear"
let reference = "heart size is normal . lungs were clear , no effusion"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let data = fuzzData(bytes, size)
    let dir = Scratch.fresh()
    if data.starts(with: [0x50, 0x4B, 0x03, 0x04]) {
        try? data.write(to: dir.appendingPathComponent("meteor-1.5.jar"))
    } else {
        for (name, part) in zip(files, splitParts(data, separator: separator)) {
            let u = dir.appendingPathComponent(name)
            try? FileManager.default.createDirectory(at: u.deletingLastPathComponent(), withIntermediateDirectories: true)
            try? part.write(to: u)
        }
    }
    guard let m = try? Meteor.load(from: dir.path, restrictingTo: [candidate, reference]) else { return 0 }
    _ = CaptionMetrics.score(candidates: [candidate], references: [[reference]], meteor: m)
    return 0
}

@_cdecl("fuzz_meteor_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, fuzzOne)
}
