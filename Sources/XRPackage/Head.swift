// A packaged classifier head over base features, and how it is stored in head.safetensors.
// The probabilities are computed by the same code the study ran (XRProbe), from the stored
// float32 tensors, so what `pack` measured is what `predict` computes.
import Foundation
import XRTensor
import XRProbe

public struct Head: Sendable {
    public static let probeKinds = ["logistic", "knn", "prototype"]
    public static let tunedKinds = ["lora", "adapter", "last_k", "bitfit", "full"]
    /// Segmentation heads: `linear_decoder` (tensors `weight` (R, C), `bias` (R); R = 1 for two
    /// classes, else K; C = the encoder's token channels), or a tuning method's name: the same
    /// decoder beside the tuned encoder parameters (timm / PEFT names).
    public static let decoderKinds = ["linear_decoder"]
    /// Detection heads: `box_head` (a two-class linear decoder over the patch tokens: tensors
    /// `weight` (1, C), `bias` (1); boxes are read off its heatmap as `DetectionSpec` says), or a
    /// tuning method's name: the same box head beside the tuned encoder parameters.
    public static let boxKinds = ["box_head"]
    /// Retrieval heads: `cosine` (tensor `gallery` (G, D), rows L2-normalised) and
    /// `linear_projection` (also `projection.mean` (D), `projection.directions` (M, D),
    /// `projection.factors` (M): queries are projected before they are normalised).
    public static let galleryKinds = ["cosine", "linear_projection"]

    /// The head kinds a package of `kind` may hold.
    public static func kinds(for kind: PackageKind) -> [String] {
        switch kind {
        case .classification: return probeKinds + tunedKinds
        case .segmentation: return decoderKinds + tunedKinds
        case .retrieval: return galleryKinds
        case .detection: return boxKinds + tunedKinds
        }
    }
    public var info: HeadInfo
    public var isTuned: Bool { Self.tunedKinds.contains(info.kind) }
    /// Tensors without the prefix: `weight`, `bias` or `support`, `support_labels`.
    public var tensors: [String: Tensor]

    /// Class probabilities (n, K) of features x (n, d), row-major.
    public func probabilities(_ x: [Float], n: Int, d: Int) -> [[Double]] {
        let K = info.classes.count
        switch info.kind {
        case "logistic":
            let w = tensors["weight"]!, b = tensors["bias"]!
            let model = LogisticModel(classes: K, weights: w.scalars.map(Double.init), bias: b.scalars.map(Double.init), dim: d)
            return model.probabilities(x.map(Double.init), n: n)
        case "knn":
            let s = tensors["support"]!, l = tensors["support_labels"]!.scalars.map { Int($0) }
            return Probe.knn(train: s.scalars, labels: l, test: x, d: d, classes: K, k: info.k ?? 20, temperature: info.temperature ?? 0.07)
        default:
            let s = tensors["support"]!, l = tensors["support_labels"]!.scalars.map { Int($0) }
            return Probe.prototype(train: s.scalars, labels: l, test: x, d: d, classes: K, temperature: info.temperature ?? 0.07)
        }
    }

    /// Decision per row: the positive class (1) when P(positive) ≥ threshold for binary heads,
    /// else the most probable class.
    public func decisions(_ p: [[Double]]) -> [Int] {
        if let t = info.threshold, info.classes.count == 2 { return p.map { $0[1] >= t ? 1 : 0 } }
        return p.map { row in row.indices.max { row[$0] < row[$1] } ?? 0 }
    }

    /// Check stored tensors against the head's kind, classes and the feature dimension (the token
    /// width for heads on patch tokens: `patchTokens`).
    func validate(dim d: Int, file: String, patchTokens: Bool = false) throws {
        let K = info.classes.count
        func need(_ name: String, _ shape: (Tensor) -> Bool, _ expected: String) throws {
            guard let t = tensors[name] else { throw XRError("missing tensor", file: file, field: info.tensors + name) }
            guard shape(t) else { throw XRError("shape \(t.shape) does not match \(expected)", file: file, field: info.tensors + name) }
            guard t.scalars.allSatisfy(\.isFinite) else { throw XRError("non-finite values", file: file, field: info.tensors + name) }
        }
        if Self.decoderKinds.contains(info.kind) || Self.boxKinds.contains(info.kind) {
            let rows = K == 2 ? 1 : K
            try need("weight", { $0.shape == [rows, d] }, "(\(rows), \(d))")
            try need("bias", { $0.shape == [rows] }, "(\(rows))")
            return
        }
        if isTuned && patchTokens {
            // A tuned encoder with the linear decoder (or box head) as its head.
            let rows = K == 2 ? 1 : K
            try need("weight", { $0.shape == [rows, d] }, "(\(rows), \(d))")
            try need("bias", { $0.shape == [rows] }, "(\(rows))")
            for name in tensors.keys.sorted() { try need(name, { _ in true }, "") }
            return
        }
        if Self.galleryKinds.contains(info.kind) {
            let g = info.n_train
            try need("gallery", { $0.shape == [g, d] && g > 0 }, "(\(g), \(d))")
            if info.kind == "linear_projection" {
                // No directions when the shots left no within-class residuals (the centring alone).
                try need("projection.mean", { $0.shape == [d] }, "(\(d))")
                if tensors["projection.factors"] != nil || tensors["projection.directions"] != nil {
                    let m = tensors["projection.factors"]?.shape.first ?? 0
                    try need("projection.factors", { $0.shape == [m] && m > 0 }, "(M)")
                    try need("projection.directions", { $0.shape == [m, d] }, "(\(m), \(d))")
                }
            }
            return
        }
        if isTuned {
            // A linear head (K, d), or an MLP head: fc1 (H, d) then (K, H).
            if let fc1 = tensors["head.fc1.weight"] {
                let H = fc1.shape.first ?? 0
                try need("head.fc1.weight", { $0.shape == [H, d] && H > 0 }, "(H, \(d))")
                try need("head.fc1.bias", { $0.shape == [H] }, "(\(H))")
                try need("head.weight", { $0.shape == [K, H] }, "(\(K), \(H))")
            } else {
                try need("head.weight", { $0.shape == [K, d] }, "(\(K), \(d))")
            }
            try need("head.bias", { $0.shape == [K] }, "(\(K))")
            for name in tensors.keys.sorted() { try need(name, { _ in true }, "") }
            return
        }
        switch info.kind {
        case "logistic":
            let rows = K == 2 ? 1 : K
            try need("weight", { $0.shape == [rows, d] }, "(\(rows), \(d))")
            try need("bias", { $0.shape == [rows] }, "(\(rows))")
        default:
            try need("support", { $0.rank == 2 && $0.shape[1] == d && $0.shape[0] > 0 }, "(n, \(d))")
            let n = tensors["support"]!.shape[0]
            try need("support_labels", { $0.shape == [n] }, "(\(n))")
            if let bad = tensors["support_labels"]!.scalars.first(where: { $0 < 0 || Int($0) >= K || $0 != $0.rounded() }) {
                throw XRError("label \(bad) is not a class index below \(K)", file: file, field: info.tensors + "support_labels")
            }
        }
    }
}
