// METEOR 1.5 (Denkowski & Lavie, "Meteor Universal", WMT 2014) as pycocoevalcap 1.2 runs it:
// `java -jar meteor-1.5.jar - - -stdio -l en -norm`, one `SCORE ||| refs ||| hyp` line per item,
// then one `EVAL ||| stats ||| ...` line that prints each item's score and the score of the summed
// statistics (the corpus score — not the mean of item scores).
//
// Per item, the candidate is aligned to each reference and the reference with the highest score
// is kept (the first on ties). Alignment: matches from four modules in order — exact, Snowball
// stem, WordNet synonym, paraphrase table — then a beam search (width 40) over the remaining
// ambiguous matches, left to right over the reference, ranking partial alignments by
// ⌊Σ matched words × aligner weight⌋ (weights 1, 0.5, 0.5, 0.5, Java int truncation after each
// match), then fewer chunks, then smaller distance. Score, with content / function words
// (function-word list) weighted δ / 1−δ and module weights w = (1, 0.6, 0.8, 0.6):
//   P = Σ w·matches(hyp) / weighted |hyp|,  R = Σ w·matches(ref) / weighted |ref|
//   Fmean = P·R / (α·P + (1−α)·R),  frag = chunks / mean(matched words), 0 for a perfect match
//   score = Fmean · (1 − γ·frag^β),  α = 0.85, β = 0.2, γ = 0.6, δ = 0.75 (task "rank", English).
import Foundation
import XRTensor

/// METEOR's sufficient statistics for one candidate (against its best reference), or summed over a corpus.
public struct MeteorStats: Sendable, Equatable {
    public var testLength = 0.0, referenceLength = 0.0
    public var testFunctionWords = 0.0, referenceFunctionWords = 0.0
    /// Per module (exact, stem, synonym, paraphrase): matched content / function words in the
    /// candidate (test) and the reference.
    public var testContent = [Double](repeating: 0, count: 4), referenceContent = [Double](repeating: 0, count: 4)
    public var testFunction = [Double](repeating: 0, count: 4), referenceFunction = [Double](repeating: 0, count: 4)
    public var chunks = 0.0
    public var testWordMatches = 0.0, referenceWordMatches = 0.0

    public init() {}

    var testTotalMatches: Double { zip(testContent, testFunction).reduce(0) { $0 + $1.0 + $1.1 } }
    var referenceTotalMatches: Double { zip(referenceContent, referenceFunction).reduce(0) { $0 + $1.0 + $1.1 } }
    /// Every word of both sides matched in one chunk: no fragmentation.
    var isPerfect: Bool { testTotalMatches == testLength && referenceTotalMatches == referenceLength && chunks == 1 }

    /// Sum for the corpus score. A perfect item adds no chunks (METEOR's aggregation).
    public mutating func add(_ s: MeteorStats) {
        testLength += s.testLength; referenceLength += s.referenceLength
        testFunctionWords += s.testFunctionWords; referenceFunctionWords += s.referenceFunctionWords
        for m in 0..<4 {
            testContent[m] += s.testContent[m]; referenceContent[m] += s.referenceContent[m]
            testFunction[m] += s.testFunction[m]; referenceFunction[m] += s.referenceFunction[m]
        }
        if !s.isPerfect { chunks += s.chunks }
        testWordMatches += s.testWordMatches; referenceWordMatches += s.referenceWordMatches
    }
}

public struct Meteor: Sendable {
    public struct Parameters: Sendable, Equatable {
        public var alpha = 0.85, beta = 0.20, gamma = 0.60, delta = 0.75
        /// Module weights in the score: exact, stem, synonym, paraphrase.
        public var weights = [1.0, 0.6, 0.8, 0.6]
        /// Module weights the aligner ranks partial alignments with.
        public var alignerWeights = [1.0, 0.5, 0.5, 0.5]
        public var beamSize = 40
        public init() {}
    }

    public let resources: MeteorResources
    public let parameters: Parameters
    public let normalizer: MeteorNormalizer

    public init(resources: MeteorResources, parameters: Parameters = Parameters()) {
        self.resources = resources
        self.parameters = parameters
        self.normalizer = MeteorNormalizer(prefixes: resources.nonbreakingPrefixes)
    }

    /// Load the resources from `path` (see `MeteorResources.load`); with `texts`, only the
    /// synonym and paraphrase entries that can apply to them are kept.
    public static func load(from path: String, restrictingTo texts: [String]? = nil) throws -> Meteor {
        Meteor(resources: try MeteorResources.load(from: path, restrictingTo: texts))
    }

    /// Corpus score (from summed statistics) and per-item scores, as pycocoevalcap reports them.
    public func score(candidates: [String], references: [[String]]) -> (corpus: Double, items: [Double]) {
        precondition(candidates.count == references.count && references.allSatisfy { !$0.isEmpty }, "one candidate and ≥ 1 reference per item")
        var total = MeteorStats()
        var items: [Double] = []
        for (c, rs) in zip(candidates, references) {
            let s = stats(candidate: c, references: rs)
            items.append(score(s))
            total.add(s)
        }
        return (score(total), items)
    }

    /// Statistics against the best-scoring reference (the first of equal ones).
    public func stats(candidate: String, references: [String]) -> MeteorStats {
        let test = normalizer.tokens(candidate)
        var best = MeteorStats(), bestScore = -1.0
        for r in references {
            let s = stats(test: test, reference: normalizer.tokens(r))
            let v = score(s)
            if v > bestScore { best = s; bestScore = v }
        }
        return best
    }

    /// METEOR score of (possibly summed) statistics; 0 where it is undefined (nothing matched).
    public func score(_ s: MeteorStats) -> Double {
        let p = parameters, d = p.delta
        let testLen = d * (s.testLength - s.testFunctionWords) + (1 - d) * s.testFunctionWords
        let refLen = d * (s.referenceLength - s.referenceFunctionWords) + (1 - d) * s.referenceFunctionWords
        var testMatches = 0.0, refMatches = 0.0
        for m in 0..<4 { testMatches += s.testContent[m] * p.weights[m] * d }
        for m in 0..<4 { refMatches += s.referenceContent[m] * p.weights[m] * d }
        for m in 0..<4 { testMatches += s.testFunction[m] * p.weights[m] * (1 - d) }
        for m in 0..<4 { refMatches += s.referenceFunction[m] * p.weights[m] * (1 - d) }
        let precision = testMatches / testLen, recall = refMatches / refLen
        let fMean = 1 / ((1 - p.alpha) / precision + p.alpha / recall)
        let frag = s.isPerfect ? 0 : s.chunks / ((s.testWordMatches + s.referenceWordMatches) / 2)
        let score = fMean * (1 - p.gamma * pow(frag, p.beta))
        return score.isNaN ? 0 : max(score, 0)
    }

    // MARK: alignment

    /// A candidate match: reference words start..<start+length against test words
    /// matchStart..<matchStart+matchLength, found by `module`.
    struct Match: Equatable {
        var start, length, matchStart, matchLength, module: Int
    }

    /// A path in the beam search (a class: METEOR updates paths in place, see `resolve`).
    final class Path {
        var matches: [Match?]
        /// METEOR's matches1 / matches2: weighted matched words in the test / reference.
        var weightedTest = 0, weightedRef = 0
        var chunks = 0, idx = 0, lastMatchEnd = -1, distance = 0
        var testUsed: [Bool], refUsed: [Bool]

        init(matches: [Match?], testUsed: [Bool], refUsed: [Bool]) {
            self.matches = matches; self.testUsed = testUsed; self.refUsed = refUsed
        }

        init(_ p: Path) {
            matches = p.matches; weightedTest = p.weightedTest; weightedRef = p.weightedRef; chunks = p.chunks; idx = p.idx
            lastMatchEnd = p.lastMatchEnd; distance = p.distance; testUsed = p.testUsed; refUsed = p.refUsed
        }

        func isUsed(_ m: Match) -> Bool {
            (0..<m.length).contains { refUsed[m.start + $0] } || (0..<m.matchLength).contains { testUsed[m.matchStart + $0] }
        }

        func use(_ m: Match) {
            for k in 0..<m.length { refUsed[m.start + k] = true }
            for k in 0..<m.matchLength { testUsed[m.matchStart + k] = true }
        }

        /// METEOR keeps matches1 and matches2 as ints and adds `length × weight` to each with
        /// Java's `+=` (truncating): replicate both truncations.
        func addWeighted(_ m: Match, _ w: [Double]) {
            weightedTest = Int(Double(weightedTest) + Double(m.matchLength) * w[m.module])
            weightedRef = Int(Double(weightedRef) + Double(m.length) * w[m.module])
        }

        var weighted: Int { weightedTest + weightedRef }

        /// Take `m` as the next match: weighted counts, a new chunk unless it continues the last
        /// match in the test, the position after it. (The caller adds the distance, to the path
        /// METEOR adds it to.)
        func take(_ m: Match, _ w: [Double]) {
            addWeighted(m, w)
            if lastMatchEnd != -1 && m.matchStart != lastMatchEnd { chunks += 1 }
            idx = m.start + m.length
            lastMatchEnd = m.matchStart + m.matchLength
        }
    }

    /// Better path first: more weighted matches, then fewer chunks, then smaller distance.
    static func before(_ x: Path, _ y: Path) -> Bool {
        if x.weighted != y.weighted { return x.weighted > y.weighted }
        if x.chunks != y.chunks { return x.chunks < y.chunks }
        return x.distance < y.distance
    }

    /// Java's Collections.sort is stable.
    static func stableSort(_ paths: [Path]) -> [Path] {
        paths.enumerated().sorted { before($0.element, $1.element) || (!before($1.element, $0.element) && $0.offset < $1.offset) }.map(\.element)
    }

    /// Candidate matches per reference start index, in the order METEOR's modules add them, and
    /// how many matches cover each word.
    func candidateMatches(test: [String], reference ref: [String]) -> (matches: [[Match]], testCover: [Int], refCover: [Int]) {
        var matches = [[Match]](repeating: [], count: ref.count)
        var testCover = [Int](repeating: 0, count: test.count), refCover = [Int](repeating: 0, count: ref.count)
        func add(_ m: Match) {
            matches[m.start].append(m)
            for k in 0..<m.matchLength { testCover[m.matchStart + k] += 1 }
            for k in 0..<m.length { refCover[m.start + k] += 1 }
        }
        // Identical lines need exact matches only (this avoids beam search errors).
        let modules = test == ref ? 1 : 4
        for module in 0..<modules {
            switch module {
            case 0:
                for j in ref.indices {
                    for i in test.indices where test[i] == ref[j] { add(Match(start: j, length: 1, matchStart: i, matchLength: 1, module: 0)) }
                }
            case 1:
                let ts = test.map(SnowballEnglish.stem), rs = ref.map(SnowballEnglish.stem)
                for j in ref.indices {
                    for i in test.indices where ts[i] == rs[j] && test[i] != ref[j] {
                        add(Match(start: j, length: 1, matchStart: i, matchLength: 1, module: 1))
                    }
                }
            case 2:
                let syn = resources.synonyms
                let ts = test.map(syn.allSynsets), rs = ref.map(syn.allSynsets)
                for j in ref.indices {
                    for i in test.indices where test[i] != ref[j] && !ts[i].isDisjoint(with: rs[j]) {
                        add(Match(start: j, length: 1, matchStart: i, matchLength: 1, module: 2))
                    }
                }
            default:
                let pt = resources.paraphrases
                // Reference phrases paraphrased in the test, then test phrases paraphrased in the reference.
                for j in ref.indices {
                    for (len, words) in pt.entries(startingAt: j, in: ref) {
                        for i in test.indices where i + words.count <= test.count && test[i..<(i + words.count)].elementsEqual(words) {
                            add(Match(start: j, length: len, matchStart: i, matchLength: words.count, module: 3))
                        }
                    }
                }
                for i in test.indices {
                    for (len, words) in pt.entries(startingAt: i, in: test) {
                        for j in ref.indices where j + words.count <= ref.count && ref[j..<(j + words.count)].elementsEqual(words) {
                            add(Match(start: j, length: words.count, matchStart: i, matchLength: len, module: 3))
                        }
                    }
                }
            }
        }
        return (matches, testCover, refCover)
    }

    /// Align one normalised test line to one normalised reference line; return the statistics.
    func stats(test: [String], reference ref: [String]) -> MeteorStats {
        let (matches, testCover, refCover) = candidateMatches(test: test, reference: ref)
        // One-to-one matches that nothing else covers are fixed before the search.
        let start = Path(
            matches: [Match?](repeating: nil, count: ref.count), testUsed: [Bool](repeating: false, count: test.count),
            refUsed: [Bool](repeating: false, count: ref.count))
        for (i, ms) in matches.enumerated() where ms.count == 1 {
            let m = ms[0]
            let overlap = (0..<m.length).contains { refCover[i + $0] != 1 } || (0..<m.matchLength).contains { testCover[m.matchStart + $0] != 1 }
            if !overlap { start.matches[i] = m; start.use(m) }
        }
        let best = resolve(matches, start)

        var s = MeteorStats()
        let fw = resources.functionWords
        let testFunction = test.map { fw.contains($0.lowercased()) }, refFunction = ref.map { fw.contains($0.lowercased()) }
        s.testLength = Double(test.count); s.referenceLength = Double(ref.count)
        s.testFunctionWords = Double(testFunction.filter { $0 }.count); s.referenceFunctionWords = Double(refFunction.filter { $0 }.count)
        for case let m? in best.matches {
            for k in 0..<m.matchLength { if testFunction[m.matchStart + k] { s.testFunction[m.module] += 1 } else { s.testContent[m.module] += 1 } }
            for k in 0..<m.length { if refFunction[m.start + k] { s.referenceFunction[m.module] += 1 } else { s.referenceContent[m.module] += 1 } }
        }
        // Chunks: runs of matches contiguous and in order on both sides.
        var idx = 0, lastEnd = -1, chunks = 0
        while idx < best.matches.count {
            if let m = best.matches[idx] {
                s.testWordMatches += Double(m.matchLength); s.referenceWordMatches += Double(m.length)
                if lastEnd != -1 && m.matchStart != lastEnd { chunks += 1 }
                idx = m.start + m.length
                lastEnd = m.matchStart + m.matchLength
            } else {
                if lastEnd != -1 { chunks += 1; lastEnd = -1 }
                idx += 1
            }
        }
        if lastEnd != -1 { chunks += 1 }
        s.chunks = Double(chunks)
        return s
    }

    /// METEOR's beam search, left to right over the reference, reproduced with its quirks: a path
    /// whose next word is taken by a fixed match advances in place; a path is extended by copies
    /// (one per usable match) and then itself skips the word; the distance of each new match is
    /// added to the parent path (so to later siblings and the skipping path), not to the copy.
    func resolve(_ matches: [[Match]], _ start: Path) -> Path {
        let w = parameters.alignerWeights
        var next = [start]
        for current in 0...matches.count {
            let paths = Self.stableSort(next)
            next = []
            for path in paths.prefix(parameters.beamSize) {
                if current == matches.count {
                    if path.lastMatchEnd != -1 { path.chunks += 1 }
                    next.append(path)
                    continue
                }
                if path.refUsed[current] {
                    if current < path.idx {
                        next.append(path)
                    } else if let m = path.matches[path.idx] {
                        path.take(m, w)
                        path.distance += abs(m.start - m.matchStart)
                        next.append(path)
                    }
                    continue
                }
                for m in matches[current] where !path.isUsed(m) {
                    let p = Path(path)
                    p.use(m)
                    p.matches[current] = m
                    p.take(m, w)
                    path.distance += abs(m.start - m.matchStart)
                    next.append(p)
                }
                if path.lastMatchEnd != -1 { path.chunks += 1; path.lastMatchEnd = -1 }
                path.idx += 1
                next.append(path)
            }
            if next.isEmpty { next = [paths[0]] }
        }
        return Self.stableSort(next)[0]
    }
}

/// METEOR over a sequence of scoring jobs (a sweep's cells): the resources are cut down to the
/// words of every text seen so far and read again from `path` only when a job brings words outside
/// them, so each job scores exactly as with the full resources.
public final class MeteorSource {
    public let path: String
    private var texts: [String]
    private var words: Set<String>
    private var current: Meteor

    /// Load for `texts` (for example every reference report of a study).
    public init(path: String, texts: [String]) throws {
        self.path = path
        self.texts = texts
        let m = try Meteor.load(from: path, restrictingTo: texts)
        current = m
        words = Set(texts.flatMap { m.normalizer.tokens($0) })
    }

    /// Number of times the resources were read (1 + the reloads).
    public private(set) var loads = 1

    /// A scorer whose resources cover `more`.
    public func meteor(covering more: [String]) throws -> Meteor {
        let new = Set(more.flatMap { current.normalizer.tokens($0) })
        if !new.isSubset(of: words) {
            texts += more
            current = try Meteor.load(from: path, restrictingTo: texts)
            words.formUnion(new)
            loads += 1
        }
        return current
    }
}
