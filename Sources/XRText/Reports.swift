// Radiology report text: normalisation (whitespace, anonymisation placeholders), FINDINGS /
// IMPRESSION sections kept apart, paired image–report manifests, and tokenised targets with
// over-long reports truncated and counted.
import Foundation
import XRTensor
import XRData

public enum ReportText {
    /// The one spelling every anonymisation placeholder (XXXX, xxxx, XXXX-XXXX, "X-XXXX") becomes.
    public static let placeholder = "XXXX"

    /// Collapse whitespace, trim, and map placeholder words (two or more x's, optionally joined by
    /// hyphens, any case, with surrounding punctuation kept) to `placeholder`.
    public static func normalize(_ s: String) -> String {
        let words = s.split(whereSeparator: { $0.isWhitespace })
        return words.map { w -> String in
            // Keep leading / trailing punctuation, replace the core.
            let chars = Array(w)
            var a = 0, b = chars.count
            while a < b, !chars[a].isLetter && !chars[a].isNumber { a += 1 }
            while b > a, !chars[b - 1].isLetter && !chars[b - 1].isNumber { b -= 1 }
            let core = String(chars[a..<b])
            let parts = core.split(separator: "-", omittingEmptySubsequences: false)
            let isPlaceholder =
                !core.isEmpty && parts.allSatisfy { p in p.count >= 2 && p.allSatisfy { $0 == "x" || $0 == "X" } }
                || (parts.count == 2 && parts[0].lowercased() == "x" && parts[1].count >= 2 && parts[1].allSatisfy { $0 == "x" || $0 == "X" })
            return isPlaceholder ? String(chars[0..<a]) + placeholder + String(chars[b...]) : String(w)
        }.joined(separator: " ")
    }

    /// Split "FINDINGS: … IMPRESSION: …" into its sections (either may be missing; text before
    /// any header counts as findings).
    public static func sections(_ report: String) -> (findings: String, impression: String) {
        let upper = report.uppercased()
        let f = upper.range(of: "FINDINGS:"), i = upper.range(of: "IMPRESSION:")
        func text(_ a: String.Index, _ b: String.Index) -> String {
            let lo = report.index(report.startIndex, offsetBy: upper.distance(from: upper.startIndex, to: a))
            let hi = report.index(report.startIndex, offsetBy: upper.distance(from: upper.startIndex, to: b))
            return normalize(String(report[lo..<hi]))
        }
        switch (f, i) {
        case let (f?, i?) where f.lowerBound < i.lowerBound: return (text(f.upperBound, i.lowerBound), text(i.upperBound, upper.endIndex))
        case let (f?, i?): return (text(f.upperBound, upper.endIndex), text(i.upperBound, f.lowerBound))
        case let (f?, nil): return (text(f.upperBound, upper.endIndex), "")
        case let (nil, i?): return (text(upper.startIndex, i.lowerBound), text(i.upperBound, upper.endIndex))
        default: return (normalize(report), "")
        }
    }
}

/// One image with its report.
/// What a report decoder learns to write, as recipes (`report.target`) and the CLI (`--target`) name it.
public enum ReportTarget: String, CaseIterable, Sendable { case findings, impression, both }

public struct ReportPair: Sendable, Equatable {
    public var id: String
    public var image: URL
    public var findings: String
    public var impression: String
    public var split: String?
    /// CSV row (the header is row 1).
    public var row: Int
    public init(id: String, image: URL, findings: String, impression: String, split: String?, row: Int) {
        self.id = id; self.image = image; self.findings = findings; self.impression = impression; self.split = split; self.row = row
    }
    /// What the decoder learns to write: findings and impression, or one of them (`ReportTarget`).
    public func target(_ part: String = "both") -> String {
        switch part {
        case "findings": return findings
        case "impression": return impression
        default: return [findings, impression].filter { !$0.isEmpty }.joined(separator: " ")
        }
    }
}

public enum PairedReports {
    /// Read a manifest with an image column and either `findings` / `impression` columns or one
    /// `report` column ("FINDINGS: … IMPRESSION: …"). Every row of a split that pairs images
    /// with reports must have a non-empty report; bytes that are not UTF-8 are an error naming the line.
    public static func load(
        _ url: URL, imageColumn: String = "path", findingsColumn: String = "findings", impressionColumn: String = "impression",
        reportColumn: String = "report", splitColumn: String? = "split"
    ) throws -> [ReportPair] {
        guard let data = FileManager.default.contents(atPath: url.path) else { throw XRError("manifest not found or unreadable", file: url.path) }
        if String(data: data, encoding: .utf8) == nil {
            // Name the first line holding bytes that are not UTF-8.
            var line = 1, start = 0
            let bytes = [UInt8](data)
            for (i, b) in bytes.enumerated() where b == 0x0A {
                if String(bytes: bytes[start..<i], encoding: .utf8) == nil { break }
                line += 1; start = i + 1
            }
            throw XRError("text is not valid UTF-8", file: url.path, field: "line \(line)", hint: "save the manifest as UTF-8")
        }
        let table = try CSVTable(contentsOf: url)
        guard let ic = table.header.firstIndex(of: imageColumn) else {
            throw XRError("no column '\(imageColumn)' (columns: \(table.header.joined(separator: ", ")))", file: url.path, field: "image column")
        }
        let fc = table.header.firstIndex(of: findingsColumn), pc = table.header.firstIndex(of: impressionColumn), rc = table.header.firstIndex(of: reportColumn)
        guard fc != nil || pc != nil || rc != nil else {
            throw XRError("no report columns ('\(findingsColumn)' / '\(impressionColumn)' or '\(reportColumn)')", file: url.path, field: "report column")
        }
        let sc = splitColumn.flatMap { table.header.firstIndex(of: $0) }
        let base = url.deletingLastPathComponent()
        return try table.rows.enumerated().map { i, row in
            var findings = fc.map { ReportText.normalize(row[$0]) } ?? "", impression = pc.map { ReportText.normalize(row[$0]) } ?? ""
            if findings.isEmpty && impression.isEmpty, let rc, !row[rc].trimmingCharacters(in: .whitespaces).isEmpty {
                (findings, impression) = ReportText.sections(row[rc])
            }
            let p = row[ic]
            guard !p.isEmpty else { throw XRError("empty image path", file: url.path, field: "row \(i + 2), column \(imageColumn)") }
            guard !(findings.isEmpty && impression.isEmpty) else {
                throw XRError(
                    "image without a report (findings and impression are empty)", file: url.path, field: "row \(i + 2)",
                    hint: "every image of a paired split needs its report; remove the row or add the text")
            }
            return ReportPair(
                id: p, image: p.hasPrefix("/") ? URL(fileURLWithPath: p) : base.appendingPathComponent(p),
                findings: findings, impression: impression, split: sc.map { row[$0] }, row: i + 2)
        }
    }
}

/// Reports as token id sequences for a decoder: BOS … EOS, cut to `maxTokens`, with a count of
/// how many were cut (never silently).
public struct TokenizedReports: Sendable {
    public var sequences: [[Int]]
    public var truncated: Int
    public var longest: Int

    public init(_ texts: [String], tokenizer: BPETokenizer, maxTokens: Int, bos: Int, eos: Int) {
        var seqs: [[Int]] = [], cut = 0, longest = 0
        for t in texts {
            var ids = [bos] + tokenizer.encode(t) + [eos]
            longest = max(longest, ids.count)
            if ids.count > maxTokens { ids = Array(ids.prefix(maxTokens)); cut += 1 }
            seqs.append(ids)
        }
        sequences = seqs; truncated = cut; self.longest = longest
    }
}
