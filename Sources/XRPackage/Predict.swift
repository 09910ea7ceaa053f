// `xrlab predict`: images (or features) → the packaged preprocessing, base encoder and heads →
// per-label probabilities and decisions at the packaged thresholds, as CSV.
import Foundation
import XRTensor
import XRData
import XRModels
import XRPipeline
import XRRecipes
import XRTrain

public struct Prediction: Sendable {
    public var ids: [String]
    /// Column names and one row of values per id.
    public var header: [String]
    public var rows: [[String]]
    public var failed: [FailedInput]
    public var warnings: [String]
    /// Segmentation packages: the predicted masks, written with `writeMasks`.
    public var masks: [PredictedMask] = []
    /// Detection packages: one row per predicted box (`boxesHeader`), written with `writeBoxes`,
    /// and the heatmaps asked for, written with `writeHeatmaps`.
    public var boxes: [[String]] = []
    public var heatmaps: [PredictedHeatmap] = []

    /// RFC 4180 CSV.
    public var csv: String {
        func q(_ s: String) -> String {
            s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
        }
        return ([header] + rows).map { $0.map(q).joined(separator: ",") }.joined(separator: "\n") + "\n"
    }
}

public enum Predictor {
    /// Predict from image files with the package's base encoder, its linear layers at `precision`,
    /// else at the precision the package records (tuned packages always run fp32: their encoder
    /// weights are tuned). Segmentation packages write their masks' paths under `masks` (a folder)
    /// into the CSV; detection packages need `boxes` (the CSV their boxes go to) and compute
    /// heatmaps when `heatmaps` names a folder; retrieval packages keep `topK` neighbours per image
    /// (nil: the packaged number). An output of another kind of package is refused.
    public static func predict(
        _ p: OpenedPackage, base: URL, inputs: [ImageInput], options: EmbedOptions, masks: String? = nil, topK: Int? = nil,
        precision: Precision? = nil, boxes: String? = nil, heatmaps: String? = nil
    ) throws -> Prediction {
        try checkOutputs(p.manifest.packageKind, masks: masks, boxes: boxes, heatmaps: heatmaps)
        let tuned = p.heads.contains(where: \.isTuned)
        let enc = try PackageReader.encoder(for: p, base: base, precision: tuned ? .fp32 : precision)
        if p.manifest.packageKind == .segmentation {
            return try predictSegmentation(p, encoder: enc, inputs: inputs, options: options, masksFolder: masks)
        }
        if p.manifest.packageKind == .detection {
            return try predictDetection(p, encoder: enc, inputs: inputs, options: options, boxes: boxes, heatmaps: heatmaps != nil)
        }
        if tuned { return try predictTuned(p, encoder: enc, inputs: inputs, options: options) }
        var o = options
        o.lastBlocks = p.manifest.base_encoder.representation.compactMap(Recipe.lastBlocks).max() ?? 0
        o.patchTokens = false
        o.classTokenOnly = !p.manifest.base_encoder.representation.contains("patch_mean")
        let res = try enc.embed(inputs, options: o)
        if !res.failed.isEmpty && !o.skipBad {
            throw XRError(
                "\(res.failed.count) image(s) could not be read:\n" + res.failed.map { "  \($0.id): \($0.reason)" }.joined(separator: "\n"),
                hint: "fix or remove them, or pass --skip-bad to leave them out")
        }
        let ok = res.inputs
        guard !ok.isEmpty else { throw XRError("no readable images", field: "inputs") }
        let x = try EncoderFeatureSource.assemble(res, representation: p.manifest.base_encoder.representation, model: base)
        var out = try predict(p, features: x, ids: ok.map(\.id), topK: topK)
        out.failed = res.failed
        out.warnings = res.warnings
        return out
    }

    /// Refuse an output the package's kind does not write: masks from a segmentation package
    /// only, boxes and heatmaps from a detection package only.
    public static func checkOutputs(_ kind: PackageKind, masks: String?, boxes: String?, heatmaps: String?) throws {
        if masks != nil, kind != .segmentation {
            let instead = kind == .detection ? ": it predicts boxes (pass --boxes FILE.csv, and --heatmaps DIR for heatmaps)" : ""
            throw XRError("--masks applies to segmentation packages; this is a \(kind.rawValue) package\(instead)", field: "--masks")
        }
        for (option, value) in [("--boxes", boxes), ("--heatmaps", heatmaps)] where value != nil && kind != .detection {
            let instead = kind == .segmentation ? ": it predicts masks (pass --masks DIR)" : ""
            throw XRError("\(option) applies to detection packages; this is a \(kind.rawValue) package\(instead)", field: option)
        }
    }

    /// Tuned packages: each head is the base encoder with its tuned parameters, run on the
    /// packaged preprocessing at the tuned input size.
    static func predictTuned(_ p: OpenedPackage, encoder enc: Encoder, inputs: [ImageInput], options: EmbedOptions) throws -> Prediction {
        let m = p.manifest
        guard let S = m.base_encoder.input_size else { throw XRError("tuned package without input_size", file: p.url.path, field: "base_encoder.input_size") }
        var pixels: [[Float]] = [], ids: [String] = [], failed: [FailedInput] = []
        for input in inputs {
            do {
                let x = try enc.preprocessing.apply(contentsOf: input.url)
                guard x.count == 3 * S * S else { throw XRError("preprocessed to \(x.count) values, expected 3×\(S)×\(S)", file: input.url.path) }
                pixels.append(x); ids.append(input.id)
            } catch let e as XRError {
                failed.append(FailedInput(id: input.id, reason: e.description))
            }
        }
        if !failed.isEmpty && !options.skipBad {
            throw XRError(
                "\(failed.count) image(s) could not be read:\n" + failed.map { "  \($0.id): \($0.reason)" }.joined(separator: "\n"),
                hint: "fix or remove them, or pass --skip-bad to leave them out")
        }
        guard !ids.isEmpty else { throw XRError("no readable images", field: "inputs") }
        var perHead: [[[Double]]] = []
        let progress = ProgressReporter("predict", total: p.heads.count * ids.count, unit: "images", quiet: options.quiet)
        for h in p.heads {
            let K = h.info.classes.count
            let model = try TrainableViT(from: enc.loaded, size: S, classes: K, headHidden: h.tensors["head.fc1.weight"]?.shape[0], source: p.url.path)
            guard let method = m.recipe.methods.first(where: { $0.name == h.info.kind }) else {
                throw XRError("the packaged recipe has no method '\(h.info.kind)'", file: p.url.path, field: "recipe.methods")
            }
            try model.setTrainable(TuneSpec(method).set)
            for (name, t) in h.tensors {
                guard let param = model.parameter(name), param.count == t.count else {
                    throw XRError("packaged tensor has no counterpart of that size in the base encoder", file: p.url.path, field: h.info.tensors + name)
                }
                param.assign(t.scalars)
            }
            var probs: [[Double]] = []
            let batch = max(1, options.batchSize)
            for start in stride(from: 0, to: ids.count, by: batch) {
                let n = min(batch, ids.count - start)
                let logits = try model.forward(pixels: Array(pixels[start..<(start + n)].joined()), batch: n)
                for b in 0..<n {
                    let z = (0..<K).map { Double(logits[b * K + $0]) }, mx = z.max()!
                    let e = z.map { exp($0 - mx) }, sum = e.reduce(0, +)
                    probs.append(e.map { $0 / sum })
                }
                progress.advance(by: n)
            }
            perHead.append(probs)
        }
        progress.finish()
        var out = table(p, probabilities: perHead, ids: ids)
        out.failed = failed
        return out
    }

    /// Predict from a feature matrix (n, D) in the package's representation.
    public static func predict(_ p: OpenedPackage, features x: Tensor, ids: [String], topK: Int? = nil) throws -> Prediction {
        let d = p.manifest.base_encoder.dim
        guard p.manifest.packageKind != .segmentation && p.manifest.packageKind != .detection else {
            throw XRError(
                "a \(p.manifest.packageKind.rawValue) package predicts from images (--base and image inputs), not features", field: "--features")
        }
        guard !p.heads.contains(where: \.isTuned) else {
            throw XRError("this package tunes the encoder; it predicts from images (--base and image inputs), not features", field: "--features")
        }
        guard x.rank == 2, x.shape[1] == d, x.shape[0] == ids.count else {
            throw XRError(
                "features have shape \(x.shape), the package expects (\(ids.count), \(d)) (\(p.manifest.base_encoder.representation.joined(separator: "+")))",
                field: "features")
        }
        if let i = x.scalars.firstIndex(where: { !$0.isFinite }) {
            throw XRError("feature \(i % d) of '\(ids[i / d])' is \(x.scalars[i])", field: "features")
        }
        if p.manifest.packageKind == .retrieval { return try predictRetrieval(p, features: x.scalars, ids: ids, k: topK) }
        return table(p, probabilities: p.heads.map { $0.probabilities(x.scalars, n: ids.count, d: d) }, ids: ids)
    }

    /// The CSV: path, then per binary head probability and decision, per multiclass head p_CLASS and predicted.
    static func table(_ p: OpenedPackage, probabilities: [[[Double]]], ids: [String]) -> Prediction {
        var header = ["path"]
        var cols: [[String]] = []
        for (h, probs) in zip(p.heads, probabilities) {
            let dec = h.decisions(probs)
            if h.info.classes.count == 2, h.info.threshold != nil {
                header += ["\(h.info.task)_probability", "\(h.info.task)_decision"]
                cols.append(probs.map { String(format: "%.6f", $0[1]) })
                cols.append(dec.map(String.init))
            } else {
                for (c, name) in h.info.classes.enumerated() {
                    header.append("p_\(name)")
                    cols.append(probs.map { String(format: "%.6f", $0[c]) })
                }
                header.append("predicted")
                cols.append(dec.map { h.info.classes[$0] })
            }
        }
        let rows = ids.indices.map { i in [ids[i]] + cols.map { $0[i] } }
        return Prediction(ids: ids, header: header, rows: rows, failed: [], warnings: [])
    }

    /// Features for a features package: a `.npy` (n, D) matrix, or a `.safetensors` file with one
    /// tensor per representation entry (what `xrlab embed` writes); ids from the embed sidecar
    /// (`FILE.json`) when present, else `row1`, `row2`, …
    public static func loadFeatures(_ url: URL, representation: [String]) throws -> (Tensor, [String]) {
        let x: Tensor
        if url.pathExtension == "npy" {
            x = try NPY.read(url)
        } else {
            let f = try SafeTensorsFile(contentsOf: url)
            var parts: [Tensor] = []
            for rep in representation {
                if let k = Recipe.lastBlocks(rep) {
                    guard f.contains("last_blocks_cls") else { throw XRError("no last_blocks_cls tensor", file: url.path, field: rep) }
                    parts.append(try PrecomputedFeatureSource().slice(try f.tensor("last_blocks_cls"), blocks: k, url, rep))
                } else {
                    guard f.contains(rep) else { throw XRError("no '\(rep)' tensor (has \(f.names.joined(separator: ", ")))", file: url.path, field: rep) }
                    parts.append(try f.tensor(rep))
                }
            }
            x = concatenate(parts)
        }
        guard x.rank == 2 else { throw XRError("features must be (N, D), got \(x.shape)", file: url.path) }
        let sidecar = url.deletingPathExtension().appendingPathExtension("json")
        if let d = try? Data(contentsOf: sidecar), let obj = try? JSONSerialization.jsonObject(with: d) as? [String: Any],
            let inputs = obj["inputs"] as? [[String: Any]], inputs.count == x.shape[0]
        {
            return (x, inputs.map { ($0["path"] as? String) ?? "?" })
        }
        return (x, (1...max(1, x.shape[0])).prefix(x.shape[0]).map { "row\($0)" })
    }
}
