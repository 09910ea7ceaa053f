// Reading packages: every read checks the archive (safe entries, SHA256SUMS), the manifest
// (format version, schema) and the head tensors before anything is used. Also `verify`,
// `diff`, `unpack` and `predict`.
import Foundation
import XRTensor
import XRData
import XRHeads
import XRModels
import XRPipeline
import XRRecipes

public struct OpenedPackage: Sendable {
    public var url: URL
    public var manifest: PackageManifest
    /// The manifest as JSON (for `inspect` and `diff`).
    public var manifestJSON: [String: Any] { (try? JSONSerialization.jsonObject(with: entries["manifest.json"] ?? Data()) as? [String: Any]) ?? [:] }
    public var card: String
    public var heads: [Head]
    /// The entries held in memory: manifest.json, SHA256SUMS, MODEL_CARD.md and (up to
    /// `Limits.packageInMemoryEntryBytes`) weights/head.safetensors. Others are only streamed.
    public var entries: [String: Data]
    /// Every entry's size in bytes (all were hashed and checked against SHA256SUMS).
    public var sizes: [String: Int64]
    /// The signature (`model.sig`): absent, present but unchecked, or verified against trusted keys.
    public var signature: PackageSignature = .unsigned
    /// Retrieval packages: each head's gallery ids and labels (`gallery.<i>.csv`).
    public var galleries: [GalleryList] = []
}

public enum PackageReader {
    /// Entries read into memory (each at most `Limits.packageInMemoryEntryBytes`).
    static let inMemory: Set<String> = ["SHA256SUMS", "manifest.json", "MODEL_CARD.md", "weights/head.safetensors", ModelSignature.fileName]

    /// Whether an entry is kept in memory: the `inMemory` entries and retrieval galleries'
    /// `gallery.<i>.csv` (ids and labels, at most `Limits.packageInMemoryEntryBytes` each).
    static func keptInMemory(_ name: String) -> Bool { inMemory.contains(name) || isGalleryList(name) }

    /// `gallery.<i>.csv`.
    static func isGalleryList(_ name: String) -> Bool {
        name.hasPrefix("gallery.") && name.hasSuffix(".csv") && Int(name.dropFirst("gallery.".count).dropLast(".csv".count)) != nil
    }

    /// Read and check a package in one streaming pass: every entry is hashed as it streams and
    /// compared with SHA256SUMS; only the entries in `inMemory` are kept (the head weights go to a
    /// temporary file when large). Once SHA256SUMS and manifest.json have been read (xrlab writes
    /// them first), an entry they do not list, or one larger than the manifest accounts for, is
    /// refused from its header, before its data is decompressed. With `extractTo`, every entry is
    /// also written there in chunks (the caller removes the folder on failure). Head weights over
    /// `inMemoryBytes` are read through a temporary file. `url` may also be an unpacked package
    /// folder, read the same way.
    ///
    /// With `trust`, the package must carry a signature (`model.sig`) by one of those keys that
    /// covers exactly its files; it is checked as soon as every entry has been hashed, before the
    /// checksums and the head weights, and entries SHA256SUMS does not list are then left for the
    /// signature to name (they are still capped by the manifest and never kept in memory).
    public static func open(
        _ url: URL, trust: [TrustedKey]? = nil, extractTo: URL? = nil,
        inMemoryBytes: Int = Limits.packageInMemoryEntryBytes
    ) throws -> OpenedPackage {
        let path = url.path
        var entries: [String: Data] = [:]
        var sizes: [String: Int64] = [:]
        var hashes: [String: String] = [:]
        var listed: [String: String]? = nil
        var manifest: PackageManifest? = nil
        var caps: PackageSizeCaps? = nil
        let headFile = FileManager.default.temporaryDirectory.appendingPathComponent("xrlab-head-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: headFile) }
        var headOnDisk = false
        var pending: (name: String, hasher: SHA256, memory: Data?, file: FileHandle?, out: FileHandle?)? = nil
        func finishPending() throws {
            guard var p = pending else { return }
            pending = nil
            hashes[p.name] = hexString(p.hasher.finalize())
            try p.file?.close()
            try p.out?.close()
            if let d = p.memory { entries[p.name] = d }
            if p.name == "SHA256SUMS", let d = p.memory { listed = try parseSums(d, path: path) }
            if p.name == "manifest.json", let d = p.memory {
                let m = try decodeManifest(d, file: "\(path):manifest.json")
                manifest = m
                caps = PackageSizeCaps(m)
            }
        }
        let stream = PackageSigner.isFolder(url) ? streamFolder : { try TarArchive.stream($0, visit: $1) }
        try stream(url) { name, size in
            try finishPending()
            // model.sig signs SHA256SUMS, so SHA256SUMS cannot list it.
            if trust == nil, let listed, name != "SHA256SUMS", name != ModelSignature.fileName, listed[name] == nil {
                throw XRError("entry '\(name)' is not listed in SHA256SUMS", file: path, field: name)
            }
            let cap = caps?.cap(name) ?? Int64(Limits.packageInMemoryEntryBytes)
            guard size <= cap else {
                throw XRError(
                    "entry declares \(size) bytes, more than the \(cap) bytes the manifest accounts for", file: path, field: name,
                    hint: caps == nil
                        ? "entries before manifest.json may hold at most \(Limits.packageInMemoryEntryBytes) bytes"
                        : "the package may be a decompression bomb or damaged; repack it with xrlab pack")
            }
            sizes[name] = size
            var memory: Data? = nil, file: FileHandle? = nil
            if keptInMemory(name) {
                if size <= Int64(inMemoryBytes) {
                    memory = Data(capacity: Int(size))
                } else if name == "weights/head.safetensors" {
                    guard FileManager.default.createFile(atPath: headFile.path, contents: nil) else {
                        throw XRError("cannot write a temporary file", file: headFile.path)
                    }
                    file = try FileHandle(forWritingTo: headFile)
                    headOnDisk = true
                } else {
                    throw XRError("entry declares \(size) bytes, over the \(Limits.packageInMemoryEntryBytes)-byte cap for \(name)", file: path, field: name)
                }
            }
            var out: FileHandle? = nil
            if let extractTo {
                let target = extractTo.appendingPathComponent(name)
                // Names were checked relative and `..`-free; check the result anyway.
                guard target.standardizedFileURL.path.hasPrefix(extractTo.standardizedFileURL.path + "/") else {
                    throw XRError("entry would land outside the destination", file: path, field: name)
                }
                try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
                guard FileManager.default.createFile(atPath: target.path, contents: nil) else { throw XRError("cannot write", file: target.path) }
                out = try FileHandle(forWritingTo: target)
            }
            pending = (name, SHA256(), memory, file, out)
            // The head weights' safetensors header is checked as soon as it has streamed in, so
            // a head of zeros (or any non-safetensors data) is refused without reading the rest.
            var prefix: Data? = name == "weights/head.safetensors" ? Data() : nil
            return { chunk in
                if var p = prefix {
                    p.append(contentsOf: chunk.prefix(Self.headerPrefixBytes - p.count))
                    prefix = try checkHeadHeader(p, entrySize: size, path: path) ? nil : p
                }
                pending?.hasher.update(chunk)
                if pending?.memory != nil { pending?.memory?.append(contentsOf: chunk) }
                if let f = file { try f.write(contentsOf: chunk) }
                if let out { try out.write(contentsOf: chunk) }
            }
        }
        try finishPending()
        var digests = hashes
        digests[ModelSignature.fileName] = nil
        let signature = try checkSignature(entries[ModelSignature.fileName], digests: digests, label: path, trust: trust)
        guard let listed else { throw XRError("no SHA256SUMS entry", file: path, field: "SHA256SUMS", hint: "not an xrlab package, or a damaged one") }
        for name in digests.keys.sorted() where name != "SHA256SUMS" {
            guard let want = listed[name] else { throw XRError("entry '\(name)' is not listed in SHA256SUMS", file: path, field: name) }
            let got = hashes[name] ?? ""
            guard got == want else {
                throw XRError(
                    "checksum mismatch: SHA256SUMS says \(want.prefix(16))…, the entry hashes to \(got.prefix(16))…", file: path, field: name,
                    hint: "the package was modified or damaged after packing")
            }
        }
        if let missing = listed.keys.sorted().first(where: { hashes[$0] == nil }) {
            throw XRError("SHA256SUMS lists '\(missing)' but the archive has no such entry", file: path, field: missing)
        }
        guard let manifest else { throw XRError("no manifest.json entry", file: path, field: "manifest.json") }
        for f in manifest.files where hashes[f] == nil {
            throw XRError("manifest lists '\(f)' but the archive has no such entry", file: path, field: "files")
        }
        let label = "\(path):weights/head.safetensors"
        let tensors: [String: Tensor]
        if headOnDisk {
            tensors = try readSafeTensors(file: headFile, label: label)
        } else {
            guard let weights = entries["weights/head.safetensors"] else { throw XRError("no head weights", file: path, field: "weights/head.safetensors") }
            tensors = try readSafeTensors(weights, label: label)
        }
        var heads: [Head] = []
        for info in manifest.heads {
            var t: [String: Tensor] = [:]
            for (k, v) in tensors where k.hasPrefix(info.tensors) { t[String(k.dropFirst(info.tensors.count))] = v }
            let h = Head(info: info, tensors: t)
            try h.validate(dim: manifest.base_encoder.dim, file: label, patchTokens: [.segmentation, .detection].contains(manifest.packageKind))
            heads.append(h)
        }
        var galleries: [GalleryList] = []
        if manifest.packageKind == .retrieval {
            for (i, h) in heads.enumerated() {
                let name = GalleryList.entry(i)
                guard let data = entries[name] else { throw XRError("a retrieval package needs its gallery list", file: path, field: name) }
                galleries.append(try GalleryList(data, rows: h.info.n_train, file: "\(path):\(name)"))
            }
        }
        let card = entries["MODEL_CARD.md"].flatMap { String(data: $0, encoding: .utf8) } ?? ""
        return OpenedPackage(
            url: url, manifest: manifest, card: card, heads: heads, entries: entries, sizes: sizes, signature: signature, galleries: galleries)
    }

    /// Most bytes of the head weights kept to check their safetensors header while streaming.
    static let headerPrefixBytes = 1 << 20

    /// Check the start of `weights/head.safetensors` while it streams: true once its header has
    /// been read and is a JSON object within the entry; false while more bytes are needed (a header
    /// over `headerPrefixBytes` is left to the full read).
    static func checkHeadHeader(_ p: Data, entrySize: Int64, path: String) throws -> Bool {
        guard p.count >= 8 else { return false }
        let n = p.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        let field = "weights/head.safetensors"
        guard n > 0, n <= UInt64(entrySize - 8) else {
            throw XRError(
                "header length \(n) does not fit the \(entrySize)-byte entry", file: "\(path):\(field)", field: "header length",
                hint: "the package is damaged or not written by xrlab pack")
        }
        guard n <= UInt64(headerPrefixBytes - 8) else { return true }
        guard UInt64(p.count) >= 8 + n else { return false }
        guard (try? JSONSerialization.jsonObject(with: p.subdata(in: p.startIndex + 8..<p.startIndex + 8 + Int(n)))) is [String: Any] else {
            throw XRError(
                "header is not a JSON object", file: "\(path):\(field)", field: "header",
                hint: "the package is damaged or not written by xrlab pack")
        }
        return true
    }

    /// SHA256SUMS lines (`<64 hex>  <name>`) → name → lowercase hex.
    static func parseSums(_ sums: Data, path: String) throws -> [String: String] {
        guard let sumsText = String(data: sums, encoding: .utf8) else { throw XRError("SHA256SUMS is not UTF-8 text", file: path, field: "SHA256SUMS") }
        var listed: [String: String] = [:]
        for (i, line) in sumsText.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].count == 64, parts[0].allSatisfy(\.isHexDigit), parts[1].hasPrefix(" ") else {
                throw XRError("malformed line \(i + 1)", file: path, field: "SHA256SUMS")
            }
            let name = String(parts[1].dropFirst())
            guard listed[name] == nil else { throw XRError("'\(name)' listed twice", file: path, field: "SHA256SUMS") }
            listed[name] = String(parts[0]).lowercased()
        }
        return listed
    }

    /// Decode a manifest: format and version first (a newer format is refused naming the xrlab
    /// that reads it), then the full schema, then value checks.
    public static func decodeManifest(_ data: Data, file: String) throws -> PackageManifest {
        guard let json = try? JSONSerialization.jsonObject(with: data), let obj = json as? [String: Any] else {
            throw XRError("manifest is not a JSON object", file: file)
        }
        guard obj["format"] as? String == PackageManifest.formatName else {
            throw XRError("not an xrlab package manifest (format: \(obj["format"].map { "\($0)" } ?? "missing"))", file: file, field: "format")
        }
        guard let v = obj["format_version"] as? Int else { throw XRError("missing or non-integer format_version", file: file, field: "format_version") }
        guard v >= 1 else { throw XRError("format_version \(v) is not a valid version", file: file, field: "format_version") }
        if v > PackageManifest.formatVersion {
            let needs = (obj["requires_xrlab"] as? String).map { "xrlab \($0) or newer" } ?? "a newer xrlab"
            throw XRError(
                "package format \(v) is newer than this xrlab (\(XRLabVersion.string)) reads (formats 1–\(PackageManifest.formatVersion))",
                file: file, field: "format_version", hint: "this package needs \(needs)")
        }
        // A kind this xrlab does not know is refused by name before the schema (a future kind may
        // carry fields this reader has never heard of).
        if let k = obj["kind"] {
            let name = (k as? String) ?? "\(k)"
            guard PackageKind(rawValue: name) != nil else {
                let needs = (obj["requires_xrlab"] as? String).map { "xrlab \($0) or newer" } ?? "a newer xrlab"
                throw XRError(
                    "package kind '\(name)' is not one this xrlab (\(XRLabVersion.string)) reads (\(PackageKind.allCases.map(\.rawValue).joined(separator: ", ")))",
                    file: file, field: "kind", hint: "this package needs \(needs) that reads '\(name)' packages")
            }
        }
        let m: PackageManifest
        do { m = try JSONDecoder().decode(PackageManifest.self, from: data) } catch {
            throw XRError("manifest does not match the format \(v) schema: \(describe(error))", file: file)
        }
        try m.validate(file: file)
        return m
    }

    static func readSafeTensors(_ data: Data, label: String) throws -> [String: Tensor] {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("xrlab-head-\(UUID().uuidString).safetensors")
        try data.write(to: tmp)
        defer { try? FileManager.default.removeItem(at: tmp) }
        return try readSafeTensors(file: tmp, label: label)
    }

    static func readSafeTensors(file: URL, label: String) throws -> [String: Tensor] {
        do {
            let f = try SafeTensorsFile(contentsOf: file)
            var out: [String: Tensor] = [:]
            for n in f.names { out[n] = try f.tensor(n) }
            return out
        } catch let e as XRError {
            throw XRError(e.message, file: label, field: e.field, hint: e.hint)
        }
    }

    /// Load the base encoder at `url` with the packaged preprocessing and check its hash; its
    /// linear layers at `precision`, else the precision the package records.
    public static func encoder(for p: OpenedPackage, base url: URL, precision: Precision? = nil) throws -> Encoder {
        let b = p.manifest.base_encoder
        guard b.kind == "encoder", let pre = b.preprocessing, let config = b.config else {
            throw XRError(
                "this package was built on precomputed features, not an encoder", file: p.url.path, field: "base_encoder.kind",
                hint: "pass --features with features from the same encoder")
        }
        var isDir: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir)
        let enc = try Encoder.load(
            model: url, preset: isDir.boolValue ? nil : config, heads: config.heads, explicit: pre, precision: precision ?? b.encoderPrecision)
        try enc.checkPatchGrid(file: p.url.path, field: "base_encoder.preprocessing")
        guard enc.weightsHash == b.sha256 else {
            throw XRError(
                "base encoder mismatch: the package was trained on weights \(b.sha256.prefix(16))…, this checkpoint is \(enc.weightsHash.prefix(16))…",
                file: url.path, field: "base_encoder.sha256",
                hint: "use the encoder the package records (\(b.source), layout \(b.layout ?? "?")); a different encoder silently gives wrong answers")
        }
        return enc
    }

    /// Signature (with `trust`), archive, checksums and manifest (by `open`), plus the base
    /// encoder when given.
    public static func verify(_ url: URL, base: URL?, trust: [TrustedKey]? = nil) throws -> (OpenedPackage, [String]) {
        let p = try open(url, trust: trust)
        let signed = p.sizes[ModelSignature.fileName] != nil
        var lines = [
            "signature: \(p.signature.summary)",
            "archive: \(p.sizes.count) entries, safe names, plain files",
            "checksums: \(p.sizes.count - (signed ? 2 : 1)) entries match SHA256SUMS",
            "manifest: format \(p.manifest.format_version), \(p.manifest.name) \(p.manifest.version), \(p.heads.count) head(s) checked against their tensors"
        ]
        if let base {
            if p.manifest.base_encoder.kind == "encoder" {
                _ = try encoder(for: p, base: base)
                lines.append("base encoder: \(base.path) matches \(p.manifest.base_encoder.sha256.prefix(16))…")
            } else {
                let h = try SHA256.hexOfFile(base)
                guard h == p.manifest.base_encoder.sha256 else {
                    throw XRError(
                        "feature file mismatch: recorded \(p.manifest.base_encoder.sha256.prefix(16))…, this file is \(h.prefix(16))…",
                        file: base.path, field: "base_encoder.sha256")
                }
                lines.append("base features: \(base.path) matches")
            }
        } else {
            lines.append("base encoder: not checked (pass --base MODEL)")
        }
        return (p, lines)
    }

    /// Extract into `destination` (which must not exist): everything is written to a temporary
    /// sibling folder and renamed into place, so a failed unpack leaves nothing behind.
    public static func unpack(_ url: URL, to destination: URL, trust: [TrustedKey]? = nil) throws -> OpenedPackage {
        guard !FileManager.default.fileExists(atPath: destination.path) else {
            throw XRError("destination already exists", file: destination.path, hint: "choose a new folder")
        }
        let parent = destination.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: parent, withIntermediateDirectories: true)
        let tmp = parent.appendingPathComponent(".\(destination.lastPathComponent).partial-\(UUID().uuidString)")
        do {
            try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: false)
            // One pass: entries stream to disk in chunks while they are hashed; only a package
            // that checks out completely is renamed into place.
            let p = try open(url, trust: trust, extractTo: tmp)
            try FileManager.default.moveItem(at: tmp, to: destination)
            return p
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw error
        }
    }

    /// What changed from `a` to `b`: base encoder, method, labels, thresholds, metrics with
    /// intervals, training data, recipe.
    public static func diff(_ a: OpenedPackage, _ b: OpenedPackage) -> [String] {
        let ma = a.manifest, mb = b.manifest
        var out: [String] = []
        func line(_ what: String, _ x: String, _ y: String) { if x != y { out.append("\(what): \(x) → \(y)") } }
        line("version", "\(ma.name) \(ma.version)", "\(mb.name) \(mb.version)")
        line(
            "base encoder", "\(ma.base_encoder.kind) \(ma.base_encoder.sha256.prefix(16))… (\(ma.base_encoder.source))",
            "\(mb.base_encoder.kind) \(mb.base_encoder.sha256.prefix(16))… (\(mb.base_encoder.source))")
        if let pa = ma.base_encoder.preprocessing, let pb = mb.base_encoder.preprocessing { line("preprocessing", pa.description, pb.description) }
        line("representation", ma.base_encoder.representation.joined(separator: "+"), mb.base_encoder.representation.joined(separator: "+"))
        line("precision", ma.base_encoder.encoderPrecision.rawValue, mb.base_encoder.encoderPrecision.rawValue)
        line(
            "method", "\(ma.method.name) (\(ma.method.shots.map { "\($0) shots" } ?? "all rows"))",
            "\(mb.method.name) (\(mb.method.shots.map { "\($0) shots" } ?? "all rows"))")
        line("labels", ma.labels.joined(separator: ", "), mb.labels.joined(separator: ", "))
        line("kind", ma.packageKind.rawValue, mb.packageKind.rawValue)
        func boxes(_ d: DetectionSpec?) -> String { d.map { "logit above \($0.threshold), \($0.scoring.rawValue) scoring" } ?? "(none)" }
        line("boxes", boxes(ma.detection), boxes(mb.detection))
        let tasks = Array(Set(ma.heads.map(\.task)).union(mb.heads.map(\.task))).sorted()
        for t in tasks {
            let ha = ma.heads.first { $0.task == t }, hb = mb.heads.first { $0.task == t }
            line("threshold \(t)", ha.map { ModelCard.num($0.threshold, 4) } ?? "(no head)", hb.map { ModelCard.num($0.threshold, 4) } ?? "(no head)")
            let ea = ma.evaluation.first { $0.task == t }, eb = mb.evaluation.first { $0.task == t }
            let metrics = Array(Set(ea?.metrics.keys.map { $0 } ?? []).union(eb?.metrics.keys.map { $0 } ?? [])).sorted()
            for m in metrics {
                let x = ModelCard.est(ea?.metrics[m]), y = ModelCard.est(eb?.metrics[m])
                var s = "\(m) \(t): \(x) → \(y)"
                if let va = ea?.metrics[m]?.value, let vb = eb?.metrics[m]?.value { s += String(format: " (%+.3f)", vb - va) }
                if x != y { out.append(s) }
            }
        }
        line("training rows", "\(ma.training_data.train.rows)", "\(mb.training_data.train.rows)")
        line("training data", String(ma.training_data.train.content_sha256.prefix(16)), String(mb.training_data.train.content_sha256.prefix(16)))
        line("test data", String(ma.training_data.test.content_sha256.prefix(16)), String(mb.training_data.test.content_sha256.prefix(16)))
        let ra = (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(ma.recipe))) ?? [:]
        let rb = (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(mb.recipe))) ?? [:]
        out += Runner.differences(ra, rb, path: "").map { "recipe \($0)" }
        return out
    }
}
