import XCTest
import XRTensor
@testable import XRTrain
import TestSupport

/// The report decoder against Hugging Face GPT-2 with cross-attention, and GPT-2 over a visual
/// prefix (`fixtures/make_report_fixtures.py`).
func loadReportFixture(_ name: String) throws -> [String: Tensor] {
    let f = try SafeTensorsFile(contentsOf: Fixtures.url("report/\(name).safetensors"))
    var out: [String: Tensor] = [:]
    for n in f.names { out[n] = try f.tensor(n) }
    return out
}

final class ReportDecoderTests: XCTestCase {
    func load(_ name: String) throws -> [String: Tensor] { try loadReportFixture(name) }
    let config = DecoderConfig(vocab: 50, positions: 64, dim: 32, layers: 2, heads: 4, visualDim: 24)

    func testLogitsLossAndGradientsMatchTransformers() throws {
        try checkParity(config: config, decoder: "decoder", reference: "reference")
    }

    func testVisualPrefixMatchesTransformers() throws {
        var c = config
        c.visualPrefix = true
        try checkParity(config: c, decoder: "prefix_decoder", reference: "prefix_reference")
        // A checkpoint of the other variant is refused, naming the tensor.
        XCTAssertThrowsError(try ReportDecoder(config: c, tensors: try load("decoder"), source: "decoder.safetensors")) {
            XCTAssertTrue("\($0)".contains("crossattention") || "\($0)".contains("ln_cross_attn"), "\($0)")
        }
        XCTAssertThrowsError(try ReportDecoder(config: config, tensors: try load("prefix_decoder"), source: "prefix_decoder.safetensors")) {
            XCTAssertTrue("\($0)".contains("missing tensor"), "\($0)")
        }
        // Text plus the 5 visual tokens must fit the positions.
        let m = try ReportDecoder(config: c, tensors: try load("prefix_decoder"), source: "prefix_decoder.safetensors")
        XCTAssertThrowsError(try m.forward(visual: [Float](repeating: 0, count: 5 * 24), visualTokens: 5, ids: [Int](repeating: 1, count: 60), batch: 1)) {
            XCTAssertTrue("\($0)".contains("visual tokens"), "\($0)")
        }
        XCTAssertNoThrow(try m.forward(visual: [Float](repeating: 0, count: 5 * 24), visualTokens: 5, ids: [Int](repeating: 1, count: 59), batch: 1))
    }

    func checkParity(config: DecoderConfig, decoder: String, reference: String) throws {
        let m = try ReportDecoder(config: config, tensors: try load(decoder), source: decoder)
        let ref = try load(reference)
        let ids = ref["ids"]!.scalars.map { Int($0) }, labels = ref["labels"]!.scalars.map { Int($0) }
        let mask = ref["mask"]!.scalars
        let lengths = (0..<2).map { b in Int((0..<7).reduce(Float(0)) { $0 + mask[b * 7 + $1] }) }
        let logits = try m.forward(visual: ref["visual"]!.scalars, visualTokens: 5, ids: ids, batch: 2, lengths: lengths)
        assertClose(logits, ref["logits"]!.scalars, rel: 1e-5, "logits")
        let (loss, d, n) = ReportDecoder.languageModelLoss(logits: logits, labels: labels, batch: 2, vocab: 50)
        XCTAssertEqual(n, 5 + 3)
        XCTAssertEqual(loss, Double(ref["loss"]!.scalars[0]), accuracy: 1e-5 * loss)
        m.zeroGrad()
        m.backward(dlogits: d)
        var worst = 0.0
        for p in m.parameters {
            let want = try XCTUnwrap(ref["grad." + p.name], p.name)
            var got = p.grad!.array
            let conv1D = ["c_attn.weight", "c_proj.weight", "q_attn.weight", "c_fc.weight"].contains { p.name.hasSuffix($0) }
            if conv1D { // stored (in, out) by Hugging Face
                let (o, i) = (p.shape[0], p.shape[1])
                var t = [Float](repeating: 0, count: o * i)
                for col in 0..<o { for r in 0..<i { t[r * o + col] = got[col * i + r] } }
                got = t
            }
            let (rel, maxAbs, idx) = relativeL2(got, want.scalars)
            worst = max(worst, rel)
            XCTAssertLessThan(rel, 1e-4, "\(p.name): relative L2 \(rel), max |diff| \(maxAbs) at \(idx)")
        }
        print(
            "report decoder (\(config.visualPrefix ? "visual prefix" : "cross-attention")): \(m.parameters.count) parameter gradients vs autograd, worst relative L2 \(worst)"
        )
        // The fused in-place loss gives the same loss and gradients.
        let before = m.parameters.map { $0.grad!.array }
        m.zeroGrad()
        try m.forward(visual: ref["visual"]!.scalars, visualTokens: 5, ids: ids, batch: 2, lengths: lengths, returnLogits: false)
        let fused = m.lossAndBackward(labels: labels)
        XCTAssertEqual(fused.tokens, 8)
        XCTAssertEqual(fused.loss, loss, accuracy: 1e-5 * loss)
        for (p, g) in zip(m.parameters, before) { assertClose(p.grad!.array, g, rel: 1e-5, "fused loss gradient \(p.name)") }
        // With label smoothing too: the fused loss and gradients equal the reference loss's.
        let smoothed = ReportDecoder.languageModelLoss(logits: logits, labels: labels, batch: 2, vocab: 50, smoothing: 0.1)
        m.zeroGrad()
        m.backward(dlogits: smoothed.dlogits)
        let reference = m.parameters.map { $0.grad!.array }
        m.zeroGrad()
        try m.forward(visual: ref["visual"]!.scalars, visualTokens: 5, ids: ids, batch: 2, lengths: lengths, returnLogits: false)
        let fusedSmoothed = m.lossAndBackward(labels: labels, smoothing: 0.1)
        XCTAssertEqual(fusedSmoothed.loss, smoothed.loss, accuracy: 1e-5 * smoothed.loss)
        for (p, g) in zip(m.parameters, reference) { assertClose(p.grad!.array, g, rel: 1e-5, "smoothed fused loss gradient \(p.name)") }
        // Saving gives the Hugging Face layout back.
        let back = m.hfTensors()
        for (k, v) in try load(decoder) { XCTAssertEqual(back[k]?.shape, v.shape, k); assertClose(back[k]!.scalars, v.scalars, rel: 0, k) }
    }
}

final class ReportGenerationTests: XCTestCase {
    func model() throws -> (ReportDecoder, [String: Tensor]) {
        (
            try ReportDecoder(
                config: DecoderConfig(vocab: 50, positions: 64, dim: 32, layers: 2, heads: 4, visualDim: 24),
                tensors: try loadReportFixture("decoder"), source: "decoder"), try loadReportFixture("reference")
        )
    }

    func testGreedyWithKeyValueCacheMatchesFullRecomputation() throws {
        let (m, ref) = try model()
        try checkGreedy(m, ref)
    }

    func testVisualPrefixGreedyWithKeyValueCacheMatchesFullRecomputation() throws {
        let m = try ReportDecoder(
            config: DecoderConfig(vocab: 50, positions: 64, dim: 32, layers: 2, heads: 4, visualDim: 24, visualPrefix: true),
            tensors: try loadReportFixture("prefix_decoder"), source: "prefix_decoder")
        try checkGreedy(m, try loadReportFixture("prefix_reference"))
        // The prefix takes 5 of the 64 positions.
        var o = GenerationOptions()
        o.maxNewTokens = 59
        XCTAssertThrowsError(try m.generate(visual: [Float](repeating: 0, count: 5 * 24), visualTokens: 5, prompt: [1], eos: 49, options: o))
        o.maxNewTokens = 58
        XCTAssertNoThrow(try m.generate(visual: [Float](repeating: 0, count: 5 * 24), visualTokens: 5, prompt: [1], eos: 49, options: o))
    }

    func checkGreedy(_ m: ReportDecoder, _ ref: [String: Tensor]) throws {
        let greedy = ref["greedy"]!.scalars.map { Int($0) }
        for b in 0..<2 {
            let v = Array(ref["visual"]!.scalars[(b * 5 * 24)..<((b + 1) * 5 * 24)])
            var o = GenerationOptions()
            o.maxNewTokens = 8
            let out = try m.generate(visual: v, visualTokens: 5, prompt: [1], eos: 49, options: o)
            XCTAssertEqual([1] + out.ids, Array(greedy[(b * 9)..<((b + 1) * 9)]), "image \(b)")
        }
    }

    func testBeamSearchFindsTheBestSequenceExhaustively() throws {
        let (m, ref) = try model()
        let v = Array(ref["visual"]!.scalars[0..<(5 * 24)])
        var o = GenerationOptions()
        o.maxNewTokens = 2
        o.beams = 50
        o.lengthPenalty = 1.0
        let eos = 3
        let beam = try m.generate(visual: v, visualTokens: 5, prompt: [1], eos: eos, options: o)
        // Exhaustive: every sequence of one EOS, or two tokens, scored by mean log-probability.
        func logp(_ prefix: [Int]) throws -> [Double] {
            let logits = try m.forward(visual: v, visualTokens: 5, ids: prefix, batch: 1)
            let z = logits.suffix(50).map(Double.init), mx = z.max()!
            let lse = mx + log(z.reduce(0) { $0 + exp($1 - mx) })
            return z.map { $0 - lse }
        }
        let first = try logp([1])
        var best = ([eos], first[eos])
        for a in 0..<50 where a != eos {
            let second = try logp([1, a])
            for b in 0..<50 {
                let s = (first[a] + second[b]) / 2
                if s > best.1 { best = ([a, b], s) }
            }
        }
        XCTAssertEqual(beam.ids, best.0)
        XCTAssertEqual(beam.score, best.1, accuracy: 1e-4)
        // No-repeat n-gram: with n = 1, no token appears twice.
        o.beams = 3; o.maxNewTokens = 10; o.noRepeatNGram = 1
        let nr = try m.generate(visual: v, visualTokens: 5, prompt: [1], eos: 49, options: o)
        XCTAssertEqual(Set(nr.ids).count, nr.ids.count)
        XCTAssertFalse(nr.ids.contains(1))
    }
}

/// The gradient with respect to the visual tokens (what flows back into a tuned encoder),
/// against a central finite difference of the loss along a random direction.
final class ReportDecoderVisualGradientTests: XCTestCase {
    func testVisualTokenGradient() throws {
        try check(DecoderConfig(vocab: 50, positions: 64, dim: 32, layers: 2, heads: 4, visualDim: 24), "decoder")
    }

    func testVisualTokenGradientThroughPrefix() throws {
        try check(DecoderConfig(vocab: 50, positions: 64, dim: 32, layers: 2, heads: 4, visualDim: 24, visualPrefix: true), "prefix_decoder")
    }

    func check(_ config: DecoderConfig, _ fixture: String) throws {
        let m = try ReportDecoder(config: config, tensors: try loadReportFixture(fixture), source: fixture)
        m.needsVisualGradient = true
        var rng = XRRandom(seed: 21)
        let B = 2, S = 5, T = 7
        var v = (0..<(B * S * 24)).map { _ in rng.nextGaussian() }
        let ids = (0..<(B * T)).map { _ in Int(rng.next() % 50) }
        var labels = ids
        for t in 5..<T { labels[T + t] = -100 } // a shorter second report
        func loss() throws -> Double {
            let logits = try m.forward(visual: v, visualTokens: S, ids: ids, batch: B, lengths: [T, 5])
            return ReportDecoder.languageModelLoss(logits: logits, labels: labels, batch: B, vocab: 50, smoothing: 0.1).loss
        }
        m.zeroGrad()
        try m.forward(visual: v, visualTokens: S, ids: ids, batch: B, lengths: [T, 5], returnLogits: false)
        _ = m.lossAndBackward(labels: labels, smoothing: 0.1)
        let g = m.visualGradient
        XCTAssertEqual(g.count, v.count)
        var dir = (0..<v.count).map { _ in rng.nextGaussian() }
        let norm = Float(dir.reduce(0.0) { $0 + Double($1 * $1) }.squareRoot())
        dir = dir.map { $0 / norm }
        let analytic = zip(g, dir).reduce(0.0) { $0 + Double($1.0 * $1.1) }
        let h: Float = 1e-2
        for i in v.indices { v[i] += h * dir[i] }
        let lp = try loss()
        for i in v.indices { v[i] -= 2 * h * dir[i] }
        let lm = try loss()
        let numeric = (lp - lm) / Double(2 * h)
        XCTAssertGreaterThan(abs(numeric), 1e-4)
        XCTAssertEqual(analytic, numeric, accuracy: 2e-2 * abs(numeric))
    }
}

/// The visual-input names shared by recipes, the CLI and model.json.
final class VisualInputNameTests: XCTestCase {
    func testNamesParseAndBadOnesAreNamed() throws {
        XCTAssertEqual(try DecoderConfig.visualPrefix(parsing: "prefix", field: "f"), true)
        XCTAssertEqual(try DecoderConfig.visualPrefix(parsing: "cross_attention", field: "f"), false)
        XCTAssertThrowsError(try DecoderConfig.visualPrefix(parsing: "Prefix", field: "--visual-input", file: "m.json")) {
            let text = "\($0)"
            XCTAssertTrue(text.contains("--visual-input") && text.contains("m.json") && text.contains("got 'Prefix'"), text)
        }
        var c = DecoderConfig(vocab: 5, positions: 8, dim: 4, layers: 1, heads: 1, visualDim: 2)
        XCTAssertEqual(c.visualInputName, "cross_attention")
        c.visualPrefix = true
        XCTAssertEqual(c.visualInputName, "prefix")
    }
}
