import Foundation
import XRTensor

/// An RFC 4180 CSV table: a header row and data rows of equal length.
///
/// Reading: fields separated by commas, records by CRLF, LF or a lone CR; a field in double
/// quotes may hold commas, line breaks and doubled quotes (`""`); a UTF-8 byte-order mark is
/// skipped; blank lines are skipped. Header names are trimmed of spaces and must be unique.
/// Errors name the source and the record as "row N" (1-based, the header is row 1), with the
/// physical line in the message when a quoted field spans lines.
///
/// Writing: fields are quoted only when they need it; LF line ends; always atomic.
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

    /// Read and parse a CSV file (UTF-8).
    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw XRError("cannot read CSV: \(error.localizedDescription)", file: url.path)
        }
        try self.init(bytes: [UInt8](data), source: url.path)
    }

    /// Parse CSV text.
    public init(string: String, source: String? = nil) throws {
        try self.init(bytes: Array(string.utf8), source: source)
    }

    init(bytes b: [UInt8], source: String?) throws {
        guard String(validating: b, as: UTF8.self) != nil else {
            throw XRError("CSV is not valid UTF-8", file: source, hint: "save the file as UTF-8")
        }
        let quote: UInt8 = 0x22, comma: UInt8 = 0x2C, cr: UInt8 = 0x0D, lf: UInt8 = 0x0A
        var records: [[String]] = []
        var lines: [Int] = [] // first physical line of each record
        var record: [String] = []
        var field: [UInt8] = []
        var line = 1, recordLine = 1
        var i = (b.count >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF) ? 3 : 0
        var fieldQuoted = false // the current field was quoted (so it exists even if empty)
        func where_() -> String { "row \(records.count + 1)" }
        func finishField() {
            record.append(String(decoding: field, as: UTF8.self))
            field.removeAll(keepingCapacity: true)
        }
        func finishRecord() {
            // A blank line (one empty unquoted field) is not a record.
            if record.isEmpty && field.isEmpty && !fieldQuoted { return }
            finishField()
            records.append(record)
            lines.append(recordLine)
            record = []
            fieldQuoted = false
        }
        while i < b.count {
            let ch = b[i]
            if ch == quote {
                guard field.isEmpty && !fieldQuoted else {
                    throw XRError(
                        "quote inside an unquoted field (line \(line)); quote the whole field and double inner quotes",
                        file: source, field: where_())
                }
                fieldQuoted = true
                let startLine = line
                i += 1
                var closed = false
                while i < b.count {
                    let q = b[i]
                    if q == quote {
                        if i + 1 < b.count && b[i + 1] == quote { field.append(quote); i += 2; continue }
                        closed = true; i += 1; break
                    }
                    if q == lf || (q == cr && !(i + 1 < b.count && b[i + 1] == lf)) { line += 1 }
                    field.append(q)
                    i += 1
                }
                guard closed else {
                    throw XRError("unterminated quoted field starting on line \(startLine)", file: source, field: where_())
                }
                if i < b.count && b[i] != comma && b[i] != cr && b[i] != lf {
                    throw XRError("unexpected text after a closing quote (line \(line))", file: source, field: where_())
                }
                continue
            }
            switch ch {
            case comma:
                // "a," at a line end leaves an empty last field: finishRecord adds it.
                finishField()
                fieldQuoted = false
            case cr, lf:
                if ch == cr && i + 1 < b.count && b[i + 1] == lf { i += 1 }
                finishRecord()
                line += 1
                recordLine = line
            default:
                field.append(ch)
            }
            i += 1
        }
        finishRecord()

        guard let first = records.first else { throw XRError("CSV is empty (no header row)", file: source) }
        let names = first.map { $0.trimmingCharacters(in: .whitespaces) }
        var seen = Set<String>()
        for n in names where !seen.insert(n).inserted {
            throw XRError("duplicate column name '\(n)'", file: source, field: "row 1")
        }
        for (k, r) in records.enumerated().dropFirst() where r.count != names.count {
            let at = lines[k] == k + 1 ? "" : " (line \(lines[k]))"
            throw XRError("row \(k + 1)\(at) has \(r.count) fields but the header has \(names.count)", file: source, field: "row \(k + 1)")
        }
        self.header = names
        self.rows = Array(records.dropFirst())
        self.source = source
    }

    /// Index of a column; the error names the file and lists the columns that exist.
    public func column(_ name: String) throws -> Int {
        guard let i = header.firstIndex(of: name) else {
            throw XRError("no column '\(name)' (columns: \(header.joined(separator: ", ")))", file: source, field: name)
        }
        return i
    }

    /// All values of a column, in row order.
    public func values(_ name: String) throws -> [String] {
        let i = try column(name)
        return rows.map { $0[i] }
    }

    /// Serialise with minimal quoting and LF line ends. A field is quoted when it holds a
    /// comma, quote or line break, or when it is the only (empty) field of its row (an empty
    /// line would read back as no row).
    public func encoded() -> String {
        func q(_ s: String, alone: Bool) -> String {
            if s.isEmpty { return alone ? "\"\"" : "" }
            return s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" || $0 == "\r\n" })
                ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
        }
        func line(_ r: [String]) -> String { r.map { q($0, alone: r.count == 1) }.joined(separator: ",") + "\n" }
        var out = line(header)
        for r in rows { out += line(r) }
        return out
    }

    /// Write atomically (temporary file, then rename).
    public func write(to url: URL) throws {
        try AtomicFile.write(encoded(), to: url)
    }
}
