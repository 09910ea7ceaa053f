// Where a run's image features come from. N manifest rows (after `data.where`), D feature dimensions.
//
// The seam: `FeatureSource`. The runner asks the recipe's source for features of the manifest
// rows and aligns them by row id (the `data.image_column` value), so a source may return rows in
// any order. Two sources are built in:
//   - `PrecomputedFeatureSource` — `features.matrix` (safetensors / npy, with or without the
//     `xrlab embed` sidecar);
//   - `EncoderFeatureSource` — encodes the manifest's images with `model` (XRPipeline's
//     batched encoder and feature cache).
// Another source (a remote embedding service, a different encoder) plugs in through
// `RunOptions.featureSource` without touching the runner.
import Foundation
import XRTensor
import XRData
import XRModels
import XRPipeline

/// Features of a set of images.
public struct FeatureSet: Sendable {
    /// Row id per feature row (the manifest's `data.image_column` values).
    public var ids: [String]
    /// (N, D) row-major.
    public var matrix: Tensor
    /// Where the features came from, for the report ("precomputed: …", "encoded: …").
    public var description: String

    public init(ids: [String], matrix: Tensor, description: String) {
        precondition(matrix.rank == 2 && matrix.shape[0] == ids.count, "FeatureSet: matrix must be (N, D) with one id per row")
        self.ids = ids
        self.matrix = matrix
        self.description = description
    }
}

/// The manifest rows a run uses (after the `data.where` row filter), with their CSV row numbers.
public struct ManifestRows: Sendable {
    /// The manifest file.
    public var url: URL
    public var header: [String]
    /// Kept rows.
    public var rows: [[String]]
    /// CSV row number of each kept row (the header is row 1), for error messages.
    public var rowNumbers: [Int]
    /// Index of each kept row among all data rows of the manifest.
    public var indices: [Int]
    /// Data rows in the manifest before filtering.
    public var totalRows: Int
    /// Row id (image column value) per kept row.
    public var ids: [String]
}

/// Supplies features for a recipe's manifest rows. Implementations must be deterministic (a
/// resumed run relies on getting the same features again).
public protocol FeatureSource: Sendable {
    /// Features covering every row of `rows` (matched by id; extra rows are ignored).
    func loadFeatures(for recipe: LoadedRecipe, rows: ManifestRows, quiet: Bool) throws -> FeatureSet
    /// For `xrlab plan`: what is available without computing (e.g. "40 of 120 images cached"),
    /// and the estimated seconds to produce the rest.
    func status(for recipe: LoadedRecipe, rows: ManifestRows) throws -> (description: String, seconds: Double)
}

public enum FeatureSources {
    /// The built-in source a recipe asks for: its `features` matrix, or its `model` over the images
    /// (segmentation: every patch token).
    public static func `default`(for r: LoadedRecipe) throws -> FeatureSource {
        if r.recipe.features != nil { return PrecomputedFeatureSource() }
        if r.recipe.model != nil { return r.recipe.usesPatchTokens ? PatchTokenSource() : EncoderFeatureSource() }
        throw XRError("the recipe has neither model nor features", file: r.file.path)
    }
}

// MARK: - precomputed

/// `features.matrix`: a `.safetensors` file (one tensor per representation: `cls`, `patch_mean`,
/// `last_blocks_cls` (N, B, C) for `lastN_cls` — what `xrlab embed` writes), a plain `.npy`
/// (N, D) matrix, or the per-tensor `.npy` files `xrlab embed --format npy` writes
/// (`feats.npy` → `feats.cls.npy`, `feats.patch_mean.npy`). With the embed sidecar
/// (`feats.json`) rows are matched to the manifest by path; without it the matrix must be row for
/// row with the whole manifest (before `data.where`).
public struct PrecomputedFeatureSource: FeatureSource {
    public init() {}

    public func loadFeatures(for r: LoadedRecipe, rows: ManifestRows, quiet: Bool) throws -> FeatureSet {
        guard let f = r.recipe.features else { throw XRError("the recipe has no features section", file: r.file.path, field: "features") }
        let url = r.resolve(f.matrix)
        let parts = try tensors(r, f, url)
        let n = parts[0].1.shape[0]
        for (name, t) in parts where t.shape[0] != n {
            throw XRError("tensor '\(name)' has \(t.shape[0]) rows, '\(parts[0].0)' has \(n)", file: url.path, field: name)
        }
        let matrix = concatenate(parts.map(\.1))
        let what = "precomputed: \(url.path) [\(parts.map(\.0).joined(separator: " + "))]"
        if let sidecar = try Self.sidecar(for: url) {
            let ids = sidecar.inputs.map(\.path)
            guard ids.count == n else {
                throw XRError(
                    "the sidecar lists \(ids.count) inputs but the matrix has \(n) rows", file: EmbedOutput.sidecarURL(for: url).path,
                    field: "inputs", hint: "the sidecar and the features must come from the same `xrlab embed` run")
            }
            return FeatureSet(ids: ids, matrix: matrix, description: what + ", rows matched by the embed sidecar")
        }
        guard n == rows.totalRows else {
            throw XRError(
                "feature matrix has \(n) rows but the manifest has \(rows.totalRows)", file: url.path, field: parts[0].0,
                hint:
                    "without an `xrlab embed` sidecar (\(EmbedOutput.sidecarURL(for: url).lastPathComponent)) the features must be row for row with \(rows.url.lastPathComponent)"
            )
        }
        let d = matrix.shape[1]
        var kept = [Float](); kept.reserveCapacity(rows.indices.count * d)
        for i in rows.indices { kept += matrix.scalars[(i * d)..<((i + 1) * d)] }
        return FeatureSet(ids: rows.ids, matrix: Tensor(shape: [rows.indices.count, d], scalars: kept), description: what + ", row for row with the manifest")
    }

    public func status(for r: LoadedRecipe, rows: ManifestRows) throws -> (description: String, seconds: Double) {
        guard let f = r.recipe.features else { return ("no features section", 0) }
        let url = r.resolve(f.matrix)
        let shapes = try tensors(r, f, url).map { "\($0.0) \(describeShape($0.1.shape))" }
        let side = (try? Self.sidecar(for: url)) != nil ? " (rows matched by the embed sidecar)" : " (row for row with the manifest)"
        return ("precomputed: \(f.matrix): \(shapes.joined(separator: ", "))" + side, 0)
    }

    /// The embed sidecar beside a matrix, if there is one (a JSON file there that is not an embed
    /// sidecar is ignored).
    static func sidecar(for matrix: URL) throws -> EmbedOutput.Sidecar? {
        let u = EmbedOutput.sidecarURL(for: matrix)
        guard FileManager.default.fileExists(atPath: u.path), let d = try? Data(contentsOf: u),
            let head = try? JSONSerialization.jsonObject(with: d) as? [String: Any],
            head["format"] as? String == "xrlab-embed"
        else { return nil }
        return try EmbedOutput.readSidecar(u)
    }

    /// The tensors to concatenate, named, each (N, width).
    func tensors(_ r: LoadedRecipe, _ f: Recipe.Features, _ url: URL) throws -> [(String, Tensor)] {
        let rep = r.recipe.representation
        let names = f.tensor.map { [$0] } ?? rep
        let isNPY = url.pathExtension.lowercased() == "npy"
        if isNPY && FileManager.default.fileExists(atPath: url.path) {
            // One plain matrix: it is the representation.
            if f.tensor == nil && rep != ["cls"] {
                throw XRError(
                    "a single .npy matrix holds one representation; the recipe asks for \(rep.joined(separator: " + "))",
                    file: url.path, field: "representation",
                    hint: "set representation: [cls] to use the matrix as it is, or give a safetensors file / per-tensor npy files from `xrlab embed`")
            }
            return [("matrix", try matrix2D(NPY.read(url), url, "matrix"))]
        }
        if isNPY {
            let stem = url.deletingPathExtension()
            var out: [(String, Tensor)] = []
            for name in names {
                let (tensorName, blocks) = Self.stored(name, explicit: f.tensor != nil)
                let u = stem.appendingPathExtension(tensorName).appendingPathExtension("npy")
                guard FileManager.default.fileExists(atPath: u.path) else {
                    throw XRError(
                        "feature matrix not found (nor \(u.lastPathComponent) for '\(name)')", file: url.path, field: "features.matrix",
                        hint: "paths are relative to the recipe file's folder")
                }
                out.append((name, try slice(NPY.read(u), blocks: blocks, u, name)))
            }
            return out
        }
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XRError("feature matrix not found", file: url.path, field: "features.matrix", hint: "paths are relative to the recipe file's folder")
        }
        let file = try SafeTensorsFile(contentsOf: url)
        return try names.map { name in
            let (tensorName, blocks) = Self.stored(name, explicit: f.tensor != nil)
            guard file.contains(tensorName) else {
                throw XRError(
                    "no tensor '\(tensorName)' (for '\(name)')", file: url.path, field: f.tensor != nil ? "features.tensor" : "representation",
                    hint: "the file holds: \(file.names.sorted().joined(separator: ", "))" + (blocks != nil ? " (embed with --last-blocks for lastN_cls)" : ""))
            }
            return (name, try slice(file.tensor(tensorName), blocks: blocks, url, tensorName))
        }
    }

    /// Stored tensor name for a representation (`last4_cls` → `last_blocks_cls`, last 4 blocks).
    static func stored(_ name: String, explicit: Bool) -> (String, Int?) {
        if !explicit, let n = Recipe.lastBlocks(name) { return ("last_blocks_cls", n) }
        return (name, nil)
    }

    func matrix2D(_ t: Tensor, _ url: URL, _ name: String) throws -> Tensor {
        guard t.rank == 2, t.shape[0] > 0, t.shape[1] > 0 else {
            throw XRError("tensor has shape \(describeShape(t.shape)), expected (N, D)", file: url.path, field: name)
        }
        return t
    }

    /// (N, B, C) → the last `blocks` blocks flattened to (N, blocks·C); rank-2 tensors pass through.
    public func slice(_ t: Tensor, blocks: Int?, _ url: URL, _ name: String) throws -> Tensor {
        guard let k = blocks else { return try matrix2D(t, url, name) }
        guard t.rank == 3 else { throw XRError("tensor has shape \(describeShape(t.shape)), expected (N, blocks, C)", file: url.path, field: name) }
        let n = t.shape[0], nb = t.shape[1], c = t.shape[2]
        guard k <= nb else {
            throw XRError(
                "last\(k)_cls asks for \(k) blocks but the file holds \(nb)", file: url.path, field: name,
                hint: "embed again with --last-blocks \(k)")
        }
        var s = [Float](); s.reserveCapacity(n * k * c)
        for i in 0..<n { s += t.scalars[((i * nb + nb - k) * c)..<((i + 1) * nb * c)] }
        return Tensor(shape: [n, k * c], scalars: s)
    }
}

/// Row-wise concatenation of (N, D_i) matrices → (N, ΣD_i).
public func concatenate(_ parts: [Tensor]) -> Tensor {
    if parts.count == 1 { return parts[0] }
    let n = parts[0].shape[0], dim = parts.reduce(0) { $0 + $1.shape[1] }
    var out = [Float](); out.reserveCapacity(n * dim)
    for i in 0..<n { for t in parts { let w = t.shape[1]; out += t.scalars[(i * w)..<((i + 1) * w)] } }
    return Tensor(shape: [n, dim], scalars: out)
}

// MARK: - encoder

/// `model`: encode the manifest's images (every path checked up front, naming the CSV row),
/// with XRPipeline's batched encoder and content-addressed feature cache.
public struct EncoderFeatureSource: FeatureSource {
    public init() {}

    /// Image URLs of the rows; a missing file is an error naming its CSV row and column.
    public static func images(_ r: LoadedRecipe, rows: ManifestRows) throws -> [ImageInput] {
        let column = r.recipe.data.image_column
        guard let c = rows.header.firstIndex(of: column) else {
            throw XRError(
                "no column '\(column)' (columns: \(rows.header.joined(separator: ", ")))", file: rows.url.path,
                field: "data.image_column", hint: "set data.image_column in the recipe to the manifest's column name")
        }
        let base = rows.url.deletingLastPathComponent()
        return try zip(rows.rows, rows.rowNumbers).map { row, number in
            let p = row[c]
            let u = p.hasPrefix("/") ? URL(fileURLWithPath: p) : base.appendingPathComponent(p)
            guard !p.isEmpty, FileManager.default.fileExists(atPath: u.path) else {
                throw XRError(
                    "image not found: \(p.isEmpty ? "(empty path)" : u.path)", file: rows.url.path, field: "row \(number), column \(column)",
                    hint: "paths are relative to the manifest's folder")
            }
            return ImageInput(url: u, id: p)
        }
    }

    /// The recipe's encoder with its preprocessing (the checkpoint's own, or `model.preprocessing`),
    /// its linear layers at `precision`, else `model.precision` (default fp32).
    public func encoder(_ r: LoadedRecipe, precision: Precision? = nil) throws -> Encoder {
        guard let model = r.recipe.model else { throw XRError("the recipe has no model section", file: r.file.path, field: "model") }
        let preset = try model.preset.map { name -> ViTConfig in
            guard let p = ViTConfig.preset(named: name) else { throw XRError("unknown preset '\(name)'", file: r.file.path, field: "model.preset") }
            return p
        }
        let explicit = try model.preprocessing.map { p -> Preprocessing in
            guard let interp = Preprocessing.Interpolation(rawValue: p.interpolation) else {
                throw XRError("unknown interpolation '\(p.interpolation)'", file: r.file.path, field: "model.preprocessing.interpolation")
            }
            return Preprocessing(
                shortestEdge: p.size, crop: p.crop ?? p.size, interpolation: interp,
                mean: p.mean.map(Float.init), std: p.std.map(Float.init))
        }
        let url = r.resolve(model.path)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XRError("model not found", file: url.path, field: "model.path", hint: "paths are relative to the recipe file's folder")
        }
        let encoder = try Encoder.load(
            model: url, preset: preset, heads: model.heads, explicit: explicit, precision: precision ?? model.precision ?? .fp32)
        let field =
            model.preprocessing == nil
            ? "model.preprocessing (from the checkpoint's \(encoder.preprocessingSource))"
            : model.preprocessing?.crop != nil ? "model.preprocessing.crop" : "model.preprocessing.size"
        try encoder.checkPatchGrid(file: r.file.path, field: field)
        return encoder
    }

    /// Embed options for a recipe: its batch size, as many last blocks as `representation` needs,
    /// and class-token outputs only unless it asks for `patch_mean`.
    public func options(_ r: LoadedRecipe, quiet: Bool) -> EmbedOptions {
        var o = EmbedOptions()
        o.batchSize = r.recipe.model?.batch_size ?? 8
        o.quiet = quiet
        o.lastBlocks = r.recipe.representation.compactMap(Recipe.lastBlocks).max() ?? 0
        // `pooled` is the class token for the pre-norm families (ViTOutput.pooled), so it needs no patch
        // rows; EVA-02 encoders, which pool the patch tokens, compute every row whatever this says.
        o.classTokenOnly = !r.recipe.representation.contains("patch_mean")
        return o
    }

    public func loadFeatures(for r: LoadedRecipe, rows: ManifestRows, quiet: Bool) throws -> FeatureSet {
        let inputs = try Self.images(r, rows: rows)
        let encoder = try encoder(r)
        let res = try encoder.embed(inputs, options: options(r, quiet: quiet))
        let matrix = try Self.assemble(res, representation: r.recipe.representation, model: r.resolve(r.recipe.model?.path ?? ""))
        // What the features are, not how this process got them (encoded or from the cache): the
        // report of a resumed or merged run is the same as a one-process run's.
        let src =
            "encoded with \(r.recipe.model?.path ?? "?") (\(res.inputs.count) images\(encoder.precision == .fp32 ? "" : ", \(encoder.precision.rawValue) linear layers"))"
        return FeatureSet(ids: res.inputs.map(\.id), matrix: matrix, description: src)
    }

    /// The (N, D) feature matrix of a `representation` (`cls`, `pooled`, `patch_mean`, `lastN_cls`, in
    /// order, concatenated) from an embed result.
    public static func assemble(_ res: EmbedResult, representation: [String], model: URL) throws -> Tensor {
        var parts: [Tensor] = []
        for rep in representation {
            if let k = Recipe.lastBlocks(rep) {
                guard let t = res.tensors["last_blocks_cls"] else { throw XRError("the encoder returned no last-block features", field: rep) }
                parts.append(try PrecomputedFeatureSource().slice(t, blocks: k, model, rep))
            } else {
                guard let t = res.tensors[rep] else { throw XRError("the encoder returned no '\(rep)' features", field: rep) }
                parts.append(t)
            }
        }
        return concatenate(parts)
    }

    public func status(for r: LoadedRecipe, rows: ManifestRows) throws -> (description: String, seconds: Double) {
        let inputs = try Self.images(r, rows: rows)
        let encoder = try encoder(r)
        let cached = encoder.cachedCount(inputs, options: options(r, quiet: true))
        // Rough cost: 2 · params · tokens flops per image at ~100 GFLOP/s.
        let c = encoder.loaded.config
        let params = Double(c.depth) * 12 * Double(c.dim * c.dim)
        let tokens = Double(c.grid * c.grid + c.prefixTokens)
        let seconds = Double(inputs.count - cached) * 2 * params * tokens / 100e9
        return ("\(cached) of \(inputs.count) images cached for this encoder, preprocessing and precision (\(encoder.precision.rawValue))", seconds)
    }
}
