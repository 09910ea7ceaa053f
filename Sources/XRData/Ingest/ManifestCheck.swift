import Foundation
import XRTensor
import XRKernels

/// One problem found in a manifest.
public struct Finding: Sendable, Codable, Equatable, CustomStringConvertible {
    public enum Severity: String, Sendable, Codable { case error, warning }
    public var severity: Severity
    public var kind: String
    public var message: String
    /// 1-based CSV line numbers (the header is line 1).
    public var lines: [Int]

    public var description: String {
        "\(severity.rawValue): \(kind): \(message)"
            + (lines.isEmpty ? "" : " (lines \(lines.prefix(10).map(String.init).joined(separator: ", "))\(lines.count > 10 ? ", …" : ""))")
    }
}

/// Leakage and hygiene checks for a manifest (`xrlab check`, also run by `xrlab run`).
public enum ManifestCheck {
    public struct Options: Sendable {
        public var pathColumn = "path"
        /// nil: the first of patient_key, patient_id, patient that exists.
        public var patientColumn: String? = nil
        public var splitColumn = "split"
        public var labelColumn = "labels"
        /// Allowed label values (pipe-separated cells); nil skips the check.
        public var allowedLabels: [String]? = nil
        public var nearDuplicates = true
        /// Largest Hamming distance between perceptual hashes counted as a near-duplicate.
        public var threshold = 4
        public init() {}
    }

    public static func run(_ url: URL, options o: Options = Options()) throws -> [Finding] {
        try run(table: try CSVTable(contentsOf: url), base: url.deletingLastPathComponent(), options: o)
    }

    /// Check a table already in memory (e.g. a manifest after a recipe's row filter); image paths
    /// are relative to `base`. Line numbers count the table's own rows.
    public static func run(table t: CSVTable, base: URL, options o: Options = Options()) throws -> [Finding] {
        var findings: [Finding] = []
        let split = t.header.firstIndex(of: o.splitColumn)
        let patientName = o.patientColumn ?? ["patient_key", "patient_id", "patient"].first { t.header.contains($0) }
        let patient = try patientName.map { try t.column($0) }
        func splitOf(_ r: [String]) -> String { split.map { r[$0] } ?? "" }

        // Same patient in more than one split.
        if let patient, split != nil {
            var bySplit: [String: Set<String>] = [:], lines: [String: [Int]] = [:]
            for (i, r) in t.rows.enumerated() where !r[patient].isEmpty {
                bySplit[r[patient], default: []].insert(splitOf(r))
                lines[r[patient], default: []].append(i + 2)
            }
            for (p, s) in bySplit.sorted(by: { $0.key < $1.key }) where s.count > 1 {
                findings.append(
                    Finding(
                        severity: .error, kind: "patient-across-splits",
                        message: "patient \(p) appears in \(s.sorted().joined(separator: " and "))", lines: lines[p] ?? []))
            }
        }
        // Identical content across splits.
        let pathCol = try t.column(o.pathColumn)
        let shaCol = t.header.firstIndex(of: "sha256")
        var hashes: [String] = []
        for r in t.rows {
            if let shaCol, !r[shaCol].isEmpty { hashes.append(r[shaCol]); continue }
            let u = r[pathCol].hasPrefix("/") ? URL(fileURLWithPath: r[pathCol]) : base.appendingPathComponent(r[pathCol])
            hashes.append((try? SHA256.hexOfFile(u)) ?? "")
        }
        if split != nil {
            var groups: [String: [Int]] = [:]
            for (i, h) in hashes.enumerated() where !h.isEmpty { groups[h, default: []].append(i) }
            for (_, idx) in groups.sorted(by: { $0.key < $1.key }) where Set(idx.map { splitOf(t.rows[$0]) }).count > 1 {
                findings.append(
                    Finding(
                        severity: .error, kind: "duplicate-across-splits",
                        message: "identical image content in \(Set(idx.map { splitOf(t.rows[$0]) }).sorted().joined(separator: " and "))",
                        lines: idx.map { $0 + 2 }))
            }
        }
        // Near-duplicates across splits (perceptual hash).
        if o.nearDuplicates, split != nil {
            var ph: [(Int, UInt64)] = []
            for (i, r) in t.rows.enumerated() {
                let u = r[pathCol].hasPrefix("/") ? URL(fileURLWithPath: r[pathCol]) : base.appendingPathComponent(r[pathCol])
                if let d = try? Data(contentsOf: u), let img = try? ImageDecoder.decode(d, source: u.path) { ph.append((i, perceptualHash(img))) }
            }
            var pairs: [[Int]] = []
            for a in 0..<ph.count {
                for b in (a + 1)..<max(a + 1, ph.count)
                where splitOf(t.rows[ph[a].0]) != splitOf(t.rows[ph[b].0])
                    && hashes[ph[a].0] != hashes[ph[b].0] && (ph[a].1 ^ ph[b].1).nonzeroBitCount <= o.threshold
                {
                    pairs.append([ph[a].0 + 2, ph[b].0 + 2])
                }
            }
            if !pairs.isEmpty {
                findings.append(
                    Finding(
                        severity: .warning, kind: "near-duplicates-across-splits",
                        message:
                            "\(pairs.count) image pairs in different splits look alike (perceptual hash distance ≤ \(o.threshold)); check they are not the same study",
                        lines: pairs.prefix(20).flatMap { $0 }))
            }
        }
        // Label values and balance.
        if let lc = t.header.firstIndex(of: o.labelColumn) {
            var counts: [String: Int] = [:]
            for (i, r) in t.rows.enumerated() {
                let vals = r[lc].split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                for v in vals {
                    counts[v, default: 0] += 1
                    if let allowed = o.allowedLabels, !allowed.contains(v) {
                        findings.append(
                            Finding(
                                severity: .error, kind: "impossible-label",
                                message: "label value '\(v)' is not one of \(allowed.joined(separator: ", "))", lines: [i + 2]))
                    }
                }
            }
            let n = max(t.rows.count, 1)
            for (v, c) in counts.sorted(by: { $0.key < $1.key }) where Double(c) / Double(n) < 0.05 || Double(c) / Double(n) > 0.95 {
                findings.append(
                    Finding(
                        severity: .warning, kind: "class-imbalance",
                        message: "label '\(v)' is on \(c) of \(n) images (\(String(format: "%.1f", 100 * Double(c) / Double(n)))%)", lines: []))
            }
        }
        return findings
    }

    /// 64-bit DCT perceptual hash: gray, 32×32 (antialiased bilinear), 2-D DCT-II, the 8×8
    /// lowest frequencies compared with their median (the DC term excluded from the median).
    public static func perceptualHash(_ img: XRImage) -> UInt64 {
        let n = img.width * img.height
        var gray = [Float](repeating: 0, count: n)
        for c in 0..<img.channels { for i in 0..<n { gray[i] += img.pixels[c * n + i] / Float(img.channels) } }
        var small = [Float](repeating: 0, count: 32 * 32)
        small.withUnsafeMutableBufferPointer { o in
            gray.withUnsafeBufferPointer { g in
                resample(
                    o.baseAddress!, g.baseAddress!, channels: 1, inH: img.height, inW: img.width, outH: 32, outW: 32,
                    filter: .bilinear, antialias: true)
            }
        }
        var coef = [Double](repeating: 0, count: 64)
        for u in 0..<8 {
            for v in 0..<8 {
                var s = 0.0
                for y in 0..<32 {
                    for x in 0..<32 {
                        s += Double(small[y * 32 + x]) * cos(Double(2 * y + 1) * Double(u) * .pi / 64) * cos(Double(2 * x + 1) * Double(v) * .pi / 64)
                    }
                }
                coef[u * 8 + v] = s
            }
        }
        let median = coef.dropFirst().sorted()[31]
        var h: UInt64 = 0
        for (i, c) in coef.enumerated() where c > median { h |= 1 << UInt64(i) }
        return h
    }
}
