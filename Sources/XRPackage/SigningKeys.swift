// Signing keys: an ECDSA P-256 private key that signs packages (`xrlab keygen`, `pack --sign`,
// `xrlab sign`) and the public keys a site trusts (`--trust`, `XRLAB_TRUSTED_KEYS`). Keys are
// PEM files as OpenSSL and Python's `cryptography` write them (PKCS#8 / SEC1 private keys,
// SubjectPublicKeyInfo public keys), so the same files work with OpenSSF model signing
// (`model_signing sign key --private_key`, `model_signing verify key --public_key`).
import Foundation
import Crypto
import XRTensor

/// A private key that signs packages: ECDSA over NIST P-256 with SHA-256, the curve OpenSSF model
/// signing uses in its key mode.
public struct SigningKey: Sendable {
    let key: P256.Signing.PrivateKey
    /// The file the key was read from (empty for a new key).
    public let file: String

    /// The public half, as a trusted key would be read from the `.pub` file.
    public var publicKey: TrustedKey {
        TrustedKey(.p256(key.publicKey), name: file.isEmpty ? "new key" : URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent + ".pub")
    }

    /// A new random key.
    public static func generate() -> SigningKey { SigningKey(key: P256.Signing.PrivateKey(), file: "") }

    /// Read a PEM private key (`-----BEGIN PRIVATE KEY-----` or `-----BEGIN EC PRIVATE KEY-----`).
    public static func load(_ url: URL) throws -> SigningKey {
        let text = try readPEMText(url, role: "private key")
        guard let block = pemBlock(text, types: ["PRIVATE KEY", "EC PRIVATE KEY"]) else {
            if pemBlock(text, types: ["PUBLIC KEY"]) != nil {
                throw XRError(
                    "this is a public key; signing needs the private key", file: url.path,
                    hint: "pass the private key file (e.g. site.key), not site.pub")
            }
            throw XRError(
                "no PEM private key (-----BEGIN PRIVATE KEY-----) in the file", file: url.path,
                hint: "create one with `xrlab keygen --out site.key`")
        }
        do { return SigningKey(key: try P256.Signing.PrivateKey(pemRepresentation: block), file: url.path) } catch {
            throw XRError(
                "not an ECDSA P-256 private key (\(error))", file: url.path,
                hint: "xrlab signs with P-256 keys; create one with `xrlab keygen --out site.key`")
        }
    }

    /// Permission bits of a key file that anyone but its owner can read (nil when private).
    public static func looseMode(_ url: URL) -> Int? {
        guard let mode = (try? FileManager.default.attributesOfItem(atPath: url.path))?[.posixPermissions] as? Int else { return nil }
        return mode & 0o077 != 0 ? mode : nil
    }

    /// Write a new key pair: the private key at `url`, created with mode 0600, and the public key
    /// beside it with the extension `.pub`. Neither file may exist: keys are never overwritten.
    /// Returns the public key file.
    @discardableResult
    public func write(to url: URL) throws -> URL {
        let pub = url.deletingPathExtension().appendingPathExtension("pub")
        guard url.path != pub.path else { throw XRError("the private key file cannot end in .pub", file: url.path, field: "--out") }
        for f in [url, pub] where FileManager.default.fileExists(atPath: f.path) {
            throw XRError("already exists; keys are never overwritten", file: f.path, hint: "choose another --out, or move the old key away first")
        }
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        // Created 0600 before any byte is written, then renamed into place.
        try AtomicFile.write(to: url) { tmp in
            let fd = open(tmp.path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
            guard fd >= 0 else { throw XRError("cannot create key file: \(String(cString: strerror(errno)))", file: url.path) }
            let fh = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
            try fh.write(contentsOf: Data((key.pemRepresentation + "\n").utf8))
            try fh.synchronize()
        }
        try AtomicFile.write(publicKey.pem, to: pub)
        return pub
    }
}

/// A public key whose signatures a site accepts. Verifies ECDSA signatures over P-256 (SHA-256),
/// P-384 (SHA-384) or P-521 (SHA-512), the curves OpenSSF model signing accepts.
public struct TrustedKey: Sendable {
    enum Material: Sendable {
        case p256(P256.Signing.PublicKey)
        case p384(P384.Signing.PublicKey)
        case p521(P521.Signing.PublicKey)
    }
    let material: Material
    /// Where the key came from (its file name).
    public let name: String

    init(_ material: Material, name: String) {
        self.material = material
        self.name = name
    }

    /// The key as OpenSSL writes it: SubjectPublicKeyInfo PEM, 64-column base64, final newline.
    public var pem: String {
        switch material {
        case .p256(let k): return k.pemRepresentation + "\n"
        case .p384(let k): return k.pemRepresentation + "\n"
        case .p521(let k): return k.pemRepresentation + "\n"
        }
    }

    /// SHA-256 of `pem`, in hex: the key identifier OpenSSF model signing records in a bundle's
    /// `verificationMaterial.publicKey.hint` (and xrlab in the registry index).
    public var keyID: String { XRTensor.SHA256.hex(Data(pem.utf8)) }

    /// The first 16 hex digits of `keyID`, for messages.
    public var shortID: String { String(keyID.prefix(16)) }

    public var curve: String {
        switch material {
        case .p256: return "P-256"
        case .p384: return "P-384"
        case .p521: return "P-521"
        }
    }

    /// Whether `der` (an ASN.1 DER ECDSA signature) signs `message` under this key.
    func isValid(derSignature der: Data, for message: Data) -> Bool {
        switch material {
        case .p256(let k): return (try? P256.Signing.ECDSASignature(derRepresentation: der)).map { k.isValidSignature($0, for: message) } ?? false
        case .p384(let k): return (try? P384.Signing.ECDSASignature(derRepresentation: der)).map { k.isValidSignature($0, for: message) } ?? false
        case .p521(let k): return (try? P521.Signing.ECDSASignature(derRepresentation: der)).map { k.isValidSignature($0, for: message) } ?? false
        }
    }

    /// Read a PEM public key (`-----BEGIN PUBLIC KEY-----`).
    public static func load(_ url: URL) throws -> TrustedKey {
        let text = try readPEMText(url, role: "public key")
        guard let block = pemBlock(text, types: ["PUBLIC KEY"]) else {
            if pemBlock(text, types: ["PRIVATE KEY", "EC PRIVATE KEY"]) != nil {
                throw XRError(
                    "this is a private key; trust is given to public keys", file: url.path,
                    hint: "pass the .pub file written beside the key (keep the private key private)")
            }
            throw XRError("no PEM public key (-----BEGIN PUBLIC KEY-----) in the file", file: url.path)
        }
        let name = url.lastPathComponent
        if let k = try? P256.Signing.PublicKey(pemRepresentation: block) { return TrustedKey(.p256(k), name: name) }
        if let k = try? P384.Signing.PublicKey(pemRepresentation: block) { return TrustedKey(.p384(k), name: name) }
        if let k = try? P521.Signing.PublicKey(pemRepresentation: block) { return TrustedKey(.p521(k), name: name) }
        throw XRError(
            "not an ECDSA P-256, P-384 or P-521 public key", file: url.path,
            hint: "signatures in OpenSSF model signing's key mode use these curves")
    }

    /// Keys from files and folders (every `*.pub` and `*.pem` file directly inside a folder).
    /// A folder without keys, or a key file that does not parse, is an error: a trust list that
    /// silently shrank would refuse every package without saying why.
    public static func load(paths: [String], field: String) throws -> [TrustedKey] {
        var keys: [TrustedKey] = []
        for p in paths where !p.isEmpty {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir) else {
                throw XRError("trusted key file or folder not found", file: p, field: field)
            }
            if isDir.boolValue {
                let dir = URL(fileURLWithPath: p)
                let names = try FileManager.default.contentsOfDirectory(atPath: p).filter { $0.hasSuffix(".pub") || $0.hasSuffix(".pem") }.sorted()
                let found = try names.map { try load(dir.appendingPathComponent($0)) }
                guard !found.isEmpty else { throw XRError("no public keys (*.pub, *.pem) in the folder", file: p, field: field) }
                keys += found
            } else {
                keys.append(try load(URL(fileURLWithPath: p)))
            }
        }
        return keys
    }

    /// The trust list for a command: `--trust` paths when given, else `XRLAB_TRUSTED_KEYS`
    /// (paths separated by ':'), else nil (no signature required).
    public static func resolve(_ paths: [String]) throws -> [TrustedKey]? {
        if !paths.isEmpty { return try load(paths: paths, field: "--trust") }
        guard let env = ProcessInfo.processInfo.environment["XRLAB_TRUSTED_KEYS"], !env.isEmpty else { return nil }
        return try load(paths: env.split(separator: ":").map(String.init), field: "XRLAB_TRUSTED_KEYS")
    }
}

func readPEMText(_ url: URL, role: String) throws -> String {
    guard let data = FileManager.default.contents(atPath: url.path) else { throw XRError("\(role) file not found or unreadable", file: url.path) }
    guard data.count < 1 << 16, let text = String(data: data, encoding: .utf8) else { throw XRError("not a PEM text file", file: url.path) }
    return text
}

/// The first PEM block of one of `types` in `text` (OpenSSL may write other blocks, such as
/// `EC PARAMETERS`, before the key), with normalised line endings.
func pemBlock(_ text: String, types: [String]) -> String? {
    let lines = text.replacingOccurrences(of: "\r\n", with: "\n").split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
    for t in types {
        guard let start = lines.firstIndex(of: "-----BEGIN \(t)-----"),
            let end = lines[start...].firstIndex(of: "-----END \(t)-----")
        else { continue }
        return lines[start...end].joined(separator: "\n")
    }
    return nil
}
