// A ViT (timm layout: pre-norm blocks, fused qkv, optional LayerScale, erf GELU, final norm,
// linear head on the class token or the patch mean) with a forward that keeps what the
// backward needs and a backward that fills gradients of the trainable parameters only.
// B batch, T tokens, C width, M MLP width, H heads, P patch, N patches, K classes.
import Foundation
import XRTensor
import XRKernels

public struct TrainConfig: Codable, Sendable, Equatable {
    public var dim: Int
    public var depth: Int
    public var heads: Int
    public var patch: Int
    public var imageSize: Int
    public var mlpHidden: Int
    public var classes: Int
    public var layerScale: Bool
    public var eps: Float = 1e-6
    /// `token` (class token after the final norm) or `mean` (patch tokens after the final norm).
    public var pooling: String = "token"
    /// Hidden width of an MLP head (linear → GELU → linear); nil = a linear head.
    public var headHidden: Int? = nil
    public var grid: Int { imageSize / patch }

    public init(dim: Int, depth: Int, heads: Int, patch: Int, imageSize: Int, mlpHidden: Int, classes: Int,
                layerScale: Bool, eps: Float = 1e-6, pooling: String = "token", headHidden: Int? = nil) {
        self.dim = dim; self.depth = depth; self.heads = heads; self.patch = patch; self.imageSize = imageSize
        self.mlpHidden = mlpHidden; self.classes = classes; self.layerScale = layerScale; self.eps = eps; self.pooling = pooling
        self.headHidden = headHidden
    }
    public var tokens: Int { 1 + grid * grid }
}

/// What can be trained (everything else is frozen and gets no gradient buffer).
public enum TrainableSet: Sendable, Equatable {
    case full
    /// The last k blocks, the final norm and the head.
    case lastBlocks(Int)
    /// Biases (and norm / LayerScale parameters are left frozen), plus the head.
    case bitFit
    /// LoRA on linear layers whose name matches one of `targets` (e.g. `qkv`, `proj`, `fc1`,
    /// `fc2`, `attn.*`), plus the head.
    /// `dropout` is applied to the LoRA branch's input while training (PEFT's `lora_dropout`).
    case lora(rank: Int, alpha: Double, targets: [String], dropout: Double = 0)
    /// Bottleneck adapters of width `dim` in every block (down → GELU → up, up initialised to 0):
    /// `sequential` on the MLP output, or `parallel` to the MLP (from its input, scaled by
    /// `scale`), plus the head.
    case adapter(dim: Int, parallel: Bool, scale: Double)
    /// Only the head (a linear probe trained by gradient descent).
    case head
}

final class BlockParams {
    let norm1w, norm1b, norm2w, norm2b: Parameter
    let qkv, proj, fc1, fc2: Linear
    let ls1, ls2: Parameter?
    var adapter: Adapter?
    init(_ i: Int, _ get: (String, [Int]) throws -> Parameter, c: TrainConfig) rethrows {
        let p = "blocks.\(i)."
        let C = c.dim, M = c.mlpHidden
        norm1w = try get(p + "norm1.weight", [C]); norm1b = try get(p + "norm1.bias", [C])
        norm2w = try get(p + "norm2.weight", [C]); norm2b = try get(p + "norm2.bias", [C])
        qkv = Linear(p + "attn.qkv", weight: try get(p + "attn.qkv.weight", [3 * C, C]), bias: try get(p + "attn.qkv.bias", [3 * C]))
        proj = Linear(p + "attn.proj", weight: try get(p + "attn.proj.weight", [C, C]), bias: try get(p + "attn.proj.bias", [C]))
        fc1 = Linear(p + "mlp.fc1", weight: try get(p + "mlp.fc1.weight", [M, C]), bias: try get(p + "mlp.fc1.bias", [M]))
        fc2 = Linear(p + "mlp.fc2", weight: try get(p + "mlp.fc2.weight", [C, M]), bias: try get(p + "mlp.fc2.bias", [C]))
        ls1 = c.layerScale ? try get(p + "ls1.gamma", [C]) : nil
        ls2 = c.layerScale ? try get(p + "ls2.gamma", [C]) : nil
    }
    var linears: [Linear] { [qkv, proj, fc1, fc2] }
    var adapterParameters: [Parameter] { adapter.map { [$0.down.weight, $0.down.bias!, $0.up.weight, $0.up.bias!] } ?? [] }
    var parameters: [Parameter] {
        [norm1w, norm1b, qkv.weight, qkv.bias!, proj.weight, proj.bias!] + (ls1.map { [$0] } ?? [])
            + [norm2w, norm2b, fc1.weight, fc1.bias!, fc2.weight, fc2.bias!] + (ls2.map { [$0] } ?? [])
    }
}

/// A bottleneck adapter: up(GELU(down(x))), `down` (r, C), `up` (C, r).
final class Adapter {
    let down, up: Linear
    let parallel: Bool
    let scale: Float
    init(prefix: String, dim: Int, width C: Int, parallel: Bool, scale: Double, rng: inout XRRandom) {
        let bound = 1 / Float(C).squareRoot()
        let dw = Parameter(prefix + "down.weight", [dim, C], (0..<(dim * C)).map { _ in (Float(rng.nextDouble()) * 2 - 1) * bound })
        down = Linear(prefix + "down", weight: dw, bias: Parameter(prefix + "down.bias", [dim]))
        up = Linear(prefix + "up", weight: Parameter(prefix + "up.weight", [C, dim]), bias: Parameter(prefix + "up.bias", [C]))
        self.parallel = parallel
        self.scale = Float(scale)
        for p in [down.weight, down.bias!, up.weight, up.bias!] { p.trainable = true }
    }
}

/// Per-block activations for one batch size.
final class BlockCache {
    let xIn, h1, qkv, attn, y1, xMid, h2, y2: Buffer
    let mean1, rstd1, mean2, rstd2: Buffer
    let probs, u, a: Buffer
    var lora: [String: LoRAActivations] = [:]
    /// Adapter input (sequential: the MLP output before the adapter), pre-activation, activation.
    var adIn: Buffer? = nil, adPre: Buffer? = nil, adAct: Buffer? = nil
    init(rows R: Int, c: TrainConfig, batch B: Int) {
        let C = c.dim, M = c.mlpHidden, T = c.tokens
        xIn = Buffer(R * C); h1 = Buffer(R * C); qkv = Buffer(R * 3 * C); attn = Buffer(R * C); y1 = Buffer(R * C)
        xMid = Buffer(R * C); h2 = Buffer(R * C); y2 = Buffer(R * C)
        mean1 = Buffer(R); rstd1 = Buffer(R); mean2 = Buffer(R); rstd2 = Buffer(R)
        probs = Buffer(B * c.heads * T * T); u = Buffer(R * M); a = Buffer(R * M)
    }
}

public final class TrainableViT: @unchecked Sendable {
    public let config: TrainConfig
    public let cls, pos, patchW, patchB, normW, normB, headW, headB: Parameter
    /// MLP head's first layer (`head.fc1.*`), when `config.headHidden` is set.
    public let headFc1W, headFc1B: Parameter?
    var headParameters: [Parameter] { [headFc1W, headFc1B].compactMap { $0 } + [headW, headB] }
    let blocks: [BlockParams]
    /// Every parameter (base and LoRA), in a fixed order.
    public private(set) var parameters: [Parameter] = []
    /// Training mode: LoRA dropout is active. `dropoutSeed` picks the masks (the training loop
    /// sets it per step, so a resumed run draws the same masks).
    public var training = false
    public var dropoutSeed: UInt64 = 0
    /// Activation recomputation: trainable blocks share one activation cache and keep only their
    /// input; the backward recomputes each block's activations before its gradients (about one
    /// extra forward of those blocks, far less memory).
    public var recompute = false { didSet { if recompute != oldValue { batch = 0 } } }
    private var savedInputs: [Buffer] = []
    private var lastForwardTraining = false
    /// The last forward returned patch tokens (every row through the final norm, no head).
    private var tokenMode = false
    /// With class-token pooling the last block's output is read only at the class token: that
    /// block computes keys and values for every token but attention, projection, MLP (and
    /// their gradients) for the class-token row alone. Exact; off only to compare against the
    /// every-row computation.
    var classTokenShortcut = true
    private var lastForwardClassToken = false

    // Activations for the current batch size.
    private var batch = 0
    private var caches: [BlockCache] = []
    private var cols = Buffer(0), x = Buffer(0), pooledIn = Buffer(0), pooled = Buffer(0), logits = Buffer(0)
    private var headPre = Buffer(0), headAct = Buffer(0)
    private var fMean = Buffer(0), fRstd = Buffer(0)
    private var tC = Buffer(0), tC2 = Buffer(0), t3C = Buffer(0), tM = Buffer(0), scratch = Buffer(0), attnScratch = Buffer(0)
    /// The residual-stream gradient at the class-token rows of the last block (B, C).
    private var classGrad = Buffer(0)

    /// Build from named tensors (timm names). `head.*` may be absent (a new zero head for
    /// `classes`); every other tensor must be present with the shape the config implies.
    public init(config c: TrainConfig, tensors: [String: Tensor], source: String) throws {
        config = c
        var used = Set<String>()
        func get(_ name: String, _ shape: [Int]) throws -> Parameter {
            guard let t = tensors[name] else { throw XRError("missing tensor", file: source, field: name) }
            guard t.shape.reduce(1, *) == shape.reduce(1, *), t.shape.filter({ $0 != 1 }) == shape.filter({ $0 != 1 }) else {
                throw XRError("shape \(t.shape) does not match the expected \(shape)", file: source, field: name)
            }
            used.insert(name)
            return Parameter(name, t.shape, t.scalars)
        }
        let C = c.dim, P = c.patch
        cls = try get("cls_token", [1, 1, C])
        pos = try get("pos_embed", [1, c.tokens, C])
        patchW = try get("patch_embed.proj.weight", [C, 3, P, P])
        patchB = try get("patch_embed.proj.bias", [C])
        blocks = try (0..<c.depth).map { try BlockParams($0, get, c: c) }
        normW = try get("norm.weight", [C])
        normB = try get("norm.bias", [C])
        let headIn = c.headHidden ?? C
        if let H = c.headHidden {
            guard H >= 1 else { throw XRError("head hidden width must be at least 1, got \(H)", field: "head_hidden") }
            if tensors["head.fc1.weight"] != nil {
                headFc1W = try get("head.fc1.weight", [H, C]); headFc1B = try get("head.fc1.bias", [H])
            } else {
                var rng = XRRandom(seed: 0, stream: [0x4EAD])
                let bound = 1 / Float(C).squareRoot()
                headFc1W = Parameter("head.fc1.weight", [H, C], (0..<(H * C)).map { _ in (Float(rng.nextDouble()) * 2 - 1) * bound })
                headFc1B = Parameter("head.fc1.bias", [H])
            }
        } else {
            headFc1W = nil; headFc1B = nil
        }
        if let hw = tensors["head.weight"], hw.shape == [c.classes, headIn] {
            headW = try get("head.weight", [c.classes, headIn])
            headB = try get("head.bias", [c.classes])
        } else {
            headW = Parameter("head.weight", [c.classes, headIn])
            headB = Parameter("head.bias", [c.classes])
        }
        let unused = Set(tensors.keys).subtracting(used).subtracting(["head.weight", "head.bias", "head.fc1.weight", "head.fc1.bias"]).sorted()
        if let u = unused.first { throw XRError("unused tensor (\(unused.count) in all): the checkpoint does not match the config", file: source, field: u) }
        parameters = [cls, pos, patchW, patchB] + blocks.flatMap(\.parameters) + [normW, normB] + headParameters
    }

    /// Infer the architecture of a timm ViT checkpoint from its tensor shapes.
    public static func config(of tensors: [String: Tensor], heads: Int, classes: Int?, source: String) throws -> TrainConfig {
        guard let pe = tensors["patch_embed.proj.weight"], pe.rank == 4, let posT = tensors["pos_embed"], let fc1 = tensors["blocks.0.mlp.fc1.weight"] else {
            throw XRError("not a timm ViT checkpoint (needs patch_embed.proj.weight, pos_embed, blocks.0.mlp.fc1.weight)", file: source)
        }
        var depth = 0
        while tensors["blocks.\(depth).attn.qkv.weight"] != nil { depth += 1 }
        let C = pe.shape[0], P = pe.shape[2], n = posT.shape[posT.rank - 2] - 1
        let g = Int(Double(n).squareRoot().rounded())
        guard g * g == n, C % heads == 0 else { throw XRError("position grid \(n) is not square or width \(C) not divisible by \(heads) heads", file: source, field: "pos_embed") }
        let K = classes ?? tensors["head.weight"]?.shape[0] ?? 0
        guard K >= 2 || (K == 1) else { throw XRError("the number of classes is unknown (no head in the checkpoint)", file: source, field: "head.weight") }
        return TrainConfig(dim: C, depth: depth, heads: heads, patch: P, imageSize: g * P, mlpHidden: fc1.shape[0], classes: K,
                           layerScale: tensors["blocks.0.ls1.gamma"] != nil)
    }

    /// Choose what trains. LoRA A matrices come from `loraInit` when given (e.g. a PEFT
    /// adapter), else PEFT's default: Kaiming-uniform(a = √5) from `seed`; B starts at zero.
    public func setTrainable(_ set: TrainableSet, loraInit: [String: Tensor] = [:], seed: UInt64 = 0) throws {
        for b in blocks { for l in b.linears { l.lora = nil }; b.adapter = nil }
        for p in parameters { p.trainable = false }
        var base = [cls, pos, patchW, patchB] + blocks.flatMap(\.parameters) + [normW, normB] + headParameters
        switch set {
        case .full:
            for p in base { p.trainable = true }
        case let .lastBlocks(k):
            guard k >= 0, k <= config.depth else { throw XRError("last \(k) blocks requested; the model has \(config.depth)", field: "last_k") }
            for b in blocks.suffix(k) { for p in b.parameters { p.trainable = true } }
            for p in [normW, normB] + headParameters { p.trainable = true }
        case .bitFit:
            for p in base where p.name.hasSuffix(".bias") { p.trainable = true }
            for p in headParameters { p.trainable = true }
        case .head:
            for p in headParameters { p.trainable = true }
        case let .adapter(dim, parallel, scale):
            guard dim >= 1 else { throw XRError("adapter width must be at least 1, got \(dim)", field: "adapter_dim") }
            var rng = XRRandom(seed: seed, stream: [0xADA9])
            for (i, b) in blocks.enumerated() {
                b.adapter = Adapter(prefix: "blocks.\(i).adapter.", dim: dim, width: config.dim, parallel: parallel, scale: scale, rng: &rng)
            }
            for p in headParameters { p.trainable = true }
        case let .lora(rank, alpha, targets, dropout):
            guard dropout >= 0 && dropout < 1 else { throw XRError("LoRA dropout must be in [0, 1), got \(dropout)", field: "dropout") }
            guard rank >= 1 else { throw XRError("LoRA rank must be at least 1, got \(rank)", field: "rank") }
            var rng = XRRandom(seed: seed, stream: [0x10BA])
            var matched = 0
            for b in blocks {
                for l in b.linears where targets.contains(where: { Self.matches(l.name, $0) }) {
                    matched += 1
                    let key = l.name + ".lora_A.weight"
                    var a: [Float]
                    if let t = loraInit[key] {
                        guard t.shape == [rank, l.inFeatures] else { throw XRError("shape \(t.shape), expected \([rank, l.inFeatures])", field: key) }
                        a = t.scalars
                    } else {
                        // kaiming_uniform_(a=√5) on (r, in): bound = 1/√in.
                        let bound = 1 / Float(l.inFeatures).squareRoot()
                        a = (0..<(rank * l.inFeatures)).map { _ in (Float(rng.nextDouble()) * 2 - 1) * bound }
                    }
                    l.lora = LoRA(prefix: l.name, rank: rank, alpha: alpha, inFeatures: l.inFeatures, outFeatures: l.outFeatures, a: a)
                    l.lora!.dropout = Float(dropout)
                }
            }
            guard matched > 0 else {
                throw XRError("LoRA target pattern(s) \(targets) match no linear layer", field: "targets",
                              hint: "layer names look like blocks.0.attn.qkv, blocks.0.attn.proj, blocks.0.mlp.fc1, blocks.0.mlp.fc2; patterns match a whole name or its last parts (qkv, attn.proj, mlp.*)")
            }
            for p in headParameters { p.trainable = true }
        }
        base += blocks.flatMap { $0.linears.compactMap(\.lora).flatMap { [$0.a, $0.b] } }
        base += blocks.flatMap(\.adapterParameters)
        parameters = base
        batch = 0   // LoRA caches are rebuilt
    }

    /// A pattern matches a layer name exactly, or its trailing dotted components (`qkv`,
    /// `attn.proj`), with `*` as a wildcard component (`mlp.*`, `blocks.11.*`).
    static func matches(_ name: String, _ pattern: String) -> Bool {
        let n = name.split(separator: "."), p = pattern.split(separator: ".")
        guard !p.isEmpty else { return false }
        if p.first == "blocks" || p.count == n.count {
            guard p.count == n.count else { return false }
            return zip(n, p).allSatisfy { $1 == "*" || $0 == $1 }
        }
        guard p.count <= n.count else { return false }
        return zip(n.suffix(p.count), p).allSatisfy { $1 == "*" || $0 == $1 }
    }

    public var trainableParameters: [Parameter] { parameters.filter(\.trainable) }

    /// Trainable parameter count.
    public var trainableCount: Int { trainableParameters.reduce(0) { $0 + $1.count } }

    private func prepare(batch B: Int) {
        if B == batch { return }
        let c = config, R = B * c.tokens, C = c.dim, M = c.mlpHidden, N = c.grid * c.grid, K = 3 * c.patch * c.patch
        // Blocks below the lowest trainable one need no saved activations: they share one cache.
        let keepFrom = max(0, lowestTrainableBlock ?? c.depth)
        var shared: BlockCache? = nil, sharedTrainable: BlockCache? = nil
        savedInputs = recompute ? blocks.indices.map { $0 >= keepFrom ? Buffer(R * C) : Buffer(0) } : []
        caches = blocks.enumerated().map { i, b in
            if i < keepFrom, let shared { return shared }
            if i >= keepFrom, recompute, let st = sharedTrainable {
                for l in b.linears {
                    if let lora = l.lora {
                        let drop = lora.dropout > 0
                        st.lora[l.name] = LoRAActivations(z: Buffer(R * lora.rank), xd: drop ? Buffer(R * l.inFeatures) : nil, mask: drop ? Buffer(R * l.inFeatures) : nil)
                    }
                }
                return st
            }
            let cache = BlockCache(rows: R, c: c, batch: B)
            for l in b.linears {
                if let lora = l.lora {
                    let drop = lora.dropout > 0
                    cache.lora[l.name] = LoRAActivations(z: Buffer(R * lora.rank), xd: drop ? Buffer(R * l.inFeatures) : nil, mask: drop ? Buffer(R * l.inFeatures) : nil)
                }
            }
            if let ad = b.adapter {
                let r = ad.down.outFeatures
                cache.adIn = ad.parallel ? nil : Buffer(R * C); cache.adPre = Buffer(R * r); cache.adAct = Buffer(R * r)
            }
            if i < keepFrom { shared = cache } else if recompute { sharedTrainable = cache }
            return cache
        }
        cols = Buffer(B * N * K); x = Buffer(R * C)
        let pooledRows = c.pooling == "token" && !tokenMode ? B : R
        pooledIn = Buffer(pooledRows * C); fMean = Buffer(pooledRows); fRstd = Buffer(pooledRows)
        pooled = Buffer(B * C); logits = Buffer(B * c.classes); classGrad = Buffer(B * C)
        headPre = Buffer(B * (c.headHidden ?? 1)); headAct = Buffer(B * (c.headHidden ?? 1))
        tC = Buffer(R * C); tC2 = Buffer(R * C); t3C = Buffer(R * 3 * C); tM = Buffer(R * M)
        let maxRank = max(blocks.flatMap { $0.linears.compactMap { $0.lora?.rank } }.max() ?? 0, blocks.compactMap { $0.adapter?.down.outFeatures }.max() ?? 0)
        scratch = Buffer(max(R * maxRank, B * C))
        attnScratch = Buffer(max(attentionTrainingScratchSize(tokens: c.tokens, headDim: C / c.heads, workers: Parallel.workers),
                                 attentionWorkspaceSize(tokens: c.tokens, headDim: C / c.heads, workers: Parallel.workers)))
        batch = B
    }

    /// Logits (B, classes) for pixels (B, 3, S, S), keeping activations for `backward`.
    public func forward(pixels: [Float], batch B: Int) throws -> [Float] {
        try run(pixels: pixels, batch: B, tokens: false)
    }

    /// Patch tokens (B, N, C) after the final norm — what the encoder's `patch_tokens` output
    /// holds — for pixels (B, 3, S, S), keeping activations for `backwardPatchTokens`.
    public func forwardPatchTokens(pixels: [Float], batch B: Int) throws -> [Float] {
        try run(pixels: pixels, batch: B, tokens: true)
    }

    private func run(pixels: [Float], batch B: Int, tokens: Bool) throws -> [Float] {
        if tokens != tokenMode { tokenMode = tokens; batch = 0 }
        var out: [Float] = []
        var failure: Error? = nil
        lastForwardTraining = training
        withSingleThreadedBLAS { do { out = try forwardBody(pixels: pixels, batch: B) } catch { failure = error } }
        if let failure { throw failure }
        return out
    }

    private func forwardBody(pixels: [Float], batch B: Int) throws -> [Float] {
        let c = config, S = c.imageSize, P = c.patch, C = c.dim, T = c.tokens, N = c.grid * c.grid, R = B * T, K = 3 * P * P
        guard pixels.count == B * 3 * S * S else { throw XRError("pixel buffer has \(pixels.count) values, expected \(B)×3×\(S)×\(S)", field: "pixels") }
        prepare(batch: B)
        pixels.withUnsafeBufferPointer { patchify(cols.p, $0.baseAddress!, batch: B, channels: 3, height: S, width: S, patch: P) }
        // Tokens: [cls | patches] + pos.
        let embed = Linear("patch_embed.proj", weight: patchW, bias: patchB, inFeatures: K)
        embed.forward(tC.p, cols.p, rows: B * N, lora: nil)
        for b in 0..<B {
            let xb = x.p + b * T * C
            for i in 0..<C { xb[i] = cls.value.p[i] + pos.value.p[i] }
            for n in 0..<N { for i in 0..<C { xb[(1 + n) * C + i] = tC.p[(b * N + n) * C + i] + pos.value.p[(1 + n) * C + i] } }
        }
        let firstSaved = max(0, lowestTrainableBlock ?? c.depth)
        let classToken = classTokenShortcut && c.pooling == "token" && !tokenMode
        lastForwardClassToken = classToken
        for (i, (bp, cache)) in zip(blocks, caches).enumerated() {
            if i == c.depth - 1 && classToken {
                if recompute && i >= firstSaved { savedInputs[i].p.update(from: x.p, count: R * C) }
                trainingBlock(i, bp, cache, x: x.p, batch: B, training: training, classToken: true)
                continue
            }
            if i < firstSaved {
                // Frozen and below every trainable parameter: the inference path (fused epilogues,
                // no saved activations).
                frozenBlock(bp, x: x.p, cache: cache, batch: B)
                continue
            }
            if recompute { savedInputs[i].p.update(from: x.p, count: R * C) }
            trainingBlock(i, bp, cache, x: x.p, batch: B, training: training)
        }
        if tokenMode {
            pooledIn.p.update(from: x.p, count: R * C)
            parallelLayerNorm(tC2.p, pooledIn.p, normW, normB, rows: R, cols: C, eps: c.eps, mean: fMean.p, rstd: fRstd.p)
            var out = [Float](repeating: 0, count: B * N * C)
            out.withUnsafeMutableBufferPointer { o in
                for b in 0..<B { (o.baseAddress! + b * N * C).update(from: tC2.p + (b * T + 1) * C, count: N * C) }
            }
            return out
        }
        // Final norm and pooling.
        if c.pooling == "token" {
            for b in 0..<B { (pooledIn.p + b * C).update(from: x.p + b * T * C, count: C) }
            layerNormForward(pooled.p, pooledIn.p, normW.value.p, normB.value.p, rows: B, cols: C, eps: c.eps, mean: fMean.p, rstd: fRstd.p)
        } else {
            pooledIn.p.update(from: x.p, count: R * C)
            layerNormForward(tC2.p, pooledIn.p, normW.value.p, normB.value.p, rows: R, cols: C, eps: c.eps, mean: fMean.p, rstd: fRstd.p)
            pooled.zero()
            for b in 0..<B { for n in 1..<T { for i in 0..<C { pooled.p[b * C + i] += tC2.p[(b * T + n) * C + i] / Float(N) } } }
        }
        var headInput = pooled.p, headWidth = C
        if let H = c.headHidden, let w1 = headFc1W, let b1 = headFc1B {
            BLAS.sgemm(headPre.p, pooled.p, w1.value.p, transB: true, m: B, n: H, k: C)
            addBias(headPre.p, b1.value.p, rows: B, cols: H)
            biasGELUForward(headAct.p, from: headPre.p, bias: nil, rows: B, cols: H)
            headInput = headAct.p; headWidth = H
        }
        BLAS.sgemm(logits.p, headInput, headW.value.p, transB: true, m: B, n: c.classes, k: headWidth)
        addBias(logits.p, headB.value.p, rows: B, cols: c.classes)
        return logits.array
    }

    /// The lowest block whose input gradient is needed (parameters at or above it train).
    private var lowestTrainableBlock: Int? {
        if [cls, pos, patchW, patchB].contains(where: \.trainable) { return -1 }
        for (i, b) in blocks.enumerated() where b.parameters.contains(where: \.trainable) || b.linears.contains(where: { $0.lora != nil }) || b.adapter != nil { return i }
        return nil
    }

    /// Accumulate gradients of the trainable parameters from dlogits (B, classes) of the last forward.
    public func backward(dlogits: [Float]) {
        precondition(!tokenMode, "backward: the last forward returned patch tokens; use backwardPatchTokens")
        withSingleThreadedBLAS { backwardBody(dlogits: dlogits) }
    }

    /// Accumulate gradients of the trainable parameters from d(patch tokens) (B, N, C) of the last
    /// `forwardPatchTokens`. The head takes no part.
    public func backwardPatchTokens(_ dtokens: [Float]) {
        precondition(tokenMode, "backwardPatchTokens: the last forward was not forwardPatchTokens")
        let c = config, B = batch, C = c.dim, T = c.tokens, R = B * T, N = c.grid * c.grid
        precondition(dtokens.count == B * N * C, "backwardPatchTokens: gradient must be (B, N, C) of the last forward")
        guard let lowest = lowestTrainableBlock ?? (normW.trainable || normB.trainable ? c.depth : nil) else { return }
        withSingleThreadedBLAS {
            tC2.zero()
            dtokens.withUnsafeBufferPointer { d in
                for b in 0..<B { (tC2.p + (b * T + 1) * C).update(from: d.baseAddress! + b * N * C, count: N * C) }
            }
            parallelLayerNormBackward(dx: lowest < c.depth ? x.p : nil, accumulate: false, dy: tC2.p, x: pooledIn.p, normW, normB,
                                      mean: fMean.p, rstd: fRstd.p, rows: R, cols: C)
            backwardBlocks(lowest: lowest)
        }
    }

    private func backwardBody(dlogits: [Float]) {
        let c = config, B = batch, C = c.dim, T = c.tokens, R = B * T, N = c.grid * c.grid
        precondition(dlogits.count == B * c.classes, "backward: dlogits must be (B, classes) of the last forward")
        let dl = Buffer(dlogits)
        let headInput = c.headHidden != nil ? headAct.p : pooled.p, headWidth = c.headHidden ?? C
        if let g = headW.grad { BLAS.sgemm(g.p, dl.p, transA: true, headInput, m: c.classes, n: headWidth, k: B, beta: 1) }
        if let g = headB.grad { addColumnSums(g.p, dl.p, rows: B, cols: c.classes) }
        // MLP head: back through GELU and the first layer to d(pooled), kept in `dHead` (B, C).
        var dHead: Buffer? = nil
        if let H = c.headHidden, let w1 = headFc1W {
            let da = Buffer(B * H)
            BLAS.sgemm(da.p, dl.p, headW.value.p, m: B, n: H, k: c.classes)
            geluBackward(da.p, preActivation: headPre.p, count: B * H)
            if let g = w1.grad { BLAS.sgemm(g.p, da.p, transA: true, pooled.p, m: H, n: C, k: B, beta: 1) }
            if let g = headFc1B?.grad { addColumnSums(g.p, da.p, rows: B, cols: H) }
            let dp = Buffer(B * C)
            BLAS.sgemm(dp.p, da.p, w1.value.p, m: B, n: C, k: H)
            dHead = dp
        }
        guard let lowest = lowestTrainableBlock ?? (normW.trainable || normB.trainable ? c.depth : nil) else { return }
        let needNorm = normW.trainable || normB.trainable || lowest < c.depth
        guard needNorm else { return }
        // dpooled (B, C) → through the final norm → dx (R, C).
        let dpooled = scratch
        if let dHead { dpooled.p.update(from: dHead.p, count: B * C) } else { BLAS.sgemm(dpooled.p, dl.p, headW.value.p, m: B, n: C, k: c.classes) }
        let dx = x   // reused: the residual-stream gradient
        dx.zero()
        if c.pooling == "token" {
            layerNormBackward(dx: tC.p, accumulate: false, dy: dpooled.p, x: pooledIn.p, weight: normW.value.p, mean: fMean.p, rstd: fRstd.p,
                              dweight: normW.grad?.p, dbias: normB.grad?.p, rows: B, cols: C)
            for b in 0..<B { (dx.p + b * T * C).update(from: tC.p + b * C, count: C) }
        } else {
            tC2.zero()
            for b in 0..<B { for n in 1..<T { for i in 0..<C { tC2.p[(b * T + n) * C + i] = dpooled.p[b * C + i] / Float(N) } } }
            layerNormBackward(dx: dx.p, accumulate: false, dy: tC2.p, x: pooledIn.p, weight: normW.value.p, mean: fMean.p, rstd: fRstd.p,
                              dweight: normW.grad?.p, dbias: normB.grad?.p, rows: R, cols: C)
        }
        backwardBlocks(lowest: lowest)
    }

    /// From the residual-stream gradient in `x` (B·T, C) at the last block's output down to the
    /// lowest trainable parameter.
    private func backwardBlocks(lowest: Int) {
        let c = config, B = batch, C = c.dim, T = c.tokens, R = B * T, M = c.mlpHidden, N = c.grid * c.grid
        let dx = x
        guard lowest < c.depth else { return }
        for i in stride(from: c.depth - 1, through: max(lowest, 0), by: -1) {
            let bp = blocks[i], cache = caches[i]
            if recompute {
                // Rebuild this block's activations from its saved input (same dropout masks).
                tC2.p.update(from: savedInputs[i].p, count: R * C)
                trainingBlock(i, bp, cache, x: tC2.p, batch: B, training: lastForwardTraining, classToken: i == c.depth - 1 && lastForwardClassToken)
            }
            let needInput = i > lowest
            // Rows past the attention: every row, or for the class-token last block one per image,
            // with their residual-stream gradient gathered into `classGrad`.
            let classToken = i == c.depth - 1 && lastForwardClassToken
            let Q = classToken ? B : R, dr = classToken ? classGrad.p : dx.p
            if classToken { for b in 0..<B { (dr + b * C).update(from: dx.p + b * T * C, count: C) } }
            // x = xMid + ls2 ⊙ y2 (a sequential adapter adds to dy2, so it must not be dr itself)
            let dy2 = branchGrad(tC.p, dr, bp.ls2, cache.y2.p, rows: Q, cols: C, copy: bp.adapter.map { !$0.parallel } ?? false)
            // Adapter branch: y2 += s · up(GELU(down(in))), in = y2 before the adapter (sequential) or h2 (parallel).
            var adapterInputGrad: UnsafeMutablePointer<Float>? = nil
            if let ad = bp.adapter, let pre = cache.adPre, let act = cache.adAct {
                let r = ad.down.outFeatures, s = ad.scale
                let dBranch = t3C.p   // free until the attention backward
                parallelRows(Q) { rr in for j in (rr.lowerBound * C)..<(rr.upperBound * C) { dBranch[j] = s * dy2[j] } }
                let dAct = scratch.p
                ad.up.backward(dinp: dAct, accumulate: false, dout: dBranch, inp: act.p, rows: Q, lora: nil, scratch: scratch.p)
                geluBackward(dAct, preActivation: pre.p, count: Q * r)
                let dIn = t3C.p + R * C
                ad.down.backward(dinp: dIn, accumulate: false, dout: dAct, inp: cache.adIn?.p ?? cache.h2.p, rows: Q, lora: nil, scratch: scratch.p)
                if ad.parallel { adapterInputGrad = dIn } else { parallelRows(Q) { rr in for j in (rr.lowerBound * C)..<(rr.upperBound * C) { dy2[j] += dIn[j] } } }
            }
            bp.fc2.backward(dinp: tM.p, accumulate: false, dout: dy2, inp: cache.a.p, rows: Q, lora: cache.lora[bp.fc2.name], scratch: scratch.p)
            parallelRows(Q) { r in geluBackward(tM.p + r.lowerBound * M, preActivation: cache.u.p + r.lowerBound * M, count: r.count * M) }
            bp.fc1.backward(dinp: tC2.p, accumulate: false, dout: tM.p, inp: cache.h2.p, rows: Q, lora: cache.lora[bp.fc1.name], scratch: scratch.p)
            if let g = adapterInputGrad { parallelRows(Q) { rr in for j in (rr.lowerBound * C)..<(rr.upperBound * C) { tC2.p[j] += g[j] } } }
            parallelLayerNormBackward(dx: dr, accumulate: true, dy: tC2.p, x: cache.xMid.p, bp.norm2w, bp.norm2b, mean: cache.mean2.p, rstd: cache.rstd2.p, rows: Q, cols: C)
            // xMid = xIn + ls1 ⊙ y1
            let dy1 = branchGrad(tC.p, dr, bp.ls1, cache.y1.p, rows: Q, cols: C)
            bp.proj.backward(dinp: tC2.p, accumulate: false, dout: dy1, inp: cache.attn.p, rows: Q, lora: cache.lora[bp.proj.name], scratch: scratch.p)
            if classToken {
                classTokenAttentionBackward(dqkv: t3C.p, dout: tC2.p, qkv: cache.qkv.p, probabilities: cache.probs.p, scratch: attnScratch.p,
                                            batch: B, tokens: T, heads: c.heads, headDim: C / c.heads)
                // The other rows' residual gradient is zero (nothing reads their output).
                for b in 0..<B { (dx.p + b * T * C).update(from: dr + b * C, count: C) }
            } else {
                attentionTrainingBackward(dqkv: t3C.p, dout: tC2.p, qkv: cache.qkv.p, probabilities: cache.probs.p, scratch: attnScratch.p,
                                          batch: B, tokens: T, heads: c.heads, headDim: C / c.heads)
            }
            let needH1 = needInput || bp.norm1w.trainable || bp.norm1b.trainable
            bp.qkv.backward(dinp: needH1 ? tC2.p : nil, accumulate: false, dout: t3C.p, inp: cache.h1.p, rows: R,
                            lora: cache.lora[bp.qkv.name], scratch: scratch.p)
            if needH1 {
                parallelLayerNormBackward(dx: needInput ? dx.p : nil, accumulate: true, dy: tC2.p, x: cache.xIn.p, bp.norm1w, bp.norm1b,
                                          mean: cache.mean1.p, rstd: cache.rstd1.p, rows: R, cols: C)
            }
        }
        guard lowest < 0 else { return }
        // Embedding: x[b, 0] = cls + pos[0]; x[b, 1+n] = cols W_pᵀ + b_p + pos[1+n].
        if let g = cls.grad { for b in 0..<B { for i in 0..<C { g.p[i] += dx.p[b * T * C + i] } } }
        if let g = pos.grad { for b in 0..<B { for j in 0..<(T * C) { g.p[j] += dx.p[b * T * C + j] } } }
        if patchW.grad != nil || patchB.grad != nil {
            for b in 0..<B { (tC.p + b * N * C).update(from: dx.p + (b * T + 1) * C, count: N * C) }
            let embed = Linear("patch_embed.proj", weight: patchW, bias: patchB, inFeatures: 3 * c.patch * c.patch)
            embed.backward(dinp: nil, accumulate: false, dout: tC.p, inp: cols.p, rows: B * N, lora: nil, scratch: scratch.p)
        }
    }

    /// One block with its activations kept in `cache` (x (B·T, C) is updated in place). With
    /// `classToken` (the last block under class-token pooling) everything past the keys and
    /// values runs on the B class-token rows only, kept compact (row b of attn, y1, xMid, …), and
    /// only those rows of x are updated.
    private func trainingBlock(_ i: Int, _ bp: BlockParams, _ cache: BlockCache, x xp: UnsafeMutablePointer<Float>, batch B: Int, training: Bool,
                               classToken: Bool = false) {
        let c = config, C = c.dim, T = c.tokens, R = B * T
        let Q = classToken ? B : R, stride = classToken ? T : 1   // rows past the attention; row q is x's row q · stride
        cache.xIn.p.update(from: xp, count: R * C)
        parallelLayerNorm(cache.h1.p, cache.xIn.p, bp.norm1w, bp.norm1b, rows: R, cols: C, eps: c.eps, mean: cache.mean1.p, rstd: cache.rstd1.p)
        func dseed(_ j: Int) -> UInt64? { training ? dropoutSeed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(4 * i + j) : nil }
        bp.qkv.forward(cache.qkv.p, cache.h1.p, rows: R, lora: cache.lora[bp.qkv.name], dropoutSeed: dseed(0))
        if classToken {
            classTokenAttentionForward(out: cache.attn.p, qkv: cache.qkv.p, probabilities: cache.probs.p, batch: B, tokens: T, heads: c.heads, headDim: C / c.heads)
        } else {
            attentionForward(cache.attn.p, cache.qkv.p, scores: attnScratch.p, batch: B, tokens: T, channels: C, heads: c.heads,
                             probabilities: cache.probs.p)
        }
        bp.proj.forward(cache.y1.p, cache.attn.p, rows: Q, lora: cache.lora[bp.proj.name], dropoutSeed: dseed(1))
        let M = c.mlpHidden
        parallelRows(Q) { r in
            let lo = r.lowerBound
            if classToken {
                for q in r { (cache.xMid.p + q * C).update(from: cache.xIn.p + q * stride * C, count: C) }
            } else {
                (cache.xMid.p + lo * C).update(from: cache.xIn.p + lo * C, count: r.count * C)
            }
            biasScaleResidual(cache.xMid.p + lo * C, cache.y1.p + lo * C, bias: nil, scale: bp.ls1?.value.p, rows: r.count, cols: C)
        }
        parallelLayerNorm(cache.h2.p, cache.xMid.p, bp.norm2w, bp.norm2b, rows: Q, cols: C, eps: c.eps, mean: cache.mean2.p, rstd: cache.rstd2.p)
        bp.fc1.forward(cache.u.p, cache.h2.p, rows: Q, lora: cache.lora[bp.fc1.name], dropoutSeed: dseed(2))
        parallelRows(Q) { r in
            let lo = r.lowerBound
            biasGELUForward(cache.a.p + lo * M, from: cache.u.p + lo * M, bias: nil, rows: r.count, cols: M)
        }
        bp.fc2.forward(cache.y2.p, cache.a.p, rows: Q, lora: cache.lora[bp.fc2.name], dropoutSeed: dseed(3))
        if let ad = bp.adapter, let pre = cache.adPre, let act = cache.adAct {
            let inp: UnsafeMutablePointer<Float>
            if let adIn = cache.adIn { adIn.p.update(from: cache.y2.p, count: Q * C); inp = adIn.p } else { inp = cache.h2.p }
            let r = ad.down.outFeatures
            ad.down.forward(pre.p, inp, rows: Q, lora: nil)
            biasGELUForward(act.p, from: pre.p, bias: nil, rows: Q, cols: r)
            ad.up.forward(tC.p, act.p, rows: Q, lora: nil)
            let s = ad.scale
            parallelRows(Q) { rr in for j in (rr.lowerBound * C)..<(rr.upperBound * C) { cache.y2.p[j] += s * tC.p[j] } }
        }
        parallelRows(Q) { r in
            let lo = r.lowerBound
            if classToken {
                for q in r {
                    (xp + q * stride * C).update(from: cache.xMid.p + q * C, count: C)
                    biasScaleResidual(xp + q * stride * C, cache.y2.p + q * C, bias: nil, scale: bp.ls2?.value.p, rows: 1, cols: C)
                }
            } else {
                (xp + lo * C).update(from: cache.xMid.p + lo * C, count: r.count * C)
                biasScaleResidual(xp + lo * C, cache.y2.p + lo * C, bias: nil, scale: bp.ls2?.value.p, rows: r.count, cols: C)
            }
        }
    }

    /// One block as the encoder runs it: x += ls1 ⊙ proj(attn(LN1 x)); x += ls2 ⊙ fc2(GELU(fc1(LN2 x))).
    private func frozenBlock(_ bp: BlockParams, x: UnsafeMutablePointer<Float>, cache: BlockCache, batch B: Int) {
        let c = config, C = c.dim, T = c.tokens, R = B * T
        let h = cache.h1.p, qkv = cache.qkv.p, attn = cache.attn.p, mlp = cache.u.p
        let X = SendablePointer(x), H = SendablePointer(h)
        // The bias, GELU and LayerScale + residual epilogues as the inference encoder runs them
        // (`PackedEpilogue`: in the packed kernel's stores).
        parallelRows(R) { r in layerNormForward(H.p + r.lowerBound * C, X.p + r.lowerBound * C, bp.norm1w.value.p, bp.norm1b.value.p, rows: r.count, cols: C, eps: c.eps) }
        bp.qkv.product(qkv, h, rows: R, finish: .bias(bp.qkv.bias!.value.p))
        attentionForward(attn, qkv, scores: attnScratch.p, batch: B, tokens: T, channels: C, heads: c.heads)
        func residual(_ l: Linear, _ ls: Parameter?) -> PackedEpilogue {
            .biasScaleResidual(bias: l.bias!.value.p, scale: ls?.value.p, residual: x, ld: C)
        }
        bp.proj.product(h, attn, rows: R, finish: residual(bp.proj, bp.ls1))
        parallelRows(R) { r in layerNormForward(H.p + r.lowerBound * C, X.p + r.lowerBound * C, bp.norm2w.value.p, bp.norm2b.value.p, rows: r.count, cols: C, eps: c.eps) }
        bp.fc1.product(mlp, h, rows: R, finish: .biasGELU(bp.fc1.bias!.value.p))
        bp.fc2.product(h, mlp, rows: R, finish: residual(bp.fc2, bp.ls2))
    }

    /// The gradient of a residual branch's output y (x = x_in + ls ⊙ y) from dx: dx ⊙ ls written
    /// to `out` (and dls += Σ dx ⊙ y). Without LayerScale it is dx itself, returned as is (read
    /// before dx next changes), or copied to `out` when the caller will modify it.
    private func branchGrad(_ out: UnsafeMutablePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ ls: Parameter?, _ y: UnsafePointer<Float>,
                            rows: Int, cols: Int, copy: Bool = false) -> UnsafeMutablePointer<Float> {
        guard let ls else {
            if !copy { return dx }
            parallelRows(rows) { r in (out + r.lowerBound * cols).update(from: dx + r.lowerBound * cols, count: r.count * cols) }
            return out
        }
        for r in 0..<rows {
            for i in 0..<cols {
                let g = dx[r * cols + i]
                out[r * cols + i] = g * ls.value.p[i]
                if let d = ls.grad { d.p[i] += g * y[r * cols + i] }
            }
        }
        return out
    }

    /// The pooled, normalised features (B, C) of the last forward (what the head sees).
    public var lastPooled: [Float] { Array(UnsafeBufferPointer(start: pooled.p, count: batch * config.dim)) }

    public func zeroGrad() { for p in parameters { p.grad?.zero() } }

    /// LoRA folded into the base weights: W + s · B A, per adapted layer.
    public func mergedWeights() -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for b in blocks {
            for l in b.linears {
                guard let lora = l.lora else { continue }
                var w = l.weight.value.array
                w.withUnsafeMutableBufferPointer { wp in
                    BLAS.sgemm(wp.baseAddress!, lora.b.value.p, lora.a.value.p, m: l.outFeatures, n: l.inFeatures, k: lora.rank, alpha: lora.scaling, beta: 1)
                }
                out[l.weight.name] = Tensor(shape: l.weight.shape, scalars: w)
            }
        }
        return out
    }

    /// Parameter by name.
    public func parameter(_ name: String) -> Parameter? { parameters.first { $0.name == name } }
}

/// Row-parallel LayerNorm forward (saving mean / rstd).
func parallelLayerNorm(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ w: Parameter, _ b: Parameter,
                       rows R: Int, cols C: Int, eps: Float, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>) {
    Parallel.ranges(R, minChunk: 16) { r in
        let lo = r.lowerBound
        layerNormForward(out + lo * C, inp + lo * C, w.value.p, b.value.p, rows: r.count, cols: C, eps: eps, mean: mean + lo, rstd: rstd + lo)
    }
}

/// Row-parallel LayerNorm backward: dx rows split across workers, parameter gradients by columns.
func parallelLayerNormBackward(dx: UnsafeMutablePointer<Float>?, accumulate: Bool, dy: UnsafePointer<Float>, x: UnsafePointer<Float>,
                               _ w: Parameter, _ b: Parameter, mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>, rows R: Int, cols C: Int) {
    if let dx {
        Parallel.ranges(R, minChunk: 16) { r in
            let lo = r.lowerBound
            layerNormBackward(dx: dx + lo * C, accumulate: accumulate, dy: dy + lo * C, x: x + lo * C, weight: w.value.p,
                              mean: mean + lo, rstd: rstd + lo, dweight: nil, dbias: nil, rows: r.count, cols: C)
        }
    }
    if w.grad != nil || b.grad != nil {
        Parallel.ranges(C, minChunk: 16) { cr in
            layerNormParameterGradients(dweight: w.grad?.p, dbias: b.grad?.p, dy: dy, x: x, mean: mean, rstd: rstd, rows: R, cols: C, columns: cr)
        }
    }
}

/// Row-parallel elementwise work over (R, C) rows.
func parallelRows(_ R: Int, _ body: (Range<Int>) -> Void) { Parallel.ranges(R, minChunk: 16, body) }

extension TrainableViT {
    /// timm tensor names and shapes of a config (head included).
    public static func tensorShapes(_ c: TrainConfig) -> [(String, [Int])] {
        let C = c.dim, M = c.mlpHidden, P = c.patch
        var s: [(String, [Int])] = [("cls_token", [1, 1, C]), ("pos_embed", [1, c.tokens, C]),
                                    ("patch_embed.proj.weight", [C, 3, P, P]), ("patch_embed.proj.bias", [C])]
        for i in 0..<c.depth {
            let p = "blocks.\(i)."
            s += [(p + "norm1.weight", [C]), (p + "norm1.bias", [C]), (p + "attn.qkv.weight", [3 * C, C]), (p + "attn.qkv.bias", [3 * C]),
                  (p + "attn.proj.weight", [C, C]), (p + "attn.proj.bias", [C]), (p + "norm2.weight", [C]), (p + "norm2.bias", [C]),
                  (p + "mlp.fc1.weight", [M, C]), (p + "mlp.fc1.bias", [M]), (p + "mlp.fc2.weight", [C, M]), (p + "mlp.fc2.bias", [C])]
            if c.layerScale { s += [(p + "ls1.gamma", [C]), (p + "ls2.gamma", [C])] }
        }
        s += [("norm.weight", [C]), ("norm.bias", [C]), ("head.weight", [c.classes, C]), ("head.bias", [c.classes])]
        return s
    }

    /// Random weights (matrices N(0, 1/fan_in), norms 1, biases 0.02·N(0, 1)), for benchmarks and tests.
    public static func random(_ c: TrainConfig, seed: UInt64 = 0) throws -> TrainableViT {
        var rng = XRRandom(seed: seed, stream: [0x7EA1])
        var t: [String: Tensor] = [:]
        for (name, shape) in tensorShapes(c) {
            let n = shape.reduce(1, *)
            let fan = shape.count >= 2 ? shape.dropFirst().reduce(1, *) : 1
            let v: [Float]
            if name.hasSuffix("norm1.weight") || name.hasSuffix("norm2.weight") || name == "norm.weight" || name.hasSuffix("gamma") {
                v = [Float](repeating: 1, count: n)
            } else if shape.count >= 2 {
                let s = 1 / Float(fan).squareRoot()
                v = (0..<n).map { _ in rng.nextGaussian() * s }
            } else {
                v = (0..<n).map { _ in rng.nextGaussian() * 0.02 }
            }
            t[name] = Tensor(shape: shape, scalars: v)
        }
        return try TrainableViT(config: c, tensors: t, source: "random")
    }
}
