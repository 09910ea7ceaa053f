// METEOR 1.5's English resources, read from the files it ships: inside meteor-1.5.jar
// (function/english.words, synonym/english.synsets, synonym/english.exceptions,
// nonbreaking/english.prefixes) and next to it (data/paraphrase-en.gz), as pycocoevalcap lays them
// out in pycocoevalcap/meteor/. A directory with the same relative paths works too (the fixture
// subset in fixtures/text/meteor/ is one). synonym/english.relations is not read: METEOR 1.5 does
// not load it either.
import Foundation
import CArchive
import XRTensor

/// A paraphrase table: (reference phrase → paraphrase) entries in file order, indexed by the
/// phrase's first word.
public struct ParaphraseTable: Sendable {
    public var entries: [(phrase: [String], paraphrase: [String])] = []
    var byFirstWord: [String: [Int]] = [:]

    public init() {}

    mutating func append(_ phrase: [String], _ paraphrase: [String]) {
        guard let first = phrase.first else { return }
        byFirstWord[first, default: []].append(entries.count)
        entries.append((phrase, paraphrase))
    }

    /// The entries whose phrase starts at `words[start]`, shortest phrase first, then in file
    /// order (the order METEOR's paraphrase transducer emits them).
    func entries(startingAt start: Int, in words: [String]) -> [(length: Int, paraphrase: [String])] {
        guard let ids = byFirstWord[words[start]] else { return [] }
        var out: [(length: Int, paraphrase: [String])] = []
        for id in ids {
            let p = entries[id].phrase
            if start + p.count <= words.count && words[start..<(start + p.count)].elementsEqual(p) { out.append((p.count, entries[id].paraphrase)) }
        }
        // Stable: equal lengths keep file order.
        return out.enumerated().sorted { ($0.element.length, $0.offset) < ($1.element.length, $1.offset) }.map(\.element)
    }
}

/// WordNet synsets with METEOR's morphology: exception forms → base forms, then WordNet's
/// suffix rules (`morph`), then the word's own synsets.
public struct SynonymDictionary: Sendable {
    public var synsets: [String: Set<Int>] = [:]
    /// Irregular form → base forms (english.exceptions).
    public var bases: [String: [String]] = [:]

    public init() {}

    /// Synsets of the word itself plus those of its base form.
    func allSynsets(_ word: String) -> Set<Int> {
        var s = synsets[word] ?? []
        if let bs = bases[word] {
            for b in bs { s.formUnion(synsets[b] ?? []) }
        } else if let m = morph(word) {
            s.formUnion(synsets[m] ?? [])
        }
        return s
    }

    /// WordNet 3 noun / verb / adjective suffix rules, in order: the first stripped form that is
    /// in the dictionary.
    static let rules: [(suffix: String, ending: String)] = [
        ("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y"),
        ("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", ""),
        ("er", ""), ("est", ""), ("er", "e"), ("est", "e")
    ]

    /// Every form `morph` may try for `word` (used to cut the dictionary down to a vocabulary).
    static func morphCandidates(_ word: String) -> [String] {
        if word.hasSuffix("ss") || word.utf16.count <= 2 { return [word] }
        return rules.compactMap { word.hasSuffix($0.suffix) ? String(word.dropLast($0.suffix.count)) + $0.ending : nil }
    }

    func morph(_ word: String) -> String? {
        if word.hasSuffix("ss") || word.utf16.count <= 2 { return word }
        return Self.morphCandidates(word).first { synsets[$0] != nil }
    }
}

/// Nonbreaking prefixes for the normaliser: a word before "." that does not end a sentence.
public enum NonbreakingPrefix: Sendable { case any, numericOnly }

public struct MeteorResources: Sendable {
    public var functionWords: Set<String>
    public var nonbreakingPrefixes: [String: NonbreakingPrefix]
    public var synonyms: SynonymDictionary
    public var paraphrases: ParaphraseTable

    public init(functionWords: Set<String>, nonbreakingPrefixes: [String: NonbreakingPrefix], synonyms: SynonymDictionary, paraphrases: ParaphraseTable) {
        self.functionWords = functionWords
        self.nonbreakingPrefixes = nonbreakingPrefixes
        self.synonyms = synonyms
        self.paraphrases = paraphrases
    }

    static let functionFile = "function/english.words", synsetFile = "synonym/english.synsets",
        exceptionFile = "synonym/english.exceptions", prefixFile = "nonbreaking/english.prefixes",
        paraphraseFile = "data/paraphrase-en.gz", jarName = "meteor-1.5.jar"
    static let hint =
        "pass pycocoevalcap's meteor/ directory (meteor-1.5.jar and data/paraphrase-en.gz), the jar itself, or a directory with function/, synonym/, nonbreaking/ and data/paraphrase-en.gz laid out as in the jar"

    /// Load from `path`: meteor-1.5.jar (paraphrases from data/paraphrase-en.gz beside it), a
    /// directory holding meteor-1.5.jar, or a directory with the jar's layout. With `texts`, the
    /// synonym and paraphrase entries are cut down to those that can apply to the words of these
    /// texts after normalisation (scores on these texts are unchanged; loading is faster and small).
    public static func load(from path: String, restrictingTo texts: [String]? = nil) throws -> MeteorResources {
        let src = try Source(path)
        let prefixes = try parsePrefixes(src.text(prefixFile), file: src.name(prefixFile))
        let vocabulary = texts.map { ts in
            let norm = MeteorNormalizer(prefixes: prefixes)
            return Set(ts.flatMap { norm.tokens($0) })
        }
        let functionWords = Set(try src.text(functionFile).split(whereSeparator: \.isNewline).map(String.init))
        let synonyms = try parseSynonyms(
            synsets: src.text(synsetFile), exceptions: src.text(exceptionFile),
            synsetName: src.name(synsetFile), exceptionName: src.name(exceptionFile), vocabulary: vocabulary)
        let paraphrases = try parseParaphrases(src.paraphrasePath, vocabulary: vocabulary)
        return MeteorResources(functionWords: functionWords, nonbreakingPrefixes: prefixes, synonyms: synonyms, paraphrases: paraphrases)
    }

    /// Where the files are: a directory or a jar (zip).
    struct Source {
        var dir: URL?
        var jar: String?
        var jarEntries: [String: Data] = [:]
        var paraphrasePath: String

        init(_ path: String) throws {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                throw XRError("METEOR data not found", file: path, hint: MeteorResources.hint)
            }
            let url = URL(fileURLWithPath: path)
            var jarPath: String? = isDir.boolValue ? nil : path
            if isDir.boolValue, FileManager.default.fileExists(atPath: url.appendingPathComponent(jarName).path) {
                jarPath = url.appendingPathComponent(jarName).path
            }
            if let jarPath {
                jar = jarPath
                jarEntries = try readZip(jarPath, names: [functionFile, synsetFile, exceptionFile, prefixFile])
                let base = URL(fileURLWithPath: jarPath).deletingLastPathComponent()
                paraphrasePath = base.appendingPathComponent(paraphraseFile).path
            } else {
                dir = url
                let nested = url.appendingPathComponent(paraphraseFile).path
                let flat = url.appendingPathComponent("paraphrase-en.gz").path
                paraphrasePath = FileManager.default.fileExists(atPath: nested) || !FileManager.default.fileExists(atPath: flat) ? nested : flat
            }
        }

        func name(_ relative: String) -> String {
            if let jar { return "\(jar)!/\(relative)" }
            return dir!.appendingPathComponent(relative).path
        }

        func text(_ relative: String) throws -> String {
            let data: Data
            if jar != nil {
                guard let d = jarEntries[relative] else { throw XRError("entry missing from the METEOR jar", file: name(relative), hint: MeteorResources.hint) }
                data = d
            } else {
                let p = name(relative)
                guard FileManager.default.fileExists(atPath: p) else { throw XRError("METEOR resource file not found", file: p, hint: MeteorResources.hint) }
                data = try Data(contentsOf: URL(fileURLWithPath: p))
            }
            guard let s = String(data: data, encoding: .utf8) else { throw XRError("not UTF-8 text", file: name(relative)) }
            return s
        }
    }

    // MARK: parsers (the formats METEOR 1.5 reads)

    /// Lines as Java's BufferedReader.readLine sees them (\n, \r\n or \r end a line).
    static func lines(_ s: String) -> [Substring] {
        var out = s.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" })
        if out.last == "" { out.removeLast() }
        return out
    }

    /// Java StringTokenizer's default delimiters.
    static func tokens(_ s: String) -> [String] { tokens(s[...]) }

    static func tokens(_ s: Substring) -> [String] {
        s.split(whereSeparator: isJavaSpace).map(String.init)
    }

    static func isJavaSpace(_ c: Character) -> Bool { c == " " || c == "\t" || c == "\n" || c == "\r" || c == "\u{0C}" || c == "\r\n" }

    /// One prefix per line, `#` comments, an optional `#NUMERIC_ONLY#` marker.
    static func parsePrefixes(_ text: String, file: String) throws -> [String: NonbreakingPrefix] {
        var out: [String: NonbreakingPrefix] = [:]
        for line in lines(text) {
            let t = tokens(line)
            guard let pre = t.first, !pre.hasPrefix("#") else { continue }
            out[pre] = t.count > 1 && t[1] == "#NUMERIC_ONLY#" ? .numericOnly : .any
        }
        guard !out.isEmpty else { throw XRError("no nonbreaking prefixes", file: file, hint: MeteorResources.hint) }
        return out
    }

    /// english.synsets: a word line, then a line of integer synset ids. english.exceptions: a base
    /// form line, then a line of its irregular forms.
    static func parseSynonyms(synsets: String, exceptions: String, synsetName: String, exceptionName: String, vocabulary: Set<String>?) throws
        -> SynonymDictionary
    {
        var d = SynonymDictionary()
        let el = lines(exceptions)
        guard el.count % 2 == 0 else {
            throw XRError("odd number of lines: a base form without its line of forms", file: exceptionName, field: "line \(el.count)")
        }
        for i in stride(from: 0, to: el.count, by: 2) {
            for form in tokens(el[i + 1]) where vocabulary?.contains(form) ?? true { d.bases[form, default: []].append(String(el[i])) }
        }
        // With a vocabulary, keep the synsets of its words, of their base forms and of every form
        // `morph` could try for them.
        var keep: Set<String>? = nil
        if let vocabulary {
            var k = vocabulary
            for w in vocabulary { k.formUnion(SynonymDictionary.morphCandidates(w)) }
            for bs in d.bases.values { k.formUnion(bs) }
            keep = k
        }
        let sl = lines(synsets)
        guard sl.count % 2 == 0 else {
            throw XRError("odd number of lines: a word without its line of synset ids", file: synsetName, field: "line \(sl.count)")
        }
        for i in stride(from: 0, to: sl.count, by: 2) {
            let word = String(sl[i])
            if let keep, !keep.contains(word) { continue }
            var set = Set<Int>()
            for t in tokens(sl[i + 1]) {
                guard let id = Int(t) else {
                    throw XRError("synset id '\(t)' is not an integer", file: synsetName, field: "line \(i + 2)", hint: MeteorResources.hint)
                }
                set.insert(id)
            }
            d.synsets[word] = set
        }
        guard !sl.isEmpty || vocabulary != nil else { throw XRError("empty synonym file", file: synsetName, hint: MeteorResources.hint) }
        return d
    }

    /// paraphrase-en.gz: gzip text in groups of three lines: probability, phrase, paraphrase.
    static func parseParaphrases(_ path: String, vocabulary: Set<String>?) throws -> ParaphraseTable {
        guard FileManager.default.fileExists(atPath: path) else { throw XRError("METEOR paraphrase table not found", file: path, hint: MeteorResources.hint) }
        var table = ParaphraseTable()
        var group: [[UInt8]] = []
        var lineNo = 0
        // Java StringTokenizer's delimiters, on bytes: Strings are made only for words looked up or kept.
        func words(_ b: [UInt8]) -> [ArraySlice<UInt8>] { b.split(whereSeparator: { $0 == 32 || $0 == 9 || $0 == 13 || $0 == 12 || $0 == 10 }) }
        func string(_ b: ArraySlice<UInt8>) -> String { String(decoding: b, as: UTF8.self) }
        try gunzipLines(path) { line in
            lineNo += 1
            group.append(Array(line))
            guard group.count == 3 else { return }
            defer { group.removeAll(keepingCapacity: true) }
            guard Double(string(group[0][...]).trimmingCharacters(in: .whitespaces)) != nil else {
                throw XRError(
                    "expected a probability line, found '\(string(group[0].prefix(40)))'", file: path, field: "line \(lineNo - 2)",
                    hint: "the table is groups of three lines: probability, phrase, paraphrase")
            }
            let phrase = words(group[1]), para = words(group[2])
            if let vocabulary, !(phrase.allSatisfy { vocabulary.contains(string($0)) } && para.allSatisfy { vocabulary.contains(string($0)) }) { return }
            table.append(phrase.map(string), para.map(string))
        }
        guard group.isEmpty else { throw XRError("truncated entry: \(group.count) of 3 lines", file: path, field: "line \(lineNo)") }
        guard lineNo > 0 else { throw XRError("empty paraphrase table", file: path, hint: MeteorResources.hint) }
        return table
    }

    // MARK: libarchive

    /// The named entries of a zip (jar) file.
    static func readZip(_ path: String, names: Set<String>) throws -> [String: Data] {
        guard let a = archive_read_new() else { throw XRError("libarchive: out of memory", file: path) }
        defer { archive_read_free(a) }
        archive_read_support_format_zip(a)
        func message() -> String { archive_error_string(a).map { String(cString: $0) } ?? "unknown error" }
        guard archive_read_open_filename(a, path, 65536) == ARCHIVE_OK else {
            throw XRError("not a readable jar / zip file (\(message()))", file: path, hint: hint)
        }
        var out: [String: Data] = [:]
        var entry: OpaquePointer? = nil
        while true {
            let r = archive_read_next_header(a, &entry)
            if r == ARCHIVE_EOF { break }
            guard r == ARCHIVE_OK || r == ARCHIVE_WARN, let entry else { throw XRError("corrupt jar / zip file (\(message()))", file: path) }
            let name = archive_entry_pathname(entry).map { String(cString: $0) } ?? ""
            guard names.contains(name) else { continue }
            // A zip entry can expand far beyond its compressed size: refuse it from its header when it says so.
            if archive_entry_size_is_set(entry) != 0, archive_entry_size(entry) > Int64(Limits.meteorEntryBytes) {
                throw XRError(
                    "entry declares \(archive_entry_size(entry)) bytes, over the \(Limits.meteorEntryBytes)-byte limit", file: "\(path)!/\(name)", hint: hint)
            }
            out[name] = try readAll(a, path: "\(path)!/\(name)")
        }
        return out
    }

    static func readAll(_ a: OpaquePointer, path: String) throws -> Data {
        var data = Data()
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buf.withUnsafeMutableBytes { archive_read_data(a, $0.baseAddress, $0.count) }
            if n == 0 { break }
            guard n > 0 else {
                throw XRError("corrupt or truncated data (\(archive_error_string(a).map { String(cString: $0) } ?? "unknown error"))", file: path)
            }
            guard data.count + n <= Limits.meteorEntryBytes else {
                throw XRError(
                    "data expands past the \(Limits.meteorEntryBytes)-byte limit", file: path,
                    hint: "the real METEOR resources are a few MB; this one is damaged or hostile")
            }
            data.append(contentsOf: buf[0..<n])
        }
        return data
    }

    /// Stream the lines of a gzip file (bytes, without the line end).
    static func gunzipLines(_ path: String, _ body: (ArraySlice<UInt8>) throws -> Void) throws {
        guard let a = archive_read_new() else { throw XRError("libarchive: out of memory", file: path) }
        defer { archive_read_free(a) }
        archive_read_support_format_raw(a)
        archive_read_support_filter_gzip(a)
        func message() -> String { archive_error_string(a).map { String(cString: $0) } ?? "unknown error" }
        var entry: OpaquePointer? = nil
        guard archive_read_open_filename(a, path, 1 << 16) == ARCHIVE_OK, archive_read_next_header(a, &entry) == ARCHIVE_OK,
            archive_filter_code(a, 0) == ARCHIVE_FILTER_GZIP
        else {
            throw XRError("not a gzip file (\(message()))", file: path, hint: hint)
        }
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        var pending: [UInt8] = []
        func emit(_ bytes: ArraySlice<UInt8>) throws {
            var b = bytes
            if b.last == 13 { b = b.dropLast() }
            try body(b)
        }
        while true {
            let n = buf.withUnsafeMutableBytes { archive_read_data(a, $0.baseAddress, $0.count) }
            if n == 0 { break }
            guard n > 0 else { throw XRError("corrupt or truncated gzip data (\(message()))", file: path) }
            var start = 0
            for i in 0..<n where buf[i] == 10 {
                if pending.isEmpty {
                    try emit(buf[start..<i])
                } else {
                    pending.append(contentsOf: buf[start..<i]); try emit(pending[...]); pending.removeAll(keepingCapacity: true)
                }
                start = i + 1
            }
            pending.append(contentsOf: buf[start..<n])
            // Lines are phrases; one without an end in sight would only grow.
            guard pending.count <= Limits.textLineBytes else {
                throw XRError(
                    "a line runs past the \(Limits.textLineBytes)-byte limit", file: path, hint: "the file is damaged or not a METEOR paraphrase table")
            }
        }
        if !pending.isEmpty { try emit(pending[...]) }
    }
}
