// Report generation end to end: paired images and reports → encoder patch tokens (pooled; from a
// frozen encoder, computed once, or from an encoder tuned with LoRA / its last blocks) → a
// GPT-2-style decoder with cross-attention trained by teacher forcing → beam-search drafts on the
// test images → BLEU / ROUGE-L / CIDEr-D and CheXpert clinical efficacy. A checkpoint after every
// epoch lets an interrupted run resume to the same result. The model folder holds the decoder
// (Hugging Face names), its config, the tokenizer, the tuned encoder parameters (if any) and the
// hash and preprocessing of the encoder it was trained on.
import Foundation
import XRTensor
import XRKernels
import XRData
import XRModels
import XRPipeline
import XRTrain
import XRText

public struct ReportTrainOptions: Sendable {
    public var manifest: URL
    public var imageColumn = "path"
    public var splitColumn = "split"
    public var encoder: URL
    /// The encoder already loaded (e.g. with a recipe's preprocessing); nil = load `encoder`.
    public var loadedEncoder: Encoder?
    public var output: URL
    /// Hugging Face tokenizer.json; nil = train one (vocabulary `vocabSize`) on the training reports.
    public var tokenizer: URL?
    public var vocabSize = 2000
    /// "findings", "impression" or "both".
    public var target = "both"
    /// METEOR 1.5 resources (see `MeteorResources.load`); adds `meteor` to the test metrics.
    public var meteorData: String?
    public var dim = 256, layers = 4, heads = 4, maxTokens = 128
    /// Average-pool the patch grid by this factor (1 = every patch token).
    public var pool = 2
    /// Visual tokens as a prefix of the text (plain GPT-2 blocks) instead of cross-attention.
    public var visualPrefix = false
    /// GPT-2-layout safetensors to start the decoder from (Hugging Face names).
    public var initFrom: URL?
    public var epochs = 10, batchSize = 8
    public var lr = 5e-4, weightDecay = 0.01, warmup = 0.1, labelSmoothing = 0.1, clip: Double? = 1.0
    /// Training reports used (nil = all): the low-data sweep's axis.
    public var trainLimit: Int?
    /// Frozen encoder, or LoRA / last-k tuning of it.
    public var encoderSpec = ReportEncoderSpec.frozen
    /// Keep `checkpoint.safetensors` in the output folder after every epoch and resume from it.
    public var checkpoints = true
    /// Stop after this many epochs of this call (the checkpoint stays; used to test resuming).
    public var stopAfter: Int?
    public var seed: UInt64 = 0
    public var generation = GenerationOptions()
    public var quiet = false
    public init(manifest: URL, encoder: URL, output: URL) { self.manifest = manifest; self.encoder = encoder; self.output = output }
}

public struct ReportTrainResult: Sendable {
    public var metrics: [String: Double]
    /// False when `stopAfter` ended the call before the last epoch (nothing but the checkpoint written).
    public var complete = true
    public var generated: [String] = []
    /// The test reports the drafts are scored against, in the same order.
    public var references: [String] = []
    /// Ids of the reports trained on and of those held out for validation.
    public var trainIDs: [String] = []
    public var validationIDs: [String] = []
    public var testIDs: [String] = []
    /// The epoch whose weights were kept (lowest validation loss).
    public var bestEpoch = 0
    public var trainableEncoderParameters = 0
    public var history: [EpochRecord]
    public var truncated: Int
    public var trainReports: Int
    public var testReports: Int

    init(metrics: [String: Double], complete: Bool = true, history: [EpochRecord], truncated: Int, trainReports: Int, testReports: Int) {
        self.metrics = metrics; self.complete = complete; self.history = history; self.truncated = truncated
        self.trainReports = trainReports; self.testReports = testReports
    }
}

public enum ReportTraining {
    /// Visual tokens (n, S, Cv) for the images: patch tokens of the frozen encoder, average-pooled.
    static func visualTokens(_ pairs: [ReportPair], encoder: Encoder, pool: Int, quiet: Bool) throws -> (tokens: [[Float]], S: Int, dim: Int) {
        var o = EmbedOptions()
        o.patchTokens = true
        o.quiet = quiet
        let res = try encoder.embed(pairs.map { ImageInput(url: $0.image, id: $0.id) }, options: o)
        if let f = res.failed.first { throw XRError("image could not be read: \(f.reason)", file: f.id, field: "image") }
        guard let t = res.tensors["patch_tokens"] else { throw XRError("the encoder returned no patch tokens", field: "encoder") }
        let n = t.shape[0], N = t.shape[1], C = t.shape[2]
        let g = Int(Double(N).squareRoot().rounded())
        guard g * g == N else { throw XRError("patch grid of \(N) tokens is not square", field: "encoder") }
        let pooled = PatchPooling.pool(t.scalars, batch: n, grid: g, channels: C, factor: pool)
        let S = PatchPooling.pooledCount(grid: g, factor: pool)
        return ((0..<n).map { Array(pooled[($0 * S * C)..<(($0 + 1) * S * C)]) }, S, C)
    }

    /// Visual tokens of a tuned encoder, in batches, without gradients.
    static func visualTokens(_ images: [URL], tuned: TunedEncoder, pool: Int, batch: Int = 8, quiet: Bool = true) throws -> [[Float]] {
        var out: [[Float]] = []
        let progress = ProgressReporter("encode", total: images.count, unit: "images", quiet: quiet)
        for start in stride(from: 0, to: images.count, by: batch) {
            let part = Array(images[start..<min(images.count, start + batch)])
            let px = try part.flatMap { u -> [Float] in
                let x = try tuned.preprocessing.apply(contentsOf: u)
                guard x.count == 3 * tuned.size * tuned.size else {
                    throw XRError("preprocessed to \(x.count) values, expected 3×\(tuned.size)×\(tuned.size)", file: u.path)
                }
                return x
            }
            let (v, S) = try tuned.visualTokens(pixels: px, batch: part.count, pool: pool, training: false)
            let per = v.count / part.count
            _ = S
            for b in 0..<part.count { out.append(Array(v[(b * per)..<((b + 1) * per)])) }
            progress.advance(by: part.count)
        }
        progress.finish()
        return out
    }

    /// Everything that decides the training: a checkpoint written under other values is refused.
    static func checkpointIdentity(_ o: ReportTrainOptions, encoderHash: String, fit: [ReportPair], val: [ReportPair], tokenizer: BPETokenizer) -> [String:
        String]
    {
        func digest(_ p: [ReportPair]) -> String {
            String(SHA256.hex(Data(p.map { "\($0.image.lastPathComponent)|\($0.findings)|\($0.impression)" }.joined(separator: "\n").utf8)).prefix(16))
        }
        return [
            "encoder": String(encoderHash.prefix(16)), "encoder tuning": o.encoderSpec.description, "target": o.target,
            "decoder":
                "dim \(o.dim), layers \(o.layers), heads \(o.heads), max tokens \(o.maxTokens), pool \(o.pool), init \(o.initFrom?.lastPathComponent ?? "random")"
                + (o.visualPrefix ? ", visual prefix" : ""),
            "training":
                "epochs \(o.epochs), batch \(o.batchSize), lr \(o.lr), wd \(o.weightDecay), warmup \(o.warmup), smoothing \(o.labelSmoothing), clip \(o.clip.map { String($0) } ?? "none")",
            "seed": String(o.seed), "training reports": "\(fit.count) (\(digest(fit)))", "validation reports": "\(val.count) (\(digest(val)))",
            "tokenizer": "\(tokenizer.size) tokens"
        ]
    }

    /// GPT-2's initialisation: N(0, 0.02) matrices and embeddings, norms 1, biases 0.
    public static func initialTensors(_ c: DecoderConfig, seed: UInt64, from: URL?) throws -> [String: Tensor] {
        var rng = XRRandom(seed: seed, stream: [0x6E7])
        var t: [String: Tensor] = [:]
        func normal(_ shape: [Int]) -> Tensor { Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { _ in rng.nextGaussian() * 0.02 }) }
        let C = c.dim
        t["transformer.wte.weight"] = normal([c.vocab, C]); t["transformer.wpe.weight"] = normal([c.positions, C])
        for i in 0..<c.layers {
            let p = "transformer.h.\(i)."
            for ln in ["ln_1", "ln_cross_attn", "ln_2"] where !(c.visualPrefix && ln == "ln_cross_attn") {
                t[p + ln + ".weight"] = Tensor(shape: [C], scalars: [Float](repeating: 1, count: C)); t[p + ln + ".bias"] = Tensor(zeros: [C])
            }
            for (n, i_, o) in [
                ("attn.c_attn", C, 3 * C), ("attn.c_proj", C, C), ("crossattention.q_attn", C, C), ("crossattention.c_attn", C, 2 * C),
                ("crossattention.c_proj", C, C), ("mlp.c_fc", C, 4 * C), ("mlp.c_proj", 4 * C, C)
            ] where !(c.visualPrefix && n.hasPrefix("crossattention")) {
                t[p + n + ".weight"] = normal([i_, o]); t[p + n + ".bias"] = Tensor(zeros: [o])
            }
        }
        t["transformer.ln_f.weight"] = Tensor(shape: [C], scalars: [Float](repeating: 1, count: C)); t["transformer.ln_f.bias"] = Tensor(zeros: [C])
        t["visual_proj.weight"] = normal([C, c.visualDim]); t["visual_proj.bias"] = Tensor(zeros: [C])
        guard let from else { return t }
        // A GPT-2 checkpoint: its tensors replace the random ones (cross-attention and the visual
        // projection stay random when absent); shapes must match the config, except that a
        // checkpoint with more positions (GPT-2 has 1,024) gives its first ones.
        let f = try SafeTensorsFile(contentsOf: from)
        for n in f.names {
            let key = n.hasPrefix("transformer.") ? n : "transformer." + n
            guard let cur = t[key] else { continue }
            var x = try f.tensor(n)
            if key == "transformer.wpe.weight", x.shape.count == 2, x.shape[1] == C, x.shape[0] > c.positions {
                x = Tensor(shape: [c.positions, C], scalars: Array(x.scalars.prefix(c.positions * C)))
            }
            guard x.shape == cur.shape else { throw XRError("shape \(x.shape), the decoder config needs \(cur.shape)", file: from.path, field: n) }
            t[key] = x
        }
        return t
    }

    /// Train a report model, draft the test reports and score them: the stages below in order
    /// (reports → tokenizer → visual input → decoder → training → drafts and metrics → model folder).
    public static func run(_ o: ReportTrainOptions) throws -> ReportTrainResult {
        let reports = try ReportSplit(o)
        try FileManager.default.createDirectory(at: o.output, withIntermediateDirectories: true)
        let text = try ReportText(o, fit: reports.fit)
        var visual = try VisualInput(o, reports: reports)
        let model = try decoder(o, vocab: text.tokenizer.size, visual: visual)
        let params = model.parameters + (visual.tuned?.parameters ?? [])
        let seqs = TokenizedReports(reports.all.map { $0.target(o.target) }, tokenizer: text.tokenizer, maxTokens: o.maxTokens, bos: text.eos, eos: text.eos)
        let trained = try train(o, reports: reports, text: text, visual: visual, model: model, params: params, seqs: seqs)
        let history = trained.history, best = trained.best
        if history.count < o.epochs {
            return ReportTrainResult(
                metrics: [:], complete: false, history: history, truncated: seqs.truncated,
                trainReports: reports.fit.count, testReports: reports.test.count)
        }
        if let best { for p in params { if let v = best.values[p.name] { p.assign(v) } } }
        try visual.encodeTest(reports)
        let generated = try draft(o, reports: reports, text: text, visual: visual, model: model)
        let refs = reports.test.map { $0.target(o.target) }
        let metrics = try testMetrics(generated: generated, references: refs, meteor: reports.meteorSource)
        try writeModelFolder(
            o, reports: reports, text: text, visual: visual, model: model, seqs: seqs, history: history,
            metrics: metrics, generated: generated)
        try? FileManager.default.removeItem(at: trained.checkpoint)
        var result = ReportTrainResult(
            metrics: metrics, history: history, truncated: seqs.truncated, trainReports: reports.fit.count, testReports: reports.test.count)
        result.generated = generated
        result.references = refs
        result.trainIDs = reports.fit.map(\.id); result.validationIDs = reports.val.map(\.id); result.testIDs = reports.test.map(\.id)
        result.bestEpoch = best?.epoch ?? 0
        result.trainableEncoderParameters = visual.tuned?.parameters.reduce(0) { $0 + $1.count } ?? 0
        return result
    }

    /// The decoder, initialised as GPT-2 (or from `initFrom`); with a visual prefix the positions
    /// count the S visual tokens before the text.
    static func decoder(_ o: ReportTrainOptions, vocab: Int, visual: VisualInput) throws -> ReportDecoder {
        let S = visual.S, Cv = visual.Cv
        let config = DecoderConfig(
            vocab: vocab, positions: o.maxTokens + (o.visualPrefix ? S : 0), dim: o.dim, layers: o.layers, heads: o.heads,
            visualDim: Cv, visualPrefix: o.visualPrefix)
        let model = try ReportDecoder(
            config: config, tensors: try initialTensors(config, seed: o.seed, from: o.initFrom), source: o.initFrom?.path ?? "initialisation")
        model.needsVisualGradient = visual.tuned != nil
        return model
    }

    /// What training leaves: the loss history, the best epoch's weights, and the checkpoint file.
    struct Trained {
        var history: [EpochRecord]
        var best: (epoch: Int, loss: Double, values: [String: [Float]])?
        var checkpoint: URL
    }

    /// Teacher forcing with AdamW under a warmup-cosine schedule, a validation loss per epoch (the
    /// lowest one's weights are kept), and a checkpoint after every epoch that a rerun of the same
    /// configuration resumes from. Stops early (history shorter than `epochs`) at `stopAfter`.
    static func train(
        _ o: ReportTrainOptions, reports: ReportSplit, text: ReportText, visual: VisualInput, model: ReportDecoder,
        params: [Parameter], seqs: TokenizedReports
    ) throws -> Trained {
        let fitIdx = reports.fitIdx, valIdx = reports.valIdx
        let tuned = visual.tuned, norm = visual.norm, S = visual.S, config = model.config, pad = text.pad
        func batch(_ idx: [Int]) -> (ids: [Int], labels: [Int], lengths: [Int]) {
            let T = idx.map { seqs.sequences[$0].count }.max() ?? 0
            var ids: [Int] = [], labels: [Int] = [], lengths: [Int] = []
            for i in idx {
                let s = seqs.sequences[i]
                ids += s + [Int](repeating: pad, count: T - s.count)
                labels += s + [Int](repeating: -100, count: T - s.count)
                lengths.append(s.count)
            }
            return (ids, labels, lengths)
        }
        let perEpoch = (fitIdx.count + o.batchSize - 1) / o.batchSize
        let schedule = Schedule(peak: o.lr, warmup: Int(Double(perEpoch * o.epochs) * o.warmup), total: perEpoch * o.epochs)
        let opt = AdamW(weightDecay: o.weightDecay)
        if let tuned { for p in tuned.parameters { opt.lrScale[p.name] = o.encoderSpec.lrScale } }
        var history: [EpochRecord] = []
        var best: (epoch: Int, loss: Double, values: [String: [Float]])? = nil
        var firstEpoch = 0
        // Resume: a checkpoint of the same configuration continues where it stopped.
        let ckpt = o.output.appendingPathComponent("checkpoint.safetensors")
        let identity = checkpointIdentity(o, encoderHash: visual.encoder.weightsHash, fit: reports.fit, val: reports.val, tokenizer: text.tokenizer)
        if o.checkpoints, FileManager.default.fileExists(atPath: ckpt.path) {
            let st = try TuneCheckpoint.load(ckpt, identity: identity, parameters: params, optimizer: opt)
            firstEpoch = st.epoch; history = st.history; best = st.best
        }
        let progress = ProgressReporter("report", total: (o.epochs - firstEpoch) * perEpoch, unit: "steps", quiet: o.quiet)
        var step = firstEpoch * perEpoch
        var ran = 0
        for epoch in firstEpoch..<o.epochs {
            if let k = o.stopAfter, ran >= k { break }
            var order = fitIdx
            var r = XRRandom(seed: o.seed, stream: [0xE90C, UInt64(epoch)])
            r.shuffle(&order)
            var sum = 0.0, count = 0
            for start in stride(from: 0, to: order.count, by: o.batchSize) {
                let idx = Array(order[start..<min(order.count, start + o.batchSize)])
                let b = batch(idx)
                model.zeroGrad()
                tuned?.vit.zeroGrad()
                tuned?.vit.dropoutSeed = UInt64(step)
                let v = try visual.tokens(idx, training: true)
                try model.forward(visual: v, visualTokens: S, ids: b.ids, batch: idx.count, lengths: b.lengths, returnLogits: false)
                let (loss, n) = model.lossAndBackward(labels: b.labels, smoothing: o.labelSmoothing)
                guard loss.isFinite else {
                    throw XRError(
                        "the loss became \(loss) in epoch \(epoch + 1)", field: "lr",
                        hint: "lower the learning rate" + (o.checkpoints ? "; the checkpoint of the last finished epoch is kept" : ""))
                }
                tuned?.backward(norm.backward(model.visualGradient), batch: idx.count, pool: o.pool)
                clipGradNorm(params, maxNorm: o.clip ?? .infinity)
                opt.update(params, lr: schedule.lr(step))
                step += 1
                sum += loss * Double(n); count += n
                progress.advance()
            }
            // Validation loss (no smoothing).
            var vsum = 0.0, vcount = 0
            for start in stride(from: 0, to: valIdx.count, by: o.batchSize) {
                let idx = Array(valIdx[start..<min(valIdx.count, start + o.batchSize)])
                let b = batch(idx)
                let logits = try model.forward(
                    visual: try visual.tokens(idx, training: false), visualTokens: S, ids: b.ids, batch: idx.count, lengths: b.lengths)
                let (loss, _, n) = ReportDecoder.languageModelLoss(logits: logits, labels: b.labels, batch: idx.count, vocab: config.vocab)
                vsum += loss * Double(n); vcount += n
            }
            let vloss = vsum / Double(max(vcount, 1))
            history.append(EpochRecord(epoch: epoch + 1, trainLoss: sum / Double(max(count, 1)), validationLoss: vloss, lr: schedule.lr(max(step - 1, 0))))
            if best.map({ vloss < $0.loss }) ?? true { best = (epoch + 1, vloss, Dictionary(uniqueKeysWithValues: params.map { ($0.name, $0.value.array) })) }
            if o.checkpoints {
                try TuneCheckpoint.save(
                    ckpt, identity: identity, epoch: epoch + 1, history: history, best: best, stopped: false, parameters: params, optimizer: opt)
            }
            ran += 1
        }
        progress.finish()
        return Trained(history: history, best: best, checkpoint: ckpt)
    }

    /// Drafts for the test images (beam search, at most `maxTokens` − 1 new tokens).
    static func draft(_ o: ReportTrainOptions, reports: ReportSplit, text: ReportText, visual: VisualInput, model: ReportDecoder) throws -> [String] {
        let eos = text.eos, S = visual.S
        var generated: [String] = []
        let gen = ProgressReporter("generate", total: reports.testIdx.count, unit: "reports", quiet: o.quiet)
        for i in reports.testIdx {
            var g = o.generation
            g.maxNewTokens = min(g.maxNewTokens, o.maxTokens - 1)
            let out = try model.generate(visual: visual.vis[i], visualTokens: S, prompt: [eos], eos: eos, options: g)
            generated.append(text.tokenizer.decode(out.ids.filter { $0 != eos }, skipSpecial: true).trimmingCharacters(in: .whitespaces))
            gen.advance()
        }
        gen.finish()
        return generated
    }

    /// BLEU-1…4, ROUGE-L, CIDEr-D and clinical efficacy of the drafts (and METEOR with its resources).
    static func testMetrics(generated: [String], references refs: [String], meteor meteorSource: MeteorSource?) throws -> [String: Double] {
        let s = CaptionMetrics.score(rawCandidates: generated, rawReferences: refs.map { [$0] })
        let e = CheXpertLabeler.efficacy(generated: generated, references: refs)
        var metrics: [String: Double] = [
            "rouge_l": s.rougeL, "cider_d": s.ciderD, "ce_precision": e.micro.precision, "ce_recall": e.micro.recall, "ce_f1": e.micro.f1
        ]
        for k in 0..<4 { metrics["bleu_\(k + 1)"] = s.bleu[k] }
        if let meteorSource {
            let tc = generated.map(PTBTokenizer.tokenize), tr = refs.map(PTBTokenizer.tokenize)
            metrics["meteor"] = try meteorSource.meteor(covering: tc).score(candidates: tc, references: tr.map { [$0] }).corpus
        }
        return metrics
    }

    /// The model folder: tokenizer, visual-token statistics, tuned encoder parameters (if any),
    /// decoder (Hugging Face names), model.json and the drafts beside the references.
    static func writeModelFolder(
        _ o: ReportTrainOptions, reports: ReportSplit, text: ReportText, visual: VisualInput, model: ReportDecoder,
        seqs: TokenizedReports, history: [EpochRecord], metrics: [String: Double], generated: [String]
    ) throws {
        let S = visual.S, Cv = visual.Cv, norm = visual.norm, tuned = visual.tuned, encoder = visual.encoder, config = model.config
        let fit = reports.fit, val = reports.val, test = reports.test
        try text.tokenizer.save(o.output.appendingPathComponent("tokenizer.json"))
        try SafeTensors.write(
            [("mean", Tensor(shape: [S, Cv], scalars: norm.mean)), ("inv_std", Tensor(shape: [S, Cv], scalars: norm.invStd))],
            metadata: ["format": "pt"], to: o.output.appendingPathComponent("visual_norm.safetensors"))
        let encoderFile = o.output.appendingPathComponent("encoder_tuned.safetensors")
        if let tuned {
            try SafeTensors.write(
                tuned.parameters.map { ($0.name, $0.tensor) }, metadata: ["format": "pt", "base_sha256": encoder.weightsHash], to: encoderFile)
        } else {
            try? FileManager.default.removeItem(at: encoderFile)
        }
        try SafeTensors.write(
            model.hfTensors().sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, metadata: ["format": "pt"],
            to: o.output.appendingPathComponent("decoder.safetensors"))
        let info: [String: Any] = [
            "format": "xrlab-report-model", "format_version": 1, "xrlab_version": XRLabVersion.string,
            "decoder": [
                "vocab": config.vocab, "positions": config.positions, "dim": config.dim, "layers": config.layers, "heads": config.heads, "visual_dim": Cv
            ],
            "visual_tokens": S, "visual_input": config.visualInputName, "pool": o.pool, "target": o.target, "encoder_sha256": encoder.weightsHash,
            "encoder_tuning": (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(o.encoderSpec))) ?? [:],
            "encoder_input_size": tuned?.size ?? NSNull(),
            "preprocessing": (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(encoder.preprocessing))) ?? [:],
            "train_reports": fit.count, "validation_reports": val.count, "test_reports": test.count, "truncated_reports": seqs.truncated,
            "metrics": metrics, "history": history.map { ["epoch": $0.epoch, "train_loss": $0.trainLoss, "validation_loss": $0.validationLoss ?? 0] }
        ]
        try AtomicFile.write(
            try JSONSerialization.data(withJSONObject: info, options: [.sortedKeys, .prettyPrinted]), to: o.output.appendingPathComponent("model.json"))
        var csv = "id,generated,reference\n"
        func q(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
        for (p, g) in zip(test, generated) { csv += "\(q(p.id)),\(q(g)),\(q(p.target(o.target)))\n" }
        try AtomicFile.write(csv, to: o.output.appendingPathComponent("generated.csv"))
    }
}

/// The paired reports of a training run: the training reports shuffled with the seed (the first
/// `trainLimit` kept), a tenth of them (at least one) held out for validation, and the test
/// reports; METEOR's resources (cut down to the test reports' words) are read here, before training.
struct ReportSplit {
    let fit: [ReportPair], val: [ReportPair], test: [ReportPair]
    let meteorSource: MeteorSource?

    init(_ o: ReportTrainOptions) throws {
        let pairs = try PairedReports.load(o.manifest, imageColumn: o.imageColumn, splitColumn: o.splitColumn)
        var train = pairs.filter { ($0.split ?? "train").lowercased() == "train" }
        let test = pairs.filter { $0.split?.lowercased() == "test" }
        guard !train.isEmpty, !test.isEmpty else { throw XRError("the manifest needs train and test rows", file: o.manifest.path, field: "split") }
        // METEOR's resources are read (cut down to the test reports' words) before training starts.
        let meteorSource = try o.meteorData.map { try MeteorSource(path: $0, texts: test.map { PTBTokenizer.tokenize($0.target(o.target)) }) }
        var rng = XRRandom(seed: o.seed, stream: [0x5A11])
        rng.shuffle(&train)
        if let k = o.trainLimit { train = Array(train.prefix(k)) }
        // Validation: a tenth of the training reports (at least one).
        let nVal = max(1, train.count / 10)
        let val = Array(train.prefix(nVal)), fit = Array(train.dropFirst(nVal))
        guard !fit.isEmpty else { throw XRError("too few training reports (\(train.count))", field: "train") }
        self.fit = fit; self.val = val; self.test = test; self.meteorSource = meteorSource
    }

    /// Every pair, in the order the indices below count: fit, validation, test.
    var all: [ReportPair] { fit + val + test }
    var fitIdx: [Int] { Array(0..<fit.count) }
    var valIdx: [Int] { Array(fit.count..<(fit.count + val.count)) }
    var testIdx: [Int] { Array((fit.count + val.count)..<(fit.count + val.count + test.count)) }
}

/// The tokenizer (loaded, or trained on the training reports) and its end-of-text and padding ids.
struct ReportText {
    let tokenizer: BPETokenizer
    let eos: Int, pad: Int

    init(_ o: ReportTrainOptions, fit: [ReportPair]) throws {
        let tokenizer: BPETokenizer
        if let t = o.tokenizer {
            tokenizer = try BPETokenizer.load(t)
        } else {
            tokenizer = try BPETokenizer.train(fit.map { $0.target(o.target) }, vocabSize: o.vocabSize, specialTokens: ["<|endoftext|>", "<pad>"])
        }
        guard let eos = tokenizer.added["<|endoftext|>"] else { throw XRError("the tokenizer has no <|endoftext|> token", field: "tokenizer") }
        self.tokenizer = tokenizer
        self.eos = eos
        self.pad = tokenizer.added["<pad>"] ?? eos
    }
}
