// The Snowball English ("Porter2") stemmer, in the revision METEOR 1.5 ships (the `englishStemmer`
// generated from snowball's english.sbl, 2010-2015): R1/R2 regions with the gener/commun/arsen
// exceptions, steps 0–5, the exception1 word list and the exception2 (post step 1a) list.
// It works on UTF-16 code units like the Java it reproduces: any letter outside a–z is a consonant.
// https://snowballstem.org/algorithms/english/stemmer.html

public enum SnowballEnglish {
    /// The stem of one (lower-cased) word.
    public static func stem(_ word: String) -> String {
        if let e = exception1[word] { return e }
        var w = Array(word.utf16)
        guard w.count >= 3 else { return word }
        var yFound = false
        // Prelude: drop a leading apostrophe; y at the start or after a vowel becomes Y (a consonant).
        if w.first == apostrophe { w.removeFirst() }
        if w.first == y { w[0] = Y; yFound = true }
        if w.count > 1 {
            for i in 1..<w.count where w[i] == y && isVowel(w[i - 1]) { w[i] = Y; yFound = true }
        }
        let (p1, p2) = regions(w)
        step1a(&w)
        if !exception2.contains(w) {
            step1b(&w, p1)
            step1c(&w)
            step2(&w, p1)
            step3(&w, p1, p2)
            step4(&w, p2)
            step5(&w, p1, p2)
        }
        if yFound { for i in w.indices where w[i] == Y { w[i] = y } }
        return String(decoding: w, as: UTF16.self)
    }

    // MARK: characters and regions

    static let apostrophe = UInt16(UInt8(ascii: "'")), y = UInt16(UInt8(ascii: "y")), Y = UInt16(UInt8(ascii: "Y"))
    static func c(_ s: StaticString) -> UInt16 { UInt16(s.utf8Start.pointee) }
    static func u(_ s: String) -> [UInt16] { Array(s.utf16) }

    /// a e i o u y.
    static func isVowel(_ ch: UInt16) -> Bool {
        switch ch {
        case 97, 101, 105, 111, 117, 121: true;
        default: false
        }
    }

    /// Vowels plus w, x and Y: letters a short syllable may not end with.
    static func isVowelWXY(_ ch: UInt16) -> Bool { isVowel(ch) || ch == 119 || ch == 120 || ch == 89 }

    /// c d e g h k m n r t: letters that may precede a deleted "li".
    static func isValidLI(_ ch: UInt16) -> Bool {
        switch ch {
        case 99, 100, 101, 103, 104, 107, 109, 110, 114, 116: true;
        default: false
        }
    }

    /// Index just past the first non-vowel that follows a vowel at or after `from`.
    static func pastVowelConsonant(_ w: [UInt16], from: Int) -> Int? {
        var i = from
        while i < w.count && !isVowel(w[i]) { i += 1 }
        guard i < w.count else { return nil }
        i += 1
        while i < w.count && isVowel(w[i]) { i += 1 }
        return i < w.count ? i + 1 : nil
    }

    static func regions(_ w: [UInt16]) -> (Int, Int) {
        var p1 = w.count, p2 = w.count
        var start: Int? = nil
        for prefix in ["gener", "commun", "arsen"] where w.starts(with: u(prefix)) { start = prefix.utf16.count }
        if start == nil { start = pastVowelConsonant(w, from: 0) }
        guard let r1 = start else { return (p1, p2) }
        p1 = r1
        if let r2 = pastVowelConsonant(w, from: r1) { p2 = r2 }
        return (p1, p2)
    }

    /// The word before `end` ends in a short syllable: consonant (not w, x, Y) after a vowel after a
    /// consonant, or a vowel at the start followed by a consonant.
    static func shortSyllable(_ w: [UInt16], end: Int) -> Bool {
        if end >= 3 && !isVowelWXY(w[end - 1]) && isVowel(w[end - 2]) && !isVowel(w[end - 3]) { return true }
        return end == 2 && !isVowel(w[1]) && isVowel(w[0])
    }

    /// The longest of `suffixes` that `w` ends with.
    static func longest(_ w: [UInt16], _ suffixes: [[UInt16]]) -> [UInt16]? {
        var best: [UInt16]? = nil
        for s in suffixes where s.count <= w.count && w.suffix(s.count).elementsEqual(s) && s.count > (best?.count ?? -1) { best = s }
        return best
    }

    static func replaceSuffix(_ w: inout [UInt16], _ n: Int, with s: String) {
        w.removeLast(n)
        w.append(contentsOf: s.utf16)
    }

    static func hasVowel(_ w: [UInt16], before end: Int) -> Bool { w[..<end].contains(where: isVowel) }

    // MARK: steps

    static let step1aApostrophe = ["'", "'s", "'s'"].map(u)
    static let step1aSuffixes = ["sses", "ied", "ies", "s", "us", "ss"].map(u)

    static func step1a(_ w: inout [UInt16]) {
        if let s = longest(w, step1aApostrophe) { w.removeLast(s.count) }
        guard let s = longest(w, step1aSuffixes) else { return }
        let start = w.count - s.count
        switch String(decoding: s, as: UTF16.self) {
        case "sses": replaceSuffix(&w, 4, with: "ss")
        case "ied", "ies": replaceSuffix(&w, 3, with: start >= 2 ? "i" : "ie")
        case "s": if start >= 1 && hasVowel(w, before: start - 1) { w.removeLast() }
        default: break
        }
    }

    static let exception2: Set<[UInt16]> = Set(["inning", "outing", "canning", "herring", "earring", "proceed", "exceed", "succeed"].map(u))
    static let step1bSuffixes = ["eed", "eedly", "ed", "edly", "ing", "ingly"].map(u)
    static let doubles = ["bb", "dd", "ff", "gg", "mm", "nn", "pp", "rr", "tt"].map(u)

    static func step1b(_ w: inout [UInt16], _ p1: Int) {
        guard let s = longest(w, step1bSuffixes) else { return }
        let start = w.count - s.count
        let key = String(decoding: s, as: UTF16.self)
        if key == "eed" || key == "eedly" {
            if start >= p1 { replaceSuffix(&w, s.count, with: "ee") }
            return
        }
        guard hasVowel(w, before: start) else { return }
        w.removeLast(s.count)
        if longest(w, ["at", "bl", "iz"].map(u)) != nil {
            w.append(c("e"))
        } else if longest(w, doubles) != nil {
            w.removeLast()
        } else if p1 == w.count && shortSyllable(w, end: w.count) {
            w.append(c("e"))
        }
    }

    static func step1c(_ w: inout [UInt16]) {
        let n = w.count
        guard n >= 3, w[n - 1] == y || w[n - 1] == Y, !isVowel(w[n - 2]) else { return }
        w[n - 1] = c("i")
    }

    static let step2Rules: [(String, String)] = [
        ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("abli", "able"), ("entli", "ent"),
        ("izer", "ize"), ("ization", "ize"), ("ational", "ate"), ("ation", "ate"), ("ator", "ate"),
        ("alism", "al"), ("aliti", "al"), ("alli", "al"), ("fulness", "ful"), ("ousli", "ous"), ("ousness", "ous"),
        ("iveness", "ive"), ("iviti", "ive"), ("biliti", "ble"), ("bli", "ble"), ("ogi", "og"),
        ("fulli", "ful"), ("lessli", "less"), ("li", "")
    ]
    static let step2Suffixes = step2Rules.map { u($0.0) }

    static func step2(_ w: inout [UInt16], _ p1: Int) {
        guard let s = longest(w, step2Suffixes) else { return }
        let start = w.count - s.count
        guard start >= p1 else { return }
        let key = String(decoding: s, as: UTF16.self)
        let to = step2Rules.first { $0.0 == key }!.1
        switch key {
        case "ogi": if start >= 1 && w[start - 1] == c("l") { replaceSuffix(&w, 3, with: to) }
        case "li": if start >= 1 && isValidLI(w[start - 1]) { w.removeLast(2) }
        default: replaceSuffix(&w, s.count, with: to)
        }
    }

    static let step3Rules: [(String, String)] = [
        ("tional", "tion"), ("ational", "ate"), ("alize", "al"), ("icate", "ic"), ("iciti", "ic"), ("ical", "ic"),
        ("ful", ""), ("ness", ""), ("ative", "")
    ]
    static let step3Suffixes = step3Rules.map { u($0.0) }

    static func step3(_ w: inout [UInt16], _ p1: Int, _ p2: Int) {
        guard let s = longest(w, step3Suffixes) else { return }
        let start = w.count - s.count
        guard start >= p1 else { return }
        let key = String(decoding: s, as: UTF16.self)
        if key == "ative" { if start >= p2 { w.removeLast(5) }; return }
        replaceSuffix(&w, s.count, with: step3Rules.first { $0.0 == key }!.1)
    }

    static let step4Suffixes = [
        "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent",
        "ism", "ate", "iti", "ous", "ive", "ize", "ion"
    ].map(u)

    static func step4(_ w: inout [UInt16], _ p2: Int) {
        guard let s = longest(w, step4Suffixes) else { return }
        let start = w.count - s.count
        guard start >= p2 else { return }
        if s == u("ion") {
            if start >= 1 && (w[start - 1] == c("s") || w[start - 1] == c("t")) { w.removeLast(3) }
        } else {
            w.removeLast(s.count)
        }
    }

    static func step5(_ w: inout [UInt16], _ p1: Int, _ p2: Int) {
        guard let last = w.last else { return }
        let at = w.count - 1
        if last == c("e") {
            if at >= p2 || (at >= p1 && !shortSyllable(w, end: at)) { w.removeLast() }
        } else if last == c("l") {
            if at >= p2 && at >= 1 && w[at - 1] == c("l") { w.removeLast() }
        }
    }

    static let exception1: [String: String] = [
        "skis": "ski", "skies": "sky", "dying": "die", "lying": "lie", "tying": "tie", "idly": "idl",
        "gently": "gentl", "ugly": "ugli", "early": "earli", "only": "onli", "singly": "singl",
        "sky": "sky", "news": "news", "howe": "howe", "atlas": "atlas", "cosmos": "cosmos", "bias": "bias", "andes": "andes"
    ]
}
