// The detection keys of a recipe: `data.boxes` (required for `task: detection`, an error on any
// other task), `data.box_label_column` and `data.other_box_images`, and the `box_head` method's spec. Errors name the key
// with its line:column.
import Foundation
import XRHeads

/// Detection: a patch-level linear head trained on the boxes rasterised to pixels (inside a box =
/// foreground), its heatmap thresholded into connected components whose bounding boxes are the
/// predicted boxes (`BoxHead`).
public struct BoxHeadSpec: Codable, Equatable, Sendable {
    public var epochs: Int
    /// Peak learning rate (AdamW, cosine decay to 0).
    public var lr: Double
    /// λ of the L2 penalty (λ / 2) · ‖W‖² in the loss.
    public var weightDecay: Double
    /// Images per optimiser step.
    public var batchSize: Int
    /// Weight of pixels inside a box in the binary loss (findings are small: > 1 counters the
    /// imbalance).
    public var positiveWeight: Double
    /// Logit threshold of the heatmap (0 = probability ½).
    public var threshold: Double
    /// How a component is scored: its largest or its mean logit.
    public var scoring: ComponentScore
    /// The defaults.
    public init(
        epochs: Int = 100, lr: Double = 1e-2, weightDecay: Double = 1e-4, batchSize: Int = 8, positiveWeight: Double = 1, threshold: Double = 0,
        scoring: ComponentScore = .max
    ) {
        self.epochs = epochs
        self.lr = lr
        self.weightDecay = weightDecay
        self.batchSize = batchSize
        self.positiveWeight = positiveWeight
        self.threshold = threshold
        self.scoring = scoring
    }
    public enum CodingKeys: String, CodingKey, CaseIterable {
        case epochs, lr, weightDecay = "weight_decay", batchSize = "batch_size", positiveWeight = "positive_weight", threshold, scoring
    }
    /// Keys left out take their defaults.
    public init(from decoder: Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        epochs = try c.decodeIfPresent(Int.self, forKey: .epochs) ?? epochs
        lr = try c.decodeIfPresent(Double.self, forKey: .lr) ?? lr
        weightDecay = try c.decodeIfPresent(Double.self, forKey: .weightDecay) ?? weightDecay
        batchSize = try c.decodeIfPresent(Int.self, forKey: .batchSize) ?? batchSize
        positiveWeight = try c.decodeIfPresent(Double.self, forKey: .positiveWeight) ?? positiveWeight
        threshold = try c.decodeIfPresent(Double.self, forKey: .threshold) ?? threshold
        scoring = try c.decodeIfPresent(ComponentScore.self, forKey: .scoring) ?? scoring
    }
}

extension RecipeLoader {
    /// `data.boxes`, `data.box_label_column` and `data.other_box_images`: read for a detection
    /// task, errors for any other; a detection task takes `labels` only with `box_label_column`
    /// (the box labels kept), and `other_box_images` only with `labels`.
    static func parseBoxKeys(_ d: [String: YNode], node dn: YNode, into data: inout Recipe.DataSpec) {
        let ctx = dn.ctx
        let isDetection = data.task == .detection
        for key in ["boxes", "box_label_column", "other_box_images"] {
            if !isDetection, let n = d[key], !n.isNull {
                ctx.record(n.error("\(key) applies to detection tasks only", hint: "set data.task: detection, or remove \(key)"))
            }
        }
        guard isDetection else { return }
        if let n = d["boxes"], !n.isNull { data.boxes = ctx.attempt { try n.string() } }
        if data.boxes == nil, d["boxes"]?.isNull ?? true {
            ctx.record(
                dn.error(
                    "a detection task needs boxes: a CSV of true boxes (image, x, y, width, height)",
                    hint: "e.g. boxes: annotations/boxes.csv (relative to the recipe; images without rows are negatives)"))
        }
        if let n = d["box_label_column"], !n.isNull { data.box_label_column = ctx.attempt { try n.string() } }
        for key in ["label_column", "label_columns"] {
            if let n = d[key], !n.isNull {
                ctx.record(n.error("\(key) does not apply to a detection task", hint: "the boxes are the labels: give data.boxes"))
            }
        }
        if let n = d["labels"], !n.isNull, (try? n.listOrScalar())?.isEmpty == false {
            if data.box_label_column == nil {
                ctx.record(
                    n.error(
                        "labels of a detection task name box labels: give box_label_column too",
                        hint: "leave labels out to use every box, or set box_label_column: <the boxes CSV's label column>"))
            } else {
                data.labels = ctx.attempt { try n.listOrScalar().map { try $0.string() } } ?? []
                if Set(data.labels).count != data.labels.count { ctx.record(n.error("a label is listed twice")) }
            }
        }
        if let n = d["other_box_images"], !n.isNull {
            let names = Recipe.DataSpec.OtherBoxImages.allCases.map(\.rawValue)
            data.other_box_images = ctx.attempt {
                let s = try n.string()
                guard let v = Recipe.DataSpec.OtherBoxImages(rawValue: s) else {
                    throw n.error("unknown other_box_images '\(s)'", hint: "other_box_images: " + names.joined(separator: ", "))
                }
                return v
            }
            if data.labels.isEmpty {
                ctx.record(
                    n.error(
                        "other_box_images applies when labels name the box labels kept",
                        hint: "give box_label_column and labels, or remove other_box_images (without labels every box is a target)"))
            }
        }
    }

    /// A `box_head` method entry, defaults filled in.
    static func parseBoxHead(_ f: MethodFields) -> BoxHeadSpec {
        var s = BoxHeadSpec()
        s.epochs = f.atLeast("epochs", 1) ?? s.epochs
        s.lr = f.positive("lr") ?? s.lr
        s.weightDecay = f.unit("weight_decay") ?? s.weightDecay
        s.batchSize = f.atLeast("batch_size", 1) ?? s.batchSize
        s.positiveWeight = f.positive("positive_weight") ?? s.positiveWeight
        if let n = f.m["threshold"] {
            s.threshold =
                f.ctx.attempt {
                    let x = try n.double()
                    if !x.isFinite || abs(x) > 50 { throw n.error("threshold is a logit between -50 and 50, got \(x)") }
                    return x
                } ?? s.threshold
        }
        s.scoring = f.choice("scoring", ComponentScore.self) ?? s.scoring
        return s
    }
}
