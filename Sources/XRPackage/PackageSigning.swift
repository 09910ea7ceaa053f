// Signed packages: reading a package from its archive or from an unpacked folder, checking its
// `model.sig` against trusted keys before anything else is read, and `xrlab sign` (adding or
// replacing the signature of an existing package, rewriting it atomically).
import Foundation
import XRTensor

/// What a read found out about a package's signature.
public enum PackageSignature: Sendable, Equatable {
    /// No `model.sig`.
    case unsigned
    /// A `model.sig` naming this key identifier, not checked (no trusted keys given).
    case unchecked(keyID: String?)
    /// Checked against the trusted keys: valid, and covering exactly the package's files.
    case verified(ModelSignature.Signer)

    /// One line for `verify` and `inspect`.
    public var summary: String {
        switch self {
        case .unsigned: return "unsigned"
        case .unchecked(let id):
            return "signed by key \(id.map { "\($0.prefix(16))…" } ?? "(unnamed)"), not checked (pass --trust KEYS or set XRLAB_TRUSTED_KEYS)"
        case .verified(let s):
            return "signed by trusted key \(s.keyName) (\(s.keyID.prefix(16))…), valid, covering all \(s.files) files"
        }
    }
}

extension PackageReader {
    /// Stream an unpacked package folder the way `TarArchive.stream` streams an archive: every
    /// file under `url` in name order as an entry named by its relative path, with the archive
    /// reader's rules (plain files with safe names only; symbolic links, devices and FIFOs are
    /// refused) and size caps, its bytes handed to the consumer in chunks.
    static func streamFolder(_ url: URL, visit: (_ name: String, _ size: Int64) throws -> (UnsafeRawBufferPointer) throws -> Void) throws {
        let fm = FileManager.default
        let limits = TarArchive.Limits()
        var count = 0
        var total: Int64 = 0
        func walk(_ dir: URL, _ prefix: String) throws {
            for name in try fm.contentsOfDirectory(atPath: dir.path).sorted() {
                let rel = prefix.isEmpty ? name : "\(prefix)/\(name)"
                try TarArchive.checkName(rel, archive: url.path)
                let item = dir.appendingPathComponent(name)
                let attrs = try fm.attributesOfItem(atPath: item.path)
                switch attrs[.type] as? FileAttributeType {
                case .typeDirectory?: try walk(item, rel)
                case .typeRegular?:
                    let size = (attrs[.size] as? NSNumber)?.int64Value ?? 0
                    total += size
                    count += 1
                    guard size <= limits.maxEntryBytes, total <= limits.maxTotalBytes, count <= limits.maxEntries else {
                        throw XRError("folder content over the size or file-count caps", file: url.path, field: rel)
                    }
                    guard let fh = FileHandle(forReadingAtPath: item.path) else { throw XRError("unreadable file", file: url.path, field: rel) }
                    defer { try? fh.close() }
                    let consume = try visit(rel, size)
                    var got: Int64 = 0
                    while let chunk = try fh.read(upToCount: TarArchive.chunkBytes), !chunk.isEmpty {
                        got += Int64(chunk.count)
                        guard got <= size else { throw XRError("file grew while it was read", file: url.path, field: rel) }
                        try chunk.withUnsafeBytes { try consume($0) }
                    }
                    guard got == size else { throw XRError("file shrank while it was read", file: url.path, field: rel) }
                case .typeSymbolicLink?: throw XRError("symbolic links are not allowed in a package folder", file: url.path, field: rel)
                default: throw XRError("devices, FIFOs and sockets are not allowed in a package folder", file: url.path, field: rel)
                }
            }
        }
        try walk(url, "")
    }

    /// With `trust`, the package must carry a signature (`bundle`) by one of those keys covering
    /// exactly the files whose SHA-256 digests are `digests` (every file but `model.sig`);
    /// without, a signature is only reported.
    static func checkSignature(_ bundle: Data?, digests: [String: String], label: String, trust: [TrustedKey]?) throws -> PackageSignature {
        guard let trust else { return bundle.map { .unchecked(keyID: ModelSignature.keyHint($0)) } ?? .unsigned }
        guard let bundle else {
            throw XRError(
                "unsigned: the package has no \(ModelSignature.fileName), and trusted keys were given", file: label, field: ModelSignature.fileName,
                hint: "ask the publisher for a signed package (`xrlab sign PKG --key KEY`), or read it without --trust / XRLAB_TRUSTED_KEYS")
        }
        guard !trust.isEmpty else { throw XRError("no trusted keys given", file: label, field: "--trust") }
        return .verified(try ModelSignature.verify(bundle, digests: digests, trusted: trust, label: label))
    }
}

/// `xrlab sign`: add (or replace) the signature of an existing package.
public enum PackageSigner {
    /// Sign the package at `url` with `key`, rewriting it atomically (same entries, compression
    /// and entry times, plus `model.sig`). The package is fully checked first and the result is
    /// read back and verified under the key. When the package sits in a registry folder whose
    /// `index.json` lists it, its checksum and signer are updated there.
    /// Returns the signer and whether an earlier signature was replaced.
    public static func sign(_ url: URL, key: SigningKey) throws -> (signer: ModelSignature.Signer, replaced: Bool) {
        guard !isFolder(url) else {
            throw XRError(
                "xrlab signs package archives (.xrpkg), not folders", file: url.path,
                hint: "sign an unpacked folder with `model_signing sign key FOLDER --signature FOLDER/model.sig`")
        }
        // The package is checked in full (streaming, within its manifest's size caps) before its
        // entries are read into memory to be written again.
        let p = try PackageReader.open(url)
        var entries: [String: Data] = [:]
        for e in try TarArchive.read(url) { entries[e.name] = e.data }
        let replaced = entries.removeValue(forKey: ModelSignature.fileName) != nil
        let bundle = try ModelSignature.sign(files: entries, name: "\(p.manifest.name)-\(p.manifest.version)", key: key)
        entries[ModelSignature.fileName] = bundle
        let mtime = ISO8601DateFormatter().date(from: p.manifest.created).map { Int64($0.timeIntervalSince1970) } ?? 0
        let c = try compression(of: url)
        // A new archive beside the old one, renamed over it.
        try AtomicFile.write(to: url) { tmp in
            try TarArchive.write(entries.map { ArchiveEntry(name: $0.key, data: $0.value) }, to: tmp, compression: c, mtime: mtime)
        }
        guard case .verified(let signer) = try PackageReader.open(url, trust: [key.publicKey]).signature else {
            throw XRError("the rewritten package did not verify under the signing key", file: url.path)
        }
        try recordSigner(of: url, keyID: signer.keyID)
        return (signer, replaced)
    }

    static func isFolder(_ url: URL) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) && isDir.boolValue
    }

    /// The compression of an archive, from its first bytes.
    static func compression(of url: URL) throws -> TarArchive.Compression {
        guard let fh = FileHandle(forReadingAtPath: url.path) else { throw XRError("cannot open package", file: url.path) }
        defer { try? fh.close() }
        let head = [UInt8]((try? fh.read(upToCount: 4)) ?? Data())
        if head.starts(with: [0x1f, 0x8b]) { return .gzip }
        if head.starts(with: [0x28, 0xb5, 0x2f, 0xfd]) { return .zstd }
        return .none
    }

    /// Update the registry index beside `url`, if it lists the file: new checksum, signer.
    static func recordSigner(of url: URL, keyID: String) throws {
        let registry = url.deletingLastPathComponent()
        guard FileManager.default.fileExists(atPath: registry.appendingPathComponent("index.json").path) else { return }
        var index = try RegistryIndex.load(registry)
        let sha = try SHA256.hexOfFile(url)
        var found = false
        for (name, versions) in index.packages {
            index.packages[name] = versions.map { v in
                guard v.file == url.lastPathComponent else { return v }
                found = true
                var w = v
                w.sha256 = sha
                w.signer = keyID
                return w
            }
        }
        if found { try index.save(registry) }
    }
}
