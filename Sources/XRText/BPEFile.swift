// Hugging Face `tokenizer.json` for byte-level BPE: reading (with errors naming the file and
// field for other formats), writing, and training a new vocabulary from text.
import Foundation
import XRTensor

extension BPETokenizer {
    /// Load a Hugging Face `tokenizer.json` with a BPE model and ByteLevel pre-tokenization.
    public static func load(_ url: URL) throws -> BPETokenizer {
        let path = url.path
        guard let data = FileManager.default.contents(atPath: path) else { throw XRError("tokenizer file not found or unreadable", file: path) }
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw XRError("not a JSON object (a Hugging Face tokenizer.json is expected)", file: path)
        }
        guard let model = obj["model"] as? [String: Any] else { throw XRError("no model section", file: path, field: "model") }
        let type = model["type"] as? String ?? (model["merges"] != nil ? "BPE" : "?")
        guard type == "BPE" else {
            throw XRError(
                "tokenizer model '\(type)' is not supported (byte-level BPE only)", file: path, field: "model.type",
                hint: "GPT-2 style tokenizers (BPE with a ByteLevel pre-tokenizer) are read; WordPiece / Unigram are not")
        }
        if let pre = obj["pre_tokenizer"] as? [String: Any] {
            let t = pre["type"] as? String ?? "?"
            let ok =
                t == "ByteLevel" || (t == "Sequence" && ((pre["pretokenizers"] as? [[String: Any]]) ?? []).contains { $0["type"] as? String == "ByteLevel" })
            guard ok else {
                throw XRError(
                    "pre-tokenizer '\(t)' is not byte-level", file: path, field: "pre_tokenizer.type", hint: "only byte-level BPE tokenizers are read")
            }
        } else {
            throw XRError("no pre_tokenizer (a byte-level BPE needs the ByteLevel pre-tokenizer)", file: path, field: "pre_tokenizer")
        }
        if let n = obj["normalizer"], !(n is NSNull) { throw XRError("normalizers are not supported", file: path, field: "normalizer") }
        guard let v = model["vocab"] as? [String: Any] else { throw XRError("missing vocabulary", file: path, field: "model.vocab") }
        var vocab: [String: Int] = [:]
        for (k, x) in v {
            guard let i = (x as? NSNumber)?.intValue, i >= 0 else {
                throw XRError("id of '\(k)' is not a non-negative integer", file: path, field: "model.vocab")
            }
            vocab[k] = i
        }
        var merges: [(String, String)] = []
        for (i, m) in ((model["merges"] as? [Any]) ?? []).enumerated() {
            if let s = m as? String {
                let parts = s.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw XRError("merge \(i) '\(s)' is not 'a b'", file: path, field: "model.merges[\(i)]") }
                merges.append((String(parts[0]), String(parts[1])))
            } else if let p = m as? [String], p.count == 2 {
                merges.append((p[0], p[1]))
            } else {
                throw XRError("merge \(i) is neither 'a b' nor [a, b]", file: path, field: "model.merges[\(i)]")
            }
        }
        for (i, m) in merges.enumerated() where vocab[m.0 + m.1] == nil {
            throw XRError("merge \(i) ('\(m.0)', '\(m.1)') produces a token missing from the vocabulary", file: path, field: "model.merges[\(i)]")
        }
        let addedList = (obj["added_tokens"] as? [[String: Any]]) ?? []
        // Ids are dense: every id lies below the number of distinct tokens.
        let idLimit = vocab.count + addedList.count
        if let (k, i) = vocab.first(where: { $0.value >= idLimit }) {
            throw XRError(
                "id \(i) of '\(k)' is outside 0..<\(idLimit) (the vocabulary and added tokens)", file: path, field: "model.vocab",
                hint: "token ids must be dense: 0 up to the number of tokens")
        }
        var added: [(String, Int, Bool)] = []
        var addedIds: [Int: String] = [:], addedContents = Set<String>()
        for (i, t) in addedList.enumerated() {
            let field = "added_tokens[\(i)]"
            guard let c = t["content"] as? String, let id = (t["id"] as? NSNumber)?.intValue else {
                throw XRError("added token without content or id", file: path, field: field)
            }
            // An empty token would match everywhere in the text (and never consume it).
            guard !c.isEmpty else { throw XRError("added token \(id) has empty content", file: path, field: field, hint: "remove it from added_tokens") }
            guard addedContents.insert(c).inserted else { throw XRError("added token '\(c)' is listed twice", file: path, field: field) }
            guard id >= 0, id < idLimit else {
                throw XRError("id \(id) of added token '\(c)' is outside 0..<\(idLimit) (the vocabulary and added tokens)", file: path, field: field)
            }
            if let other = addedIds[id] { throw XRError("added tokens '\(other)' and '\(c)' share id \(id)", file: path, field: field) }
            addedIds[id] = c
            if let v = vocab[c], v != id {
                throw XRError("added token '\(c)' has id \(id) but the vocabulary gives it \(v)", file: path, field: field)
            }
            if vocab[c] == nil, let (k, _) = vocab.first(where: { $0.value == id }) {
                throw XRError("added token '\(c)' has id \(id), which the vocabulary gives to '\(k)'", file: path, field: field)
            }
            added.append((c, id, t["special"] as? Bool ?? false))
        }
        let prefix = (obj["pre_tokenizer"] as? [String: Any])?["add_prefix_space"] as? Bool ?? false
        return BPETokenizer(vocab: vocab, merges: merges, added: added, addPrefixSpace: prefix, ignoreMerges: model["ignore_merges"] as? Bool ?? false)
    }

    /// Write as a Hugging Face `tokenizer.json` (atomically).
    public func save(_ url: URL) throws {
        let addedList: [[String: Any]] = added.sorted { $0.value < $1.value }.map { k, id in
            ["id": id, "content": k, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": special.contains(k)]
        }
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": addPrefixSpace, "trim_offsets": true, "use_regex": true]
        let obj: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": addedList, "normalizer": NSNull(),
            "pre_tokenizer": byteLevel, "post_processor": NSNull(), "decoder": byteLevel,
            "model": [
                "type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignoreMerges,
                "vocab": vocab, "merges": merges.map { [$0.0, $0.1] }
            ] as [String: Any]
        ]
        try AtomicFile.write(try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), to: url)
    }

    /// Train a byte-level BPE on `texts`: ids 0… for `specialTokens`, then the 256 byte characters,
    /// then one token per merge, most frequent pair first (ties: the pair that sorts first),
    /// until `vocabSize` or no pair occurs `minFrequency` times.
    public static func train(_ texts: [String], vocabSize: Int, minFrequency: Int = 2, specialTokens: [String] = ["<|endoftext|>"]) throws -> BPETokenizer {
        guard vocabSize >= specialTokens.count + 256 else {
            throw XRError("vocabulary size \(vocabSize) is below the \(specialTokens.count + 256) special and byte tokens", field: "vocab_size")
        }
        // Word frequencies after pre-tokenisation (special tokens are never merged into words).
        var wordCounts: [String: Int] = [:]
        for t in texts {
            var rest = t
            for s in specialTokens { rest = rest.replacingOccurrences(of: s, with: " ") }
            for piece in preTokenize(rest) { wordCounts[String(piece.utf8.map { byteToChar[Int($0)] }), default: 0] += 1 }
        }
        var vocab: [String: Int] = [:]
        for (i, s) in specialTokens.enumerated() { vocab[s] = i }
        for c in byteToChar.sorted(by: { String($0) < String($1) }) { vocab[String(c)] = vocab.count }
        var words = wordCounts.sorted { $0.key < $1.key }.map { (symbols: $0.key.map { String($0) }, count: $0.value) }
        var merges: [(String, String)] = []
        while vocab.count < vocabSize {
            var pairs: [Pair: Int] = [:]
            for w in words where w.symbols.count > 1 {
                for i in 0..<(w.symbols.count - 1) { pairs[Pair(a: w.symbols[i], b: w.symbols[i + 1]), default: 0] += w.count }
            }
            guard let best = pairs.max(by: { $0.value != $1.value ? $0.value < $1.value : ($0.key.a, $0.key.b) > ($1.key.a, $1.key.b) }),
                best.value >= minFrequency
            else { break }
            let (x, y) = (best.key.a, best.key.b)
            merges.append((x, y))
            if vocab[x + y] == nil { vocab[x + y] = vocab.count }
            for wi in words.indices where words[wi].symbols.count > 1 {
                var s = words[wi].symbols, out: [String] = [], i = 0
                var changed = false
                while i < s.count {
                    if i < s.count - 1 && s[i] == x && s[i + 1] == y { out.append(x + y); i += 2; changed = true } else { out.append(s[i]); i += 1 }
                }
                if changed { s = out; words[wi].symbols = s }
            }
        }
        // Special tokens are in the vocabulary and in added_tokens, as Hugging Face writes them.
        let added = specialTokens.enumerated().map { ($1, $0, true) }
        return BPETokenizer(vocab: vocab, merges: merges, added: added)
    }
}
