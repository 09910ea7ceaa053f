// The recipe: one YAML file describing a few-shot study. Schema documented in docs/recipes.md.
//
// Resolution is layered: built-in defaults (the property initialisers here and in
// MethodSpec.swift) → the file → `--set key.path=value` overrides. The resolved value has every
// default filled in, so `resolved.yaml` says exactly what ran. Reading: RecipeLoader.swift (files,
// overrides), RecipeValidation.swift (the schema), MethodParsing.swift (the `methods` entries).
import Foundation
import XRProbe
import Yams
import XRTensor
import XRTrain
import XRModels

/// A fully resolved recipe (built-in defaults → file → `--set` overrides). Paths are stored
/// as written; `LoadedRecipe.resolve` makes relative ones absolute (against the recipe's folder).
/// Property names are the YAML keys.
public struct Recipe: Codable, Equatable, Sendable {
    /// The encoder for image manifests.
    public struct Model: Codable, Equatable, Sendable {
        /// Hugging Face folder (`config.json` + weights) or a `.safetensors` file.
        public var path: String
        /// Named architecture for bare checkpoints (`ViTConfig.presetNames`).
        public var preset: String?
        /// Attention heads, for bare checkpoints without a preset.
        public var heads: Int?
        public var batch_size: Int = 8
        /// Explicit image preparation, for checkpoints without `preprocessor_config.json` (or to override it).
        public var preprocessing: Preprocess?
        /// The encoder's linear layers for frozen features: fp32 (nil, the default) or int8. Tuning
        /// methods start from the fp32 weights whatever this says.
        public var precision: Precision?
    }
    /// Resize the shorter side to `size`, centre-crop `crop`, normalise with `mean` / `std`.
    public struct Preprocess: Codable, Equatable, Sendable {
        public var size: Int
        public var crop: Int?
        public var mean: [Double]
        public var std: [Double]
        /// bicubic or bilinear.
        public var interpolation: String = "bicubic"
    }
    public struct Subgroup: Codable, Equatable, Sendable {
        public var column: String
        /// Numeric bin edges (e.g. age [0, 40, 60, 120] → "0-40", "40-60", "60-120"); nil = categorical.
        public var bins: [Double]?
    }
    public struct DataSpec: Codable, Equatable, Sendable {
        /// CSV, one row per image (or per feature row): ids, labels, patient, split, subgroup columns.
        public var manifest: String
        /// Image path column (relative to the manifest's folder); also the row id.
        public var image_column: String = "path"
        /// Pipe-separated labels in one column …
        public var label_column: String?
        /// … or one 0/1 column per label (label name → column).
        public var label_columns: [String: String]?
        /// Label names: the binary tasks (multilabel), the classes (multiclass), or the one positive label (binary).
        public var labels: [String]
        /// What the study measures (`TaskKind`).
        public var task: TaskKind = .multilabel
        public var patient_column: String?
        public var split_column: String?
        public var test_fraction: Double = 0.3
        public var subgroups: [String: Subgroup] = [:]
        /// Keep only rows whose column holds one of the listed values (column → values).
        public var `where`: [String: [String]] = [:]
        /// Segmentation tasks: the column of mask PNG paths (relative to the manifest's folder;
        /// empty = the image is not annotated).
        public var mask_column: String? = nil
        /// Segmentation tasks: the mask pixel value of each class (class 0 = background first);
        /// nil reads masks as 0 = background, non-zero = foreground.
        public var mask_classes: [Int]? = nil
        /// Detection tasks: the CSV of true boxes (relative to the recipe's folder): one row per box,
        /// the image (as the manifest's `image_column` names it), `x`, `y`, `width`, `height` in
        /// pixels of that image; images without rows are negatives.
        public var boxes: String? = nil
        /// Detection tasks: the boxes CSV's label column; with it, `labels` lists the labels whose
        /// boxes are targets.
        public var box_label_column: String? = nil
        /// Detection tasks with `labels`: what an image whose boxes all carry other labels is
        /// (nil = `left_out`).
        public var other_box_images: OtherBoxImages? = nil

        /// Detection tasks with `labels`: an image whose boxes all carry labels other than the
        /// kept ones is left out of the task (it may show the finding unboxed), or a negative.
        public enum OtherBoxImages: String, Codable, Sendable, CaseIterable {
            case left_out, negative
        }
    }
    /// Precomputed features instead of a model.
    public struct Features: Codable, Equatable, Sendable {
        /// A `.safetensors` file (tensors named by `representation`, or `tensor`), a `.npy` (N, D)
        /// matrix, or the `feats.npy` name given to `xrlab embed` (which writes `feats.<tensor>.npy`).
        /// Rows follow the embed sidecar (`feats.json`) when present, else the manifest row for row.
        public var matrix: String
        /// One tensor name to use as is, instead of the tensors `representation` names.
        public var tensor: String?
    }
    public var version: Int = 1
    public var name: String
    public var model: Model?
    public var data: DataSpec
    public var features: Features?
    /// Concatenated image features: `cls`, `pooled` (the model's pre-logits feature), `patch_mean`, `lastN_cls`.
    public var representation: [String] = ["cls"]
    public var methods: [Method]
    /// Labelled examples per class (sorted, unique).
    public var shots: [Int]
    public var seeds: Int = 5
    public var metrics: [String] = ["auroc", "auprc", "balanced_accuracy"]
    public var primary_metric: String = "auroc"
    /// Bootstrap resamples over test images (0 disables).
    public var bootstrap: Int = 1000
    /// Subgroup gaps are flagged at Benjamini–Hochberg q ≤ `fdr` over the study's settings.
    /// Always set when parsed; nil only in recipes stored before the key existed.
    public var subgroups: SubgroupSettings? = nil
    public struct SubgroupSettings: Codable, Equatable, Sendable { public var fdr = 0.05; public init(fdr: Double = 0.05) { self.fdr = fdr } }
    /// `budget.targets` (`auroc=0.85`): report.md gains a "labels needed" table, as `xrlab budget`
    /// computes it. Nil when the key is absent.
    public var budget: BudgetSettings? = nil
    public struct BudgetSettings: Codable, Equatable, Sendable { public var targets: [String]; public init(targets: [String]) { self.targets = targets } }
    /// `selection`: active labelling simulated with the run (as `xrlab suggest --simulate`): per
    /// seed of `seeds`, each strategy starts from the same `start` random rows and picks up to each
    /// count of `rounds`; its cells share the run's `cells/`. Nil when the key is absent.
    public var selection: SelectionSettings? = nil
    public struct SelectionSettings: Codable, Equatable, Sendable {
        public var strategies: [SelectionStrategy]
        public var start: Int
        public var rounds: [Int]
        /// One task only (nil: every task jointly).
        public var task: String?
        public init(strategies: [SelectionStrategy], start: Int, rounds: [Int], task: String? = nil) {
            self.strategies = strategies; self.start = start; self.rounds = rounds; self.task = task
        }
    }
    /// Run directory.
    public var output: String
    /// Report recipes (`data.task: report`): the decoder, its training and decoding. `shots`
    /// then counts paired training reports (0 = all of them).
    public var report: ReportSettings? = nil

    /// `retrieval` recipes (`data.task: retrieval`): gallery, relevance and cut-offs. Nil for
    /// other tasks.
    public var retrieval: RetrievalSettings? = nil

    /// Paired reports instead of labels: a low-data sweep of report generation.
    public var isReport: Bool { data.task == .report }
    /// Image retrieval by label value (`data.task: retrieval`).
    public var isRetrieval: Bool { data.task == .retrieval }
    /// Segmentation on frozen patch tokens (`data.task: segmentation`).
    public var isSegmentation: Bool { data.task == .segmentation }
    /// Localisation of findings by boxes on frozen patch tokens (`data.task: detection`).
    public var isDetection: Bool { data.task == .detection }
    /// Tasks whose features are every patch token of each image (segmentation, detection).
    public var usesPatchTokens: Bool { isSegmentation || isDetection }

    /// What a study measures, the value of `data.task`. Each kind has its own methods, metrics and
    /// cells; a new kind (segmentation, detection) is a new case here.
    public enum TaskKind: String, Codable, CaseIterable, Sendable {
        /// One binary task per label.
        case multilabel
        /// One task over `labels` (one class per row).
        case multiclass
        /// One label, present or absent.
        case binary
        /// Report generation from paired reports.
        case report
        /// Image retrieval: test images query the gallery; relevant = sharing a value of `label_column`.
        case retrieval
        /// Segmentation: a mask PNG per annotated image (`data.mask_column`), predicted per pixel
        /// from the encoder's frozen patch tokens.
        case segmentation
        /// Localisation: boxes per image (`data.boxes`), predicted from a patch-level heatmap on the
        /// encoder's frozen patch tokens.
        case detection
    }

    /// Settings of retrieval recipes (`retrieval:`), every default filled in at parse time.
    public struct RetrievalSettings: Codable, Equatable, Sendable {
        /// What a query is ranked against: the training rows, or every row but the query.
        public enum Gallery: String, Codable, CaseIterable, Sendable { case train, all }
        public var gallery: Gallery = .train
        /// Multi-valued labels: relevant when sharing any value, or all of them.
        public var relevance: RetrievalRelevance = .any
        /// The cut-offs of precision@k and recall@k (sorted, unique).
        public var k: [Int] = [1, 5, 10]
        /// Neighbours written per query to neighbours.csv (default: the largest k).
        public var neighbours: Int = 10
        /// Queries drawn on each contact sheet (0: none).
        public var sheet_queries: Int = 6
        public init() {}
        public static let keys = ["gallery", "relevance", "k", "neighbours", "sheet_queries"]
        /// The metric names of these settings: map_at_r, mrr, precision_at_<k>, recall_at_<k>.
        public var metricNames: [String] {
            ["map_at_r", "mrr"] + k.map { "precision_at_\($0)" } + k.map { "recall_at_\($0)" }
        }
    }

    /// Settings of report recipes.
    public struct ReportSettings: Codable, Equatable, Sendable {
        /// findings, impression or both.
        public var target = "both"
        /// Hugging Face tokenizer.json (nil: trained on each cell's training reports).
        public var tokenizer: String? = nil
        public var vocab_size = 2000
        public var dim = 256, layers = 4, heads = 4, max_tokens = 128, pool = 2
        /// cross_attention (every block attends to the visual tokens) or prefix (they precede the text).
        public var visual_input = "cross_attention"
        /// GPT-2-layout safetensors to start the decoder from.
        public var init_from: String? = nil
        /// METEOR 1.5 resources (pycocoevalcap's meteor/ directory, meteor-1.5.jar, or the jar's
        /// layout); needed for the `meteor` metric.
        public var meteor_data: String? = nil
        public var epochs = 10, batch_size = 8
        public var lr = 5e-4, weight_decay = 0.01, warmup = 0.1, label_smoothing = 0.1, clip = 1.0
        public var beams = 3, max_new_tokens = 128, no_repeat_ngram = 3
        public var length_penalty = 1.0
        /// Keep each cell's weights (decoder.safetensors, encoder_tuned.safetensors); drafts and
        /// model.json are always kept.
        public var keep_models = false
        public init() {}
        public static let keys = [
            "target", "tokenizer", "vocab_size", "dim", "layers", "heads", "max_tokens", "pool", "visual_input", "init_from", "meteor_data", "epochs",
            "batch_size",
            "lr", "weight_decay", "warmup", "label_smoothing", "clip", "beams", "max_new_tokens", "no_repeat_ngram", "length_penalty", "keep_models"
        ]
    }

    public static let knownMetrics = ["auroc", "auprc", "accuracy", "balanced_accuracy", "f1_macro", "ece", "log_loss"]
    public static let knownTasks = TaskKind.allCases.map(\.rawValue)
    /// A retrieval metric name: map_at_r, mrr, precision_at_<k>, recall_at_<k> (k ≥ 1).
    public static func isRetrievalMetric(_ m: String) -> Bool {
        if m == "map_at_r" || m == "mrr" { return true }
        for prefix in ["precision_at_", "recall_at_"] where m.hasPrefix(prefix) {
            if let k = Int(m.dropFirst(prefix.count)), k >= 1 { return true }
        }
        return false
    }
    /// The metrics of segmentation tasks: per-image Dice, IoU and HD95 averaged over test images,
    /// and Dice / IoU pooled over every test pixel.
    public static let segmentationMetrics = ["dice", "iou", "hd95", "dice_pooled", "iou_pooled"]
    /// The metrics of detection tasks: AP at IoU 0.1 / 0.3 / 0.5, FROC sensitivity at 0.5, 1, 2,
    /// 4 false positives per image (IoU ≥ 0.3), pointing game, image-level AUROC of the heatmap maximum.
    public static let detectionMetrics = [
        "ap_10", "ap_30", "ap_50", "froc_0.5", "froc_1", "froc_2", "froc_4", "pointing_game", "auroc"
    ]
    public static let reportMetrics = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d", "ce_precision", "ce_recall", "ce_f1"]
    /// Fields that only say where results go or how finished cells are summarised; they do not
    /// enter the fingerprint.
    public static let outputOnlyFields: Set<String> = ["output", "subgroups", "budget", "selection"]

    /// `lastN_cls` → N (nil for other names).
    public static func lastBlocks(_ representation: String) -> Int? {
        guard representation.hasPrefix("last"), representation.hasSuffix("_cls"),
            let n = Int(representation.dropFirst(4).dropLast(4)), n >= 1
        else { return nil }
        return n
    }
}

/// A string key for encoding dictionaries in sorted order.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

extension KeyedEncodingContainer {
    /// Encode a dictionary with its keys in sorted order, so resolved recipes and fingerprints
    /// do not depend on hash seeds.
    mutating func encodeSorted<V: Encodable>(_ dict: [String: V], forKey key: Key) throws {
        var nested = nestedContainer(keyedBy: AnyKey.self, forKey: key)
        for k in dict.keys.sorted() { if let v = dict[k] { try nested.encode(v, forKey: AnyKey(k)) } }
    }
}

extension Recipe.DataSpec {
    enum CodingKeys: String, CodingKey {
        case manifest, image_column, label_column, label_columns, labels, task, patient_column, split_column,
            test_fraction, subgroups, `where`, mask_column, mask_classes, boxes, box_label_column,
            other_box_images
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(manifest, forKey: .manifest)
        try c.encode(image_column, forKey: .image_column)
        try c.encodeIfPresent(label_column, forKey: .label_column)
        if let lc = label_columns { try c.encodeSorted(lc, forKey: .label_columns) }
        try c.encode(labels, forKey: .labels)
        try c.encode(task, forKey: .task)
        try c.encodeIfPresent(patient_column, forKey: .patient_column)
        try c.encodeIfPresent(split_column, forKey: .split_column)
        try c.encode(test_fraction, forKey: .test_fraction)
        try c.encodeSorted(subgroups, forKey: .subgroups)
        try c.encodeSorted(self.where, forKey: .where)
        try c.encodeIfPresent(mask_column, forKey: .mask_column)
        try c.encodeIfPresent(mask_classes, forKey: .mask_classes)
        try c.encodeIfPresent(boxes, forKey: .boxes)
        try c.encodeIfPresent(box_label_column, forKey: .box_label_column)
        try c.encodeIfPresent(other_box_images, forKey: .other_box_images)
    }
}
