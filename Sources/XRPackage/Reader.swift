// Reading packages: every read checks the archive (safe entries, SHA256SUMS), the manifest
// (format version, schema) and the head tensors before anything is used. Also `verify`,
// `diff`, `unpack` and `predict`.
import Foundation
import XRTensor
import XRData
import XRModels
import XRPipeline
import XRRecipes

public struct OpenedPackage: Sendable {
    public var url: URL
    public var manifest: PackageManifest
    /// The manifest as JSON (for `inspect` and `diff`).
    public var manifestJSON: [String: Any] { (try? JSONSerialization.jsonObject(with: entries["manifest.json"]!) as? [String: Any]) ?? [:] }
    public var card: String
    public var heads: [Head]
    public var entries: [String: Data]
    /// The signature (`model.sig`): absent, present but unchecked, or verified against trusted keys.
    public var signature: PackageSignature = .unsigned
}

public enum PackageReader {
    /// Read and check a package (an archive, or an unpacked package folder). With `trust`, its
    /// signature is checked first: it must be by one of those keys and cover exactly its files.
    public static func open(_ url: URL, trust: [TrustedKey]? = nil) throws -> OpenedPackage {
        let path = url.path
        let list = try readEntries(url)
        var entries: [String: Data] = [:]
        for e in list { entries[e.name] = e.data }
        let signature = try checkSignature(entries, label: path, trust: trust)
        guard let sums = entries["SHA256SUMS"] else { throw XRError("no SHA256SUMS entry", file: path, field: "SHA256SUMS", hint: "not an xrlab package, or a damaged one") }
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
        // model.sig signs SHA256SUMS, so SHA256SUMS cannot list it.
        for name in entries.keys.sorted() where name != "SHA256SUMS" && name != ModelSignature.fileName {
            guard let want = listed[name] else { throw XRError("entry '\(name)' is not listed in SHA256SUMS", file: path, field: name) }
            let got = SHA256.hex(entries[name]!)
            guard got == want else {
                throw XRError("checksum mismatch: SHA256SUMS says \(want.prefix(16))…, the entry hashes to \(got.prefix(16))…", file: path, field: name,
                              hint: "the package was modified or damaged after packing")
            }
        }
        if let missing = listed.keys.sorted().first(where: { entries[$0] == nil }) {
            throw XRError("SHA256SUMS lists '\(missing)' but the archive has no such entry", file: path, field: missing)
        }
        guard let mdata = entries["manifest.json"] else { throw XRError("no manifest.json entry", file: path, field: "manifest.json") }
        let manifest = try decodeManifest(mdata, file: "\(path):manifest.json")
        for f in manifest.files where entries[f] == nil {
            throw XRError("manifest lists '\(f)' but the archive has no such entry", file: path, field: "files")
        }
        guard let weights = entries["weights/head.safetensors"] else { throw XRError("no head weights", file: path, field: "weights/head.safetensors") }
        let tensors = try readSafeTensors(weights, label: "\(path):weights/head.safetensors")
        var heads: [Head] = []
        for info in manifest.heads {
            var t: [String: Tensor] = [:]
            for (k, v) in tensors where k.hasPrefix(info.tensors) { t[String(k.dropFirst(info.tensors.count))] = v }
            let h = Head(info: info, tensors: t)
            try h.validate(dim: manifest.base_encoder.dim, file: "\(path):weights/head.safetensors")
            heads.append(h)
        }
        let card = entries["MODEL_CARD.md"].flatMap { String(data: $0, encoding: .utf8) } ?? ""
        return OpenedPackage(url: url, manifest: manifest, card: card, heads: heads, entries: entries, signature: signature)
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
            throw XRError("package format \(v) is newer than this xrlab (\(XRLabVersion.string)) reads (formats 1–\(PackageManifest.formatVersion))",
                          file: file, field: "format_version", hint: "this package needs \(needs)")
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
        do {
            let f = try SafeTensorsFile(contentsOf: tmp)
            var out: [String: Tensor] = [:]
            for n in f.names { out[n] = try f.tensor(n) }
            return out
        } catch let e as XRError {
            throw XRError(e.message, file: label, field: e.field, hint: e.hint)
        }
    }

    /// Load the base encoder at `url` with the packaged preprocessing and check its hash.
    public static func encoder(for p: OpenedPackage, base url: URL) throws -> Encoder {
        let b = p.manifest.base_encoder
        guard b.kind == "encoder", let pre = b.preprocessing, let config = b.config else {
            throw XRError("this package was built on precomputed features, not an encoder", file: p.url.path, field: "base_encoder.kind",
                          hint: "pass --features with features from the same encoder")
        }
        var isDir: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir)
        let enc = try Encoder.load(model: url, preset: isDir.boolValue ? nil : config, heads: config.heads, explicit: pre)
        guard enc.weightsHash == b.sha256 else {
            throw XRError("base encoder mismatch: the package was trained on weights \(b.sha256.prefix(16))…, this checkpoint is \(enc.weightsHash.prefix(16))…",
                          file: url.path, field: "base_encoder.sha256",
                          hint: "use the encoder the package records (\(b.source), layout \(b.layout ?? "?")); a different encoder silently gives wrong answers")
        }
        return enc
    }

    /// Signature (with `trust`), archive, checksums and manifest (by `open`), plus the base
    /// encoder when given.
    public static func verify(_ url: URL, base: URL?, trust: [TrustedKey]? = nil) throws -> (OpenedPackage, [String]) {
        let p = try open(url, trust: trust)
        let signed = p.entries[ModelSignature.fileName] != nil
        var lines = ["signature: \(p.signature.summary)",
                     "archive: \(p.entries.count) entries, safe names, plain files",
                     "checksums: \(p.entries.count - (signed ? 2 : 1)) entries match SHA256SUMS",
                     "manifest: format \(p.manifest.format_version), \(p.manifest.name) \(p.manifest.version), \(p.heads.count) head(s) checked against their tensors"]
        if let base {
            if p.manifest.base_encoder.kind == "encoder" {
                _ = try encoder(for: p, base: base)
                lines.append("base encoder: \(base.path) matches \(p.manifest.base_encoder.sha256.prefix(16))…")
            } else {
                let h = try SHA256.hexOfFile(base)
                guard h == p.manifest.base_encoder.sha256 else {
                    throw XRError("feature file mismatch: recorded \(p.manifest.base_encoder.sha256.prefix(16))…, this file is \(h.prefix(16))…",
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
        let p = try open(url, trust: trust)
        let parent = destination.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: parent, withIntermediateDirectories: true)
        let tmp = parent.appendingPathComponent(".\(destination.lastPathComponent).partial-\(UUID().uuidString)")
        do {
            for (name, data) in p.entries {
                let target = tmp.appendingPathComponent(name)
                // Names were checked relative and `..`-free on reading; check the result anyway.
                guard target.standardizedFileURL.path.hasPrefix(tmp.standardizedFileURL.path + "/") else {
                    throw XRError("entry would land outside the destination", file: url.path, field: name)
                }
                try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
                try data.write(to: target)
            }
            try FileManager.default.moveItem(at: tmp, to: destination)
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw error
        }
        return p
    }

    /// What changed from `a` to `b`: base encoder, method, labels, thresholds, metrics with
    /// intervals, training data, recipe.
    public static func diff(_ a: OpenedPackage, _ b: OpenedPackage) -> [String] {
        let ma = a.manifest, mb = b.manifest
        var out: [String] = []
        func line(_ what: String, _ x: String, _ y: String) { if x != y { out.append("\(what): \(x) → \(y)") } }
        line("version", "\(ma.name) \(ma.version)", "\(mb.name) \(mb.version)")
        line("base encoder", "\(ma.base_encoder.kind) \(ma.base_encoder.sha256.prefix(16))… (\(ma.base_encoder.source))",
             "\(mb.base_encoder.kind) \(mb.base_encoder.sha256.prefix(16))… (\(mb.base_encoder.source))")
        if let pa = ma.base_encoder.preprocessing, let pb = mb.base_encoder.preprocessing { line("preprocessing", pa.description, pb.description) }
        line("representation", ma.base_encoder.representation.joined(separator: "+"), mb.base_encoder.representation.joined(separator: "+"))
        line("method", "\(ma.method.name) (\(ma.method.shots.map { "\($0) shots" } ?? "all rows"))", "\(mb.method.name) (\(mb.method.shots.map { "\($0) shots" } ?? "all rows"))")
        line("labels", ma.labels.joined(separator: ", "), mb.labels.joined(separator: ", "))
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
