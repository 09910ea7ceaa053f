import Foundation
import XRTensor

/// An RFC 4180 CSV table: a header row and data rows of equal length. Quoted fields may hold
/// commas, quotes (doubled) and newlines; CRLF and a UTF-8 BOM are accepted.
public struct CSVTable: Sendable, Equatable {
    public var header: [String]
    public var rows: [[String]]
    /// Where the table came from (for error messages).
    public var source: String?

    public init(header: [String], rows: [[String]], source: String? = nil) {
        self.header = header
        self.rows = rows
        self.source = source
    }

    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw XRError("cannot read CSV: \(error.localizedDescription)", file: url.path)
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw XRError("CSV is not valid UTF-8", file: url.path)
        }
        try self.init(string: text, source: url.path)
    }

    /// Parse CSV text. Errors name the source and the 1-based line of the record (the header is line 1).
    public init(string: String, source: String? = nil) throws {
        var records: [[String]] = []
        var field = "", record: [String] = []
        var inQuotes = false, fieldStarted = false
        var line = 1, recordLine = 1
        var scalars = Array(string.unicodeScalars)
        if scalars.first == "\u{FEFF}" { scalars.removeFirst() }
        var i = 0
        func endRecord() {
            record.append(field)
            if !(record.count == 1 && record[0].isEmpty && !fieldStarted) { records.append(record) }
            record = []; field = ""; fieldStarted = false
        }
        var lines: [Int] = []
        while i < scalars.count {
            let ch = scalars[i]
            if inQuotes {
                if ch == "\"" {
                    if i + 1 < scalars.count && scalars[i + 1] == "\"" { field.unicodeScalars.append("\""); i += 1 }
                    else { inQuotes = false }
                } else {
                    if ch == "\n" { line += 1 }
                    field.unicodeScalars.append(ch)
                }
            } else {
                switch ch {
                case "\"":
                    if !field.isEmpty {
                        throw XRError("quote inside an unquoted field", file: source, field: "line \(line)")
                    }
                    inQuotes = true; fieldStarted = true
                case ",":
                    record.append(field); field = ""; fieldStarted = true
                case "\r":
                    break
                case "\n":
                    let before = records.count
                    endRecord()
                    if records.count > before { lines.append(recordLine) }
                    line += 1; recordLine = line
                default:
                    field.unicodeScalars.append(ch); fieldStarted = true
                }
            }
            i += 1
        }
        if inQuotes { throw XRError("unterminated quoted field", file: source, field: "line \(recordLine)") }
        if !field.isEmpty || !record.isEmpty || fieldStarted {
            let before = records.count
            endRecord()
            if records.count > before { lines.append(recordLine) }
        }
        guard let header = records.first else { throw XRError("CSV is empty (no header row)", file: source) }
        let names = header.map { $0.trimmingCharacters(in: .whitespaces) }
        var seen = Set<String>()
        for n in names where !seen.insert(n).inserted {
            throw XRError("duplicate column name '\(n)'", file: source, field: "line 1")
        }
        for (k, r) in records.enumerated().dropFirst() where r.count != names.count {
            throw XRError("row has \(r.count) fields but the header has \(names.count)", file: source, field: "line \(lines[k])")
        }
        self.header = names
        self.rows = Array(records.dropFirst())
        self.source = source
    }

    /// Index of a column; the error lists the columns that exist.
    public func column(_ name: String) throws -> Int {
        guard let i = header.firstIndex(of: name) else {
            throw XRError("no column '\(name)' (columns: \(header.joined(separator: ", ")))", file: source, field: name)
        }
        return i
    }

    /// Serialise with minimal quoting and LF line ends.
    public func encoded() -> String {
        func q(_ s: String) -> String {
            s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" })
                ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
        }
        var out = header.map(q).joined(separator: ",") + "\n"
        for r in rows { out += r.map(q).joined(separator: ",") + "\n" }
        return out
    }

    /// Write atomically.
    public func write(to url: URL) throws {
        try AtomicFile.write(encoded(), to: url)
    }
}
