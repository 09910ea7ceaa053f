// Decoding for the report decoder: one token per step with a key/value cache (self-attention
// keys and values of earlier tokens per beam — with a visual prefix, the image's tokens come
// first; cross-attention keys and values of the image, computed once), greedy or beam search with
// a length penalty and n-gram blocking.
import Foundation
import XRTensor
import XRKernels

public struct GenerationOptions: Sendable, Equatable {
    public var maxNewTokens = 128
    /// 1 = greedy.
    public var beams = 1
    /// Finished hypotheses are ranked by (sum of log-probabilities) / length^lengthPenalty, length
    /// counting the generated tokens (EOS included). The search ends when `beams` hypotheses are
    /// finished and no live beam's current normalised score beats the worst of them.
    public var lengthPenalty = 1.0
    /// Never repeat an n-gram of this size (0 = off).
    public var noRepeatNGram = 0
    public init() {}
}

extension ReportDecoder {
    /// Generate a continuation of `prompt` (usually [BOS]) for one image's visual tokens (S, Cv).
    /// Returns the generated ids (without the prompt; EOS included when produced) and its score.
    public func generate(visual v: [Float], visualTokens S: Int, prompt: [Int], eos: Int, options o: GenerationOptions) throws -> (ids: [Int], score: Double) {
        let c = config, C = c.dim, H = c.heads, D = C / H, V = c.vocab, P = c.visualPrefix ? S : 0
        guard !prompt.isEmpty, P + prompt.count + o.maxNewTokens <= c.positions else {
            throw XRError("prompt + maxNewTokens\(P > 0 ? " + \(P) visual tokens" : "") exceeds the decoder's \(c.positions) positions", field: "max_length")
        }
        guard v.count == S * c.visualDim else { throw XRError("visual tokens have \(v.count) values, expected \(S)×\(c.visualDim)", field: "visual") }
        let beams = max(1, o.beams)
        var result: (ids: [Int], score: Double) = ([], 0)
        withSingleThreadedBLAS {
            // Cross-attention keys / values per layer, shared by every beam.
            var enc = [Float](repeating: 0, count: S * C)
            v.withUnsafeBufferPointer { vp in
                enc.withUnsafeMutableBufferPointer { ep in
                    visual.forward(ep.baseAddress!, vp.baseAddress!, rows: S, lora: nil)
                }
            }
            let crossKV: [[Float]] = layers.map { l in
                guard let x = l.cross else { return [] }
                var kv = [Float](repeating: 0, count: S * 2 * C)
                enc.withUnsafeBufferPointer { ep in
                    kv.withUnsafeMutableBufferPointer { kp in x.kv.forward(kp.baseAddress!, ep.baseAddress!, rows: S, lora: nil) }
                }
                return kv
            }
            // Attention scores of one query: at most every position, or the image's tokens.
            let scores = Buffer(max(S, c.positions, 1))
            // Per beam: tokens so far, score, self-attention K/V per layer ((t, C) each).
            struct Beam { var tokens: [Int]; var score: Double; var keys: [[Float]]; var values: [[Float]] }
            var live = [Beam(tokens: [], score: 0, keys: layers.map { _ in [] }, values: layers.map { _ in [] })]
            var finished: [(ids: [Int], score: Double)] = []
            /// `n` positions through the blocks; their keys / values join the beam's cache. One
            /// position (decoding) attends to the cache with matrix-vector products; several (the
            /// image's tokens of a visual prefix, into an empty cache) go through together with
            /// matrix products, causal attention among them, as in training. The next-token logits
            /// of the last position when asked; without them the last block stops at its keys and values.
            func advance(_ beam: inout Beam, input: [Float], rows n: Int, logits wanted: Bool = true) -> [Float] {
                precondition(n == 1 || beam.keys[0].isEmpty, "several positions only into an empty cache")
                var x = input
                var h = [Float](repeating: 0, count: n * C), qkv = [Float](repeating: 0, count: n * 3 * C), tmp = h
                var att = h, four = [Float](repeating: 0, count: n * 4 * C)
                var probs = [Float](repeating: 0, count: n > 1 ? H * n * n : 0)
                for (li, l) in layers.enumerated() {
                    layerNormForward(&h, x, l.ln1w.value.p, l.ln1b.value.p, rows: n, cols: C, eps: c.eps)
                    h.withUnsafeBufferPointer { hp in
                        qkv.withUnsafeMutableBufferPointer { qp in l.attn.forward(qp.baseAddress!, hp.baseAddress!, rows: n, lora: nil) }
                    }
                    for i in 0..<n {
                        let row: Int = i * 3 * C
                        beam.keys[li].append(contentsOf: qkv[(row + C)..<(row + 2 * C)])
                        beam.values[li].append(contentsOf: qkv[(row + 2 * C)..<(row + 3 * C)])
                    }
                    if !wanted && li == layers.count - 1 { break }
                    if n == 1 {
                        let cached = beam.keys[li].count / C
                        qkv.withUnsafeBufferPointer { qp in
                            beam.keys[li].withUnsafeBufferPointer { kp in
                                beam.values[li].withUnsafeBufferPointer { vp in
                                    att.withUnsafeMutableBufferPointer { ap in
                                        attendOne(
                                            ap.baseAddress!, q: qp.baseAddress!, keys: kp.baseAddress!, values: vp.baseAddress!, ld: C, n: cached, H: H, D: D,
                                            scores: scores.p)
                                    }
                                }
                            }
                        }
                    } else {
                        qkv.withUnsafeBufferPointer { qp in
                            att.withUnsafeMutableBufferPointer { ap in
                                probs.withUnsafeMutableBufferPointer { pp in
                                    let q = qp.baseAddress!
                                    maskedAttentionForward(
                                        out: ap.baseAddress!, ldo: C, q: q, ldq: 3 * C, k: q + C, ldk: 3 * C, v: q + 2 * C, ldv: 3 * C,
                                        probabilities: pp.baseAddress!, batch: 1, queries: n, keys: n, heads: H, headDim: D, causal: true)
                                }
                            }
                        }
                    }
                    att.withUnsafeBufferPointer { ap in
                        tmp.withUnsafeMutableBufferPointer { tp in l.attnProj.forward(tp.baseAddress!, ap.baseAddress!, rows: n, lora: nil) }
                    }
                    for j in 0..<(n * C) { x[j] += tmp[j] }
                    if let xa = l.cross {
                        layerNormForward(&h, x, xa.lnw.value.p, xa.lnb.value.p, rows: n, cols: C, eps: c.eps)
                        var q = [Float](repeating: 0, count: n * C)
                        h.withUnsafeBufferPointer { hp in
                            q.withUnsafeMutableBufferPointer { qp in xa.q.forward(qp.baseAddress!, hp.baseAddress!, rows: n, lora: nil) }
                        }
                        q.withUnsafeBufferPointer { qp in
                            crossKV[li].withUnsafeBufferPointer { kv in
                                att.withUnsafeMutableBufferPointer { ap in
                                    for i in 0..<n {
                                        attendOne(
                                            ap.baseAddress! + i * C, q: qp.baseAddress! + i * C, keys: kv.baseAddress!, values: kv.baseAddress! + C, ld: 2 * C,
                                            n: S, H: H, D: D, scores: scores.p)
                                    }
                                }
                            }
                        }
                        att.withUnsafeBufferPointer { ap in
                            tmp.withUnsafeMutableBufferPointer { tp in xa.proj.forward(tp.baseAddress!, ap.baseAddress!, rows: n, lora: nil) }
                        }
                        for j in 0..<(n * C) { x[j] += tmp[j] }
                    }
                    layerNormForward(&h, x, l.ln2w.value.p, l.ln2b.value.p, rows: n, cols: C, eps: c.eps)
                    h.withUnsafeBufferPointer { hp in
                        four.withUnsafeMutableBufferPointer { fp in l.fc.forward(fp.baseAddress!, hp.baseAddress!, rows: n, lora: nil) }
                    }
                    geluTanhForward(&four, count: n * 4 * C)
                    four.withUnsafeBufferPointer { fp in
                        tmp.withUnsafeMutableBufferPointer { tp in l.fcProj.forward(tp.baseAddress!, fp.baseAddress!, rows: n, lora: nil) }
                    }
                    for j in 0..<(n * C) { x[j] += tmp[j] }
                }
                guard wanted else { return [] }
                let last = Array(x[((n - 1) * C)..<(n * C)])
                layerNormForward(&h, last, lnfw.value.p, lnfb.value.p, rows: 1, cols: C, eps: c.eps)
                var logits = [Float](repeating: 0, count: V)
                logits.withUnsafeMutableBufferPointer { lp in
                    h.withUnsafeBufferPointer { hp in
                        let (L, W, X) = (
                            SendablePointer(lp.baseAddress!), SendablePointer(wte.value.p), SendablePointer(UnsafeMutablePointer(mutating: hp.baseAddress!))
                        )
                        Parallel.ranges(V, minChunk: 256) { r in BLAS.sgemv(L.p + r.lowerBound, W.p + r.lowerBound * C, X.p, m: r.count, n: C) }
                    }
                }
                return logits
            }
            func embed(_ token: Int, position t: Int) -> [Float] { (0..<C).map { wte.value.p[token * C + $0] + wpe.value.p[t * C + $0] } }
            // With a visual prefix, the image's tokens enter the initial beam's cache first.
            if P > 0 { _ = advance(&live[0], input: (0..<(P * C)).map { enc[$0] + wpe.value.p[$0] }, rows: P, logits: false) }
            var logitsOf: [[Float]] = []
            for (t, tok) in prompt.enumerated() {
                let l = advance(&live[0], input: embed(tok, position: P + t), rows: 1, logits: t == prompt.count - 1)
                if t == prompt.count - 1 { logitsOf = [l] }
            }
            for n in 0..<o.maxNewTokens {
                var candidates: [(beam: Int, token: Int, score: Double)] = []
                for (bi, beam) in live.enumerated() {
                    let z = logitsOf[bi].map(Double.init), m = z.max()!
                    let lse = m + log(z.reduce(0) { $0 + exp($1 - m) })
                    var banned = Set<Int>()
                    if o.noRepeatNGram > 0 {
                        let seq = prompt + beam.tokens, k = o.noRepeatNGram
                        if seq.count >= k - 1 {
                            let tail = Array(seq.suffix(k - 1))
                            if seq.count >= k { for i in 0...(seq.count - k) where Array(seq[i..<(i + k - 1)]) == tail { banned.insert(seq[i + k - 1]) } }
                        }
                    }
                    // Only the best 2·beams tokens of each beam can be selected.
                    var best: [(beam: Int, token: Int, score: Double)] = []
                    for tok in 0..<V where !banned.contains(tok) {
                        let sc = beam.score + z[tok] - lse
                        if best.count < 2 * beams {
                            best.append((bi, tok, sc)); best.sort { $0.score > $1.score }
                        } else if sc > best[best.count - 1].score {
                            best[best.count - 1] = (bi, tok, sc); best.sort { $0.score > $1.score }
                        }
                    }
                    candidates += best
                }
                candidates.sort { $0.score != $1.score ? $0.score > $1.score : ($0.beam, $0.token) < ($1.beam, $1.token) }
                var chosen: [(beam: Int, token: Int, score: Double)] = []
                for cand in candidates.prefix(2 * beams) {
                    if cand.token == eos {
                        let ids = live[cand.beam].tokens + [eos]
                        finished.append((ids, cand.score / pow(Double(ids.count), o.lengthPenalty)))
                    } else if chosen.count < beams {
                        chosen.append(cand)
                    }
                }
                // A beam's last continuation takes its cache over instead of copying it.
                var uses = [Int](repeating: 0, count: live.count)
                for cand in chosen { uses[cand.beam] += 1 }
                var next: [Beam] = [], nextLogits: [[Float]] = []
                for cand in chosen {
                    uses[cand.beam] -= 1
                    var b = live[cand.beam]
                    if uses[cand.beam] == 0 { live[cand.beam] = Beam(tokens: [], score: 0, keys: [], values: []) }
                    b.tokens.append(cand.token)
                    b.score = cand.score
                    nextLogits.append(advance(&b, input: embed(cand.token, position: P + prompt.count + n), rows: 1))
                    next.append(b)
                }
                live = next
                logitsOf = nextLogits
                if live.isEmpty { break }
                // Done once `beams` hypotheses are finished and no live beam can still beat the
                // worst of them (Hugging Face's heuristic: its current normalised score).
                if finished.count >= beams {
                    let top = finished.map(\.score).sorted(by: >).prefix(beams)
                    let bestLive = live.map { $0.score / pow(Double($0.tokens.count), o.lengthPenalty) }.max() ?? -.infinity
                    if bestLive <= top.last! { break }
                }
            }
            for b in live {
                finished.append((b.tokens, b.score / pow(Double(max(b.tokens.count, 1)), o.lengthPenalty)))
            }
            if beams == 1 {
                // Greedy: the single path, finished or not.
                result = finished.first ?? ([], 0)
            } else {
                result = finished.max { $0.score != $1.score ? $0.score < $1.score : $0.ids.lexicographicallyPrecedes($1.ids) == false } ?? ([], 0)
            }
        }
        return result
    }
}

/// One query row against n keys / values (rows with stride ld, head h at column h·D).
/// `s` holds n scores.
func attendOne(
    _ out: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
    ld: Int, n: Int, H: Int, D: Int, scores s: UnsafeMutablePointer<Float>
) {
    let scale = 1 / Float(D).squareRoot(), D8 = D & ~7
    func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
    for h in 0..<H {
        let qh = q + h * D
        var m = -Float.infinity
        for j in 0..<n {
            let kj = keys + j * ld + h * D
            var acc = SIMD8<Float>(repeating: 0)
            var d = 0
            while d < D8 { acc = acc.addingProduct(load(qh + d), load(kj + d)); d += 8 }
            var dot = acc.sum()
            while d < D { dot += qh[d] * kj[d]; d += 1 }
            s[j] = dot * scale
            m = max(m, s[j])
        }
        var z: Float = 0
        for j in 0..<n { s[j] = expf(s[j] - m); z += s[j] }
        let oh = out + h * D, inv = 1 / z
        oh.update(repeating: 0, count: D)
        for j in 0..<n {
            let w = s[j] * inv, vj = values + j * ld + h * D
            var d = 0
            while d < D8 {
                UnsafeMutableRawPointer(oh + d).storeBytes(of: load(oh + d).addingProduct(SIMD8(repeating: w), load(vj + d)), as: SIMD8<Float>.self)
                d += 8
            }
            while d < D { oh[d] += w * vj[d]; d += 1 }
        }
    }
}
