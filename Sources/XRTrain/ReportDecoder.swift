// The report decoder: GPT-2 blocks (pre-norm, fused causal self-attention, tanh GELU, tied
// output embedding) reading visual tokens, which come from the image encoder's patch tokens
// through a linear projection, in one of two ways:
//   cross-attention  every block attends to the visual tokens (`crossattention.*`, `ln_cross_attn`);
//   visual prefix    the projected visual tokens are prepended to the text embeddings and the
//                    causal self-attention runs over [visual; text] (plain GPT-2 blocks, as
//                    Hugging Face's GPT2LMHeadModel with `inputs_embeds`; positions count the prefix).
// Hugging Face names (`transformer.h.0.attn.c_attn` …), whose Conv1D weights (in, out) are stored
// here transposed as (out, in). B batch, T text tokens, S visual tokens, L tokens through the
// blocks (T, or S + T with a prefix), C width, V vocabulary.
import Foundation
import XRTensor
import XRKernels

public struct DecoderConfig: Codable, Sendable, Equatable {
    public var vocab: Int
    /// Position embeddings: text tokens, plus the visual tokens with a prefix.
    public var positions: Int
    public var dim: Int
    public var layers: Int
    public var heads: Int
    /// Width of the visual tokens before projection.
    public var visualDim: Int
    public var eps: Float = 1e-5
    /// Visual tokens as a prefix of the text instead of through cross-attention.
    public var visualPrefix = false
    public init(vocab: Int, positions: Int, dim: Int, layers: Int, heads: Int, visualDim: Int, eps: Float = 1e-5, visualPrefix: Bool = false) {
        self.vocab = vocab; self.positions = positions; self.dim = dim; self.layers = layers; self.heads = heads; self.visualDim = visualDim; self.eps = eps
        self.visualPrefix = visualPrefix
    }
    /// The ways the decoder can read the visual tokens, as recipes, the CLI and model.json name them.
    public enum VisualInput: String, CaseIterable, Sendable { case cross_attention, prefix }
    /// `VisualInput`'s names.
    public static let visualInputs = VisualInput.allCases.map(\.rawValue)
    /// `visualPrefix` for a named visual input; anything else is an error naming the field (and file).
    public static func visualPrefix(parsing value: String, field: String, file: String? = nil) throws -> Bool {
        guard visualInputs.contains(value) else {
            throw XRError("visual_input must be \(visualInputs.joined(separator: " or ")), got '\(value)'", file: file, field: field)
        }
        return value == "prefix"
    }
    public var visualInputName: String { visualPrefix ? "prefix" : "cross_attention" }
    enum CodingKeys: String, CodingKey { case vocab, positions, dim, layers, heads, visualDim, eps, visualPrefix }
    public init(from d: Decoder) throws {
        let c = try d.container(keyedBy: CodingKeys.self)
        self.init(
            vocab: try c.decode(Int.self, forKey: .vocab), positions: try c.decode(Int.self, forKey: .positions), dim: try c.decode(Int.self, forKey: .dim),
            layers: try c.decode(Int.self, forKey: .layers), heads: try c.decode(Int.self, forKey: .heads),
            visualDim: try c.decode(Int.self, forKey: .visualDim),
            eps: try c.decodeIfPresent(Float.self, forKey: .eps) ?? 1e-5, visualPrefix: try c.decodeIfPresent(Bool.self, forKey: .visualPrefix) ?? false)
    }
}

/// Cross-attention to the visual tokens (absent with a visual prefix).
final class CrossAttention {
    let lnw, lnb: Parameter
    let q, kv, proj: Linear
    init(_ p: String, _ get: (String, [Int], Bool) throws -> Parameter, _ lin: (String, Int, Int) throws -> Linear, C: Int) throws {
        lnw = try get(p + "ln_cross_attn.weight", [C], false); lnb = try get(p + "ln_cross_attn.bias", [C], false)
        q = try lin("crossattention.q_attn", C, C); kv = try lin("crossattention.c_attn", 2 * C, C); proj = try lin("crossattention.c_proj", C, C)
    }
    var parameters: [Parameter] { [lnw, lnb, q.weight, q.bias!, kv.weight, kv.bias!, proj.weight, proj.bias!] }
}

final class DecoderLayer {
    let ln1w, ln1b, ln2w, ln2b: Parameter
    let attn, attnProj, fc, fcProj: Linear
    let cross: CrossAttention?
    init(_ i: Int, _ get: (String, [Int], Bool) throws -> Parameter, c: DecoderConfig) throws {
        let p = "transformer.h.\(i).", C = c.dim
        ln1w = try get(p + "ln_1.weight", [C], false); ln1b = try get(p + "ln_1.bias", [C], false)
        func lin(_ n: String, _ out: Int, _ inp: Int) throws -> Linear {
            Linear(p + n, weight: try get(p + n + ".weight", [out, inp], true), bias: try get(p + n + ".bias", [out], false))
        }
        attn = try lin("attn.c_attn", 3 * C, C); attnProj = try lin("attn.c_proj", C, C)
        cross = c.visualPrefix ? nil : try CrossAttention(p, get, lin, C: C)
        ln2w = try get(p + "ln_2.weight", [C], false); ln2b = try get(p + "ln_2.bias", [C], false)
        fc = try lin("mlp.c_fc", 4 * C, C); fcProj = try lin("mlp.c_proj", C, 4 * C)
    }
    var parameters: [Parameter] {
        [ln1w, ln1b, attn.weight, attn.bias!, attnProj.weight, attnProj.bias!] + (cross?.parameters ?? [])
            + [ln2w, ln2b, fc.weight, fc.bias!, fcProj.weight, fcProj.bias!]
    }
    var linears: [Linear] { [attn, attnProj, fc, fcProj] + (cross.map { [$0.q, $0.kv, $0.proj] } ?? []) }
}

final class DecoderCache {
    let xIn, h1, qkv, att, xA, hx, qx, kvx, attx, xB, h2, u, a: Buffer
    let m1, r1, mx, rx, m2, r2: Buffer
    let probs, probsX: Buffer
    /// R = B·L rows through the blocks, L per sequence; S visual tokens for cross-attention (0 with a prefix).
    init(B: Int, L: Int, S: Int, c: DecoderConfig) {
        let C = c.dim, R = B * L, RX = S > 0 ? R : 0, RS = B * S
        xIn = Buffer(R * C); h1 = Buffer(R * C); qkv = Buffer(R * 3 * C); att = Buffer(R * C); xA = Buffer(R * C)
        hx = Buffer(RX * C); qx = Buffer(RX * C); kvx = Buffer(RS * 2 * C); attx = Buffer(RX * C)
        // Without cross-attention the block's middle residual is its input: xB is xA.
        xB = S > 0 ? Buffer(R * C) : xA
        h2 = Buffer(R * C); u = Buffer(R * 4 * C); a = Buffer(R * 4 * C)
        m1 = Buffer(R); r1 = Buffer(R); mx = Buffer(RX); rx = Buffer(RX); m2 = Buffer(R); r2 = Buffer(R)
        probs = Buffer(B * c.heads * L * L); probsX = Buffer(B * c.heads * L * S)
    }
}

public final class ReportDecoder: @unchecked Sendable {
    public let config: DecoderConfig
    public let wte, wpe, lnfw, lnfb: Parameter
    let visual: Linear
    let layers: [DecoderLayer]
    public private(set) var parameters: [Parameter] = []

    private var shape = (B: 0, T: 0, S: 0)
    private var lengths: [Int] = []
    private var caches: [DecoderCache] = []
    private var enc = Buffer(0), vis = Buffer(0), x = Buffer(0), xPre = Buffer(0), xf = Buffer(0), mf = Buffer(0), rf = Buffer(0), logits = Buffer(0)
    private var ids: [Int] = []
    /// Compute the gradient of the loss with respect to the visual tokens in the backward (for
    /// tuning the encoder that produced them).
    public var needsVisualGradient = false
    private var dVis = Buffer(0)
    /// d(visual tokens) (B, S, Cv) of the last backward (`needsVisualGradient`).
    public var visualGradient: [Float] { Array(UnsafeBufferPointer(start: dVis.p, count: shape.B * shape.S * config.visualDim)) }
    private var tC = Buffer(0), tC2 = Buffer(0), t3C = Buffer(0), t4C = Buffer(0), dEnc = Buffer(0), tKV = Buffer(0), scratch = Buffer(0)
    /// The training step's matrix products on the packed kernel (`packedProduct`): every weight
    /// packed once at the start of each forward (as Wᵀ) and each backward (as W), weight
    /// gradients with the layer input packed (`packedProductTransposedA`). Off by default: at
    /// the decoder's shapes it measured slower than OpenBLAS sgemm (docs/benchmarks.md);
    /// `xrlab bench report --products packed` times it.
    public var packedProducts = false
    /// A layer input packed for its weight gradient (`Linear.backward`'s `packScratch`).
    private var packScratch = Buffer(0)
    /// The tied embedding packed as wteᵀ (C, V) for the logits and as wte (V, C) for their input gradient.
    private var wteForLogits: PackedMatrix?, wteForGradient: PackedMatrix?
    private var linears: [Linear] { layers.flatMap(\.linears) + [visual] }
    /// Wall-clock time per phase of the forward, loss and backward when set (`xrlab bench report --phases`).
    public var phases: StepPhases?
    private func lap(_ name: String) { phases?.lap(name) }

    /// From Hugging Face-named tensors (Conv1D weights (in, out)), plus `visual_proj.weight` (C, Cv)
    /// and `.bias`. Missing tensors are errors naming them; `lm_head.weight` is the tied `wte`.
    public init(config c: DecoderConfig, tensors: [String: Tensor], source: String) throws {
        config = c
        var used = Set<String>()
        func get(_ name: String, _ shape: [Int], _ conv1D: Bool) throws -> Parameter {
            guard let t = tensors[name] else { throw XRError("missing tensor", file: source, field: name) }
            let expected = conv1D ? [shape[1], shape[0]] : shape
            guard t.shape == expected else { throw XRError("shape \(t.shape), expected \(expected)", file: source, field: name) }
            used.insert(name)
            guard conv1D else { return Parameter(name, shape, t.scalars) }
            // (in, out) → (out, in)
            let (i, o) = (shape[1], shape[0])
            var w = [Float](repeating: 0, count: i * o)
            for r in 0..<i { for col in 0..<o { w[col * i + r] = t.scalars[r * o + col] } }
            return Parameter(name, shape, w)
        }
        wte = try get("transformer.wte.weight", [c.vocab, c.dim], false)
        wpe = try get("transformer.wpe.weight", [c.positions, c.dim], false)
        layers = try (0..<c.layers).map { try DecoderLayer($0, get, c: c) }
        lnfw = try get("transformer.ln_f.weight", [c.dim], false)
        lnfb = try get("transformer.ln_f.bias", [c.dim], false)
        visual = Linear("visual_proj", weight: try get("visual_proj.weight", [c.dim, c.visualDim], false), bias: try get("visual_proj.bias", [c.dim], false))
        let unused = Set(tensors.keys).subtracting(used).subtracting(["lm_head.weight"]).filter {
            !$0.hasSuffix(".attn.bias") && !$0.hasSuffix(".attn.masked_bias")
        }
        if let u = unused.sorted().first { throw XRError("unused tensor: the checkpoint does not match the decoder config", file: source, field: u) }
        parameters = [wte, wpe] + layers.flatMap(\.parameters) + [lnfw, lnfb, visual.weight, visual.bias!]
        for p in parameters { p.trainable = true }
    }

    /// Hugging Face-named tensors (Conv1D weights back to (in, out)) for saving.
    public func hfTensors() -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        let convs = Set(layers.flatMap { $0.linears.map(\.weight.name) })
        for p in parameters {
            if convs.contains(p.name) {
                let (o, i) = (p.shape[0], p.shape[1])
                var w = [Float](repeating: 0, count: o * i)
                for col in 0..<o { for r in 0..<i { w[r * o + col] = p.value.p[col * i + r] } }
                out[p.name] = Tensor(shape: [i, o], scalars: w)
            } else {
                out[p.name] = p.tensor
            }
        }
        return out
    }

    /// Tokens per sequence through the blocks: the text, after the visual tokens with a prefix.
    private func blockLength(T: Int, S: Int) -> Int { config.visualPrefix ? S + T : T }

    private func prepare(B: Int, T: Int, S: Int) {
        if shape == (B, T, S) { return }
        let c = config, L = blockLength(T: T, S: S), R = B * L, Rt = B * T, RS = B * S, C = c.dim
        caches = layers.map { _ in DecoderCache(B: B, L: L, S: c.visualPrefix ? 0 : S, c: c) }
        enc = Buffer(RS * C); vis = Buffer(RS * c.visualDim); x = Buffer(R * C); xPre = Buffer(Rt * C); xf = Buffer(Rt * C); mf = Buffer(Rt); rf = Buffer(Rt)
        logits = Buffer(Rt * c.vocab)
        tC = Buffer(R * C); tC2 = Buffer(R * C); t3C = Buffer(R * 3 * C); t4C = Buffer(R * 4 * C); dEnc = Buffer(RS * C); tKV = Buffer(RS * 2 * C)
        dVis = Buffer(RS * c.visualDim)
        scratch = Buffer(max(2, Parallel.workers) * L * max(L, S))
        // The largest layer input a weight gradient packs: (R, 4C), (B·S, C) or (B·S, Cv).
        packScratch = Buffer([(R, 4 * C), (RS, C), (RS, c.visualDim)].map { PackedMatrix.alignedStorage(k: max($0.0, 1), n: $0.1) }.max() ?? 0)
        shape = (B, T, S)
    }

    /// Logits (B, T, V) for token ids (B, T) (row-major) given visual tokens (B, S, Cv); `lengths`
    /// are the valid tokens per row (padding keys masked).
    @discardableResult
    public func forward(visual v: [Float], visualTokens S: Int, ids tokens: [Int], batch B: Int, lengths: [Int]? = nil, returnLogits: Bool = true) throws
        -> [Float]
    {
        let c = config, T = tokens.count / max(B, 1), C = c.dim, P = c.visualPrefix ? S : 0
        guard tokens.count == B * T, T >= 1, P + T <= c.positions else {
            throw XRError(
                "token ids must be (B, T) with T ≤ \(c.positions - P)\(P > 0 ? " (\(c.positions) positions less \(P) visual tokens)" : ""), got \(tokens.count) for B=\(B)",
                field: "ids")
        }
        guard v.count == B * S * c.visualDim else { throw XRError("visual tokens have \(v.count) values, expected \(B)×\(S)×\(c.visualDim)", field: "visual") }
        if let bad = tokens.first(where: { $0 < 0 || $0 >= c.vocab }) { throw XRError("token id \(bad) outside the vocabulary (\(c.vocab))", field: "ids") }
        var out: [Float] = []
        withSingleThreadedBLAS {
            prepare(B: B, T: T, S: S)
            if packedProducts { for l in linears { l.beginPackedProducts(transposed: true) } }
            defer { for l in linears { l.endPackedProducts() } }
            ids = tokens
            self.lengths = lengths ?? [Int](repeating: T, count: B)
            let L = P + T, R = B * T, RS = B * S
            vis.p.update(from: v, count: v.count)
            visual.forward(enc.p, vis.p, rows: RS, lora: nil)
            lap("forward: visual projection")
            // Block input rows b·L + i: the visual prefix (i < P), then the text.
            for b in 0..<B {
                for i in 0..<P { for j in 0..<C { x.p[(b * L + i) * C + j] = enc.p[(b * S + i) * C + j] + wpe.value.p[i * C + j] } }
                for t in 0..<T {
                    let id = tokens[b * T + t], r = b * L + P + t
                    for j in 0..<C { x.p[r * C + j] = wte.value.p[id * C + j] + wpe.value.p[(P + t) * C + j] }
                }
            }
            lap("forward: embeddings")
            for (l, cache) in zip(layers, caches) { layerForward(l, cache, B: B, L: L, S: S) }
            for b in 0..<B { (xPre.p + b * T * C).update(from: x.p + (b * L + P) * C, count: T * C) }
            layerNormForward(xf.p, xPre.p, lnfw.value.p, lnfb.value.p, rows: R, cols: C, eps: c.eps, mean: mf.p, rstd: rf.p)
            lap("forward: layer norms and copies")
            // The output projection (R × V × C), rows split across workers.
            if packedProducts {
                let w = wteForLogits ?? PackedMatrix(k: C, n: c.vocab)
                wteForLogits = w
                w.fillTransposed(wte.value.p)
                packedProduct(logits.p, xf.p, w, rows: R)
            } else {
                let (LG, X, W, Vv) = (SendablePointer(logits.p), SendablePointer(xf.p), SendablePointer(wte.value.p), c.vocab)
                Parallel.ranges(R, minChunk: 16) { r in
                    BLAS.sgemm(LG.p + r.lowerBound * Vv, X.p + r.lowerBound * C, W.p, transB: true, m: r.count, n: Vv, k: C)
                }
            }
            lap("forward: logits product")
            if returnLogits { out = Array(UnsafeBufferPointer(start: logits.p, count: R * c.vocab)) }
        }
        return out
    }

    /// Valid keys per sequence through the blocks (the prefix counts).
    private var blockKeyLengths: [Int] { config.visualPrefix ? lengths.map { $0 + shape.S } : lengths }

    private func layerForward(_ l: DecoderLayer, _ k: DecoderCache, B: Int, L T: Int, S: Int) {
        let c = config, C = c.dim, R = B * T, RS = B * S, H = c.heads, D = C / H
        k.xIn.p.update(from: x.p, count: R * C)
        parallelLayerNorm(k.h1.p, k.xIn.p, l.ln1w, l.ln1b, rows: R, cols: C, eps: c.eps, mean: k.m1.p, rstd: k.r1.p)
        lap("forward: layer norms and copies")
        l.attn.forward(k.qkv.p, k.h1.p, rows: R, lora: nil)
        lap("forward: attn.c_attn")
        maskedAttentionForward(
            out: k.att.p, ldo: C, q: k.qkv.p, ldq: 3 * C, k: k.qkv.p + C, ldk: 3 * C, v: k.qkv.p + 2 * C, ldv: 3 * C,
            probabilities: k.probs.p, batch: B, queries: T, keys: T, heads: H, headDim: D, causal: true, keyLengths: blockKeyLengths)
        lap("forward: self-attention")
        // Residual adds fused into the products' stores: xA = xIn + (att · Wᵀ + b).
        k.xA.p.update(from: k.xIn.p, count: R * C)
        l.attnProj.product(tC.p, k.att.p, rows: R, finish: residual(l.attnProj, k.xA.p))
        lap("forward: attn.c_proj")
        if let x = l.cross {
            parallelLayerNorm(k.hx.p, k.xA.p, x.lnw, x.lnb, rows: R, cols: C, eps: c.eps, mean: k.mx.p, rstd: k.rx.p)
            lap("forward: layer norms and copies")
            x.q.forward(k.qx.p, k.hx.p, rows: R, lora: nil)
            lap("forward: crossattention.q_attn")
            x.kv.forward(k.kvx.p, enc.p, rows: RS, lora: nil)
            lap("forward: crossattention.c_attn (visual keys, values)")
            maskedAttentionForward(
                out: k.attx.p, ldo: C, q: k.qx.p, ldq: C, k: k.kvx.p, ldk: 2 * C, v: k.kvx.p + C, ldv: 2 * C,
                probabilities: k.probsX.p, batch: B, queries: T, keys: S, heads: H, headDim: D, causal: false)
            lap("forward: cross-attention")
            k.xB.p.update(from: k.xA.p, count: R * C)
            x.proj.product(tC.p, k.attx.p, rows: R, finish: residual(x.proj, k.xB.p))
            lap("forward: crossattention.c_proj")
        }
        parallelLayerNorm(k.h2.p, k.xB.p, l.ln2w, l.ln2b, rows: R, cols: C, eps: c.eps, mean: k.m2.p, rstd: k.r2.p)
        lap("forward: layer norms and copies")
        // u = h2 · Wᵀ + b, and a = GELU(u) on each finished block while it is in cache.
        let (U, A, M) = (SendablePointer(k.u.p), SendablePointer(k.a.p), 4 * C)
        l.fc.product(k.u.p, k.h2.p, rows: R, finish: l.fc.bias.map { .bias($0.value.p) } ?? .none) { rows, cols in
            for r in rows {
                let o = r * M + cols.lowerBound
                (A.p + o).update(from: U.p + o, count: cols.count)
                geluTanhForward(A.p + o, count: cols.count)
            }
        }
        lap("forward: mlp.c_fc + GELU")
        x.p.update(from: k.xB.p, count: R * C)
        l.fcProj.product(tC.p, k.a.p, rows: R, finish: residual(l.fcProj, x.p))
        lap("forward: mlp.c_proj")
    }

    /// residual += (A · Wᵀ + b) for a product of `l` whose rows are the decoder width apart.
    private func residual(_ l: Linear, _ r: UnsafeMutablePointer<Float>) -> PackedEpilogue {
        .biasScaleResidual(bias: l.bias?.value.p, scale: nil, residual: r, ld: config.dim)
    }

    /// Accumulate gradients of every parameter from dlogits (B, T, V) of the last forward.
    public func backward(dlogits: [Float]) {
        let (B, T, _) = shape, R = B * T
        precondition(dlogits.count == R * config.vocab)
        logits.p.update(from: dlogits, count: dlogits.count)
        backwardFromLogits()
    }

    /// Causal LM loss of the last forward (position t predicts token t + 1; labels < 0 ignored;
    /// label smoothing), computed in place on the logits, then the backward — without copying
    /// the (B·T, V) logits. Returns the mean loss and the number of counted tokens.
    public func lossAndBackward(labels: [Int], smoothing: Double = 0) -> (loss: Double, tokens: Int) {
        let (B, T, _) = shape, V = config.vocab, R = B * T
        precondition(labels.count == R)
        var target = [Int](repeating: -1, count: R)
        for b in 0..<B { for t in 0..<(T - 1) where labels[b * T + t + 1] >= 0 { target[b * T + t] = labels[b * T + t + 1] } }
        let n = target.filter { $0 >= 0 }.count
        guard n > 0 else { return (0, 0) }
        let eps = Float(smoothing), lp = SendablePointer(logits.p)
        let chunks = max(1, Parallel.workers)
        var partial = [Double](repeating: 0, count: chunks)
        partial.withUnsafeMutableBufferPointer { pp in
            let out = SendablePointer(pp.baseAddress!)
            Parallel.ranges(chunks) { ws in
                for w in ws {
                    var acc = 0.0
                    for r in (R * w / chunks)..<(R * (w + 1) / chunks) {
                        let row = lp.p + r * V
                        guard target[r] >= 0 else { row.update(repeating: 0, count: V); continue }
                        // −Σ q log p with q = ε/V + (1 − ε)[j = t] and log p = x − m − log Z is
                        // (m + log Z) − (ε/V Σx + (1 − ε) x_t): no logarithm per vocabulary entry.
                        let t = target[r], xt = row[t]
                        let m = vectorMax(row, V)
                        var sx8 = SIMD8<Float>(repeating: 0), z8 = SIMD8<Float>(repeating: 0)
                        let m8 = SIMD8<Float>(repeating: m)
                        var j = 0
                        while j + 8 <= V {
                            let x = UnsafeRawPointer(row + j).loadUnaligned(as: SIMD8<Float>.self)
                            let e = simdExp(x - m8)
                            UnsafeMutableRawPointer(row + j).storeBytes(of: e, as: SIMD8<Float>.self)
                            sx8 += x; z8 += e
                            j += 8
                        }
                        var sumX = Double(sx8.sum()), z = z8.sum()
                        while j < V { sumX += Double(row[j]); let e = expf(row[j] - m); row[j] = e; z += e; j += 1 }
                        let logZ = Double(logf(z)), scale = 1 / Float(n), inv = scale / z
                        let rowLoss = (Double(m) + logZ) - (Double(eps) / Double(V) * sumX + Double(1 - eps) * Double(xt))
                        // d/dx = (p − q) / n
                        let off = SIMD8<Float>(repeating: eps / Float(V) * scale), inv8 = SIMD8<Float>(repeating: inv)
                        j = 0
                        while j + 8 <= V {
                            let e = UnsafeRawPointer(row + j).loadUnaligned(as: SIMD8<Float>.self)
                            UnsafeMutableRawPointer(row + j).storeBytes(of: e * inv8 - off, as: SIMD8<Float>.self)
                            j += 8
                        }
                        while j < V { row[j] = row[j] * inv - eps / Float(V) * scale; j += 1 }
                        row[t] -= (1 - eps) * scale
                        acc += rowLoss
                    }
                    out.p[w] = acc
                }
            }
        }
        lap("LM loss")
        backwardFromLogits()
        return (partial.reduce(0, +) / Double(n), n)
    }

    /// The backward with dlogits in the logits buffer.
    private func backwardFromLogits() {
        let c = config, (B, Tt, S) = shape, P = c.visualPrefix ? S : 0, T = P + Tt, Rt = B * Tt, R = B * T, RS = B * S, C = c.dim, H = c.heads, D = C / H
        withSingleThreadedBLAS {
            if packedProducts { for l in linears { l.beginPackedProducts(transposed: false) } }
            defer { for l in linears { l.endPackedProducts() } }
            let ps: UnsafeMutablePointer<Float>? = packedProducts ? packScratch.p : nil
            let dl = logits
            let (DL, XF, WT, Vv) = (SendablePointer(dl.p), SendablePointer(xf.p), SendablePointer(wte.value.p), c.vocab)
            let TC = SendablePointer(tC.p)
            if packedProducts {
                // dW (V, C) += dlogitsᵀ xf with xf packed; dxf = dlogits · wte with wte packed as it is.
                if let g = wte.grad {
                    let b = PackedMatrix(k: Rt, n: C, in: packScratch.p)
                    b.fill(xf.p)
                    packedProductTransposedA(g.p, dl.p, b, rows: Vv, lda: Vv, accumulate: true)
                }
                let w = wteForGradient ?? PackedMatrix(k: Vv, n: C)
                wteForGradient = w
                w.fill(wte.value.p)
                packedProduct(tC.p, dl.p, w, rows: Rt)
                lap("backward: logits products (wte gradient, input gradient)")
            } else if let g = wte.grad {
                // dW (V, C) += dlogitsᵀ xf, split over vocabulary rows.
                let G = SendablePointer(g.p)
                Parallel.ranges(Vv, minChunk: 64) { r in
                    BLAS.sgemm(G.p + r.lowerBound * C, DL.p + r.lowerBound, transA: true, XF.p, m: r.count, n: C, k: Rt, beta: 1, lda: Vv)
                }
                lap("backward: logits product, wte gradient")
            }
            if !packedProducts {
                Parallel.ranges(Rt, minChunk: 16) { r in
                    BLAS.sgemm(TC.p + r.lowerBound * C, DL.p + r.lowerBound * Vv, WT.p, m: r.count, n: C, k: Vv)
                }
                lap("backward: logits product, input gradient")
            }
            let dx = x
            if P == 0 {
                layerNormBackward(
                    dx: dx.p, accumulate: false, dy: tC.p, x: xPre.p, weight: lnfw.value.p, mean: mf.p, rstd: rf.p,
                    dweight: lnfw.grad?.p, dbias: lnfb.grad?.p, rows: Rt, cols: C)
            } else {
                // Only the text rows reach ln_f; the prefix rows start with no gradient.
                layerNormBackward(
                    dx: tC2.p, accumulate: false, dy: tC.p, x: xPre.p, weight: lnfw.value.p, mean: mf.p, rstd: rf.p,
                    dweight: lnfw.grad?.p, dbias: lnfb.grad?.p, rows: Rt, cols: C)
                for b in 0..<B {
                    (dx.p + b * T * C).update(repeating: 0, count: P * C)
                    (dx.p + (b * T + P) * C).update(from: tC2.p + b * Tt * C, count: Tt * C)
                }
            }
            dEnc.zero()
            lap("backward: layer norms and copies")
            for (l, k) in zip(layers, caches).reversed() {
                // x = xB + fcProj(gelu(fc(LN2 xB)))
                l.fcProj.backward(dinp: t4C.p, accumulate: false, dout: dx.p, inp: k.a.p, rows: R, lora: nil, scratch: scratch.p, packScratch: ps)
                lap("backward: mlp.c_proj")
                let (G, U, M) = (t4C.p, k.u.p, 4 * C)
                parallelRows(R) { r in geluTanhBackward(G + r.lowerBound * M, preActivation: U + r.lowerBound * M, count: r.count * M) }
                lap("backward: GELU")
                l.fc.backward(dinp: tC.p, accumulate: false, dout: t4C.p, inp: k.h2.p, rows: R, lora: nil, scratch: scratch.p, packScratch: ps)
                lap("backward: mlp.c_fc")
                parallelLayerNormBackward(dx: dx.p, accumulate: true, dy: tC.p, x: k.xB.p, l.ln2w, l.ln2b, mean: k.m2.p, rstd: k.r2.p, rows: R, cols: C)
                lap("backward: layer norms and copies")
                if let x = l.cross {
                    // xB = xA + proj(attn(q(LNx xA), kv(enc)))
                    x.proj.backward(dinp: tC.p, accumulate: false, dout: dx.p, inp: k.attx.p, rows: R, lora: nil, scratch: scratch.p, packScratch: ps)
                    lap("backward: crossattention.c_proj")
                    maskedAttentionBackward(
                        dq: tC2.p, dk: tKV.p, dv: tKV.p + C, dout: tC.p, ldo: C, q: k.qx.p, ldq: C, k: k.kvx.p, ldk: 2 * C, v: k.kvx.p + C, ldv: 2 * C,
                        probabilities: k.probsX.p, scratch: scratch.p, batch: B, queries: T, keys: S, heads: H, headDim: D)
                    lap("backward: cross-attention")
                    x.kv.backward(dinp: dEnc.p, accumulate: true, dout: tKV.p, inp: enc.p, rows: RS, lora: nil, scratch: scratch.p, packScratch: ps)
                    lap("backward: crossattention.c_attn (visual keys, values)")
                    x.q.backward(dinp: tC.p, accumulate: false, dout: tC2.p, inp: k.hx.p, rows: R, lora: nil, scratch: scratch.p, packScratch: ps)
                    lap("backward: crossattention.q_attn")
                    parallelLayerNormBackward(dx: dx.p, accumulate: true, dy: tC.p, x: k.xA.p, x.lnw, x.lnb, mean: k.mx.p, rstd: k.rx.p, rows: R, cols: C)
                    lap("backward: layer norms and copies")
                }
                // xA = xIn + attnProj(selfattn(attn(LN1 xIn)))
                l.attnProj.backward(dinp: tC.p, accumulate: false, dout: dx.p, inp: k.att.p, rows: R, lora: nil, scratch: scratch.p, packScratch: ps)
                lap("backward: attn.c_proj")
                maskedAttentionBackward(
                    dq: t3C.p, dk: t3C.p + C, dv: t3C.p + 2 * C, dout: tC.p, ldo: C, q: k.qkv.p, ldq: 3 * C, k: k.qkv.p + C, ldk: 3 * C,
                    v: k.qkv.p + 2 * C, ldv: 3 * C, probabilities: k.probs.p, scratch: scratch.p, batch: B, queries: T, keys: T, heads: H, headDim: D,
                    causal: true)
                lap("backward: self-attention")
                l.attn.backward(dinp: tC.p, accumulate: false, dout: t3C.p, inp: k.h1.p, rows: R, lora: nil, scratch: scratch.p, packScratch: ps)
                lap("backward: attn.c_attn")
                parallelLayerNormBackward(dx: dx.p, accumulate: true, dy: tC.p, x: k.xIn.p, l.ln1w, l.ln1b, mean: k.m1.p, rstd: k.r1.p, rows: R, cols: C)
                lap("backward: layer norms and copies")
            }
            // Embeddings and the visual projection.
            for r in 0..<R {
                let b = r / T, t = r % T
                if let g = wpe.grad { for j in 0..<C { g.p[t * C + j] += dx.p[r * C + j] } }
                if t < P {
                    for j in 0..<C { dEnc.p[(b * S + t) * C + j] += dx.p[r * C + j] }
                } else if let g = wte.grad {
                    let id = ids[b * Tt + t - P]
                    for j in 0..<C { g.p[id * C + j] += dx.p[r * C + j] }
                }
            }
            lap("backward: embeddings")
            visual.backward(
                dinp: needsVisualGradient ? dVis.p : nil, accumulate: false, dout: dEnc.p, inp: vis.p, rows: RS, lora: nil, scratch: scratch.p, packScratch: ps)
            lap("backward: visual projection")
        }
    }

    public func zeroGrad() { for p in parameters { p.grad?.zero() } }

    /// Causal language-model loss: position t predicts token t + 1; `labels` −100 (or beyond
    /// `lengths`) are ignored; mean over the counted tokens, with label smoothing. Returns the
    /// loss and dlogits for `backward`.
    public static func languageModelLoss(logits: [Float], labels: [Int], batch B: Int, vocab V: Int, smoothing: Double = 0) -> (
        loss: Double, dlogits: [Float], tokens: Int
    ) {
        let T = labels.count / B
        var rows: [(Int, Int)] = []
        for b in 0..<B { for t in 0..<(T - 1) where labels[b * T + t + 1] >= 0 { rows.append((b * T + t, labels[b * T + t + 1])) } }
        var d = [Float](repeating: 0, count: logits.count)
        guard !rows.isEmpty else { return (0, d, 0) }
        let sub = rows.flatMap { logits[($0.0 * V)..<(($0.0 + 1) * V)] }
        let (loss, ds) = Loss.crossEntropy(logits: Array(sub), labels: rows.map(\.1), classes: V, smoothing: smoothing)
        for (i, r) in rows.enumerated() { for v in 0..<V { d[r.0 * V + v] = ds[i * V + v] } }
        return (loss, d, rows.count)
    }
}
