import XCTest
import Foundation
@testable import XRText
import XRData
import TestSupport

/// Scoring many times must not grow memory: CIDEr-D's document-frequency dictionary was once
/// never freed (about 26 KB per call on this input), found by the `reportcsv` fuzz target, whose
/// memory reached its 2 GB limit. The input is the one it saved (`Fuzz/corpus/reportcsv`).
final class CaptionMetricsMemoryTests: XCTestCase {
    func testRepeatedScoringDoesNotGrowMemory() throws {
        let url = Fixtures.repoRoot.appendingPathComponent("Fuzz/corpus/reportcsv/leak-ciderd-document-frequency.csv")
        let table = try CSVTable(contentsOf: url)
        let i = try table.column("id"), x = try table.column("report")
        let rows = table.rows.map { ($0[i], $0[x]) }
        XCTAssertGreaterThan(rows.count, 2)
        let candidates = rows.map { PTBTokenizer.tokenize($0.1) }
        let references = rows.indices.map { k in [candidates[k], candidates[(k + 1) % rows.count]] }
        let first = CaptionMetrics.ciderD(candidates, references)
        var last: [Double] = []
        let growth = peakMemoryGrowthMB {
            for _ in 0..<250 { last = CaptionMetrics.ciderD(candidates, references) }
        }
        // The same scores each time (the sums run in dictionary order, so equal to rounding).
        for (a, b) in zip(first, last) { XCTAssertEqual(a, b, accuracy: 1e-12) }
        guard let growth else { throw XCTSkip("peak memory cannot be reset on this system (/proc/self/clear_refs)") }
        // 250 calls leaking 26 KB each would be 6.5 MB.
        XCTAssertLessThan(growth, 3, "memory grew \(growth) MB over 250 CIDEr-D calls")
        print("CIDEr-D memory growth over 250 calls: \(growth) MB")
    }
}
