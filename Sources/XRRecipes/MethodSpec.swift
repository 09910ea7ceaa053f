// The methods a recipe lists, each with its own typed settings. Defaults are filled in once, when
// the recipe is parsed (`RecipeLoader.parseMethod`) or a stored recipe is decoded, so consumers
// read plain values. YAML keys are snake_case (the coding keys); Swift names are camelCase.
import Foundation
import XRProbe
import XRTrain
import XRReport

/// Logistic regression on frozen features; C is searched by cross-validation inside the shots.
public struct LogisticSpec: Codable, Equatable, Sendable {
    /// The C grid searched.
    public var C: [Double]
    /// Fewer shots per class than this: no search, `defaultC`.
    public var cvMinShots: Int
    public var defaultC: Double
    public var folds: Int
    /// Where feature means and stds come from: every training-pool row, the shots, or none.
    public var standardize: Standardization
    /// The defaults.
    public init(C: [Double] = [0.01, 0.1, 1, 10], cvMinShots: Int = 4, defaultC: Double = 1.0, folds: Int = 3, standardize: Standardization = .pool) {
        self.C = C; self.cvMinShots = cvMinShots; self.defaultC = defaultC; self.folds = folds; self.standardize = standardize
    }
    public enum CodingKeys: String, CodingKey, CaseIterable { case C, cvMinShots = "cv_min_shots", defaultC = "default_C", folds, standardize }
}

/// k-nearest neighbours on cosine similarity; each k is its own curve.
public struct KNNSpec: Codable, Equatable, Sendable {
    public var k: [Int]
    /// Softmax temperature of the neighbours' votes.
    public var temperature: Double
    /// The defaults.
    public init(k: [Int] = [20], temperature: Double = 0.07) { self.k = k; self.temperature = temperature }
    public enum CodingKeys: String, CodingKey, CaseIterable { case k, temperature }
}

/// Nearest class mean (prototype) on cosine similarity.
public struct PrototypeSpec: Codable, Equatable, Sendable {
    public var temperature: Double
    /// The defaults.
    public init(temperature: Double = 0.07) { self.temperature = temperature }
    public enum CodingKeys: String, CodingKey, CaseIterable { case temperature }
}

/// Retrieval by cosine similarity on the representation itself: nothing is trained, so the
/// method has one cell per task (shots 0, seed 0), drawn as a flat line on the learning curve.
public struct CosineSpec: Codable, Equatable, Sendable {
    public init() {}
    /// No keys of its own.
    public func encode(to encoder: Encoder) throws {}
    public init(from decoder: Decoder) throws {}
}

/// Retrieval by cosine similarity after a linear projection fitted on `shots` labelled gallery
/// images per label value: within-class whitening with shrinkage, the metric of linear
/// discriminant analysis (`WithinClassWhitening`).
public struct LinearProjectionSpec: Equatable, Sendable {
    /// Shrinkage of the within-class covariance towards a multiple of the identity, in [0, 1];
    /// nil: the Ledoit–Wolf estimate (written `auto`).
    public var shrinkage: Double? = nil
    public init(shrinkage: Double? = nil) { self.shrinkage = shrinkage }
    public enum CodingKeys: String, CodingKey, CaseIterable { case shrinkage }
}

extension LinearProjectionSpec: Codable {
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        if let shrinkage { try c.encode(shrinkage, forKey: .shrinkage) } else { try c.encode("auto", forKey: .shrinkage) }
    }
    /// Keys left out take their defaults.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        shrinkage = (try? c.decodeIfPresent(Double.self, forKey: .shrinkage)) ?? nil
    }
}

/// Segmentation: a per-patch linear classifier on the frozen patch tokens, its logits bilinearly
/// upsampled to the model input and trained with a per-pixel loss (`LinearDecoder`).
public struct LinearDecoderSpec: Codable, Equatable, Sendable {
    public var epochs: Int
    /// Peak learning rate (AdamW, cosine decay to 0).
    public var lr: Double
    /// λ of the L2 penalty (λ / 2) · ‖W‖² in the loss.
    public var weightDecay: Double
    /// Images per optimiser step.
    public var batchSize: Int
    /// The defaults.
    public init(epochs: Int = 100, lr: Double = 1e-2, weightDecay: Double = 1e-4, batchSize: Int = 8) {
        self.epochs = epochs; self.lr = lr; self.weightDecay = weightDecay; self.batchSize = batchSize
    }
    public enum CodingKeys: String, CodingKey, CaseIterable { case epochs, lr, weightDecay = "weight_decay", batchSize = "batch_size" }
    /// Keys left out take their defaults.
    public init(from decoder: Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        epochs = try c.decodeIfPresent(Int.self, forKey: .epochs) ?? epochs
        lr = try c.decodeIfPresent(Double.self, forKey: .lr) ?? lr
        weightDecay = try c.decodeIfPresent(Double.self, forKey: .weightDecay) ?? weightDecay
        batchSize = try c.decodeIfPresent(Int.self, forKey: .batchSize) ?? batchSize
    }
}

/// Segmentation: label transfer from the k most similar labelled patches (`PatchKNN`).
public struct KNNPatchesSpec: Codable, Equatable, Sendable {
    public var k: Int
    /// Softmax temperature of the neighbours' votes.
    public var temperature: Double
    /// The defaults.
    public init(k: Int = 20, temperature: Double = 0.07) { self.k = k; self.temperature = temperature }
    public enum CodingKeys: String, CodingKey, CaseIterable { case k, temperature }
    /// Keys left out take their defaults.
    public init(from decoder: Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        k = try c.decodeIfPresent(Int.self, forKey: .k) ?? k
        temperature = try c.decodeIfPresent(Double.self, forKey: .temperature) ?? temperature
    }
}

/// The training settings every tuning method shares. `lr` and `layerDecay` default by method
/// (`init(for:)`). Encoded beside the method's own keys.
public struct TrainingSpec: Encodable, Equatable, Sendable {
    public var epochs = 30
    public var lr: Double
    public var batchSize = 8
    /// Gradient accumulation steps per optimiser step.
    public var accumulate = 1
    public var weightDecay = 0.05
    /// Linear warmup, as a share of all steps.
    public var warmup = 0.1
    public var labelSmoothing = 0.1
    /// Gradient-norm clip.
    public var clip = 1.0
    /// Per-block learning-rate decay towards the input (1 = none).
    public var layerDecay: Double
    /// Class-balanced batches.
    public var balanced = true
    public var augment = true
    public var hflip = false
    /// Early-stopping patience in epochs.
    public var patience = 10
    /// Validation images per class held out of the shots for early stopping.
    public var validation = 4
    /// Recompute activations in the backward pass instead of keeping them.
    public var recompute = false
    /// MLP head hidden width (nil = linear head).
    public var headHidden: Int? = nil

    /// The defaults of `method`: lr 1e-4 for `full` and `last_k` (1e-3 otherwise), layer decay 0.75
    /// for `full` (1 otherwise).
    public init(for method: Recipe.MethodName? = nil) {
        lr = method == .full || method == .last_k ? 1e-4 : 1e-3
        layerDecay = method == .full ? 0.75 : 1.0
    }

    public enum CodingKeys: String, CodingKey, CaseIterable {
        case epochs, lr, batchSize = "batch_size", accumulate, weightDecay = "weight_decay", warmup, labelSmoothing = "label_smoothing", clip,
            layerDecay = "layer_decay", balanced, augment, hflip, patience, validation, recompute, headHidden = "head_hidden"
    }

    /// Keys left out take the defaults of `method`.
    init(from decoder: Decoder, method: Recipe.MethodName) throws {
        self.init(for: method)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func read<T: Decodable>(_ v: inout T, _ k: CodingKeys) throws { v = try c.decodeIfPresent(T.self, forKey: k) ?? v }
        try read(&epochs, .epochs); try read(&lr, .lr); try read(&batchSize, .batchSize); try read(&accumulate, .accumulate)
        try read(&weightDecay, .weightDecay); try read(&warmup, .warmup); try read(&labelSmoothing, .labelSmoothing); try read(&clip, .clip)
        try read(&layerDecay, .layerDecay); try read(&balanced, .balanced); try read(&augment, .augment); try read(&hflip, .hflip)
        try read(&patience, .patience); try read(&validation, .validation); try read(&recompute, .recompute)
        headHidden = try c.decodeIfPresent(Int.self, forKey: .headHidden)
    }
}

/// LoRA on the encoder's linear layers, trained with a head on the shots.
public struct LoRASpec: Equatable, Sendable {
    public var lora = LoRASettings()
    public var training = TrainingSpec(for: .lora)
    public init(lora: LoRASettings = LoRASettings(), training: TrainingSpec = TrainingSpec(for: .lora)) { self.lora = lora; self.training = training }
}

/// Where bottleneck adapters sit: after the MLP (`sequential`) or beside it (`parallel`).
public enum AdapterPlacement: String, Codable, CaseIterable, Sendable { case sequential, parallel }

/// Bottleneck adapters in every block, trained with a head on the shots.
public struct AdapterSpec: Equatable, Sendable {
    public var dim = 32
    public var placement: AdapterPlacement = .sequential
    /// Output scale of parallel adapters.
    public var scale = 1.0
    public var training = TrainingSpec(for: .adapter)
    public init() {}
    public enum CodingKeys: String, CodingKey, CaseIterable { case dim = "adapter_dim", placement, scale = "adapter_scale" }
}

/// The encoder's last `blocks` blocks, trained with a head on the shots.
public struct LastKSpec: Equatable, Sendable {
    public var blocks = 2
    public var training = TrainingSpec(for: .last_k)
    public init() {}
    public enum CodingKeys: String, CodingKey, CaseIterable { case blocks }
}

/// BitFit: the encoder's biases, trained with a head on the shots.
public struct BitFitSpec: Equatable, Sendable {
    public var training = TrainingSpec(for: .bitfit)
    public init() {}
}

/// Every encoder parameter, trained with a head on the shots.
public struct FullSpec: Equatable, Sendable {
    public var training = TrainingSpec(for: .full)
    public init() {}
}

extension Recipe {
    /// The method names of label recipes, listed once.
    public enum MethodName: String, CaseIterable, Sendable {
        case logistic, knn, prototype, lora, adapter, last_k, bitfit, full
        case cosine, linear_projection
        case linear_decoder, knn_patches
        case box_head

        /// Methods that tune the encoder (they need `model`, i.e. images).
        public var isTuning: Bool {
            ![.logistic, .knn, .prototype, .cosine, .linear_projection, .linear_decoder, .knn_patches, .box_head].contains(self)
        }

        /// The task kind the method belongs to: retrieval methods rank images, the others classify.
        public var isRetrieval: Bool { self == .cosine || self == .linear_projection }

        /// Segmentation methods label pixels from patch tokens.
        public var isSegmentation: Bool { self == .linear_decoder || self == .knn_patches }

        /// The methods a task of kind `task` takes (report recipes list report encoders instead);
        /// segmentation and detection also take the tuning methods, with the linear decoder (the
        /// box head's, for detection) as their head.
        public static func names(for task: Recipe.TaskKind) -> [MethodName] {
            // Detection boxes come from a patch heatmap: the box head's (on frozen or tuned
            // tokens), or label transfer's.
            if task == .detection { return [.box_head, .knn_patches] + allCases.filter(\.isTuning) }
            return allCases.filter { $0 != .box_head }.filter {
                ($0.isRetrieval == (task == .retrieval) && $0.isSegmentation == (task == .segmentation)) || (task == .segmentation && $0.isTuning)
            }
        }

        /// The keys the method takes (besides `name`), in the order they are written.
        public var keys: [String] {
            let training = TrainingSpec.CodingKeys.allCases.map(\.stringValue)
            switch self {
            case .logistic: return LogisticSpec.CodingKeys.allCases.map(\.stringValue)
            case .knn: return KNNSpec.CodingKeys.allCases.map(\.stringValue)
            case .prototype: return PrototypeSpec.CodingKeys.allCases.map(\.stringValue)
            case .lora: return LoRASettings.CodingKeys.allCases.map(\.stringValue) + training
            case .adapter: return AdapterSpec.CodingKeys.allCases.map(\.stringValue) + training
            case .last_k: return LastKSpec.CodingKeys.allCases.map(\.stringValue) + training
            case .bitfit, .full: return training
            case .cosine: return []
            case .linear_projection: return LinearProjectionSpec.CodingKeys.allCases.map(\.stringValue)
            case .linear_decoder: return LinearDecoderSpec.CodingKeys.allCases.map(\.stringValue)
            case .knn_patches: return KNNPatchesSpec.CodingKeys.allCases.map(\.stringValue)
            case .box_head: return BoxHeadSpec.CodingKeys.allCases.map(\.stringValue)
            }
        }
    }

    /// A method and its settings, every default filled in. Encoded as one flat mapping:
    /// `name` followed by the method's keys.
    public enum Method: Codable, Equatable, Sendable {
        case logistic(LogisticSpec)
        case knn(KNNSpec)
        case prototype(PrototypeSpec)
        case lora(LoRASpec)
        case adapter(AdapterSpec)
        case lastK(LastKSpec)
        case bitfit(BitFitSpec)
        case full(FullSpec)
        /// Retrieval: cosine on the representation.
        case cosine(CosineSpec)
        /// Retrieval: cosine after a projection fitted on the shots.
        case linearProjection(LinearProjectionSpec)
        /// Segmentation: a linear decoder on the patch tokens.
        case linearDecoder(LinearDecoderSpec)
        /// Segmentation: label transfer from the nearest labelled patches.
        case knnPatches(KNNPatchesSpec)
        /// Detection: a patch-level "inside a box" head, boxes from its heatmap.
        case boxHead(BoxHeadSpec)
        /// Report recipes: how the encoder trains with the decoder.
        case reportEncoder(ReportEncoderSpec)

        /// The name written in the recipe.
        public var name: String {
            switch self {
            case .logistic: return MethodName.logistic.rawValue
            case .knn: return MethodName.knn.rawValue
            case .prototype: return MethodName.prototype.rawValue
            case .lora: return MethodName.lora.rawValue
            case .adapter: return MethodName.adapter.rawValue
            case .lastK: return MethodName.last_k.rawValue
            case .bitfit: return MethodName.bitfit.rawValue
            case .full: return MethodName.full.rawValue
            case .cosine: return MethodName.cosine.rawValue
            case .linearProjection: return MethodName.linear_projection.rawValue
            case .linearDecoder: return MethodName.linear_decoder.rawValue
            case .knnPatches: return MethodName.knn_patches.rawValue
            case .boxHead: return MethodName.box_head.rawValue
            case let .reportEncoder(e): return e.name
            }
        }

        /// A method of a label recipe that tunes the encoder (report encoders are not counted).
        public var isTuning: Bool { tuning != nil }

        /// What a tuning method trains in the encoder, and how (nil for probes and report encoders).
        public var tuning: (set: TrainableSet, training: TrainingSpec)? {
            switch self {
            case let .lora(s): return (s.lora.trainableSet, s.training)
            case let .adapter(s): return (.adapter(dim: s.dim, parallel: s.placement == .parallel, scale: s.scale), s.training)
            case let .lastK(s): return (.lastBlocks(s.blocks), s.training)
            case let .bitfit(s): return (.bitFit, s.training)
            case let .full(s): return (.full, s.training)
            case .logistic, .knn, .prototype, .reportEncoder, .cosine, .linearProjection, .linearDecoder, .knnPatches, .boxHead: return nil
            }
        }

        private struct NameKey: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(_ s: String) { stringValue = s }
            init?(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
            static let name = NameKey("name")
        }

        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: NameKey.self)
            try c.encode(name, forKey: .name)
            switch self {
            case let .logistic(s): try s.encode(to: encoder)
            case let .knn(s): try s.encode(to: encoder)
            case let .prototype(s): try s.encode(to: encoder)
            case let .lora(s): try s.lora.encode(to: encoder); try s.training.encode(to: encoder)
            case let .adapter(s):
                var a = encoder.container(keyedBy: AdapterSpec.CodingKeys.self)
                try a.encode(s.dim, forKey: .dim); try a.encode(s.placement, forKey: .placement); try a.encode(s.scale, forKey: .scale)
                try s.training.encode(to: encoder)
            case let .lastK(s):
                var a = encoder.container(keyedBy: LastKSpec.CodingKeys.self)
                try a.encode(s.blocks, forKey: .blocks)
                try s.training.encode(to: encoder)
            case let .bitfit(s): try s.training.encode(to: encoder)
            case let .full(s): try s.training.encode(to: encoder)
            case .cosine: break
            case let .linearProjection(s): try s.encode(to: encoder)
            case let .linearDecoder(s): try s.encode(to: encoder)
            case let .knnPatches(s): try s.encode(to: encoder)
            case let .boxHead(s): try s.encode(to: encoder)
            case let .reportEncoder(e): try e.encodeFields(to: encoder)
            }
        }

        /// Stored recipes (package manifests): keys left out take their defaults. A report
        /// encoder is told from a tuning method by its `lr_scale` (resolved report encoders always
        /// carry it; tuning methods never take it) or the name `frozen`.
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: NameKey.self)
            let name = try c.decode(String.self, forKey: .name)
            if name == ReportEncoderSpec.Kind.frozen.rawValue || c.contains(NameKey("lr_scale")), let kind = ReportEncoderSpec.Kind(rawValue: name) {
                self = .reportEncoder(try ReportEncoderSpec(kind: kind, fieldsFrom: decoder))
                return
            }
            guard let method = MethodName(rawValue: name) else {
                throw DecodingError.dataCorruptedError(forKey: .name, in: c, debugDescription: "unknown method '\(name)'")
            }
            switch method {
            case .logistic: self = .logistic(try LogisticSpec(from: decoder))
            case .knn: self = .knn(try KNNSpec(from: decoder))
            case .prototype: self = .prototype(try PrototypeSpec(from: decoder))
            case .lora: self = .lora(LoRASpec(lora: try LoRASettings(from: decoder), training: try TrainingSpec(from: decoder, method: .lora)))
            case .adapter:
                var s = AdapterSpec()
                let a = try decoder.container(keyedBy: AdapterSpec.CodingKeys.self)
                s.dim = try a.decodeIfPresent(Int.self, forKey: .dim) ?? s.dim
                s.placement = try a.decodeIfPresent(AdapterPlacement.self, forKey: .placement) ?? s.placement
                s.scale = try a.decodeIfPresent(Double.self, forKey: .scale) ?? s.scale
                s.training = try TrainingSpec(from: decoder, method: .adapter)
                self = .adapter(s)
            case .last_k:
                var s = LastKSpec()
                s.blocks = try decoder.container(keyedBy: LastKSpec.CodingKeys.self).decodeIfPresent(Int.self, forKey: .blocks) ?? s.blocks
                s.training = try TrainingSpec(from: decoder, method: .last_k)
                self = .lastK(s)
            case .bitfit: self = .bitfit(BitFitSpec(training: try TrainingSpec(from: decoder, method: .bitfit)))
            case .full: self = .full(FullSpec(training: try TrainingSpec(from: decoder, method: .full)))
            case .cosine: self = .cosine(CosineSpec())
            case .linear_projection: self = .linearProjection(try LinearProjectionSpec(from: decoder))
            case .linear_decoder: self = .linearDecoder(try LinearDecoderSpec(from: decoder))
            case .knn_patches: self = .knnPatches(try KNNPatchesSpec(from: decoder))
            case .box_head: self = .boxHead(try BoxHeadSpec(from: decoder))
            }
        }
    }
}

extension LogisticSpec {
    /// Keys left out take their defaults.
    public init(from decoder: Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        C = try c.decodeIfPresent([Double].self, forKey: .C) ?? C
        cvMinShots = try c.decodeIfPresent(Int.self, forKey: .cvMinShots) ?? cvMinShots
        defaultC = try c.decodeIfPresent(Double.self, forKey: .defaultC) ?? defaultC
        folds = try c.decodeIfPresent(Int.self, forKey: .folds) ?? folds
        standardize = try c.decodeIfPresent(Standardization.self, forKey: .standardize) ?? standardize
    }
}

extension KNNSpec {
    /// Keys left out take their defaults.
    public init(from decoder: Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        k = try c.decodeIfPresent([Int].self, forKey: .k) ?? k
        temperature = try c.decodeIfPresent(Double.self, forKey: .temperature) ?? temperature
    }
}

extension PrototypeSpec {
    /// Keys left out take their defaults.
    public init(from decoder: Decoder) throws {
        self.init()
        temperature = try decoder.container(keyedBy: CodingKeys.self).decodeIfPresent(Double.self, forKey: .temperature) ?? temperature
    }
}

extension BitFitSpec { init(training: TrainingSpec) { self.training = training } }
extension FullSpec { init(training: TrainingSpec) { self.training = training } }
