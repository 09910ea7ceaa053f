// What `manifest.json` inside an `.xrpkg` holds. Every field a user needs to apply the model
// correctly (base encoder, preprocessing, representation, heads, thresholds) and to judge it
// (training-data fingerprint, metrics with intervals, subgroups, calibration, the recipe).
import Foundation
import XRTensor
import XRData
import XRModels
import XRProbe
import XRHeads
import XRRecipes

public struct PackageManifest: Codable, Equatable, Sendable {
    /// Archive format written by this xrlab; readers accept this and every earlier version.
    public static let formatVersion = 1
    public static let formatName = "xrlab-package"
    /// The xrlab release that introduced each format version (index = version − 1).
    public static let formatIntroducedIn = ["0.1.0"]

    public var format: String
    public var format_version: Int
    /// Oldest xrlab that reads this archive.
    public var requires_xrlab: String
    public var name: String
    public var version: String
    /// ISO 8601, UTC.
    public var created: String
    public var xrlab_version: String
    public var base_encoder: BaseEncoder
    public var method: MethodInfo
    /// `multilabel`, `multiclass` or `binary`.
    public var task: String
    public var labels: [String]
    public var heads: [HeadInfo]
    public var training_data: DataFingerprint
    public var evaluation: [TaskEvaluation]
    /// The recipe as run (defaults filled in; file locations reduced to file names).
    public var recipe: Recipe
    /// Archive entries besides manifest.json and SHA256SUMS.
    public var files: [String]
    /// What the package predicts (`PackageKind`); absent for classification, which every reader
    /// reads. A reader refuses a kind it does not know by name, so kinds are added without a new
    /// format version.
    public var kind: String? = nil
    /// Segmentation packages: the patch grid the decoder reads and the masks' pixel values.
    public var segmentation: SegmentationSpec? = nil
    /// Retrieval packages: how the gallery is searched.
    public var retrieval: RetrievalSpec? = nil
    /// Detection packages: the patch grid the head reads and how boxes are read off its heatmap.
    public var detection: DetectionSpec? = nil

    /// The package's kind (classification when the manifest names none).
    public var packageKind: PackageKind { kind.flatMap(PackageKind.init(rawValue:)) ?? .classification }
}

/// What a package predicts, and so what `predict` writes.
public enum PackageKind: String, Codable, CaseIterable, Sendable {
    /// Class probabilities and decisions per label (CSV).
    case classification
    /// A mask PNG per image at its original size, and a CSV of foreground fractions.
    case segmentation
    /// The nearest gallery images of each image (CSV).
    case retrieval
    /// Boxes per image in image pixels and an image score (CSVs), heatmap overlays on request.
    case detection
}

/// How a segmentation package maps images to patch logits and back: the base encoder's
/// preprocessing (`base_encoder.preprocessing`: resize, then crop or pad) takes an image to the
/// model input of `input_height × input_width` pixels, the encoder's patch tokens form a
/// `grid_height × grid_width` grid over it, and the decoder's patch logits are bilinearly resampled
/// through the inverse of that transform to the image's own size (pixels the crop cut away are
/// background).
public struct SegmentationSpec: Codable, Equatable, Sendable {
    public var input_height: Int
    public var input_width: Int
    public var grid_height: Int
    public var grid_width: Int
    /// Mask pixel value of each class (index = class); nil: two classes written as 0 / 255.
    public var mask_classes: [Int]?
}

/// How a detection package maps images to boxes: the base encoder's preprocessing takes an image
/// to the `input_height × input_width` model input, the `box_head` (a two-class linear decoder,
/// tensors `weight` (1, C), `bias` (1)) gives a logit per patch of the `grid_height × grid_width`
/// grid, bilinearly upsampled to the model input; over the part of the input that shows the image,
/// pixels whose logit is above `threshold` form 8-connected components (every component, whatever
/// its size), each one box: its bounding box mapped back through the preprocessing to image pixels,
/// clipped to the image, scored by the component's largest or mean logit (`scoring`). The image
/// score is the largest logit over the image.
public struct DetectionSpec: Codable, Equatable, Sendable {
    public var input_height: Int
    public var input_width: Int
    public var grid_height: Int
    public var grid_width: Int
    /// Logit threshold of the heatmap (0 = probability ½).
    public var threshold: Double
    /// `max` or `mean` logit of a component.
    public var scoring: ComponentScore
    /// What the boxes mark: the kept box labels joined by `+`, or `boxes` (all boxes).
    public var finding: String
    /// The box labels the head was trained on (`data.labels` with `data.box_label_column`); nil: every box.
    public var box_labels: [String]?
}

/// How a retrieval package searches its gallery: cosine similarity of L2-normalised features
/// (after the packaged projection, when there is one), exact, ties to the earlier gallery row.
/// Each head's gallery images are listed in `gallery.<i>.csv` (image id and label values, in the
/// order of the `heads.<i>.gallery` rows).
public struct RetrievalSpec: Codable, Equatable, Sendable {
    /// Neighbours `predict` writes per image unless told otherwise.
    public var neighbours: Int
    /// Relevance of the recipe: `any` or `all` shared values.
    public var relevance: String
    /// The recipe's gallery: `train` (training rows) or `all` (every labelled row).
    public var gallery: String
}

/// The encoder the heads sit on. A package built from precomputed features records the feature
/// file instead, and `predict` then takes features.
public struct BaseEncoder: Codable, Equatable, Sendable {
    /// `encoder` or `features`.
    public var kind: String
    /// SHA-256 over the weight files and config (the value `xrlab embed` fingerprints with);
    /// for `features`, the SHA-256 of the feature file.
    public var sha256: String
    /// Checkpoint layout (`timm`, `hf-dinov2`, …) and architecture.
    public var layout: String?
    public var config: ViTConfig?
    /// The exact image preparation.
    public var preprocessing: Preprocessing?
    /// Feature layout: `cls`, `patch_mean`, `lastN_cls`, concatenated in order.
    public var representation: [String]
    /// Feature dimension the heads expect.
    public var dim: Int
    /// Tuned packages: the square input size the encoder was tuned at (nil for probe packages).
    public var input_size: Int? = nil
    /// Where it was read from when packed (informational).
    public var source: String
    /// The precision of the encoder's linear layers the heads were fit on, which `predict` runs
    /// by default: absent for fp32 (and in manifests written before it existed), `int8` otherwise.
    public var precision: Precision? = nil

    /// The recorded precision, fp32 when absent.
    public var encoderPrecision: Precision { precision ?? .fp32 }
}

public struct MethodInfo: Codable, Equatable, Sendable {
    /// Method setting: `logistic`, `knn-k20`, `prototype`.
    public var name: String
    public var spec: String
    /// Training examples per class, or nil for all training rows.
    public var shots: Int?
    public var seed: Int
    /// Share of training patients held out to choose thresholds (all-rows training only).
    public var validation_fraction: Double?
    public var threshold_rule: String
}

/// One head: a task's classifier over the base features.
public struct HeadInfo: Codable, Equatable, Sendable {
    public var task: String
    public var classes: [String]
    /// `logistic` (tensors `weight` (K', D), `bias` (K')), `knn` / `prototype` (tensors
    /// `support` (n, D), `support_labels` (n)), or a tuning method (`lora`, `adapter`, `last_k`,
    /// `bitfit`, `full`: the tuned parameters under their timm / PEFT names, `head.weight` (K, C)
    /// and `head.bias` (K); the rest is the base encoder).
    public var kind: String
    /// Tensor name prefix in `weights/head.safetensors` (`heads.0.`).
    public var tensors: String
    public var k: Int?
    public var temperature: Double?
    public var chosen_C: Double?
    /// Binary tasks: positive when P(positive) ≥ threshold. Multiclass: nil (most probable class).
    public var threshold: Double?
    /// How the threshold was chosen, and on how many validation rows.
    public var threshold_note: String
    public var n_train: Int
    public var n_validation: Int
}

/// Counts and content hashes of the data a model was trained, tuned and tested on: no ids,
/// no paths, no patient identifiers.
public struct DataFingerprint: Codable, Equatable, Sendable {
    public struct Split: Codable, Equatable, Sendable {
        public var rows: Int
        public var patients: Int?
        /// Task → class → rows.
        public var classes: [String: [String: Int]]
        /// SHA-256 over the sorted per-row content hashes (image bytes, or feature rows).
        public var content_sha256: String
    }
    /// What the content hashes are of: `image files` or `feature rows`.
    public var content: String
    public var train: Split
    public var validation: Split
    public var test: Split
}

/// A value with its bootstrap 95% interval.
public struct Estimate: Codable, Equatable, Sendable {
    public var value: Double
    public var low: Double?
    public var high: Double?
}

public struct TaskEvaluation: Codable, Equatable, Sendable {
    public struct OperatingPoint: Codable, Equatable, Sendable {
        public var threshold: Double
        public var sensitivity: Estimate?
        public var specificity: Estimate?
        public var ppv: Estimate?
        public var npv: Estimate?
    }
    public struct CalibrationBin: Codable, Equatable, Sendable {
        public var low: Double
        public var high: Double
        public var count: Int
        public var mean_confidence: Double?
        public var accuracy: Double?
    }
    public var task: String
    public var n_test: Int
    public var bootstrap_resamples: Int
    public var metrics: [String: Estimate]
    public var operating_point: OperatingPoint?
    /// Reliability of the top-label confidence in 10 equal-width bins.
    public var calibration: [CalibrationBin]
    public var subgroups: [SubgroupResult]
}

extension PackageManifest {
    /// Check a decoded manifest's schema beyond its types: names, version, sizes, references.
    func validate(file: String) throws {
        func bad(_ field: String, _ m: String) -> XRError { XRError(m, file: file, field: field) }
        guard format == Self.formatName else { throw bad("format", "not an xrlab package manifest (format '\(format)')") }
        guard PackageName.isValid(name) else { throw bad("name", "invalid package name '\(name)'") }
        guard SemanticVersion(version) != nil else { throw bad("version", "'\(version)' is not a semantic version X.Y.Z") }
        guard !labels.isEmpty else { throw bad("labels", "no labels") }
        guard !heads.isEmpty else { throw bad("heads", "no heads") }
        guard base_encoder.dim > 0 else { throw bad("base_encoder.dim", "feature dimension must be positive") }
        guard ["encoder", "features"].contains(base_encoder.kind) else { throw bad("base_encoder.kind", "unknown kind '\(base_encoder.kind)'") }
        if base_encoder.kind == "encoder", base_encoder.preprocessing == nil || base_encoder.config == nil {
            throw bad("base_encoder", "an encoder package needs config and preprocessing")
        }
        let taskKind = packageKind
        switch taskKind {
        case .classification: break
        case .segmentation:
            guard let s = segmentation, s.grid_height > 0, s.grid_width > 0, s.input_height >= s.grid_height, s.input_width >= s.grid_width else {
                throw bad("segmentation", "a segmentation package needs its patch grid and model input size")
            }
            guard base_encoder.kind == "encoder" else { throw bad("base_encoder.kind", "a segmentation package needs an encoder base") }
        case .retrieval:
            guard let s = retrieval, s.neighbours > 0 else { throw bad("retrieval", "a retrieval package needs its search settings") }
        case .detection:
            guard let s = detection, s.grid_height > 0, s.grid_width > 0, s.input_height >= s.grid_height, s.input_width >= s.grid_width else {
                throw bad("detection", "a detection package needs its patch grid and model input size")
            }
            guard s.threshold.isFinite else { throw bad("detection.threshold", "threshold \(s.threshold) is not a finite logit") }
            guard base_encoder.kind == "encoder" else { throw bad("base_encoder.kind", "a detection package needs an encoder base") }
            if let i = heads.firstIndex(where: { $0.classes.count != 2 }) {
                throw bad("heads[\(i)].classes", "a box head has two classes (no box, box), not \(heads[i].classes.count)")
            }
        }
        for (i, h) in heads.enumerated() {
            guard Head.kinds(for: taskKind).contains(h.kind) else {
                throw bad("heads[\(i)].kind", "unknown head kind '\(h.kind)' for a \(taskKind.rawValue) package")
            }
            if Head.tunedKinds.contains(h.kind), base_encoder.kind != "encoder" || base_encoder.input_size == nil {
                throw bad("base_encoder.input_size", "a tuned head needs an encoder base with its input size")
            }
            guard h.classes.count >= 2 else { throw bad("heads[\(i)].classes", "a head needs at least two classes") }
            if let t = h.threshold, !(t.isFinite && t >= 0 && t <= 1) { throw bad("heads[\(i)].threshold", "threshold \(t) outside [0, 1]") }
        }
    }
}

/// Package names: letters, digits, `-`, `_`, `.`; starting with a letter or digit.
public enum PackageName {
    public static func isValid(_ s: String) -> Bool {
        guard let f = s.unicodeScalars.first, s.count <= 100, CharacterSet.alphanumerics.contains(f), f.isASCII else { return false }
        return s.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0)) }
    }
}

/// X.Y.Z (no pre-release or build suffixes).
public struct SemanticVersion: Comparable, CustomStringConvertible, Sendable, Hashable {
    public var major: Int, minor: Int, patch: Int
    public init(major: Int, minor: Int, patch: Int) { self.major = major; self.minor = minor; self.patch = patch }
    public init?(_ s: String) {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty && $0.count <= 9 && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }),
            parts.allSatisfy({ $0 == "0" || !$0.hasPrefix("0") })
        else { return nil }
        major = Int(parts[0])!; minor = Int(parts[1])!; patch = Int(parts[2])!
    }
    public var description: String { "\(major).\(minor).\(patch)" }
    public static func < (a: Self, b: Self) -> Bool { (a.major, a.minor, a.patch) < (b.major, b.minor, b.patch) }
    /// The part of a version a release increments (`--bump`).
    public enum Part: String, CaseIterable, Sendable { case patch, minor, major }
    /// The next version after this one (nil for a name that is not a `Part`).
    public func bumped(_ part: String) -> SemanticVersion? {
        switch Part(rawValue: part) {
        case .major: return SemanticVersion(major: major + 1, minor: 0, patch: 0)
        case .minor: return SemanticVersion(major: major, minor: minor + 1, patch: 0)
        case .patch: return SemanticVersion(major: major, minor: minor, patch: patch + 1)
        case nil: return nil
        }
    }
}
