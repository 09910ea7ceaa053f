// A ViT encoder built from a loaded one (its `ViTConfig` and canonical parameter names, see
// XRModels/ViTKeys.swift) with a classification head on the class token or the patch mean, a
// forward that keeps what the backward needs (TrainableViTForward.swift) and a backward that
// fills gradients of the trainable parameters only (TrainableViTBackward.swift).
// B batch, T tokens, C width, M MLP width, H heads, P patch, N patches, R registers, K classes.
import Foundation
import XRTensor
import XRKernels
import XRModels

/// A trainable encoder: the encoder's architecture at the training input size, and the head.
public struct TrainConfig: Codable, Sendable, Equatable {
    /// The encoder as loaded, at the training input size (`imageSize`, a multiple of the patch
    /// size; its position embeddings cover that grid).
    public var encoder: ViTConfig
    public var classes: Int
    /// `token` (class token after the final norm) or `mean` (patch tokens after the final norm).
    /// EVA-02 encoders ignore it: they pool by `fc_norm` of the patch-token mean, as timm's `Eva`.
    public var pooling: String = "token"
    /// Hidden width of an MLP head (linear → GELU → linear); nil = a linear head.
    public var headHidden: Int? = nil

    public init(encoder: ViTConfig, classes: Int, pooling: String = "token", headHidden: Int? = nil) {
        self.encoder = encoder; self.classes = classes; self.pooling = pooling; self.headHidden = headHidden
    }

    /// A timm ViT (class token, position embeddings on it, qkv bias), for tests and benchmarks.
    public init(
        dim: Int, depth: Int, heads: Int, patch: Int, imageSize: Int, mlpHidden: Int, classes: Int,
        layerScale: Bool, eps: Float = 1e-6, pooling: String = "token", headHidden: Int? = nil
    ) {
        self.init(
            encoder: ViTConfig(
                imageSize: imageSize, patchSize: patch, dim: dim, depth: depth, heads: heads, mlpHidden: mlpHidden,
                layerScale: layerScale, layerNormEps: eps),
            classes: classes, pooling: pooling, headHidden: headHidden)
    }

    public var dim: Int { encoder.dim }
    public var depth: Int { encoder.depth }
    public var heads: Int { encoder.heads }
    public var patch: Int { encoder.patchSize }
    public var imageSize: Int { encoder.imageSize }
    public var mlpHidden: Int { encoder.mlpHidden }
    public var layerScale: Bool { encoder.layerScale }
    public var eps: Float { encoder.layerNormEps }
    /// Register tokens between the class token and the patches.
    public var registers: Int { encoder.numRegisters }
    public var grid: Int { encoder.grid }
    /// Tokens per image: class token, registers, patches.
    public var tokens: Int { encoder.tokens }
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

public final class TrainableViT: @unchecked Sendable {
    public let config: TrainConfig
    public let cls, pos, patchW, patchB, normW, normB, headW, headB: Parameter
    /// Register tokens (1, R, C), when the encoder has them.
    public let registers: Parameter?
    /// Class token, registers, position embeddings, patch embedding: the token assembly's parameters.
    var embeddingParameters: [Parameter] { [cls] + (registers.map { [$0] } ?? []) + [pos, patchW, patchB] }
    /// MLP head's first layer (`head.fc1.*`), when `config.headHidden` is set.
    public let headFc1W, headFc1B: Parameter?
    var headParameters: [Parameter] { [headFc1W, headFc1B].compactMap { $0 } + [headW, headB] }
    let blocks: [any TrainableBlock]
    /// RoPE angles and scratch of an EVA-02 encoder (nil for a pre-norm ViT).
    let evaState: EVATrainingState?
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
    var savedInputs: [Buffer] = []
    var lastForwardTraining = false
    /// The last forward returned patch tokens (every row through the final norm, no head).
    var tokenMode = false
    /// With class-token pooling the last block's output is read only at the class token: that
    /// block computes keys and values for every token but attention, projection, MLP (and
    /// their gradients) for the class-token row alone. Exact; off only to compare against the
    /// every-row computation.
    var classTokenShortcut = true
    var lastForwardClassToken = false

    // Activations for the current batch size.
    var batch = 0
    var caches: [BlockCache] = []
    var cols = Buffer(0), x = Buffer(0), pooledIn = Buffer(0), pooled = Buffer(0), logits = Buffer(0)
    var headPre = Buffer(0), headAct = Buffer(0)
    var fMean = Buffer(0), fRstd = Buffer(0)
    var tC = Buffer(0), tC2 = Buffer(0), t3C = Buffer(0), tM = Buffer(0), scratch = Buffer(0), attnScratch = Buffer(0)
    /// The residual-stream gradient at the class-token rows of the last block (B, C).
    var classGrad = Buffer(0)

    /// The encoder `loaded` as a trainable model for square inputs of `size` pixels (position
    /// embeddings resized to that grid with the checkpoint family's own rule), with a new head
    /// of `classes` outputs (an MLP head of width `headHidden` when given). `source` names the
    /// model in errors (default: its first weight file).
    public convenience init(from loaded: LoadedViT, size: Int, classes: Int, headHidden: Int? = nil, source: String? = nil) throws {
        let config = TrainConfig(encoder: loaded.config.resized(to: size), classes: classes, headHidden: headHidden)
        try self.init(
            config: config, tensors: try loaded.model.timmTensors(size: size),
            source: source ?? loaded.weightFiles.first?.path ?? "model")
    }

    /// Build from tensors under their canonical names (`ViTConfig.parameterShapes` of
    /// `config.encoder`). `head.*` may be absent (a new zero head for `classes`); every other
    /// tensor must be present with its shape, and none may be left over. An encoder without a
    /// qkv bias gets a zero one (trainable like any bias).
    public init(config c: TrainConfig, tensors: [String: Tensor], source: String) throws {
        config = c
        let eva = c.encoder.blockKind == .eva02
        if eva {
            let D = c.heads > 0 ? c.dim / c.heads : 0
            guard c.heads > 0, D * c.heads == c.dim, D % 4 == 0 else {
                throw XRError("EVA-02 needs a head size that is a multiple of 4 (dim \(c.dim), \(c.heads) heads)", file: source, field: "heads")
            }
            guard c.registers == 0, c.encoder.posEmbedPrefix == 1 else {
                throw XRError("EVA-02 encoders have a class token with a position embedding and no registers", file: source, field: "model")
            }
        }
        evaState = eva ? EVATrainingState(c) : nil
        var shapes: [String: [Int]] = [:]
        for (name, shape) in c.encoder.parameterShapes { shapes[name] = shape }
        var used = Set<String>()
        func load(_ name: String, _ shape: [Int]) throws -> Parameter {
            guard let t = tensors[name] else { throw XRError("missing tensor", file: source, field: name) }
            guard t.shape.reduce(1, *) == shape.reduce(1, *), t.shape.filter({ $0 != 1 }) == shape.filter({ $0 != 1 }) else {
                throw XRError("shape \(t.shape) does not match the expected \(shape)", file: source, field: name)
            }
            used.insert(name)
            return Parameter(name, t.shape, t.scalars)
        }
        func get(_ name: String) throws -> Parameter {
            guard let shape = shapes[name] else { throw XRError("not a parameter of this encoder configuration", file: source, field: name) }
            return try load(name, shape)
        }
        let C = c.dim
        cls = try get(ViTKeys.classToken)
        registers = c.registers > 0 ? try get(ViTKeys.registers) : nil
        pos = try get(ViTKeys.posEmbed)
        patchW = try get(ViTKeys.patchWeight)
        patchB = try get(ViTKeys.patchBias)
        // EVA-02: its blocks, and `fc_norm` (on the pooled patch mean) as the final norm.
        blocks = try (0..<c.depth).map { i -> any TrainableBlock in
            if eva { return try EVABlockParams(i, get, c: c) }
            return try BlockParams(i, get, c: c)
        }
        normW = try get(eva ? EVAKeys.fcNormWeight : ViTKeys.normWeight)
        normB = try get(eva ? EVAKeys.fcNormBias : ViTKeys.normBias)
        let headIn = c.headHidden ?? C
        if let H = c.headHidden {
            guard H >= 1 else { throw XRError("head hidden width must be at least 1, got \(H)", field: "head_hidden") }
            if tensors["head.fc1.weight"] != nil {
                headFc1W = try load("head.fc1.weight", [H, C]); headFc1B = try load("head.fc1.bias", [H])
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
            headW = try load("head.weight", [c.classes, headIn])
            headB = try load("head.bias", [c.classes])
        } else {
            headW = Parameter("head.weight", [c.classes, headIn])
            headB = Parameter("head.bias", [c.classes])
        }
        let unused = Set(tensors.keys).subtracting(used).subtracting(["head.weight", "head.bias", "head.fc1.weight", "head.fc1.bias"]).sorted()
        if let u = unused.first { throw XRError("unused tensor (\(unused.count) in all): the checkpoint does not match the config", file: source, field: u) }
        parameters = embeddingParameters + blocks.flatMap(\.parameters) + [normW, normB] + headParameters
    }

    /// Choose what trains. LoRA A matrices come from `loraInit` when given (e.g. a PEFT
    /// adapter), else PEFT's default: Kaiming-uniform(a = √5) from `seed`; B starts at zero.
    public func setTrainable(_ set: TrainableSet, loraInit: [String: Tensor] = [:], seed: UInt64 = 0) throws {
        for b in blocks { for l in b.linears { l.lora = nil }; b.adapter = nil }
        for p in parameters { p.trainable = false }
        var base = embeddingParameters + blocks.flatMap(\.parameters) + [normW, normB] + headParameters
        switch set {
        case .full:
            for p in base { p.trainable = true }
        case let .lastBlocks(k):
            guard k >= 0, k <= config.depth else { throw XRError("last \(k) blocks requested; the model has \(config.depth)", field: "last_k") }
            for b in blocks.suffix(k) { for p in b.parameters { p.trainable = true } }
            for p in [normW, normB] + headParameters { p.trainable = true }
        case .bitFit:
            for p in base where p.name.hasSuffix(".bias") || p.name.hasSuffix("_bias") { p.trainable = true } // EVA's q_bias, v_bias
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
                throw XRError(
                    "LoRA target pattern(s) \(targets) match no linear layer", field: "targets",
                    hint:
                        "layer names look like blocks.0.attn.qkv, blocks.0.attn.proj, blocks.0.mlp.fc1, blocks.0.mlp.fc2 (EVA-02 also attn.q_proj / k_proj / v_proj, mlp.fc1_g / fc1_x); patterns match a whole name or its last parts (qkv, attn.proj, mlp.*)"
                )
            }
            for p in headParameters { p.trainable = true }
        }
        base += blocks.flatMap { $0.linears.compactMap(\.lora).flatMap { [$0.a, $0.b] } }
        base += blocks.flatMap(\.adapterParameters)
        parameters = base
        batch = 0 // LoRA caches are rebuilt
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

    /// The lowest block whose input gradient is needed (parameters at or above it train).
    var lowestTrainableBlock: Int? {
        if embeddingParameters.contains(where: \.trainable) { return -1 }
        for (i, b) in blocks.enumerated() where b.parameters.contains(where: \.trainable) || b.linears.contains(where: { $0.lora != nil }) || b.adapter != nil {
            return i
        }
        return nil
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

extension TrainableViT {
    /// Canonical tensor names and shapes of a config, head included.
    public static func tensorShapes(_ c: TrainConfig) -> [(String, [Int])] {
        c.encoder.parameterShapes.map { ($0.name, $0.shape) } + [("head.weight", [c.classes, c.dim]), ("head.bias", [c.classes])]
    }

    /// Random weights (matrices N(0, 1/fan_in), norms 1, biases 0.02·N(0, 1)), for benchmarks and tests.
    public static func random(_ c: TrainConfig, seed: UInt64 = 0) throws -> TrainableViT {
        var rng = XRRandom(seed: seed, stream: [0x7EA1])
        var t: [String: Tensor] = [:]
        for (name, shape) in tensorShapes(c) {
            let n = shape.reduce(1, *)
            let fan = shape.count >= 2 ? shape.dropFirst().reduce(1, *) : 1
            let v: [Float]
            if name.hasSuffix("norm1.weight") || name.hasSuffix("norm2.weight") || name.hasSuffix("norm.weight") || name.hasSuffix("gamma") {
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
