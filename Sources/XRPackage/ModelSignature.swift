// Package signatures in the format of OpenSSF model signing (sigstore/model-transparency, the
// `model-signing` package) in its key mode:
//
//   model.sig = Sigstore bundle (JSON, media type v0.3)
//     verificationMaterial.publicKey.hint = SHA-256 of the signer's public key PEM
//     dsseEnvelope = DSSE envelope: payloadType "application/vnd.in-toto+json",
//                    payload = in-toto Statement v1 (base64), one ECDSA signature (DER, base64)
//                    over PAE(payloadType, payload) = "DSSEv1 <len> <type> <len> <payload>"
//   Statement: predicateType "https://model_signing/signature/v1.0"
//     predicate.serialization = {method: "files", hash_type: "sha256", allow_symlinks: false,
//                                ignore_paths: [...]}
//     predicate.resources = [{name: relative path, algorithm: "sha256", digest: hex}], sorted
//     subject = [{name: model name, digest: {sha256: SHA-256 over the resources' raw digests in
//                 their listed order}}]
//
// Every file of the package except `model.sig` itself is a resource, SHA256SUMS and
// manifest.json included, so the unpacked folder verifies with `model_signing verify key`, and a
// folder signed by `model_signing sign key` verifies here.
import Foundation
import XRTensor

/// Signing and verifying a package's files (OpenSSF model signing format, key mode).
public enum ModelSignature {
    /// The signature's entry (archive) or file (folder) name, model signing's default.
    public static let fileName = "model.sig"
    static let mediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"
    static let payloadType = "application/vnd.in-toto+json"
    static let statementType = "https://in-toto.io/Statement/v1"
    static let predicateType = "https://model_signing/signature/v1.0"
    /// What `model_signing sign key DIR --signature DIR/model.sig` records as ignored.
    static let ignorePaths = [".git", ".gitattributes", ".github", ".gitignore", fileName]

    /// A signature that verified: who signed and what it covers.
    public struct Signer: Sendable, Equatable {
        /// The trusted key's file name and its identifier (`TrustedKey.keyID`).
        public var keyName: String
        public var keyID: String
        /// The model name the statement records (informative: model signing does not bind it).
        public var subject: String
        /// Number of files covered.
        public var files: Int
    }

    struct Statement: Codable {
        struct Subject: Codable { var name: String; var digest: [String: String] }
        struct Serialization: Codable {
            var method: String
            var hash_type: String
            var allow_symlinks: Bool?
            var ignore_paths: [String]?
        }
        struct Resource: Codable { var name: String; var algorithm: String; var digest: String }
        struct Predicate: Codable { var serialization: Serialization; var resources: [Resource] }
        var _type: String
        var subject: [Subject]
        var predicateType: String
        var predicate: Predicate
    }

    /// The in-toto statement over `files` (name → content; `model.sig` must not be among them).
    static func statement(name: String, files: [String: Data]) -> Data {
        statement(name: name, digests: files.mapValues { SHA256.hex($0) })
    }

    /// The in-toto statement over files given by their SHA-256 digests (name → lowercase hex).
    static func statement(name: String, digests: [String: String]) -> Data {
        let resources = digests.sorted { $0.key < $1.key }.map { Statement.Resource(name: $0.key, algorithm: "sha256", digest: $0.value) }
        let s = Statement(
            _type: statementType, subject: [.init(name: name, digest: ["sha256": rootDigest(resources)])],
            predicateType: predicateType,
            predicate: .init(
                serialization: .init(method: "files", hash_type: "sha256", allow_symlinks: false, ignore_paths: ignorePaths),
                resources: resources))
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        // Encoding plain strings and arrays cannot fail.
        return (try? e.encode(s)) ?? Data()
    }

    /// SHA-256 over the resources' raw digests in their listed order (nil if one is not hex).
    static func rootDigest(_ resources: [Statement.Resource]) -> String {
        var h = SHA256()
        for r in resources { h.update(hexBytes(r.digest) ?? []) }
        return hexString(h.finalize())
    }

    /// DSSE pre-authentication encoding (DSSE v1.0 protocol).
    static func pae(_ payload: Data) -> Data {
        Data("DSSEv1 \(payloadType.utf8.count) \(payloadType) \(payload.count) ".utf8) + payload
    }

    /// Sign `files` (every file of the package but `model.sig`): the bundle JSON to store as
    /// `model.sig`. ECDSA signatures are randomised, so signing twice gives different bytes.
    public static func sign(files: [String: Data], name: String, key: SigningKey) throws -> Data {
        precondition(files[fileName] == nil, "model.sig cannot sign itself")
        let payload = statement(name: name, files: files)
        let sig: Data
        do { sig = try key.key.signature(for: pae(payload)).derRepresentation } catch {
            throw XRError("signing failed: \(error)", file: key.file)
        }
        let bundle: [String: Any] = [
            "mediaType": mediaType,
            "verificationMaterial": ["publicKey": ["hint": key.publicKey.keyID], "tlogEntries": [Any]()],
            "dsseEnvelope": [
                "payload": payload.base64EncodedString(), "payloadType": payloadType,
                "signatures": [["sig": sig.base64EncodedString(), "keyid": ""]]
            ]
        ]
        return try JSONSerialization.data(withJSONObject: bundle, options: [.sortedKeys, .withoutEscapingSlashes]) + Data("\n".utf8)
    }

    /// The key identifier a bundle names, without checking anything (for `inspect`).
    public static func keyHint(_ bundle: Data) -> String? {
        let obj = try? JSONSerialization.jsonObject(with: bundle) as? [String: Any]
        return ((obj?["verificationMaterial"] as? [String: Any])?["publicKey"] as? [String: Any])?["hint"] as? String
    }

    /// Check the bundle `bundle` against `files` (every file present except `model.sig`) and the
    /// `trusted` keys; see `verify(_:digests:trusted:label:)`.
    public static func verify(_ bundle: Data, files: [String: Data], trusted: [TrustedKey], label: String) throws -> Signer {
        try verify(bundle, digests: files.mapValues { SHA256.hex($0) }, trusted: trusted, label: label)
    }

    /// Check the bundle `bundle` against the files present (every file except `model.sig`, given
    /// by SHA-256 digest, lowercase hex) and the `trusted` keys: the bundle names a trusted key,
    /// its signature verifies under that key, the signed statement is consistent, and it lists
    /// exactly the files present with their SHA-256. Throws naming what failed; `label` is the
    /// package or folder for messages.
    public static func verify(_ bundle: Data, digests files: [String: String], trusted: [TrustedKey], label: String) throws -> Signer {
        func malformed(_ why: String) -> XRError {
            XRError(
                "malformed signature bundle: \(why)", file: label, field: fileName,
                hint: "the signature file is damaged or not an OpenSSF model signing bundle; sign the package again")
        }
        guard let top = try? JSONSerialization.jsonObject(with: bundle), let b = top as? [String: Any] else { throw malformed("not a JSON object") }
        guard let media = b["mediaType"] as? String else { throw malformed("missing mediaType") }
        guard media == mediaType else { throw malformed("media type '\(media)', expected '\(mediaType)'") }
        guard let material = b["verificationMaterial"] as? [String: Any] else { throw malformed("missing verificationMaterial") }
        if material["certificate"] != nil || material["x509CertificateChain"] != nil {
            throw XRError(
                "signed with a certificate (Sigstore keyless or PKI), not a key", file: label, field: fileName,
                hint: "xrlab verifies key-based signatures (`model_signing sign key`); use `model_signing verify` for certificate signatures")
        }
        let hint = (material["publicKey"] as? [String: Any])?["hint"] as? String
        guard let env = b["dsseEnvelope"] as? [String: Any] else { throw malformed("missing dsseEnvelope") }
        guard env["payloadType"] as? String == payloadType else { throw malformed("DSSE payload type is not '\(payloadType)'") }
        guard let p64 = env["payload"] as? String, let payload = Data(base64Encoded: p64) else { throw malformed("DSSE payload missing or not base64") }
        guard let sigs = env["signatures"] as? [[String: Any]], sigs.count == 1 else { throw malformed("expected exactly one DSSE signature") }
        guard let s64 = sigs[0]["sig"] as? String, let sig = Data(base64Encoded: s64), !sig.isEmpty else {
            throw malformed("DSSE signature missing or not base64")
        }

        // The key: the one the bundle names, else (older bundles name none) any trusted key.
        let trustList = trusted.map { "\($0.name) \($0.shortID)…" }.joined(separator: ", ")
        var candidates = trusted
        if let hint {
            candidates = trusted.filter { $0.keyID == hint.lowercased() }
            guard !candidates.isEmpty else {
                throw XRError(
                    "unknown key: signed by key \(hint.prefix(16))…, which is not among the \(trusted.count) trusted key(s) (\(trustList))",
                    file: label, field: fileName,
                    hint: "if you trust the signer, add its public key to --trust or XRLAB_TRUSTED_KEYS")
            }
        }
        let message = pae(payload)
        guard let key = candidates.first(where: { $0.isValid(derSignature: sig, for: message) }) else {
            throw XRError(
                "bad signature: the signature does not verify under \(hint == nil ? "any trusted key (\(trustList))" : "trusted key \(candidates[0].name) (\(candidates[0].shortID)…)")",
                file: label, field: fileName, hint: "the signed statement was altered, or the signature was made with another key")
        }

        // The signed statement.
        let st: Statement
        do { st = try JSONDecoder().decode(Statement.self, from: payload) } catch {
            throw malformed("signed statement does not match in-toto Statement v1: \(describe(error))")
        }
        guard st._type == statementType else { throw malformed("statement type '\(st._type)', expected '\(statementType)'") }
        guard st.predicateType == predicateType else {
            throw XRError(
                "unsupported predicate type '\(st.predicateType)' (xrlab reads '\(predicateType)', model signing 1.0 and later)",
                file: label, field: fileName, hint: "sign the package again with a current signer")
        }
        let ser = st.predicate.serialization
        guard ser.method == "files", ser.hash_type == "sha256" else {
            throw XRError(
                "unsupported serialization '\(ser.method)' with '\(ser.hash_type)' (xrlab reads 'files' with 'sha256', model signing's default)",
                file: label, field: fileName, hint: "sign with `model_signing sign key` defaults")
        }
        guard st.subject.count == 1, let root = st.subject[0].digest["sha256"] else { throw malformed("expected one subject with a sha256 digest") }
        var listed: [String: String] = [:]
        for r in st.predicate.resources {
            guard r.algorithm == "sha256", let bytes = hexBytes(r.digest), bytes.count == 32 else {
                throw malformed("resource '\(r.name)' has no SHA-256 digest")
            }
            guard listed.updateValue(r.digest.lowercased(), forKey: r.name) == nil else { throw malformed("resource '\(r.name)' listed twice") }
        }
        guard rootDigest(st.predicate.resources) == root.lowercased() else {
            throw malformed("statement is inconsistent: its subject digest is not the digest of its resources")
        }

        // The files: exactly those listed, each with the listed digest. Missing and uncovered
        // files first, then changed ones; a changed SHA256SUMS last (it follows any other change).
        var problems: [(file: String, what: String)] = []
        var changed: [(file: String, what: String)] = []
        for name in listed.keys.sorted() where files[name] == nil {
            problems.append((name, "covered by the signature but missing"))
        }
        for name in files.keys.sorted() where listed[name] == nil {
            problems.append((name, "not covered by the signature"))
        }
        for (name, got) in files.sorted(by: { ($0.key == "SHA256SUMS" ? 1 : 0, $0.key) < ($1.key == "SHA256SUMS" ? 1 : 0, $1.key) }) {
            guard let want = listed[name] else { continue }
            if got != want { changed.append((name, "changed since signing (hashes to \(got.prefix(16))…, the signature says \(want.prefix(16))…)")) }
        }
        problems += changed
        if let first = problems.first {
            let list = problems.map { "'\($0.file)' \($0.what)" }.joined(separator: "; ")
            throw XRError(
                "the files do not match the signature (signed by \(key.name), for '\(st.subject[0].name)'): \(list)",
                file: label, field: first.file, hint: "the package was modified after signing, or the signature belongs to another package")
        }
        return Signer(keyName: key.name, keyID: key.keyID, subject: st.subject[0].name, files: files.count)
    }
}

/// Bytes of an even-length hex string (nil if it is not hex).
func hexBytes(_ s: String) -> [UInt8]? {
    let u = Array(s.utf8)
    guard u.count % 2 == 0 else { return nil }
    func v(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 97...102: return c - 87
        case 65...70: return c - 55
        default: return nil
        }
    }
    var out: [UInt8] = []
    out.reserveCapacity(u.count / 2)
    var i = 0
    while i < u.count {
        guard let hi = v(u[i]), let lo = v(u[i + 1]) else { return nil }
        out.append(hi << 4 | lo)
        i += 2
    }
    return out
}
