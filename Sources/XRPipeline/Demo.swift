import Foundation
import XRTensor
import XRData

/// Generates everything the demo job needs without a download: a small random-initialised
/// encoder in the Hugging Face `Dinov2Model` layout, and a synthetic set of chest-X-ray-like
/// 16-bit PNGs with labels, patients, sex, age and a split.
///
/// The images are drawn so that labels are visible (fluid level at a lung base for
/// `effusion`, small bright round opacities for `nodule`, a wide heart shadow for
/// `cardiomegaly`); the encoder is random, so the demo shows the mechanics of a study, not
/// clinical performance.
public enum DemoData {
    public struct Summary: Sendable {
        public var modelDir: URL
        public var manifest: URL
        /// The same images paired with short reports written from their labels (`path, patient_id,
        /// split, findings, impression`), for report generation.
        public var reports: URL
        public var images: Int
        public var patients: Int
    }

    /// Demo encoder: hidden 96, 4 blocks, 3 heads, patch 16, 128 px.
    public static let hidden = 96, depth = 4, heads = 3, patch = 16, imageSize = 128

    /// Write `model/` and `images/` + `manifest.csv` under `dir` (deterministic for a seed).
    @discardableResult
    public static func generate(in dir: URL, patients: Int = 150, seed: UInt64 = 2024) throws -> Summary {
        let modelDir = dir.appendingPathComponent("model")
        try writeModel(to: modelDir, seed: seed)
        let (manifest, n) = try writeImages(to: dir, patients: patients, seed: seed)
        let reports = try writeReports(for: manifest, seed: seed)
        return Summary(modelDir: modelDir, manifest: manifest, reports: reports, images: n, patients: patients)
    }

    // MARK: model

    static func writeModel(to dir: URL, seed: UInt64) throws {
        var rng = XRRandom(seed: seed, stream: [1])
        let c = hidden, grid = imageSize / patch
        func normal(_ shape: [Int], std: Float) -> Tensor {
            Tensor(
                shape: shape,
                scalars: (0..<shape.reduce(1, *)).map { _ in
                    max(-2, min(2, rng.nextGaussian())) * std
                })
        }
        func const(_ shape: [Int], _ v: Float) -> Tensor {
            Tensor(shape: shape, scalars: [Float](repeating: v, count: shape.reduce(1, *)))
        }
        var t: [(String, Tensor)] = [
            ("embeddings.cls_token", normal([1, 1, c], std: 0.02)),
            ("embeddings.mask_token", const([1, c], 0)),
            ("embeddings.position_embeddings", normal([1, 1 + grid * grid, c], std: 0.02)),
            ("embeddings.patch_embeddings.projection.weight", normal([c, 3, patch, patch], std: 0.02)),
            ("embeddings.patch_embeddings.projection.bias", const([c], 0)),
            ("layernorm.weight", const([c], 1)),
            ("layernorm.bias", const([c], 0))
        ]
        for i in 0..<depth {
            let p = "encoder.layer.\(i)."
            t += [
                (p + "norm1.weight", const([c], 1)), (p + "norm1.bias", const([c], 0)),
                (p + "norm2.weight", const([c], 1)), (p + "norm2.bias", const([c], 0)),
                (p + "layer_scale1.lambda1", const([c], 1)), (p + "layer_scale2.lambda1", const([c], 1)),
                (p + "mlp.fc1.weight", normal([4 * c, c], std: 0.02)), (p + "mlp.fc1.bias", const([4 * c], 0)),
                (p + "mlp.fc2.weight", normal([c, 4 * c], std: 0.02)), (p + "mlp.fc2.bias", const([c], 0)),
                (p + "attention.output.dense.weight", normal([c, c], std: 0.02)),
                (p + "attention.output.dense.bias", const([c], 0))
            ]
            for qkv in ["query", "key", "value"] {
                t += [
                    (p + "attention.attention.\(qkv).weight", normal([c, c], std: 0.02)),
                    (p + "attention.attention.\(qkv).bias", const([c], 0))
                ]
            }
        }
        try SafeTensors.write(
            t, metadata: ["format": "pt", "generator": "xrlab demo"],
            to: dir.appendingPathComponent("model.safetensors"))
        let config: [String: Any] = [
            "architectures": ["Dinov2Model"], "model_type": "dinov2",
            "hidden_size": c, "num_hidden_layers": depth, "num_attention_heads": heads,
            "mlp_ratio": 4, "patch_size": patch, "image_size": imageSize, "num_channels": 3,
            "layer_norm_eps": 1e-6, "layerscale_value": 1.0, "hidden_act": "gelu",
            "qkv_bias": true, "use_swiglu_ffn": false, "drop_path_rate": 0.0,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02
        ]
        try AtomicFile.write(
            try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .prettyPrinted]),
            to: dir.appendingPathComponent("config.json"))
        let pre: [String: Any] = [
            "image_processor_type": "BitImageProcessor",
            "do_resize": true, "size": ["shortest_edge": imageSize], "resample": 3,
            "do_center_crop": true, "crop_size": ["height": imageSize, "width": imageSize],
            "do_rescale": true, "rescale_factor": 1.0 / 255.0,
            "do_normalize": true, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25],
            "do_convert_rgb": true
        ]
        try AtomicFile.write(
            try JSONSerialization.data(withJSONObject: pre, options: [.sortedKeys, .prettyPrinted]),
            to: dir.appendingPathComponent("preprocessor_config.json"))
    }

    // MARK: images

    static func writeImages(to dir: URL, patients: Int, seed: UInt64) throws -> (URL, Int) {
        var rng = XRRandom(seed: seed, stream: [2])
        let w = 144, h = 160
        var rows: [[String]] = []
        var count = 0
        for p in 0..<patients {
            let pid = String(format: "P%04d", p)
            let sex = rng.nextInt(below: 2) == 0 ? "M" : "F"
            let age = 20 + rng.nextInt(below: 70)
            let split = rng.nextDouble() < 0.6 ? "train" : "test"
            // Risk rises with age so that subgroup analysis has something to show.
            let risk = 0.15 + 0.35 * Double(age - 20) / 70
            let nImages = rng.nextDouble() < 0.3 ? 2 : 1
            let effusion = rng.nextDouble() < risk
            let nodule = rng.nextDouble() < 0.3
            let cardio = rng.nextDouble() < risk * 0.8
            for k in 0..<nImages {
                let pixels = drawChest(
                    width: w, height: h, effusion: effusion, nodule: nodule,
                    cardiomegaly: cardio, rng: &rng)
                let rel = "images/\(pid)_\(k).png"
                try PNGCodec.write(
                    try PNGCodec.encodeGray16(width: w, height: h, pixels: pixels),
                    to: dir.appendingPathComponent(rel))
                var labels: [String] = []
                if effusion { labels.append("effusion") }
                if nodule { labels.append("nodule") }
                if cardio { labels.append("cardiomegaly") }
                rows.append([
                    rel, pid, split, labels.isEmpty ? "no_finding" : labels.joined(separator: "|"),
                    sex, String(age)
                ])
                count += 1
            }
        }
        let table = CSVTable(header: ["path", "patient_id", "split", "labels", "sex", "age"], rows: rows)
        let manifest = dir.appendingPathComponent("manifest.csv")
        try table.write(to: manifest)
        return (manifest, count)
    }

    /// Reports written from each image's labels, with varied wording (deterministic for a seed).
    static func writeReports(for manifest: URL, seed: UInt64) throws -> URL {
        let table = try CSVTable(contentsOf: manifest)
        let path = try table.column("path"), pid = try table.column("patient_id"), split = try table.column("split"), lab = try table.column("labels")
        var rng = XRRandom(seed: seed, stream: [3])
        func pick(_ options: [String]) -> String { options[rng.nextInt(below: options.count)] }
        var rows: [[String]] = []
        for r in table.rows {
            let labels = Set(r[lab].split(separator: "|").map(String.init))
            var findings: [String] = []
            findings.append(
                labels.contains("cardiomegaly")
                    ? pick(["The heart is enlarged.", "Cardiomegaly.", "The cardiac silhouette is enlarged."])
                    : pick(["Heart size is normal.", "The cardiac silhouette is normal.", "Normal heart size."]))
            findings.append(
                labels.contains("effusion")
                    ? pick([
                        "Small pleural effusion at the lung base.", "There is a pleural effusion.", "Blunting of the costophrenic angle from a small effusion."
                    ])
                    : pick(["No pleural effusion.", "There is no pleural effusion.", "The costophrenic angles are sharp."]))
            if labels.contains("nodule") {
                findings.append(pick(["A pulmonary nodule is seen.", "There is a rounded nodule in the lung.", "Nodular opacity in the mid lung."]))
            }
            findings.append(pick(["No pneumothorax.", "The lungs are otherwise clear.", "No focal consolidation."]))
            var impression: [String] = []
            if labels.contains("cardiomegaly") { impression.append("Cardiomegaly") }
            if labels.contains("effusion") { impression.append("pleural effusion") }
            if labels.contains("nodule") { impression.append("pulmonary nodule") }
            let imp =
                impression.isEmpty
                ? pick(["No acute cardiopulmonary abnormality.", "No acute disease."])
                : impression.joined(separator: " and ").prefix(1).uppercased() + impression.joined(separator: " and ").dropFirst() + "."
            rows.append([r[path], r[pid], r[split], findings.joined(separator: " "), imp])
        }
        let url = manifest.deletingLastPathComponent().appendingPathComponent("reports.csv")
        try CSVTable(header: ["path", "patient_id", "split", "findings", "impression"], rows: rows).write(to: url)
        return url
    }

    /// A 16-bit radiograph-like picture: body, two dark lungs, mediastinum and heart, ribs, noise.
    static func drawChest(
        width w: Int, height h: Int, effusion: Bool, nodule: Bool,
        cardiomegaly: Bool, rng: inout XRRandom
    ) -> [UInt16] {
        var img = [Double](repeating: 0.08, count: w * h)
        let cx = Double(w) / 2 + Double(rng.nextInt(below: 9) - 4)
        let cy = Double(h) / 2 + Double(rng.nextInt(below: 9) - 4)
        let lungW = Double(w) * (0.20 + 0.03 * rng.nextDouble())
        let lungH = Double(h) * (0.30 + 0.04 * rng.nextDouble())
        let heartW = Double(w) * (cardiomegaly ? 0.18 : 0.145) * (0.85 + 0.3 * rng.nextDouble())
        var nodules: [(Double, Double, Double)] = []
        if nodule {
            for _ in 0..<(1 + rng.nextInt(below: 2)) {
                let side: Double = rng.nextInt(below: 2) == 0 ? -1 : 1
                nodules.append(
                    (
                        cx + side * lungW * (0.6 + 0.6 * rng.nextDouble()),
                        cy - lungH * 0.5 + lungH * rng.nextDouble(), 3.5 + 3 * rng.nextDouble()
                    ))
            }
        }
        let fluidLevel = cy + lungH * (0.35 - 0.4 * rng.nextDouble())
        let effSide: Double = rng.nextInt(below: 2) == 0 ? -1 : 1
        for y in 0..<h {
            for x in 0..<w {
                let fx = Double(x), fy = Double(y)
                var v = 0.08
                let bx = (fx - cx) / (Double(w) * 0.46), by = (fy - cy) / (Double(h) * 0.55)
                if bx * bx + by * by < 1 { v = 0.55 } // soft tissue
                for side in [-1.0, 1.0] { // lungs (dark)
                    let lx = (fx - (cx + side * lungW * 1.05)) / lungW, ly = (fy - cy) / lungH
                    if lx * lx + ly * ly < 1 {
                        v = 0.22
                        if effusion && side == effSide && fy > fluidLevel { v = 0.45 }
                        if (Int(fy) + Int(12 * abs(lx))) % 11 < 2 { v += 0.08 } // ribs
                    }
                }
                let hx = (fx - cx - heartW * 0.25) / heartW, hy = (fy - cy - lungH * 0.35) / (lungH * 0.5)
                if hx * hx + hy * hy < 1 { v = max(v, 0.62) } // heart
                if abs(fx - cx) < Double(w) * 0.05 && abs(fy - cy) < lungH { v = max(v, 0.7) } // spine
                for (nx, ny, r) in nodules where (fx - nx) * (fx - nx) + (fy - ny) * (fy - ny) < r * r {
                    v = max(v, 0.55)
                }
                img[y * w + x] = v + 0.04 * Double(rng.nextGaussian())
            }
        }
        return img.map { UInt16(max(0, min(65535, ($0 * 65535).rounded()))) }
    }
}
