// Report generation end to end: paired images and reports → frozen encoder patch tokens (pooled,
// cached) → a GPT-2-style decoder with cross-attention trained by teacher forcing → beam-search
// drafts on the test images → BLEU / ROUGE-L / CIDEr-D and CheXpert clinical efficacy. The model
// folder holds the decoder (Hugging Face names), its config, the tokenizer and the encoder it was
// trained on (with its hash and preprocessing).
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
    public var encoder: URL
    public var output: URL
    /// Hugging Face tokenizer.json; nil = train one (vocabulary `vocabSize`) on the training reports.
    public var tokenizer: URL?
    public var vocabSize = 2000
    /// "findings", "impression" or "both".
    public var target = "both"
    public var dim = 256, layers = 4, heads = 4, maxTokens = 128
    /// Average-pool the patch grid by this factor (1 = every patch token).
    public var pool = 2
    /// GPT-2-layout safetensors to start the decoder from (Hugging Face names).
    public var initFrom: URL?
    public var epochs = 10, batchSize = 8
    public var lr = 5e-4, weightDecay = 0.01, warmup = 0.1, labelSmoothing = 0.1, clip: Double? = 1.0
    /// Training reports used (nil = all): the low-data sweep's axis.
    public var trainLimit: Int?
    public var seed: UInt64 = 0
    public var generation = GenerationOptions()
    public var quiet = false
    public init(manifest: URL, encoder: URL, output: URL) { self.manifest = manifest; self.encoder = encoder; self.output = output }
}

public struct ReportTrainResult: Sendable {
    public var metrics: [String: Double]
    public var history: [EpochRecord]
    public var truncated: Int
    public var trainReports: Int
    public var testReports: Int
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
        let p = max(1, min(pool, g)), G = g / p
        var out: [[Float]] = []
        for i in 0..<n {
            var v = [Float](repeating: 0, count: G * G * C)
            for gy in 0..<(G * p) { for gx in 0..<(G * p) {
                let dst = ((gy / p) * G + gx / p) * C, src = ((i * N) + gy * g + gx) * C
                for c in 0..<C { v[dst + c] += t.scalars[src + c] / Float(p * p) }
            } }
            out.append(v)
        }
        return (out, G * G, C)
    }

    /// GPT-2's initialisation: N(0, 0.02) matrices and embeddings, norms 1, biases 0.
    static func initialTensors(_ c: DecoderConfig, seed: UInt64, from: URL?) throws -> [String: Tensor] {
        var rng = XRRandom(seed: seed, stream: [0x6E7])
        var t: [String: Tensor] = [:]
        func normal(_ shape: [Int]) -> Tensor { Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { _ in rng.nextGaussian() * 0.02 }) }
        let C = c.dim
        t["transformer.wte.weight"] = normal([c.vocab, C]); t["transformer.wpe.weight"] = normal([c.positions, C])
        for i in 0..<c.layers {
            let p = "transformer.h.\(i)."
            for ln in ["ln_1", "ln_cross_attn", "ln_2"] { t[p + ln + ".weight"] = Tensor(shape: [C], scalars: [Float](repeating: 1, count: C)); t[p + ln + ".bias"] = Tensor(zeros: [C]) }
            for (n, i_, o) in [("attn.c_attn", C, 3 * C), ("attn.c_proj", C, C), ("crossattention.q_attn", C, C), ("crossattention.c_attn", C, 2 * C),
                               ("crossattention.c_proj", C, C), ("mlp.c_fc", C, 4 * C), ("mlp.c_proj", 4 * C, C)] {
                t[p + n + ".weight"] = normal([i_, o]); t[p + n + ".bias"] = Tensor(zeros: [o])
            }
        }
        t["transformer.ln_f.weight"] = Tensor(shape: [C], scalars: [Float](repeating: 1, count: C)); t["transformer.ln_f.bias"] = Tensor(zeros: [C])
        t["visual_proj.weight"] = normal([C, c.visualDim]); t["visual_proj.bias"] = Tensor(zeros: [C])
        guard let from else { return t }
        // A GPT-2 checkpoint: its tensors replace the random ones (cross-attention and the visual
        // projection stay random when absent); shapes must match the config.
        let f = try SafeTensorsFile(contentsOf: from)
        for n in f.names {
            let key = n.hasPrefix("transformer.") ? n : "transformer." + n
            guard let cur = t[key] else { continue }
            let x = try f.tensor(n)
            guard x.shape == cur.shape else { throw XRError("shape \(x.shape), the decoder config needs \(cur.shape)", file: from.path, field: n) }
            t[key] = x
        }
        return t
    }

    public static func run(_ o: ReportTrainOptions) throws -> ReportTrainResult {
        let pairs = try PairedReports.load(o.manifest)
        var train = pairs.filter { ($0.split ?? "train").lowercased() == "train" }
        let test = pairs.filter { $0.split?.lowercased() == "test" }
        guard !train.isEmpty, !test.isEmpty else { throw XRError("the manifest needs train and test rows", file: o.manifest.path, field: "split") }
        var rng = XRRandom(seed: o.seed, stream: [0x5A11])
        rng.shuffle(&train)
        if let k = o.trainLimit { train = Array(train.prefix(k)) }
        // Validation: a tenth of the training reports (at least one).
        let nVal = max(1, train.count / 10)
        let val = Array(train.prefix(nVal)), fit = Array(train.dropFirst(nVal))
        guard !fit.isEmpty else { throw XRError("too few training reports (\(train.count))", field: "train") }

        try FileManager.default.createDirectory(at: o.output, withIntermediateDirectories: true)
        let tokenizer: BPETokenizer
        if let t = o.tokenizer { tokenizer = try BPETokenizer.load(t) } else {
            tokenizer = try BPETokenizer.train(fit.map { $0.target(o.target) }, vocabSize: o.vocabSize, specialTokens: ["<|endoftext|>", "<pad>"])
        }
        try tokenizer.save(o.output.appendingPathComponent("tokenizer.json"))
        guard let eos = tokenizer.added["<|endoftext|>"] else { throw XRError("the tokenizer has no <|endoftext|> token", field: "tokenizer") }
        let pad = tokenizer.added["<pad>"] ?? eos

        let encoder = try Encoder.load(model: o.encoder)
        let all = fit + val + test
        let (vis, S, Cv) = try visualTokens(all, encoder: encoder, pool: o.pool, quiet: o.quiet)
        let config = DecoderConfig(vocab: tokenizer.size, positions: o.maxTokens, dim: o.dim, layers: o.layers, heads: o.heads, visualDim: Cv)
        let model = try ReportDecoder(config: config, tensors: try initialTensors(config, seed: o.seed, from: o.initFrom), source: o.initFrom?.path ?? "initialisation")

        let seqs = TokenizedReports(all.map { $0.target(o.target) }, tokenizer: tokenizer, maxTokens: o.maxTokens, bos: eos, eos: eos)
        func batch(_ idx: [Int]) -> (visual: [Float], ids: [Int], labels: [Int], lengths: [Int]) {
            let T = idx.map { seqs.sequences[$0].count }.max()!
            var ids: [Int] = [], labels: [Int] = [], lengths: [Int] = [], v: [Float] = []
            for i in idx {
                let s = seqs.sequences[i]
                ids += s + [Int](repeating: pad, count: T - s.count)
                labels += s + [Int](repeating: -100, count: T - s.count)
                lengths.append(s.count)
                v += vis[i]
            }
            return (v, ids, labels, lengths)
        }
        let fitIdx = Array(0..<fit.count), valIdx = Array(fit.count..<(fit.count + val.count)), testIdx = Array((fit.count + val.count)..<all.count)
        let perEpoch = (fitIdx.count + o.batchSize - 1) / o.batchSize
        let schedule = Schedule(peak: o.lr, warmup: Int(Double(perEpoch * o.epochs) * o.warmup), total: perEpoch * o.epochs)
        let opt = AdamW(weightDecay: o.weightDecay)
        var history: [EpochRecord] = []
        var best: (loss: Double, values: [String: [Float]])? = nil
        let progress = ProgressReporter("report", total: o.epochs * perEpoch, unit: "steps", quiet: o.quiet)
        var step = 0
        for epoch in 0..<o.epochs {
            var order = fitIdx
            var r = XRRandom(seed: o.seed, stream: [0xE90C, UInt64(epoch)])
            r.shuffle(&order)
            var sum = 0.0, count = 0
            for start in stride(from: 0, to: order.count, by: o.batchSize) {
                let idx = Array(order[start..<min(order.count, start + o.batchSize)])
                let b = batch(idx)
                model.zeroGrad()
                try model.forward(visual: b.visual, visualTokens: S, ids: b.ids, batch: idx.count, lengths: b.lengths, returnLogits: false)
                let (loss, n) = model.lossAndBackward(labels: b.labels, smoothing: o.labelSmoothing)
                guard loss.isFinite else { throw XRError("the loss became \(loss) in epoch \(epoch + 1)", field: "lr", hint: "lower the learning rate") }
                clipGradNorm(model.parameters, maxNorm: o.clip ?? .infinity)
                opt.update(model.parameters, lr: schedule.lr(step))
                step += 1
                sum += loss * Double(n); count += n
                progress.advance()
            }
            // Validation loss (no smoothing).
            var vsum = 0.0, vcount = 0
            for start in stride(from: 0, to: valIdx.count, by: o.batchSize) {
                let idx = Array(valIdx[start..<min(valIdx.count, start + o.batchSize)])
                let b = batch(idx)
                let logits = try model.forward(visual: b.visual, visualTokens: S, ids: b.ids, batch: idx.count, lengths: b.lengths)
                let (loss, _, n) = ReportDecoder.languageModelLoss(logits: logits, labels: b.labels, batch: idx.count, vocab: config.vocab)
                vsum += loss * Double(n); vcount += n
            }
            let vloss = vsum / Double(max(vcount, 1))
            history.append(EpochRecord(epoch: epoch + 1, trainLoss: sum / Double(max(count, 1)), validationLoss: vloss, lr: schedule.lr(max(step - 1, 0))))
            if best == nil || vloss < best!.loss { best = (vloss, Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.name, $0.value.array) })) }
        }
        progress.finish()
        if let best { for p in model.parameters { if let v = best.values[p.name] { p.value.p.update(from: v, count: v.count) } } }

        // Drafts for the test images.
        var generated: [String] = []
        let gen = ProgressReporter("generate", total: testIdx.count, unit: "reports", quiet: o.quiet)
        for i in testIdx {
            var g = o.generation
            g.maxNewTokens = min(g.maxNewTokens, o.maxTokens - 1)
            let out = try model.generate(visual: vis[i], visualTokens: S, prompt: [eos], eos: eos, options: g)
            generated.append(tokenizer.decode(out.ids.filter { $0 != eos }, skipSpecial: true).trimmingCharacters(in: .whitespaces))
            gen.advance()
        }
        gen.finish()
        let refs = test.map { $0.target(o.target) }
        let s = CaptionMetrics.score(rawCandidates: generated, rawReferences: refs.map { [$0] })
        let e = CheXpertLabeler.efficacy(generated: generated, references: refs)
        var metrics: [String: Double] = ["rouge_l": s.rougeL, "cider_d": s.ciderD, "ce_precision": e.micro.precision, "ce_recall": e.micro.recall, "ce_f1": e.micro.f1]
        for k in 0..<4 { metrics["bleu_\(k + 1)"] = s.bleu[k] }

        // The model folder.
        try SafeTensors.write(model.hfTensors().sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, metadata: ["format": "pt"],
                              to: o.output.appendingPathComponent("decoder.safetensors"))
        let info: [String: Any] = [
            "format": "xrlab-report-model", "format_version": 1, "xrlab_version": XRLabVersion.string,
            "decoder": ["vocab": config.vocab, "positions": config.positions, "dim": config.dim, "layers": config.layers, "heads": config.heads, "visual_dim": Cv],
            "visual_tokens": S, "pool": o.pool, "target": o.target, "encoder_sha256": encoder.weightsHash,
            "preprocessing": (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(encoder.preprocessing))) ?? [:],
            "train_reports": fit.count, "validation_reports": val.count, "test_reports": test.count, "truncated_reports": seqs.truncated,
            "metrics": metrics, "history": history.map { ["epoch": $0.epoch, "train_loss": $0.trainLoss, "validation_loss": $0.validationLoss ?? 0] },
        ]
        try AtomicFile.write(try JSONSerialization.data(withJSONObject: info, options: [.sortedKeys, .prettyPrinted]), to: o.output.appendingPathComponent("model.json"))
        var csv = "id,generated,reference\n"
        func q(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
        for (p, g) in zip(test, generated) { csv += "\(q(p.id)),\(q(g)),\(q(p.target(o.target)))\n" }
        try AtomicFile.write(csv, to: o.output.appendingPathComponent("generated.csv"))
        return ReportTrainResult(metrics: metrics, history: history, truncated: seqs.truncated, trainReports: fit.count, testReports: test.count)
    }
}
