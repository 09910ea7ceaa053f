// Report tokenisation as the captioning metrics (pycocoevalcap) see it: Stanford CoreNLP's
// PTBTokenizer with `-lowerCase -preserveLines`, then the punctuation tokens pycocoevalcap removes.
// Implemented natively for report text: lower-casing, splitting off punctuation, quotes,
// brackets (as -lrb- …, which pycocoevalcap keeps, lower-cased), contractions (do n't, it 's,
// can not), sentence periods (kept on abbreviations such as e.g., dr., p.m.), and keeping
// numbers (3.5, 1,000, 5:30, 1/2/2020), hyphenated words and slashes whole.
import Foundation

public enum PTBTokenizer {
    /// Tokens pycocoevalcap drops after tokenising (its PUNCTUATIONS list; bracket tokens are
    /// lower-cased by the tokenizer first, so they are not in it and stay).
    public static let removed: Set<String> = ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]

    static let abbreviations: Set<String> = [
        "dr.", "mr.", "mrs.", "ms.", "prof.", "vs.", "etc.", "st.", "jr.", "sr.", "no.", "fig.", "approx.",
        "jan.", "feb.", "mar.", "apr.", "jun.", "jul.", "aug.", "sep.", "sept.", "oct.", "nov.", "dec.", "inc.", "co.", "corp."
    ]

    /// The metric tokens of `text`, joined by single spaces (what pycocoevalcap scores).
    public static func tokenize(_ text: String) -> String { tokens(text).joined(separator: " ") }

    public static func tokens(_ text: String) -> [String] {
        var out: [String] = []
        for chunk in text.lowercased().split(whereSeparator: { $0.isWhitespace }) {
            out += split(String(chunk))
        }
        return out.filter { !removed.contains($0) }
    }

    /// One whitespace-separated chunk → PTB tokens.
    static func split(_ chunk: String) -> [String] {
        var s = Substring(chunk)
        var front: [String] = [], back: [String] = []
        // Leading quotes and brackets.
        while let c = s.first {
            if c == "\"" {
                front.append("``"); s.removeFirst()
            } else if c == "`" {
                let n = s.prefix { $0 == "`" }.count; front.append(n >= 2 ? "``" : "`"); s.removeFirst(n)
            } else if c == "'" && s.count > 1 && !isContractionStart(s) {
                front.append("`"); s.removeFirst()
            } else if let b = bracket(c) {
                front.append(b); s.removeFirst()
            } else {
                break
            }
        }
        // Trailing punctuation, quotes and brackets (outermost first).
        while let c = s.last {
            if c == "\"" {
                back.insert("''", at: 0); s.removeLast()
            } else if c == "'" && !(s.count >= 2 && s.dropLast().last == "s" && false) && !s.hasSuffix("n't") {
                back.insert("'", at: 0); s.removeLast()
            } else if let b = bracket(c) {
                back.insert(b, at: 0); s.removeLast()
            } else if c == "," || c == ";" || c == ":" {
                back.insert(String(c), at: 0); s.removeLast()
            } else if c == "?" || c == "!" {
                let run = s.reversed().prefix { $0 == "?" || $0 == "!" }.count
                back.insert(String(s.suffix(run)), at: 0); s.removeLast(run)
            } else if c == "." {
                if s.hasSuffix("...") { back.insert("...", at: 0); s.removeLast(3); continue }
                let word = String(s)
                if isAbbreviation(word) { break }
                back.insert(".", at: 0); s.removeLast()
            } else {
                break
            }
        }
        var middle: [String] = []
        if !s.isEmpty { middle = splitInner(String(s)) }
        return front + middle + back
    }

    static func bracket(_ c: Character) -> String? {
        switch c {
        case "(": return "-lrb-"
        case ")": return "-rrb-"
        case "[": return "-lsb-"
        case "]": return "-rsb-"
        case "{": return "-lcb-"
        case "}": return "-rcb-"
        default: return nil
        }
    }

    static func isContractionStart(_ s: Substring) -> Bool {
        let rest = s.dropFirst()
        return ["s", "re", "ve", "ll", "d", "m"].contains { rest == Substring($0) }
    }

    /// e.g. / i.e. / p.m. (letter-period pairs) and listed abbreviations keep their period.
    static func isAbbreviation(_ w: String) -> Bool {
        if abbreviations.contains(w) { return true }
        let parts = w.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count >= 3 && parts.last == "" && parts.dropLast().allSatisfy { $0.count == 1 && $0.first!.isLetter }
    }

    /// Inside a chunk: "--" separates, "..." separates, contractions split, % splits, internal
    /// ",", ":", "/" and "." between digits or letters stay.
    static func splitInner(_ w: String) -> [String] {
        if let r = w.range(of: "--") {
            let a = String(w[..<r.lowerBound]), b = String(w[r.upperBound...])
            return (a.isEmpty ? [] : split(a)) + ["--"] + (b.isEmpty ? [] : split(b))
        }
        if let r = w.range(of: "..."), r.lowerBound != w.startIndex {
            let a = String(w[..<r.lowerBound]), b = String(w[r.upperBound...])
            return split(a) + ["..."] + (b.isEmpty ? [] : split(b))
        }
        // Special whole words.
        switch w {
        case "cannot": return ["can", "not"]
        case "gonna": return ["gon", "na"]
        case "gotta": return ["got", "ta"]
        case "wanna": return ["wan", "na"]
        default: break
        }
        // n't and clitics.
        if w.hasSuffix("n't"), w.count > 3 {
            return [String(w.dropLast(3)), "n't"]
        }
        for clitic in ["'s", "'re", "'ve", "'ll", "'d", "'m"] where w.hasSuffix(clitic) && w.count > clitic.count {
            return [String(w.dropLast(clitic.count)), clitic]
        }
        if w.hasSuffix("%"), w.count > 1 { return splitInner(String(w.dropLast())) + ["%"] }
        return [w]
    }
}
