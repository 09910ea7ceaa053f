// METEOR 1.5's `-norm` for English (edu.cmu.meteor.util.Normalizer, punctuation kept): a Moses-style
// tokeniser with quote and dash normalisation, dashes between words split, English contractions
// split to the right, dots split unless the word is a nonbreaking prefix, then lower-casing.
// Regular expressions keep Java's meanings: \s, \p{Digit} and \p{Lower} are ASCII-only there.
import Foundation

public struct MeteorNormalizer: Sendable {
    public var prefixes: [String: NonbreakingPrefix]

    public init(prefixes: [String: NonbreakingPrefix]) { self.prefixes = prefixes }

    static let alpha =
        "A-Za-z\u{160}\u{17D}\u{161}\u{17E}\u{178}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{17E}\u{400}-\u{4FF}\u{500}-\u{527}\u{A640}-\u{A66E}\u{A67E}-\u{A697}\u{1D00}-\u{1D7F}"
    static let alnum = "0-9" + alpha

    struct Rule: @unchecked Sendable {
        let re: NSRegularExpression
        let template: String
        init(_ pattern: String, _ template: String) {
            re = try! NSRegularExpression(pattern: pattern)
            self.template = template
        }
        func apply(_ s: String) -> String {
            re.stringByReplacingMatches(in: s, range: NSRange(s.startIndex..., in: s), withTemplate: template)
        }
    }

    static let sepOther = Rule("([^\(alnum)\\t\\n\\u000B\\f\\r \\.'`,\\-\u{2018}\u{2019}])", " $1 ")
    static let multiDot = Rule("\\.([\\.]+)", " DOTMULTI$1")
    static let multiDot2 = Rule("DOTMULTI\\.([^\\.])", "DOTDOTMULTI $1")
    static let comma1 = Rule("([^0-9])[,]([^0-9])", "$1 , $2")
    static let comma2 = Rule("([0-9])[,]([^0-9])", "$1 , $2")
    static let comma3 = Rule("([^0-9])[,]([0-9])", "$1 , $2")
    static let quote1 = Rule("([`\u{2018}\u{2019}])", "'")
    static let quote2 = Rule("([\u{201C}\u{201D}]|'')", " \" ")
    static let rmDash = Rule("([\(alnum)\\.])[\\-]([\(alnum)])", "$1 $2")
    static let cont1 = Rule("([^\(alpha)])[']([^\(alpha)])", "$1 ' $2")
    static let cont2 = Rule("([^\(alpha)0-9])[']([\(alpha)])", "$1 ' $2")
    static let cont3 = Rule("([\(alpha)])[']([^\(alpha)])", "$1 ' $2")
    static let cont4 = Rule("([\(alpha)])[']([\(alpha)])", "$1 '$2")
    static let cont5 = Rule("([0-9])[']([s])", "$1 '$2")
    static let white = Rule("[  \u{2000}-\u{200A}\u{202F}\u{205F}\u{3000}\u{A0}]+", " ")
    static let alphaChar = try! NSRegularExpression(pattern: "[\(alpha)]")

    /// The normalised, lower-cased line METEOR aligns.
    public func normalize(_ line: String) -> String {
        var s = Self.sepOther.apply(" " + line + " ")
        s = Self.multiDot.apply(s)
        while s.contains("DOTMULTI.") {
            s = Self.multiDot2.apply(s)
            s = s.replacingOccurrences(of: "DOTMULTI.", with: "DOTDOTMULTI")
        }
        for r in [Self.comma1, Self.comma2, Self.comma3, Self.quote1, Self.quote2] { s = r.apply(s) }
        s = s.replacingOccurrences(of: "\u{2013}", with: "-").replacingOccurrences(of: "--", with: "-")
        for r in [Self.rmDash, Self.cont1, Self.cont2, Self.cont3, Self.cont4, Self.cont5] { s = r.apply(s) }
        // Split words, then break trailing dots unless the word is a nonbreaking prefix.
        let words = MeteorResources.tokens(s)
        var out = ""
        for (i, w) in words.enumerated() {
            let next = i + 1 < words.count ? words[i + 1] : nil
            if w.utf16.count > 1 && w.hasSuffix(".") {
                let pre = String(w.dropLast())
                let kind = prefixes[pre]
                if pre.contains(".") && Self.alphaChar.firstMatch(in: pre, range: NSRange(pre.startIndex..., in: pre)) != nil {
                    out += w.replacingOccurrences(of: ".", with: "") // U.S. → US
                } else if kind == .any || (next?.unicodeScalars.first.map { ("a"..."z").contains($0) } ?? false) {
                    out += w
                } else if kind == .numericOnly && (next?.unicodeScalars.first.map { ("0"..."9").contains($0) } ?? false) {
                    out += w
                } else {
                    out += pre + " ."
                }
            } else {
                out += w
            }
            out += " "
        }
        s = out
        while s.contains("DOTDOTMULTI") { s = s.replacingOccurrences(of: "DOTDOTMULTI", with: "DOTMULTI.") }
        s = s.replacingOccurrences(of: "DOTMULTI", with: ".")
        s = Self.white.apply(s)
        // Java's trim(): every code point up to U+0020 at either end.
        let scalars = s.unicodeScalars
        let lo = scalars.firstIndex { $0.value > 0x20 } ?? scalars.endIndex
        let hi = scalars.lastIndex { $0.value > 0x20 }.map { scalars.index(after: $0) } ?? lo
        return String(scalars[lo..<max(lo, hi)]).lowercased()
    }

    /// The words METEOR aligns: the normalised line split at Java's whitespace.
    public func tokens(_ line: String) -> [String] { MeteorResources.tokens(normalize(line)) }
}
