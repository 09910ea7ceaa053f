import Foundation
import XRTensor

/// `xrlab ingest`: a folder of DICOM / PNG radiographs → a de-identified manifest CSV.
public enum Ingest {
    public enum JoinKey: String, Sendable, CaseIterable { case filename, accession, study }

    public struct Result: Sendable {
        public var manifest: URL
        public var rows: Int
        public var summary: String
    }

    public static let columns = [
        "path", "sha256", "patient_key", "study_key", "view", "body_part", "laterality",
        "sex", "age", "modality", "labels", "split"
    ]

    /// Walk `dir` (sorted), read metadata, join labels, write `out` atomically. Identifiers are
    /// only used in memory: patient and study columns hold keyed hashes; names, ids, birth dates
    /// and accession numbers are never written.
    public static func run(_ dir: URL, labels: URL?, joinOn: JoinKey, out: URL, key: SiteKey) throws -> Result {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir), isDir.boolValue else {
            throw XRError("not a folder", file: dir.path)
        }
        // Labels table: key column (file name / accession / study UID), labels, optional split.
        var labelRows: [String: (labels: String, split: String)] = [:]
        var matched = Set<String>()
        if let labels {
            let t = try CSVTable(contentsOf: labels)
            let keyCol = try t.column(joinOn == .filename ? "filename" : joinOn.rawValue)
            let labCol = try t.column("labels")
            let splitCol = t.header.firstIndex(of: "split")
            for (i, r) in t.rows.enumerated() {
                let k = r[keyCol].trimmingCharacters(in: .whitespaces)
                if labelRows[k] != nil {
                    throw XRError(
                        "duplicate key '\(k)'", file: labels.path, field: "line \(i + 2)",
                        hint: "each \(joinOn.rawValue) may appear once in the labels CSV")
                }
                labelRows[k] = (r[labCol], splitCol.map { r[$0] } ?? "")
            }
        }
        let base = out.deletingLastPathComponent().standardizedFileURL
        guard let e = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: nil, options: [.skipsHiddenFiles]) else {
            throw XRError("cannot list folder", file: dir.path)
        }
        var files: [URL] = []
        for case let u as URL in e where ImageDecoder.extensions.contains(u.pathExtension.lowercased()) { files.append(u) }
        files.sort { $0.path < $1.path }
        if files.isEmpty { throw XRError("no DICOM or PNG files found", file: dir.path) }
        var rows: [[String]] = []
        for u in files {
            let data: Data
            do { data = try Data(contentsOf: u) } catch { throw XRError("cannot read file", file: u.path) }
            var row = [String](repeating: "", count: columns.count)
            row[0] = relativePath(u, from: base)
            var joinValue = u.lastPathComponent
            if DICOMFile.isDICOM(data) {
                let f = try DICOMFile.parse(data, source: u.path)
                row[1] = try f.pixelHash()
                row[2] = key.key("patient", f.patientID ?? "")
                row[3] = key.key("study", f.studyUID ?? "")
                row[4] = f.viewPosition ?? ""
                row[5] = f.bodyPart ?? ""
                row[6] = f.laterality ?? ""
                row[7] = f.patientSex ?? ""
                row[8] = age(f.patientAge)
                if row[8].isEmpty { row[8] = age(birthDate: f.patientBirthDate, on: f.studyDate) }
                row[9] = f.modality ?? ""
                if joinOn == .accession { joinValue = f.accessionNumber ?? "" }
                if joinOn == .study { joinValue = f.studyUID ?? "" }
            } else if joinOn != .filename {
                throw XRError("PNG files carry no \(joinOn.rawValue); join PNG labels by filename", file: u.path, field: "--join-on")
            } else {
                row[1] = SHA256.hex(data) // PNG: the file; DICOM: its decoded pixel values (above)
            }
            if let l = labelRows[joinValue] {
                row[10] = l.labels; row[11] = l.split
                matched.insert(joinValue)
            }
            rows.append(row)
        }
        if let labels, !labelRows.isEmpty, matched.isEmpty {
            throw XRError(
                "no row of the labels CSV matches any file (joined on \(joinOn.rawValue))", file: labels.path,
                field: joinOn == .filename ? "filename" : joinOn.rawValue)
        }
        let table = CSVTable(header: columns, rows: rows)
        try table.write(to: out)
        return Result(manifest: out, rows: rows.count, summary: summarize(table, unmatchedLabels: labelRows.count - matched.count))
    }

    /// `u` relative to the folder `base` (with `..` segments), so the manifest moves with its images.
    static func relativePath(_ u: URL, from base: URL) -> String {
        let a = u.standardizedFileURL.resolvingSymlinksInPath().pathComponents
        let b = base.standardizedFileURL.resolvingSymlinksInPath().pathComponents
        var i = 0
        while i < a.count - 1 && i < b.count && a[i] == b[i] { i += 1 }
        if i <= 1 { return u.standardizedFileURL.path } // only "/" in common: keep it absolute
        return (Array(repeating: "..", count: b.count - i) + a[i...]).joined(separator: "/")
    }

    /// DICOM Age String (nnnD/W/M/Y) → years.
    static func age(_ s: String?) -> String {
        guard let s, s.count == 4, let n = Double(s.prefix(3)) else { return "" }
        switch s.last {
        case "Y": return String(Int(n))
        case "M": return String(Int(n / 12))
        case "W": return String(Int(n / 52))
        case "D": return String(Int(n / 365))
        default: return ""
        }
    }

    /// Whole years from a birth date to the study date (both DICOM DA, YYYYMMDD); "" when either
    /// is missing or malformed. The birth date itself is never written anywhere.
    static func age(birthDate: String?, on date: String?) -> String {
        func ymd(_ s: String?) -> (Int, Int, Int)? {
            guard let s, s.count == 8, s.allSatisfy(\.isNumber), let v = Int(s) else { return nil }
            let (y, m, d) = (v / 10000, v / 100 % 100, v % 100)
            return (1...12).contains(m) && (1...31).contains(d) ? (y, m, d) : nil
        }
        guard let b = ymd(birthDate), let t = ymd(date) else { return "" }
        let years = t.0 - b.0 - ((t.1, t.2) < (b.1, b.2) ? 1 : 0)
        return (0...150).contains(years) ? String(years) : ""
    }

    /// Counts per label / body part / view / sex / age bin, and images per patient.
    public static func summarize(_ t: CSVTable, unmatchedLabels: Int = 0) -> String {
        func counts(_ col: String, split: Bool = false) -> String {
            guard let c = t.header.firstIndex(of: col) else { return "" }
            var n: [String: Int] = [:]
            for r in t.rows {
                let vals = split ? r[c].split(separator: "|").map(String.init) : [r[c]]
                for v in vals { n[v.isEmpty ? "(none)" : v, default: 0] += 1 }
            }
            return n.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        }
        var s = "\(t.rows.count) images\n"
        s += "labels: \(counts("labels", split: true))\n"
        s += "body part: \(counts("body_part"))\nview: \(counts("view"))\nsex: \(counts("sex"))\n"
        if let a = t.header.firstIndex(of: "age") {
            var bins: [String: Int] = [:]
            for r in t.rows {
                guard let v = Int(r[a]) else { bins["(none)", default: 0] += 1; continue }
                let lo = (v / 20) * 20
                bins["\(lo)-\(lo + 19)", default: 0] += 1
            }
            s += "age: " + bins.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + "\n"
        }
        if let p = t.header.firstIndex(of: "patient_key") {
            var per: [String: Int] = [:]
            for r in t.rows where !r[p].isEmpty { per[r[p], default: 0] += 1 }
            let hist = Dictionary(grouping: per.values, by: { $0 }).mapValues(\.count)
            s += "images per patient: " + hist.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value) patients" }.joined(separator: ", ") + "\n"
        }
        if unmatchedLabels > 0 { s += "labels CSV rows matching no file: \(unmatchedLabels)\n" }
        return s
    }
}
