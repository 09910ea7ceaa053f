// MODEL_CARD.md, generated from the manifest: intended use, data, metrics, subgroup gaps,
// calibration and limitations.
import Foundation
import XRHeads

public enum ModelCard {
    public static func num(_ x: Double?, _ digits: Int = 3) -> String { x.map { String(format: "%.\(digits)f", $0) } ?? "—" }
    public static func est(_ e: Estimate?) -> String {
        guard let e else { return "—" }
        if let l = e.low, let h = e.high { return "\(num(e.value)) (\(num(l))–\(num(h)))" }
        return num(e.value)
    }

    public static func render(_ m: PackageManifest) -> String {
        var s = "# \(m.name) \(m.version)\n\n"
        s += "Site model packaged by xrlab \(m.xrlab_version) on \(m.created): a `\(m.method.name)` head per task on "
        s +=
            m.base_encoder.kind == "encoder"
            ? "a frozen \(m.base_encoder.layout ?? "ViT") encoder (`\(m.base_encoder.source)`, weights SHA-256 `\(m.base_encoder.sha256.prefix(16))…`"
                + (m.base_encoder.precision.map { ", \($0.rawValue) linear layers" } ?? "") + ").\n\n"
            : "precomputed features (`\(m.base_encoder.source)`, SHA-256 `\(m.base_encoder.sha256.prefix(16))…`).\n\n"
        s += "## Intended use\n\n"
        s += "Decision support for the \(m.task) task on \(m.labels.map { "`\($0)`" }.joined(separator: ", ")), on images prepared like the training data "
        s += "(same kind of acquisition and site). Not a diagnostic device: outputs are \(outputs(m)), "
        s += "to be reviewed by a clinician. Apply it only with the base encoder recorded here (`xrlab predict` refuses any other).\n\n"
        s += "## Data\n\n"
        let t = m.training_data
        s += "| split | rows | patients | classes |\n|---|---:|---:|---|\n"
        for (name, sp) in [("train", t.train), ("validation", t.validation), ("test", t.test)] {
            let cls = sp.classes.sorted { $0.key < $1.key }.map { task, c in
                "\(task): " + c.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            }.joined(separator: "; ")
            s += "| \(name) | \(sp.rows) | \(sp.patients.map(String.init) ?? "—") | \(cls) |\n"
        }
        s += "\nContent hashes (SHA-256 over the sorted \(t.content) hashes): train `\(t.train.content_sha256.prefix(16))…`, "
        s += "validation `\(t.validation.content_sha256.prefix(16))…`, test `\(t.test.content_sha256.prefix(16))…`. "
        s +=
            m.packageKind == .retrieval
            ? "The gallery's image ids (the manifest's image column, as `predict` names neighbours) and label values are stored in `gallery.<i>.csv`; no other identifiers are stored.\n\n"
            : "No identifiers are stored.\n\n"
        s +=
            "Training: \(m.method.shots.map { "\($0) examples per class (seed \(m.method.seed))" } ?? "all training rows, \(Int((m.method.validation_fraction ?? 0) * 100))% of training patients held out for thresholds"); "
        s += "method \(m.method.spec).\n\n"
        s += "## Metrics (test set, bootstrap 95% intervals)\n\n"
        let names = Array(Set(m.evaluation.flatMap { $0.metrics.keys })).sorted()
        s += "| task | n | " + names.joined(separator: " | ") + " | threshold | sensitivity | specificity | PPV | NPV |\n"
        s += "|---|---:|" + String(repeating: "---|", count: names.count + 5) + "\n"
        for e in m.evaluation {
            s += "| \(e.task) | \(e.n_test) | " + names.map { est(e.metrics[$0]) }.joined(separator: " | ")
            if let op = e.operating_point {
                s += " | \(num(op.threshold)) | \(est(op.sensitivity)) | \(est(op.specificity)) | \(est(op.ppv)) | \(est(op.npv)) |\n"
            } else {
                s += " | \(m.packageKind == .retrieval ? "ranking" : m.packageKind == .detection ? "heatmap" : "argmax") | — | — | — | — |\n"
            }
        }
        s += "\n## Subgroups\n\n"
        let primary = m.recipe.primary_metric
        var anySubgroup = false
        for e in m.evaluation {
            for g in e.subgroups {
                anySubgroup = true
                let vals = g.values.sorted { $0.key < $1.key }.map { "\($0.key) \(num($0.value)) (n=\(g.counts[$0.key] ?? 0))" }.joined(separator: ", ")
                let gap =
                    g.gap.map { v in
                        "gap \(num(v)) (\(g.highest ?? "?") − \(g.lowest ?? "?")" + (g.gapInterval.map { ", 95% CI \(num($0.low))–\(num($0.high))" } ?? "")
                            + ")"
                    } ?? "no gap (fewer than two groups with a defined metric)"
                s += "- \(e.task), \(g.attribute): \(primary) \(vals); \(gap)\(g.flagged ? " — **the interval excludes 0**" : "")\n"
            }
        }
        if !anySubgroup { s += "No subgroup attributes were analysed (set `data.subgroups` in the recipe).\n" }
        s += "\n## Calibration\n\n"
        for e in m.evaluation {
            let ece = e.metrics["ece"].map { " (ECE \(est($0)))" } ?? ""
            s +=
                "- \(e.task)\(ece): "
                + e.calibration.filter { $0.count > 0 }.map {
                    "\(num($0.low, 1))–\(num($0.high, 1)): confidence \(num($0.mean_confidence, 2)), accuracy \(num($0.accuracy, 2)), n=\($0.count)"
                }.joined(separator: "; ") + "\n"
        }
        s += "\n## Limitations\n\n"
        s +=
            "- Evaluated on \(t.test.rows) test rows from the same data source as training; performance elsewhere (other scanners, sites, populations) is unknown.\n"
        s += "- Thresholds were chosen on \(t.validation.rows) validation rows; small validation sets give unstable operating points.\n"
        if m.evaluation.contains(where: { $0.subgroups.contains(where: \.flagged) }) {
            s += "- At least one subgroup gap has a 95% interval excluding 0 (see Subgroups).\n"
        }
        s += "- Labels are as provided in the training manifest; label noise carries into the model and its metrics.\n"
        return s
    }

    /// What the package's outputs are, for the intended-use paragraph.
    static func outputs(_ m: PackageManifest) -> String {
        switch m.packageKind {
        case .classification: return "probabilities with a threshold chosen on validation data"
        case .segmentation: return "masks from a linear decoder on the encoder's patch tokens (the class of the largest logit per pixel)"
        case .retrieval: return "the most similar gallery images by cosine similarity"
        case .detection:
            return "boxes (in image pixels, with scores) read off the heatmap of a patch-level linear head on the encoder's patch tokens, and an image score"
        }
    }

    /// One line per head: its task, kind and what it reads (for `xrlab inspect`).
    public static func heads(_ m: PackageManifest) -> [String] {
        m.heads.map { h in
            var s = "\(h.task): \(h.kind), \(h.classes.count) classes, \(h.n_train) training rows"
            if let d = m.detection {
                s += "; \(d.grid_width)×\(d.grid_height) patch grid on a \(d.input_width)×\(d.input_height) input, boxes where the logit is above "
                s += "\(d.threshold), components scored by their \(d.scoring.rawValue) logit"
            } else if let g = m.segmentation {
                s += "; \(g.grid_width)×\(g.grid_height) patch grid on a \(g.input_width)×\(g.input_height) input"
            } else if let t = h.threshold {
                s += String(format: "; threshold %.4f", t)
            }
            return s
        }
    }
}
