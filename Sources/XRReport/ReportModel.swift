// A trained report model folder (model.json, decoder.safetensors, tokenizer.json) applied to images.
import Foundation
import XRTensor
import XRData
import XRPipeline
import XRTrain
import XRText

public struct ReportModel {
    public let decoder: ReportDecoder
    public let tokenizer: BPETokenizer
    public let pool: Int
    public let encoderSHA256: String
    public let eos: Int
    /// How the encoder was trained with the decoder; tuned values in `encoder_tuned.safetensors`.
    public let encoderSpec: ReportEncoderSpec
    let encoderTensors: [String: Tensor]
    /// Standardisation of the visual tokens fitted in training.
    public let visualNorm: VisualNorm
    let directory: URL

    init(
        decoder: ReportDecoder, tokenizer: BPETokenizer, pool: Int, encoderSHA256: String, eos: Int, encoderSpec: ReportEncoderSpec,
        encoderTensors: [String: Tensor], visualNorm: VisualNorm, directory: URL
    ) {
        self.decoder = decoder; self.tokenizer = tokenizer; self.pool = pool; self.encoderSHA256 = encoderSHA256; self.eos = eos
        self.encoderSpec = encoderSpec; self.encoderTensors = encoderTensors; self.visualNorm = visualNorm; self.directory = directory
    }

    public static func load(_ dir: URL) throws -> ReportModel {
        let infoURL = dir.appendingPathComponent("model.json")
        guard let d = FileManager.default.contents(atPath: infoURL.path),
            let info = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any]
        else { throw XRError("missing or unreadable model.json", file: infoURL.path) }
        guard info["format"] as? String == "xrlab-report-model" else { throw XRError("not an xrlab report model", file: infoURL.path, field: "format") }
        guard (info["format_version"] as? Int ?? 99) <= 1 else {
            throw XRError(
                "report model format \(info["format_version"] ?? "?") is newer than this xrlab reads (1)", file: infoURL.path, field: "format_version",
                hint: "upgrade xrlab")
        }
        guard let dec = info["decoder"] as? [String: Int], let v = dec["vocab"], let p = dec["positions"], let c = dec["dim"], let l = dec["layers"],
            let h = dec["heads"], let vd = dec["visual_dim"]
        else { throw XRError("incomplete decoder section", file: infoURL.path, field: "decoder") }
        let w = try SafeTensorsFile(contentsOf: dir.appendingPathComponent("decoder.safetensors"))
        var t: [String: Tensor] = [:]
        for n in w.names { t[n] = try w.tensor(n) }
        let prefix = try DecoderConfig.visualPrefix(parsing: info["visual_input"] as? String ?? "cross_attention", field: "visual_input", file: infoURL.path)
        let decoder = try ReportDecoder(
            config: DecoderConfig(vocab: v, positions: p, dim: c, layers: l, heads: h, visualDim: vd, visualPrefix: prefix), tensors: t,
            source: dir.appendingPathComponent("decoder.safetensors").path)
        let tok = try BPETokenizer.load(dir.appendingPathComponent("tokenizer.json"))
        guard let eos = tok.added["<|endoftext|>"] else { throw XRError("the tokenizer has no <|endoftext|> token", file: dir.path, field: "tokenizer.json") }
        var spec = ReportEncoderSpec.frozen
        if let e = info["encoder_tuning"] as? [String: Any], !e.isEmpty {
            do { spec = try JSONDecoder().decode(ReportEncoderSpec.self, from: try JSONSerialization.data(withJSONObject: e)) } catch {
                throw XRError("unreadable encoder_tuning section", file: infoURL.path, field: "encoder_tuning")
            }
        }
        var et: [String: Tensor] = [:]
        if !spec.isFrozen {
            let u = dir.appendingPathComponent("encoder_tuned.safetensors")
            let f = try SafeTensorsFile(contentsOf: u)
            for n in f.names { et[n] = try f.tensor(n) }
        }
        let nu = dir.appendingPathComponent("visual_norm.safetensors")
        let nf = try SafeTensorsFile(contentsOf: nu)
        let mean = try nf.tensor("mean"), inv = try nf.tensor("inv_std")
        let S = info["visual_tokens"] as? Int ?? 0
        guard mean.shape == [S, vd], inv.shape == [S, vd], mean.scalars.allSatisfy(\.isFinite), inv.scalars.allSatisfy(\.isFinite) else {
            throw XRError("visual standardisation must be two finite (\(S), \(vd)) tensors", file: nu.path, field: "mean / inv_std")
        }
        return ReportModel(
            decoder: decoder, tokenizer: tok, pool: info["pool"] as? Int ?? 1, encoderSHA256: info["encoder_sha256"] as? String ?? "", eos: eos,
            encoderSpec: spec, encoderTensors: et, visualNorm: VisualNorm(mean: mean.scalars, invStd: inv.scalars), directory: dir)
    }

    /// Draft reports for images, with the encoder the model was trained on (its hash is checked).
    public func generate(_ images: [URL], encoder: Encoder, options: GenerationOptions, quiet: Bool = true) throws -> [String] {
        guard encoder.weightsHash == encoderSHA256 else {
            throw XRError(
                "encoder mismatch: the report model was trained on encoder \(encoderSHA256.prefix(16))…, this one is \(encoder.weightsHash.prefix(16))…",
                field: "--base", hint: "use the encoder the model was trained with")
        }
        let vis: [[Float]], S: Int
        if encoderSpec.isFrozen {
            let pairs = images.map { ReportPair(id: $0.path, image: $0, findings: "", impression: "", split: nil, row: 0) }
            (vis, S, _) = try ReportTraining.visualTokens(pairs, encoder: encoder, pool: pool, quiet: quiet)
        } else {
            // The base encoder with the tuned parameters the model carries.
            let tuned = try TunedEncoder(encoder, spec: encoderSpec, seed: 0, source: directory.path)
            try tuned.load(encoderTensors, source: directory.appendingPathComponent("encoder_tuned.safetensors").path)
            vis = try ReportTraining.visualTokens(images, tuned: tuned, pool: pool, quiet: quiet)
            S = PatchPooling.pooledCount(grid: tuned.vit.config.grid, factor: pool)
        }
        return try vis.map { raw in
            let v = visualNorm.apply(raw)
            var o = options
            o.maxNewTokens = min(o.maxNewTokens, decoder.config.positions - 1 - (decoder.config.visualPrefix ? S : 0))
            let out = try decoder.generate(visual: v, visualTokens: S, prompt: [eos], eos: eos, options: o)
            return tokenizer.decode(out.ids.filter { $0 != eos }, skipSpecial: true).trimmingCharacters(in: .whitespaces)
        }
    }
}
