import Foundation
import XRTensor
import XRData
import XRModels

/// What `xrlab embed` computes and how.
public struct EmbedOptions: Sendable {
    public var batchSize = 8
    /// Also keep all patch tokens (N, T, C) — large.
    public var patchTokens = false
    /// Also keep the CLS token of the last n blocks (N, n, C), DINOv2's linear-probe features.
    public var lastBlocks = 0
    /// Only class-token features (`cls`, `last_blocks_cls`) are needed: the encoder's last block
    /// skips the patch rows past its keys and values, and no `patch_mean` is written.
    public var classTokenOnly = false
    /// What the encoder is asked for: class-token outputs only unless patch tokens are kept.
    var encodesClassTokenOnly: Bool { classTokenOnly && !patchTokens }
    /// Continue past unreadable images (they are listed, and left out of the outputs).
    public var skipBad = false
    /// Feature cache; nil disables caching.
    public var cache: FeatureCache? = FeatureCache(root: FeatureCache.defaultRoot())
    /// Largest image accepted (width × height), a guard against decompression bombs.
    public var maxPixels = 100_000_000
    /// Which DICOM pixel values become the image (stored, modality or VOI-transformed).
    public var dicomValues: DICOMFile.Values = .stored
    public var quiet = false

    public init() {}
}

/// An image that could not be read or preprocessed, and why.
public struct FailedInput: Sendable, Codable, Equatable {
    public var id: String
    public var reason: String
    public init(id: String, reason: String) { self.id = id; self.reason = reason }
}

/// Features for a list of images, row for row with `inputs`.
public struct EmbedResult: Sendable {
    public var inputs: [ImageInput]
    public var imageHashes: [String]
    /// Output name → tensor with the image index as the first dimension:
    /// `cls` (N, C), `pooled` (N, C), `patch_mean` (N, C), optionally `last_blocks_cls` (N, n, C),
    /// `patch_tokens` (N, T, C).
    public var tensors: [String: Tensor]
    public var failed: [FailedInput]
    public var cacheHits: Int
    public var encoded: Int
    /// Non-fatal notes, e.g. multi-frame DICOM files read as their first frame.
    public var warnings: [String] = []
}

/// A ViT encoder plus its preprocessing: the unit that turns X-ray files into features.
public final class Encoder: @unchecked Sendable {
    public let loaded: LoadedViT
    public let preprocessing: Preprocessing
    /// SHA-256 over the weight files (and config), identifying the encoder exactly.
    public let weightsHash: String
    /// Where the preprocessing came from (`preprocessor_config.json` or command-line flags).
    public let preprocessingSource: String

    public init(loaded: LoadedViT, preprocessing: Preprocessing, preprocessingSource: String) throws {
        self.loaded = loaded
        self.preprocessing = preprocessing
        self.preprocessingSource = preprocessingSource
        var h = SHA256()
        for u in loaded.weightFiles {
            h.update(Data(try SHA256.hexOfFile(u).utf8))
        }
        h.update(Data((try JSONEncoder.sorted.encode(loaded.config))))
        self.weightsHash = h.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Load a checkpoint and decide its preprocessing: `explicit` when given, else the model's
    /// own `preprocessor_config.json` (Hugging Face) or `pretrained_cfg` (timm hub `config.json`),
    /// else for an EVA-02 / EVA-X checkpoint EVA-X's evaluation transform at the model's native
    /// size (`Preprocessing.evaX`); one of them is required. `stateDictKey` chooses a PyTorch
    /// checkpoint's state dict; `precision` the arithmetic of the blocks' linear layers.
    public static func load(
        model url: URL, preset: ViTConfig? = nil, heads: Int? = nil,
        explicit: Preprocessing? = nil, stateDictKey: String? = nil, precision: Precision = .fp32
    ) throws -> Encoder {
        let loaded = try ViTLoader.load(url, preset: preset, heads: heads, stateDictKey: stateDictKey, precision: precision)
        if let explicit {
            return try Encoder(loaded: loaded, preprocessing: explicit, preprocessingSource: "command line")
        }
        if let tc = loaded.timmConfig {
            return try Encoder(loaded: loaded, preprocessing: try Preprocessing.fromTimm(tc), preprocessingSource: tc.path)
        }
        if let pc = loaded.preprocessorConfig {
            return try Encoder(
                loaded: loaded, preprocessing: try Preprocessing.fromHuggingFace(pc),
                preprocessingSource: pc.path)
        }
        if loaded.config.blockKind == .eva02 {
            return try Encoder(
                loaded: loaded, preprocessing: .evaX(size: loaded.config.imageSize),
                preprocessingSource: "EVA-X default (override with --size, --crop, --mean, --std, --interpolation)")
        }
        throw XRError(
            "the model has no preprocessor_config.json, so its preprocessing is unknown",
            file: url.path, field: "preprocessing",
            hint: "pass --size, --mean and --std (and --crop, --interpolation) to say how images are prepared for this model")
    }

    /// The precision of the encoder's linear layers.
    public var precision: Precision { loaded.model.precision }

    /// Everything that changes the numbers an image maps to, but the precision (which
    /// `FeatureCache.key` adds).
    public func fingerprint(_ options: EmbedOptions) -> String {
        let pre = (try? JSONEncoder.sorted.encode(preprocessing)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let clsOnly = options.encodesClassTokenOnly ? "|class-token-only" : ""
        return "\(weightsHash)|\(pre)|last=\(options.lastBlocks)|tokens=\(options.patchTokens)|dicom=\(options.dicomValues.rawValue)" + clsOnly
    }

    /// Encode `inputs` in batches, reusing cached rows, with progress on stderr.
    public func embed(_ inputs: [ImageInput], options: EmbedOptions) throws -> EmbedResult {
        let fp = fingerprint(options)
        let progress = ProgressReporter("embed", total: inputs.count, unit: "images", quiet: options.quiet)
        var rows = [[String: Tensor]?](repeating: nil, count: inputs.count)
        var hashes = [String](repeating: "", count: inputs.count)
        var failed: [FailedInput] = []
        // Images waiting for one batched forward pass; all share one (H, W).
        var pending: [(index: Int, key: String, pixels: [Float])] = []
        var pendingSize = (0, 0)
        var hits = 0, encoded = 0
        var warnings: [String] = []

        func flush() throws {
            if pending.isEmpty { return }
            let b = pending.count
            let (H, W) = pendingSize
            let per = 3 * H * W
            var batch = [Float](repeating: 0, count: b * per)
            for (j, p) in pending.enumerated() {
                batch.replaceSubrange(j * per..<(j + 1) * per, with: p.pixels)
            }
            let out = try loaded.model.forward(
                pixels: batch, batch: b, height: H, width: W,
                lastBlocks: options.lastBlocks, classTokenOnly: options.encodesClassTokenOnly)
            let split = EmbedResult.rows(of: out, batch: b, keepTokens: options.patchTokens)
            for (j, p) in pending.enumerated() {
                rows[p.index] = split[j]
                if let cache = options.cache { try cache.store(p.key, split[j]) }
            }
            encoded += b
            progress.advance(by: b)
            pending.removeAll(keepingCapacity: true)
        }

        for (i, input) in inputs.enumerated() {
            let data: Data
            do {
                data = try Data(contentsOf: input.url)
            } catch {
                failed.append(FailedInput(id: input.id, reason: "cannot read file: \(error.localizedDescription)"))
                progress.advance()
                continue
            }
            hashes[i] = SHA256.hex(data)
            let key = FeatureCache.key(configFingerprint: fp, imageHash: hashes[i], precision: precision)
            // Rows cached before `pooled` was written are read as misses and encoded again.
            if let cached = options.cache?.load(key), cached["pooled"] != nil {
                rows[i] = cached
                hits += 1
                progress.advance()
                continue
            }
            do {
                let (image, notes) = try ImageDecoder.decodeWithWarnings(
                    data, source: input.url.path, maxPixels: options.maxPixels,
                    dicomValues: options.dicomValues)
                for n in notes { warnings.append("\(input.id): \(n)") }
                let size = preprocessing.outputSize(height: image.height, width: image.width)
                let pixels = try preprocessing.apply(image)
                if !pending.isEmpty && size != pendingSize { try flush() }
                pendingSize = size
                pending.append((i, key, pixels))
            } catch let e as XRError where e.file == nil {
                failed.append(FailedInput(id: input.id, reason: "\(XRError(e.message, file: input.url.path, field: e.field, hint: e.hint))"))
                progress.advance()
                continue
            } catch {
                failed.append(FailedInput(id: input.id, reason: "\(error)"))
                progress.advance()
                continue
            }
            if pending.count == options.batchSize { try flush() }
        }
        try flush()
        progress.finish()

        if !failed.isEmpty && !options.skipBad {
            let list = failed.map { "  \($0.id): \($0.reason)" }.joined(separator: "\n")
            throw XRError(
                "\(failed.count) of \(inputs.count) images could not be used:\n\(list)",
                hint: "fix or remove them, or pass --skip-bad to leave them out")
        }
        var keptInputs: [ImageInput] = [], keptHashes: [String] = [], keptRows: [[String: Tensor]] = []
        for i in 0..<inputs.count {
            if let r = rows[i] { keptInputs.append(inputs[i]); keptHashes.append(hashes[i]); keptRows.append(r) }
        }
        return EmbedResult(
            inputs: keptInputs, imageHashes: keptHashes,
            tensors: EmbedResult.stack(keptRows), failed: failed,
            cacheHits: hits, encoded: encoded, warnings: warnings)
    }
}

extension EmbedResult {
    /// Split a batch forward output into one dictionary of tensors per image.
    static func rows(of out: ViTOutput, batch b: Int, keepTokens: Bool) -> [[String: Tensor]] {
        let c = out.cls.count / b
        var result: [[String: Tensor]] = []
        for j in 0..<b {
            var r: [String: Tensor] = [
                "cls": Tensor(shape: [c], scalars: Array(out.cls.scalars[j * c..<(j + 1) * c])),
                "pooled": Tensor(shape: [c], scalars: Array(out.pooled.scalars[j * c..<(j + 1) * c]))
            ]
            if out.patchMean.count > 0 {
                r["patch_mean"] = Tensor(shape: [c], scalars: Array(out.patchMean.scalars[j * c..<(j + 1) * c]))
            }
            if !out.lastBlocksCLS.isEmpty {
                var s: [Float] = []
                for t in out.lastBlocksCLS { s += t.scalars[j * c..<(j + 1) * c] }
                r["last_blocks_cls"] = Tensor(shape: [out.lastBlocksCLS.count, c], scalars: s)
            }
            if keepTokens {
                let per = out.patchTokens.count / b
                r["patch_tokens"] = Tensor(
                    shape: [per / c, c],
                    scalars: Array(out.patchTokens.scalars[j * per..<(j + 1) * per]))
            }
            result.append(r)
        }
        return result
    }

    /// Stack per-image tensors along a new first dimension.
    static func stack(_ rows: [[String: Tensor]]) -> [String: Tensor] {
        guard let first = rows.first else { return [:] }
        var out: [String: Tensor] = [:]
        for (name, t0) in first {
            var s: [Float] = []
            s.reserveCapacity(t0.count * rows.count)
            for r in rows { if let t = r[name] { s += t.scalars } }
            if s.count == t0.count * rows.count {
                out[name] = Tensor(shape: [rows.count] + t0.shape, scalars: s)
            }
        }
        return out
    }
}

extension JSONEncoder {
    /// Sorted keys, so encoded values are stable fingerprints.
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}

extension Encoder {
    /// How many of `inputs` already have cached features for these options (reads and hashes
    /// the files, encodes nothing).
    public func cachedCount(_ inputs: [ImageInput], options: EmbedOptions) -> Int {
        guard let cache = options.cache else { return 0 }
        let fp = fingerprint(options)
        return inputs.filter { input in
            guard let data = try? Data(contentsOf: input.url) else { return false }
            let key = FeatureCache.key(configFingerprint: fp, imageHash: SHA256.hex(data), precision: precision)
            return FileManager.default.fileExists(atPath: cache.url(for: key).path)
        }.count
    }
}

extension Encoder {
    /// The model input (height, width) every image is prepared to when the preprocessing fixes it
    /// (a crop, or an exact resize without one); nil when it follows each image's shape.
    public var fixedInput: (height: Int, width: Int)? {
        let p = preprocessing
        if let h = p.cropHeight, let w = p.cropWidth { return (h, w) }
        if p.shortestEdge == nil, let h = p.resizeHeight, let w = p.resizeWidth { return (h, w) }
        return nil
    }

    /// Refuse a preprocessing whose fixed model input is not a whole number of patches, before
    /// any image is read: the error names where the preprocessing was given (`file`, `field`:
    /// a recipe's `model.preprocessing.crop`, a command's `--crop`, a package's manifest).
    public func checkPatchGrid(file: String?, field: String) throws {
        let P = loaded.config.patchSize
        guard let (h, w) = fixedInput, h % P != 0 || w % P != 0 || h <= 0 || w <= 0 else { return }
        let fit = max(P, min(h, w) / P * P)
        throw XRError(
            "the model input size \(h)×\(w) is not a positive multiple of the patch size \(P)",
            file: file, field: field, hint: "make the crop a multiple of \(P), e.g. \(fit) or \(fit + P)")
    }
}
