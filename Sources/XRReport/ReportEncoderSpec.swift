// The encoder setting of a report model: frozen, or tuned with the decoder (LoRA or its last k
// blocks). Defaults live here only; report recipes and `xrlab report train` both build this type.
import Foundation
import XRTrain

/// LoRA on the encoder, trained with the decoder.
public struct ReportLoRASpec: Equatable, Sendable {
    public var lora: LoRASettings
    /// The encoder's learning rate as a multiple of the decoder's.
    public var lrScale: Double
    /// The defaults: LoRA's own (rank 8, alpha 16, on qkv), the encoder at the decoder's learning rate.
    public init(lora: LoRASettings = LoRASettings(), lrScale: Double = 1.0) { self.lora = lora; self.lrScale = lrScale }
}

/// The encoder's last `blocks` blocks (and final norm), trained with the decoder.
public struct ReportLastKSpec: Equatable, Sendable {
    public var blocks: Int
    /// The encoder's learning rate as a multiple of the decoder's.
    public var lrScale: Double
    /// The defaults: the last 2 blocks at a tenth of the decoder's learning rate.
    public init(blocks: Int = 2, lrScale: Double = 0.1) { self.blocks = blocks; self.lrScale = lrScale }
}

/// The encoder setting of a report model. Encoded (model.json's `encoder_tuning`) as
/// `{method, rank, alpha, targets, dropout, lr_scale}` / `{method, blocks, lr_scale}` / `{method}`.
public enum ReportEncoderSpec: Codable, Sendable, Equatable {
    case frozen
    case lora(ReportLoRASpec)
    case lastK(ReportLastKSpec)

    /// The setting names, listed once: `frozen`, `lora`, `last_k`.
    public enum Kind: String, CaseIterable, Sendable {
        case frozen, lora, last_k
        /// The keys each setting takes (besides its name), in the order they are written.
        public var keys: [String] {
            switch self {
            case .frozen: return []
            case .lora: return LoRASettings.CodingKeys.allCases.map(\.stringValue) + [FieldKey.lr_scale.stringValue]
            case .last_k: return [FieldKey.blocks.stringValue, FieldKey.lr_scale.stringValue]
            }
        }
    }

    enum FieldKey: String, CodingKey { case method, blocks, lr_scale }

    public var kind: Kind {
        switch self {
        case .frozen: return .frozen
        case .lora: return .lora
        case .lastK: return .last_k
        }
    }

    /// `frozen`, `lora` or `last_k`.
    public var name: String { kind.rawValue }

    public var isFrozen: Bool { self == .frozen }

    /// The encoder's learning rate as a multiple of the decoder's (1 when frozen).
    public var lrScale: Double {
        switch self {
        case .frozen: return 1
        case let .lora(s): return s.lrScale
        case let .lastK(s): return s.lrScale
        }
    }

    /// What trains in the encoder (nil = frozen).
    public var trainableSet: TrainableSet? {
        switch self {
        case .frozen: return nil
        case let .lora(s): return s.lora.trainableSet
        case let .lastK(s): return .lastBlocks(s.blocks)
        }
    }

    public var description: String {
        switch self {
        case let .lora(s):
            return "encoder LoRA r=\(s.lora.rank), alpha=\(fmt(s.lora.alpha)) on \(s.lora.targets.joined(separator: ", ")), lr ×\(fmt(s.lrScale))"
        case let .lastK(s): return "encoder last \(s.blocks) block\(s.blocks == 1 ? "" : "s") tuned, lr ×\(fmt(s.lrScale))"
        case .frozen: return "frozen encoder"
        }
    }
    private func fmt(_ x: Double) -> String { x == x.rounded() && abs(x) < 1e9 ? String(Int(x)) : String(x) }

    /// The setting's fields (not its name) into `encoder`'s keyed container.
    public func encodeFields(to encoder: Encoder) throws {
        switch self {
        case .frozen: break
        case let .lora(s):
            try s.lora.encode(to: encoder)
            var c = encoder.container(keyedBy: FieldKey.self)
            try c.encode(s.lrScale, forKey: .lr_scale)
        case let .lastK(s):
            var c = encoder.container(keyedBy: FieldKey.self)
            try c.encode(s.blocks, forKey: .blocks)
            try c.encode(s.lrScale, forKey: .lr_scale)
        }
    }

    /// A setting of `kind` read from `decoder`'s keyed container; keys left out take their defaults.
    public init(kind: Kind, fieldsFrom decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: FieldKey.self)
        switch kind {
        case .frozen: self = .frozen
        case .lora:
            self = .lora(
                ReportLoRASpec(
                    lora: try LoRASettings(from: decoder), lrScale: try c.decodeIfPresent(Double.self, forKey: .lr_scale) ?? ReportLoRASpec().lrScale))
        case .last_k:
            let d = ReportLastKSpec()
            self = .lastK(
                ReportLastKSpec(
                    blocks: try c.decodeIfPresent(Int.self, forKey: .blocks) ?? d.blocks,
                    lrScale: try c.decodeIfPresent(Double.self, forKey: .lr_scale) ?? d.lrScale))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: FieldKey.self)
        try c.encode(name, forKey: .method)
        try encodeFields(to: encoder)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: FieldKey.self)
        let name = try c.decode(String.self, forKey: .method)
        guard let kind = Kind(rawValue: name) else {
            throw DecodingError.dataCorruptedError(
                forKey: .method, in: c,
                debugDescription: "unknown encoder method '\(name)' (use "
                    + Kind.allCases.map(\.rawValue).joined(separator: ", ") + ")")
        }
        try self.init(kind: kind, fieldsFrom: decoder)
    }
}
