// `xrlab pack`: a run directory → a fitted, evaluated model → NAME-X.Y.Z.xrpkg in a registry
// folder, with manifest.json, weights/head.safetensors, MODEL_CARD.md and SHA256SUMS.
import Foundation
import XRTensor
import XRData
import XRPipeline
import XRRecipes

public struct PackOptions: Sendable {
    public var name: String
    /// Exactly one of `version` and `bump`.
    public var version: String?
    /// `patch`, `minor` or `major`: the next version after the registry's latest of `name`.
    public var bump: String?
    public var fit = FitOptions()
    /// Registry folder: archives and `index.json`.
    public var registry: URL
    public var compression: TarArchive.Compression = .gzip
    /// Merged encoder weights (adapter methods only).
    public var merged = false
    /// Creation time; nil = `SOURCE_DATE_EPOCH` or the run's results time, so packing the same run
    /// again gives the same bytes.
    public var created: Date?
    public var quiet = false
    /// Sign the package with this key (`model.sig`).
    public var signingKey: SigningKey?
    public init(name: String, registry: URL) {
        self.name = name
        self.registry = registry
    }
}

/// The registry folder's `index.json`: package name → versions.
public struct RegistryIndex: Codable, Equatable, Sendable {
    public struct Version: Codable, Equatable, Sendable {
        public var version: String
        public var file: String
        public var sha256: String
        public var created: String
        /// The signer's key identifier (`TrustedKey.keyID`) when the package is signed.
        public var signer: String?
    }
    public var format = "xrlab-registry"
    public var format_version = 1
    public var packages: [String: [Version]] = [:]

    public static func load(_ registry: URL) throws -> RegistryIndex {
        let url = registry.appendingPathComponent("index.json")
        guard FileManager.default.fileExists(atPath: url.path) else { return RegistryIndex() }
        do {
            let i = try JSONDecoder().decode(RegistryIndex.self, from: Data(contentsOf: url))
            guard i.format == "xrlab-registry" else { throw XRError("not an xrlab registry index", file: url.path, field: "format") }
            guard i.format_version <= 1 else {
                throw XRError(
                    "registry format \(i.format_version) is newer than this xrlab reads (1)", file: url.path, field: "format_version",
                    hint: "upgrade xrlab")
            }
            return i
        } catch let e as XRError { throw e } catch {
            throw XRError("unreadable registry index: \(describe(error))", file: url.path)
        }
    }

    /// Write `index.json` into `registry` atomically.
    public func save(_ registry: URL) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        try AtomicFile.write(try e.encode(self), to: registry.appendingPathComponent("index.json"))
    }

    public func latest(_ name: String) -> SemanticVersion? { (packages[name] ?? []).compactMap { SemanticVersion($0.version) }.max() }
}

public struct PackResult: Sendable {
    public var archive: URL
    public var manifest: PackageManifest
    public var sha256: String
}

public enum Packer {
    public static func pack(runDirectory dir: URL, options o: PackOptions) throws -> PackResult {
        guard PackageName.isValid(o.name) else {
            throw XRError("invalid package name '\(o.name)'", field: "--name", hint: "letters, digits, '-', '_' and '.', starting with a letter or digit")
        }
        let runFile = dir.appendingPathComponent("run.json"), resolved = dir.appendingPathComponent("resolved.yaml")
        guard FileManager.default.fileExists(atPath: runFile.path), FileManager.default.fileExists(atPath: resolved.path) else {
            throw XRError("not a run directory (no run.json / resolved.yaml)", file: dir.path, hint: "pass the output folder of `xrlab run`")
        }
        // Version.
        try FileManager.default.createDirectory(at: o.registry, withIntermediateDirectories: true)
        var index = try RegistryIndex.load(o.registry)
        let version: SemanticVersion
        switch (o.version, o.bump) {
        case let (v?, nil):
            guard let s = SemanticVersion(v) else { throw XRError("'\(v)' is not a semantic version X.Y.Z", field: "--version") }
            version = s
        case let (nil, b?):
            guard let s = (index.latest(o.name) ?? SemanticVersion(major: 0, minor: 0, patch: 0)).bumped(b) else {
                throw XRError("--bump takes patch, minor or major, not '\(b)'", field: "--bump")
            }
            version = s
        default:
            throw XRError("give exactly one of --version X.Y.Z and --bump patch|minor|major", field: "--version")
        }
        let fileName = "\(o.name)-\(version).xrpkg"
        let archive = o.registry.appendingPathComponent(fileName)
        if (index.packages[o.name] ?? []).contains(where: { $0.version == version.description }) || FileManager.default.fileExists(atPath: archive.path) {
            let latest = index.latest(o.name).map { " (latest: \($0))" } ?? ""
            throw XRError(
                "\(o.name) \(version) already exists\(latest); versions are immutable", file: archive.path, field: "--version",
                hint: "pack a new version, e.g. --bump patch")
        }

        // Fit and evaluate.
        let r = try RecipeLoader.load(resolved)
        let data = try StudyLoader.load(r, quiet: o.quiet)
        var fitOptions = o.fit
        fitOptions.merged = o.merged
        let fitted: FittedModel
        if r.recipe.isSegmentation {
            fitted = try ModelFitter.fitSegmentation(r, data: data, options: fitOptions)
        } else if r.recipe.isDetection {
            fitted = try ModelFitter.fitDetection(r, data: data, options: fitOptions)
        } else if r.recipe.isRetrieval {
            fitted = try ModelFitter.fitRetrieval(r, data: data, options: fitOptions)
        } else {
            fitted = try ModelFitter.fit(r, data: data, runDirectory: dir, options: fitOptions)
        }
        if o.merged && fitted.kind != .classification {
            throw XRError("--merged applies to classification tuning packages", field: "--merged")
        }
        if o.merged && fitted.inputSize == nil {
            throw XRError("--merged applies to tuning methods; probe packages carry no encoder weights to merge", field: "--merged")
        }
        var base = try baseEncoder(r, dim: fitted.dim)
        if let S = fitted.inputSize {
            base.input_size = S
            base.representation = ["cls"]
            base.dim = base.config?.dim ?? base.dim
            base.precision = nil // tuned heads run on the fp32 encoder they were tuned on
        }
        if fitted.kind == .segmentation || fitted.kind == .detection { base.representation = ["patch_tokens"] }

        // Creation time: reproducible.
        let created: Date
        if let c = o.created {
            created = c
        } else if let e = ProcessInfo.processInfo.environment["SOURCE_DATE_EPOCH"], let s = Double(e) {
            created = Date(timeIntervalSince1970: s)
        } else {
            let results = dir.appendingPathComponent("results.jsonl")
            let attrs = try? FileManager.default.attributesOfItem(atPath: (FileManager.default.fileExists(atPath: results.path) ? results : runFile).path)
            created = (attrs?[.modificationDate] as? Date) ?? Date(timeIntervalSince1970: 0)
        }
        let seconds = floor(created.timeIntervalSince1970)
        let createdText = iso8601(Date(timeIntervalSince1970: seconds))

        var tensors: [(String, Tensor)] = []
        for h in fitted.heads { for (k, t) in h.tensors.sorted(by: { $0.key < $1.key }) { tensors.append((h.info.tensors + k, t)) } }
        let weights = try SafeTensors.encode(tensors, metadata: ["format": "xrlab-head"])
        var manifest = PackageManifest(
            format: PackageManifest.formatName, format_version: PackageManifest.formatVersion,
            requires_xrlab: PackageManifest.formatIntroducedIn[PackageManifest.formatVersion - 1],
            name: o.name, version: version.description, created: createdText, xrlab_version: XRLabVersion.string,
            base_encoder: base, method: fitted.method, task: r.recipe.data.task.rawValue, labels: fitted.labels ?? r.recipe.data.labels,
            heads: fitted.heads.map { $0.info }, training_data: fitted.training, evaluation: fitted.evaluation,
            recipe: sanitized(r.recipe), files: [])
        if fitted.kind != .classification {
            manifest.kind = fitted.kind.rawValue
            manifest.segmentation = fitted.segmentation
            manifest.retrieval = fitted.retrieval
            manifest.detection = fitted.detection
        }
        let card = ModelCard.render(manifest)
        var entries =
            [
                ArchiveEntry(name: "weights/head.safetensors", data: weights),
                ArchiveEntry(name: "MODEL_CARD.md", data: Data(card.utf8))
            ] + fitted.entries
        for (i, h) in fitted.heads.enumerated() {
            if let m = fitted.merged[h.info.task] {
                let data = try SafeTensors.encode(
                    m.sorted { $0.key < $1.key }.map { ($0.key, $0.value) },
                    metadata: ["format": "pt", "task": h.info.task, "xrlab_base_sha256": base.sha256])
                entries.append(ArchiveEntry(name: "weights/merged.\(i).safetensors", data: data))
            }
        }
        manifest.files = entries.map { $0.name }.sorted()
        entries.append(ArchiveEntry(name: "manifest.json", data: try encodeManifest(manifest)))
        entries.append(ArchiveEntry(name: "SHA256SUMS", data: Data(checksums(entries).utf8)))
        if let key = o.signingKey {
            let files = Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0.data) })
            entries.append(ArchiveEntry(name: ModelSignature.fileName, data: try ModelSignature.sign(files: files, name: "\(o.name)-\(version)", key: key)))
        }
        try TarArchive.write(entries, to: archive, compression: o.compression, mtime: Int64(seconds))

        let sha = try SHA256.hexOfFile(archive)
        index.packages[o.name, default: []].append(
            .init(
                version: version.description, file: fileName, sha256: sha, created: createdText,
                signer: o.signingKey?.publicKey.keyID))
        index.packages[o.name]!.sort {
            (SemanticVersion($0.version) ?? .init(major: 0, minor: 0, patch: 0)) < (SemanticVersion($1.version) ?? .init(major: 0, minor: 0, patch: 0))
        }
        try index.save(o.registry)
        return PackResult(archive: archive, manifest: manifest, sha256: sha)
    }

    static func baseEncoder(_ r: LoadedRecipe, dim: Int) throws -> BaseEncoder {
        if r.recipe.model != nil {
            let enc = try EncoderFeatureSource().encoder(r)
            return BaseEncoder(
                kind: "encoder", sha256: enc.weightsHash, layout: enc.loaded.layout, config: enc.loaded.config,
                preprocessing: enc.preprocessing, representation: r.recipe.representation, dim: dim,
                source: URL(fileURLWithPath: r.recipe.model!.path).lastPathComponent, precision: enc.precision == .fp32 ? nil : enc.precision)
        }
        let f = r.resolve(r.recipe.features!.matrix)
        let hashed = FileManager.default.fileExists(atPath: f.path) ? f : f.deletingPathExtension().appendingPathExtension("cls.npy")
        return BaseEncoder(
            kind: "features", sha256: try SHA256.hexOfFile(hashed), layout: nil, config: nil, preprocessing: nil,
            representation: r.recipe.representation, dim: dim, source: f.lastPathComponent)
    }

    /// The recipe without site-specific locations: paths reduced to file names.
    static func sanitized(_ recipe: Recipe) -> Recipe {
        var s = recipe
        func name(_ p: String) -> String { URL(fileURLWithPath: p).lastPathComponent }
        s.output = name(s.output)
        s.data.manifest = name(s.data.manifest)
        if s.model != nil { s.model!.path = name(s.model!.path) }
        if s.features != nil { s.features!.matrix = name(s.features!.matrix) }
        return s
    }

    static func encodeManifest(_ m: PackageManifest) throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return try e.encode(m) + Data("\n".utf8)
    }

    /// `sha256sum` format: "<hex>  <name>\n", sorted by name.
    static func checksums(_ entries: [ArchiveEntry]) -> String {
        entries.sorted { $0.name < $1.name }.map { "\(SHA256.hex($0.data))  \($0.name)\n" }.joined()
    }

    static func iso8601(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.timeZone = TimeZone(identifier: "UTC")
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: d)
    }
}

func describe(_ error: Error) -> String {
    if let e = error as? XRError { return e.message }
    if case let DecodingError.keyNotFound(k, c) = error { return "missing field '\(path(c.codingPath + [k]))'" }
    if case let DecodingError.typeMismatch(_, c) = error { return "wrong type at '\(path(c.codingPath))'" }
    if case let DecodingError.valueNotFound(_, c) = error { return "missing value at '\(path(c.codingPath))'" }
    if case let DecodingError.dataCorrupted(c) = error { return "invalid data at '\(path(c.codingPath))': \(c.debugDescription)" }
    return "\(error)"
}

func path(_ keys: [CodingKey]) -> String {
    keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingCharacters(in: CharacterSet(charactersIn: "."))
}
