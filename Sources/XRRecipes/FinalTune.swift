// `xrlab tune`: one tuned model from a recipe's tuning method, trained on the training rows,
// evaluated on the test rows, and written out: the PEFT adapter folder (LoRA), the tuned
// weights under timm names (LoRA merged into the base weights), the training history and the
// test metrics. A PEFT adapter can be loaded instead of training (`fromPEFT`), to evaluate it or
// continue training it.
import Foundation
import XRTensor
import XRProbe
import XRTrain

public struct FinalTuneOptions: Sendable {
    /// Tuning method of the recipe (default: its only / first one).
    public var method: String?
    /// Task (label) to train (default: the only task).
    public var task: String?
    /// Examples per class as the study cell (shots, seed) draws them; nil = all training rows.
    public var shots: Int?
    public var seed = 0
    public var output: URL
    /// Start from this PEFT LoRA adapter folder (its config replaces the method's LoRA settings).
    public var fromPEFT: URL?
    /// Epochs override (0 = evaluate only, e.g. an imported adapter).
    public var epochs: Int?
    public var quiet = false
    public init(output: URL) { self.output = output }
}

public struct FinalTuneResult: Sendable {
    public var method: String
    public var task: String
    public var metrics: [String: Double]
    public var history: [EpochRecord]
    public var files: [URL]
}

public enum FinalTune {
    public static func run(_ r: LoadedRecipe, options o: FinalTuneOptions) throws -> FinalTuneResult {
        let tuning = r.recipe.methods.filter(\.isTuning)
        guard let method = o.method.map({ m in tuning.first { $0.name == m } }) ?? tuning.first else {
            throw XRError(
                o.method.map { "the recipe has no tuning method '\($0)'" } ?? "the recipe has no tuning method (lora, adapter, last_k, bitfit, full)",
                file: r.file.path, field: "methods",
                hint: tuning.isEmpty ? "add one to methods" : "tuning methods here: \(tuning.map(\.name).joined(separator: ", "))")
        }
        var spec = TuneSpec(method)
        if let e = o.epochs { spec.options.epochs = e }
        let data = try StudyLoader.load(r, quiet: o.quiet)
        let names = data.tasks.map(\.name)
        guard let task = o.task.map({ t in data.tasks.first { $0.name == t } }) ?? (data.tasks.count == 1 ? data.tasks.first : nil) else {
            throw XRError(
                o.task.map { "no task '\($0)'" } ?? "the recipe has \(names.count) tasks; choose one", field: "--task",
                hint: "tasks: \(names.joined(separator: ", "))")
        }
        let K = task.classes.count, n = data.ids.count
        let key = data.patients ?? data.ids
        let test = (0..<n).filter { data.isTest[$0] == true && task.labels[$0] >= 0 }
        let testKeys = Set(test.map { key[$0] })
        let pool = (0..<n).filter { data.isTest[$0] == false && task.labels[$0] >= 0 && !testKeys.contains(key[$0]) }
        let taskHash = Runner.streamKey(task.name)
        var train: [Int]
        if let k = o.shots {
            switch FewShotSampler.sample(
                labels: task.labels, classes: K, pool: pool, test: test, patients: data.patients, k: k,
                seed: UInt64(o.seed), stream: [taskHash, UInt64(k)])
            {
            case let .failure(f):
                throw XRError("class '\(task.classes[f.classIndex])' has \(f.available) eligible training examples; \(k) shots requested", field: "--shots")
            case let .success(s): train = s
            }
        } else {
            train = pool
        }
        var vr = XRRandom(seed: UInt64(o.seed), stream: [taskHash, UInt64(o.shots ?? 0), 0x7A11])
        // All-rows training: the validation rows come out of the training rows.
        let validation = TuneContext.validation(
            pool: pool, task: task, keys: key, used: o.shots == nil ? [] : Set(train.map { key[$0] }),
            testKeys: testKeys, perClass: spec.validationPerClass, rng: &vr)
        let vKeys = Set(validation.map { key[$0] })
        if o.shots == nil { train = train.filter { !vKeys.contains(key[$0]) } }

        let ctx = try TuneContext(r, data: data)
        let model = try ctx.model(classes: K, r, headHidden: spec.headHidden)
        if let dir = o.fromPEFT {
            try model.apply(try PEFTAdapter.load(dir), source: dir.path)
        } else {
            try model.setTrainable(spec.set, seed: UInt64(o.seed))
        }
        try FileManager.default.createDirectory(at: o.output, withIntermediateDirectories: true)
        let identity = [
            "recipe": String(r.fingerprint.prefix(16)), "encoder": String(ctx.encoder.weightsHash.prefix(16)), "method": spec.description,
            "task": task.name, "training rows": "\(train.count) (\(SHA256.hex(Data("\(train)".utf8)).prefix(12)))",
            "validation rows": "\(validation.count) (\(SHA256.hex(Data("\(validation)".utf8)).prefix(12)))", "from PEFT": o.fromPEFT?.path ?? "-"
        ]
        let tuner = Tuner(model: model, options: spec.options, seed: UInt64(o.seed) &* 0x9E37_79B9 ^ taskHash, identity: identity)
        let progress = ProgressReporter("tune", total: spec.options.epochs, unit: "epochs", quiet: o.quiet)
        tuner.progress = { _ in progress.advance() }
        let tdata = ctx.data(task)
        var history: [EpochRecord] = []
        if spec.options.epochs > 0 {
            history = try tuner.run(
                train: train, validation: validation, data: tdata,
                checkpoint: o.output.appendingPathComponent("checkpoint.safetensors")
            ).history
        }
        progress.finish()
        let probs = try tuner.predict(test, tdata)
        var metrics: [String: Double] = [:]
        for m in r.recipe.metrics {
            if let v = Metrics.named(m, probabilities: probs, truth: test.map { task.labels[$0] }, classes: K) { metrics[m] = v }
        }
        // Outputs.
        var files: [URL] = []
        if !model.loraLayers.isEmpty && model.config.headHidden == nil {
            let dir = o.output.appendingPathComponent("adapter")
            try PEFTAdapter.export(model, to: dir, baseSHA256: ctx.encoder.weightsHash)
            files.append(dir)
        }
        var weights = Dictionary(uniqueKeysWithValues: model.parameters.filter { !$0.name.contains("lora_") }.map { ($0.name, $0.tensor) })
        for (k, v) in model.mergedWeights() { weights[k] = v }
        let merged = o.output.appendingPathComponent("model.safetensors")
        try SafeTensors.write(
            weights.sorted { $0.key < $1.key }.map { ($0.key, $0.value) },
            metadata: [
                "format": "pt", "xrlab_base_sha256": ctx.encoder.weightsHash, "task": task.name,
                "classes": task.classes.joined(separator: ","), "method": method.name
            ], to: merged)
        files.append(merged)
        var csv = "epoch,train_loss,validation_loss,lr\n"
        for h in history { csv += "\(h.epoch),\(h.trainLoss),\(h.validationLoss.map { String($0) } ?? ""),\(h.lr)\n" }
        let hist = o.output.appendingPathComponent("history.csv")
        try AtomicFile.write(csv, to: hist)
        files.append(hist)
        let info: [String: Any] = [
            "method": method.name, "task": task.name, "classes": task.classes, "train_rows": train.count,
            "validation_rows": validation.count, "test_rows": test.count, "metrics": metrics,
            "trainable_parameters": model.trainableCount, "epochs": history.count,
            "base_sha256": ctx.encoder.weightsHash, "from_peft": o.fromPEFT?.path ?? NSNull()
        ]
        let mj = o.output.appendingPathComponent("metrics.json")
        try AtomicFile.write(try JSONSerialization.data(withJSONObject: info, options: [.sortedKeys, .prettyPrinted]), to: mj)
        files.append(mj)
        try? FileManager.default.removeItem(at: o.output.appendingPathComponent("checkpoint.safetensors"))
        return FinalTuneResult(method: method.name, task: task.name, metrics: metrics, history: history, files: files)
    }
}
