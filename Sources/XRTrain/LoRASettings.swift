// LoRA settings shared by the tuning methods of label recipes and the tuned encoder of report
// recipes: one place for their defaults (rank 8, alpha 2·rank, on qkv, no dropout).
import Foundation

/// Low-rank adapters on the encoder's linear layers (Hu et al. 2021, "LoRA: Low-Rank Adaptation of
/// Large Language Models"): W + (alpha / rank)·B·A on every layer whose name matches a target.
public struct LoRASettings: Codable, Equatable, Sendable {
    /// Rank r of the update B·A.
    public var rank: Int
    /// Scale numerator: the update is multiplied by alpha / r.
    public var alpha: Double
    /// Layer name patterns (`qkv`, `proj`, `fc1`, `fc2`, `mlp.*`).
    public var targets: [String]
    /// Dropout on the LoRA branch's input while training (PEFT's `lora_dropout`).
    public var dropout: Double

    /// The defaults: rank 8, alpha 2·rank, on `qkv`, no dropout.
    public init(rank: Int = 8, alpha: Double? = nil, targets: [String] = ["qkv"], dropout: Double = 0) {
        self.rank = rank
        self.alpha = alpha ?? Double(2 * rank)
        self.targets = targets
        self.dropout = dropout
    }

    /// Keys left out take their defaults.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            rank: try c.decodeIfPresent(Int.self, forKey: .rank) ?? 8, alpha: try c.decodeIfPresent(Double.self, forKey: .alpha),
            targets: try c.decodeIfPresent([String].self, forKey: .targets) ?? ["qkv"], dropout: try c.decodeIfPresent(Double.self, forKey: .dropout) ?? 0)
    }

    /// The YAML / JSON keys, in the order they are written.
    public enum CodingKeys: String, CodingKey, CaseIterable { case rank, alpha, targets, dropout }

    /// What trains in the encoder.
    public var trainableSet: TrainableSet { .lora(rank: rank, alpha: alpha, targets: targets, dropout: dropout) }
}
