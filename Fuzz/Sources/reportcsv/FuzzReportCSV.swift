// Report CSVs: the paired image/report manifest `xrlab report train` and `tokenizer train` read
// (report sections, splits, UTF-8 checks), and the generated / reference CSVs `xrlab score`
// reads, scored as it scores them (PTB tokenisation, BLEU, ROUGE-L, CIDEr-D, CheXpert labels).
import Foundation
import FuzzSupport
import XRData
import XRText

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let url = Scratch.file("reports.csv", fuzzData(bytes, size))
    if let pairs = try? PairedReports.load(url) { _ = pairs.map { $0.target() } }
    guard let t = try? CSVTable(contentsOf: url), let i = try? t.column("id"), let x = try? t.column("report") else { return 0 }
    let rows = t.rows.map { ($0[i], $0[x]) }
    // Each report scored against every row with its id, and against the next row's report.
    var byId: [String: [String]] = [:]
    for (id, r) in rows { byId[id, default: []].append(r) }
    let candidates = rows.map { PTBTokenizer.tokenize($0.1) }
    let references = rows.indices.map { k in (byId[rows[k].0] ?? []).map(PTBTokenizer.tokenize) + [candidates[(k + 1) % rows.count]] }
    _ = CaptionMetrics.score(candidates: candidates, references: references)
    _ = CheXpertLabeler.efficacy(generated: rows.map(\.1), references: rows.indices.map { rows[($0 + 1) % rows.count].1 })
    return 0
}

@_cdecl("fuzz_reportcsv_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, fuzzOne)
}
