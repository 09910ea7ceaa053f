// Byte-level BPE (GPT-2 style): text → UTF-8 bytes mapped to printable characters → GPT-2
// pre-tokenisation → merges by rank. Reads and writes Hugging Face `tokenizer.json` (model
// "BPE", ByteLevel pre-tokenizer / decoder, added tokens) and trains new vocabularies.
// decode(encode(s)) == s for every string.
import Foundation
import XRTensor

public final class BPETokenizer: @unchecked Sendable {
    public let vocab: [String: Int]
    public let idToToken: [Int: String]
    /// Merge rank by pair.
    let ranks: [Pair: Int]
    public let merges: [(String, String)]
    /// Added / special tokens (matched in raw text before byte-level encoding), by content.
    public let added: [String: Int]
    public let special: Set<String>
    public let addPrefixSpace: Bool
    public let ignoreMerges: Bool
    private var cache: [String: [Int]] = [:]
    private let lock = NSLock()

    struct Pair: Hashable { var a: String; var b: String }

    // MARK: byte ↔ unicode (GPT-2)

    /// GPT-2's reversible map from bytes to printable characters.
    public static let byteToChar: [Character] = {
        var bs: [Int] = Array(33...126) + Array(161...172) + Array(174...255)
        var cs = bs
        var n = 0
        for b in 0..<256 where !bs.contains(b) { bs.append(b); cs.append(256 + n); n += 1 }
        var out = [Character](repeating: " ", count: 256)
        for (b, c) in zip(bs, cs) { out[b] = Character(Unicode.Scalar(UInt32(c))!) }
        return out
    }()
    static let charToByte: [Character: UInt8] = Dictionary(uniqueKeysWithValues: byteToChar.enumerated().map { ($1, UInt8($0)) })

    public init(vocab: [String: Int], merges: [(String, String)], added: [(String, Int, Bool)] = [], addPrefixSpace: Bool = false, ignoreMerges: Bool = false) {
        self.vocab = vocab
        self.merges = merges
        var r: [Pair: Int] = [:]
        for (i, m) in merges.enumerated() where r[Pair(a: m.0, b: m.1)] == nil { r[Pair(a: m.0, b: m.1)] = i }
        ranks = r
        var inv: [Int: String] = [:]
        for (t, i) in vocab { inv[i] = t }
        var a: [String: Int] = [:], sp = Set<String>()
        for (content, id, isSpecial) in added { a[content] = id; inv[id] = content; if isSpecial { sp.insert(content) } }
        self.added = a
        special = sp
        idToToken = inv
        self.addPrefixSpace = addPrefixSpace
        self.ignoreMerges = ignoreMerges
    }

    public var size: Int { (idToToken.keys.max() ?? -1) + 1 }

    // MARK: encode / decode

    public func encode(_ text: String) -> [Int] {
        var ids: [Int] = []
        for (segment, isAdded) in splitAdded(text) {
            if isAdded { ids.append(added[segment]!); continue }
            var s = segment
            if addPrefixSpace, !s.isEmpty, !s.hasPrefix(" ") { s = " " + s }
            for piece in Self.preTokenize(s) { ids += encodeWord(piece) }
        }
        return ids
    }

    /// Raw text split around added tokens (longest match first).
    func splitAdded(_ text: String) -> [(String, Bool)] {
        // An empty token would match without consuming anything; `load` refuses one, and it is never matched here.
        let keys = added.keys.filter { !$0.isEmpty }.sorted { $0.count > $1.count }
        guard !keys.isEmpty else { return [(text, false)] }
        var out: [(String, Bool)] = []
        var rest = Substring(text), buf = ""
        while !rest.isEmpty {
            if let k = keys.first(where: { rest.hasPrefix($0) }) {
                if !buf.isEmpty { out.append((buf, false)); buf = "" }
                out.append((k, true))
                rest = rest.dropFirst(k.count)
            } else {
                buf.append(rest.removeFirst())
            }
        }
        if !buf.isEmpty { out.append((buf, false)) }
        return out
    }

    func encodeWord(_ piece: String) -> [Int] {
        let mapped = String(piece.utf8.map { Self.byteToChar[Int($0)] })
        lock.lock()
        if let c = cache[mapped] { lock.unlock(); return c }
        lock.unlock()
        var result: [Int]
        if ignoreMerges, let id = vocab[mapped] {
            result = [id]
        } else {
            var symbols = mapped.map { String($0) }
            while symbols.count > 1 {
                var best: (rank: Int, i: Int)? = nil
                for i in 0..<(symbols.count - 1) {
                    if let r = ranks[Pair(a: symbols[i], b: symbols[i + 1])], best == nil || r < best!.rank { best = (r, i) }
                }
                guard let b = best else { break }
                // Merge every occurrence of the best pair, left to right.
                let (x, y) = (symbols[b.i], symbols[b.i + 1])
                var merged: [String] = []
                var i = 0
                while i < symbols.count {
                    if i < symbols.count - 1 && symbols[i] == x && symbols[i + 1] == y {
                        merged.append(x + y); i += 2
                    } else {
                        merged.append(symbols[i]); i += 1
                    }
                }
                symbols = merged
            }
            // Every byte character is in a byte-level vocabulary; anything else is dropped as HF does without unk.
            result = symbols.compactMap { vocab[$0] }
        }
        lock.lock(); cache[mapped] = result; lock.unlock()
        return result
    }

    /// Token ids → text. Byte sequences that are not valid UTF-8 (a cut inside a character)
    /// become U+FFFD, as Hugging Face's decoder does.
    public func decode(_ ids: [Int], skipSpecial: Bool = false) -> String {
        var out = ""
        var bytes: [UInt8] = []
        func flush() { if !bytes.isEmpty { out += String(decoding: bytes, as: UTF8.self); bytes.removeAll() } }
        for id in ids {
            guard let t = idToToken[id] else { continue }
            if added[t] != nil {
                if skipSpecial && special.contains(t) { continue }
                flush(); out += t; continue
            }
            for ch in t { if let b = Self.charToByte[ch] { bytes.append(b) } }
        }
        flush()
        return out
    }

    // MARK: GPT-2 pre-tokenisation

    /// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    public static func preTokenize(_ text: String) -> [String] {
        let u = Array(text.unicodeScalars)
        var out: [String] = []
        var i = 0
        func isL(_ s: Unicode.Scalar) -> Bool {
            switch s.properties.generalCategory {
            case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
            default: return false
            }
        }
        func isN(_ s: Unicode.Scalar) -> Bool {
            switch s.properties.generalCategory {
            case .decimalNumber, .letterNumber, .otherNumber: return true;
            default: return false
            }
        }
        func isS(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace }
        func emit(_ a: Int, _ b: Int) { var str = String.UnicodeScalarView(); str.append(contentsOf: u[a..<b]); out.append(String(str)) }
        while i < u.count {
            let c = u[i]
            // Contractions.
            if c == "'" {
                let rest = u[(i + 1)...].prefix(2).map { Character($0) }
                let two = String(rest), one = rest.first.map(String.init) ?? ""
                if ["re", "ve", "ll"].contains(two) { emit(i, i + 3); i += 3; continue }
                if ["s", "t", "m", "d"].contains(one) { emit(i, i + 2); i += 2; continue }
            }
            let start = i
            var j = i
            if c == " " && j + 1 < u.count && !isS(u[j + 1]) { j += 1 } // optional leading space
            let d = u[j]
            if isL(d) {
                while j < u.count && isL(u[j]) { j += 1 }
                emit(start, j); i = j; continue
            }
            if isN(d) {
                while j < u.count && isN(u[j]) { j += 1 }
                emit(start, j); i = j; continue
            }
            if !isS(d) {
                while j < u.count && !isS(u[j]) && !isL(u[j]) && !isN(u[j]) { j += 1 }
                emit(start, j); i = j; continue
            }
            // Whitespace: \s+(?!\S) — a run not followed by non-space, else leave the last one for the next token.
            var k = i
            while k < u.count && isS(u[k]) { k += 1 }
            if k < u.count && k - i > 1 { emit(i, k - 1); i = k - 1 } else { emit(i, k); i = k }
        }
        return out
    }
}
