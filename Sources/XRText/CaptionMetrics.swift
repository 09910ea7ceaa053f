// Corpus-level report metrics computed the way pycocoevalcap computes them, on its tokenisation
// (`PTBTokenizer`): BLEU-1..4 (BleuScorer, reference length 'closest', corpus brevity penalty),
// ROUGE-L (LCS F-measure with β = 1.2, best precision and recall over references, mean over items)
// and CIDEr-D (TF-IDF n-gram vectors, n = 1…4, document frequencies from the references, clipped
// hypothesis weights, Gaussian length penalty σ = 6 on the bigram count, × 10), and METEOR 1.5
// (`Meteor`) when its resources are given.
import Foundation

public struct CaptionScores: Codable, Sendable, Equatable {
    /// BLEU-1…4.
    public var bleu: [Double]
    public var rougeL: Double
    public var ciderD: Double
    /// Per item, in input order.
    public var itemBleu: [[Double]]
    public var itemRougeL: [Double]
    public var itemCiderD: [Double]
    /// METEOR 1.5 (corpus score from summed statistics) and per item; nil unless METEOR resources were given.
    public var meteor: Double? = nil
    public var itemMeteor: [Double]? = nil
}

public enum CaptionMetrics {
    /// Score tokenised candidates (one per item) against tokenised references (≥ 1 per item):
    /// space-separated tokens, as `PTBTokenizer.tokenize` returns them. With `meteor`, METEOR is
    /// scored on the same tokens (as pycocoevalcap does).
    public static func score(candidates: [String], references: [[String]], meteor: Meteor? = nil) -> CaptionScores {
        precondition(candidates.count == references.count && references.allSatisfy { !$0.isEmpty }, "one candidate and ≥ 1 reference per item")
        let (bleu, itemBleu) = self.bleu(candidates, references)
        let rouge = zip(candidates, references).map { rougeL($0, $1) }
        let cider = ciderD(candidates, references)
        var s = CaptionScores(
            bleu: bleu, rougeL: rouge.reduce(0, +) / Double(max(rouge.count, 1)),
            ciderD: cider.reduce(0, +) / Double(max(cider.count, 1)),
            itemBleu: itemBleu, itemRougeL: rouge, itemCiderD: cider)
        if let meteor {
            let m = meteor.score(candidates: candidates, references: references)
            s.meteor = m.corpus
            s.itemMeteor = m.items
        }
        return s
    }

    /// Raw report text: PTB-tokenise, then score.
    public static func score(rawCandidates: [String], rawReferences: [[String]], meteor: Meteor? = nil) -> CaptionScores {
        score(candidates: rawCandidates.map(PTBTokenizer.tokenize), references: rawReferences.map { $0.map(PTBTokenizer.tokenize) }, meteor: meteor)
    }

    struct NGram: Hashable { var words: ArraySlice<Substring> }

    static func counts(_ words: [Substring], n: Int = 4) -> [NGram: Int] {
        var c: [NGram: Int] = [:]
        for k in 1...n where words.count >= k {
            for i in 0...(words.count - k) { c[NGram(words: words[i..<(i + k)]), default: 0] += 1 }
        }
        return c
    }

    static func words(_ s: String) -> [Substring] { s.split(whereSeparator: { $0.isWhitespace }) }

    static func bleu(_ cands: [String], _ refs: [[String]], n: Int = 4) -> ([Double], [[Double]]) {
        let small = 1e-9, tiny = 1e-15
        var guess = [Double](repeating: 0, count: n), correct = [Double](repeating: 0, count: n)
        var testTotal = 0.0, refTotal = 0.0
        var per = [[Double]](repeating: [], count: n)
        for (c, rs) in zip(cands, refs) {
            let cw = words(c), cc = counts(cw, n: n)
            var maxRef: [NGram: Int] = [:]
            var lens: [Int] = []
            for r in rs {
                let rw = words(r)
                lens.append(rw.count)
                for (g, k) in counts(rw, n: n) { maxRef[g] = max(maxRef[g] ?? 0, k) }
            }
            let testlen = cw.count
            // 'closest': the reference length nearest the candidate's, ties to the shorter.
            let reflen = lens.min { (abs($0 - testlen), $0) < (abs($1 - testlen), $1) }!
            var g = (1...n).map { Double(max(0, testlen - $0 + 1)) }, cor = [Double](repeating: 0, count: n)
            for (gram, k) in cc { cor[gram.words.count - 1] += Double(min(maxRef[gram] ?? 0, k)) }
            var b = 1.0
            for k in 0..<n {
                b *= (cor[k] + tiny) / (g[k] + small)
                per[k].append(pow(b, 1 / Double(k + 1)))
            }
            let ratio = (Double(testlen) + tiny) / (Double(reflen) + small)
            if ratio < 1 { for k in 0..<n { per[k][per[k].count - 1] *= exp(1 - 1 / ratio) } }
            for k in 0..<n { guess[k] += g[k]; correct[k] += cor[k] }
            testTotal += Double(testlen); refTotal += Double(reflen)
            g.removeAll()
        }
        var out: [Double] = []
        var b = 1.0
        for k in 0..<n {
            b *= (correct[k] + tiny) / (guess[k] + small)
            out.append(pow(b, 1 / Double(k + 1)))
        }
        let ratio = (testTotal + tiny) / (refTotal + small)
        if ratio < 1 { out = out.map { $0 * exp(1 - 1 / ratio) } }
        return (out, per)
    }

    /// pycocoevalcap splits on single spaces here (an empty candidate is one empty token).
    static func rougeL(_ cand: String, _ refs: [String], beta: Double = 1.2) -> Double {
        let c = cand.split(separator: " ", omittingEmptySubsequences: false)
        var pMax = 0.0, rMax = 0.0
        for r in refs {
            let t = r.split(separator: " ", omittingEmptySubsequences: false)
            let l = Double(lcs(t, c))
            pMax = max(pMax, l / Double(c.count))
            rMax = max(rMax, l / Double(t.count))
        }
        guard pMax != 0 && rMax != 0 else { return 0 }
        return (1 + beta * beta) * pMax * rMax / (rMax + beta * beta * pMax)
    }

    static func lcs(_ a: [Substring], _ b: [Substring]) -> Int {
        guard !a.isEmpty, !b.isEmpty else { return 0 }
        var prev = [Int](repeating: 0, count: b.count + 1), cur = prev
        for i in 1...a.count {
            for j in 1...b.count { cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : max(prev[j], cur[j - 1]) }
            swap(&prev, &cur)
        }
        return prev[b.count]
    }

    /// In how many images' reference sets each n-gram occurs. Built here and bound to a `let` in
    /// `ciderD`: built in place as a `var` that `ciderD`'s nested function captured, its storage was
    /// never freed (about 26–60 KB per call on a 12-report corpus; the `reportcsv` fuzz target's
    /// memory grew to its 2 GB limit; `CaptionMetricsMemoryTests`).
    static func documentFrequency(_ refCounts: [[[NGram: Int]]]) -> [NGram: Double] {
        var df: [NGram: Double] = [:]
        for rs in refCounts {
            var seen = Set<NGram>()
            for c in rs { for g in c.keys where seen.insert(g).inserted { df[g, default: 0] += 1 } }
        }
        return df
    }

    static func ciderD(_ cands: [String], _ refs: [[String]], n: Int = 4, sigma: Double = 6) -> [Double] {
        let refCounts = refs.map { $0.map { counts(words($0), n: n) } }
        let df = documentFrequency(refCounts)
        let refLen = log(Double(refs.count))
        func vec(_ c: [NGram: Int]) -> (v: [[NGram: Double]], norm: [Double], length: Int) {
            var v = [[NGram: Double]](repeating: [:], count: n), norm = [Double](repeating: 0, count: n), length = 0
            for (g, tf) in c {
                let k = g.words.count - 1
                let w = Double(tf) * (refLen - log(max(1, df[g] ?? 0)))
                v[k][g] = w
                norm[k] += w * w
                if k == 1 { length += tf } // pycocoevalcap counts bigrams as the length
            }
            return (v, norm.map { $0.squareRoot() }, length)
        }
        return zip(cands, refCounts).map { c, rs in
            let (vh, nh, lh) = vec(counts(words(c), n: n))
            var score = [Double](repeating: 0, count: n)
            for r in rs {
                let (vr, nr, lr) = vec(r)
                let delta = Double(lh - lr)
                for k in 0..<n {
                    var val = 0.0
                    for (g, w) in vh[k] { let wr = vr[k][g] ?? 0; val += min(w, wr) * wr }
                    if nh[k] != 0 && nr[k] != 0 { val /= nh[k] * nr[k] }
                    score[k] += val * exp(-(delta * delta) / (2 * sigma * sigma))
                }
            }
            return score.reduce(0, +) / Double(n) / Double(rs.count) * 10
        }
    }
}
