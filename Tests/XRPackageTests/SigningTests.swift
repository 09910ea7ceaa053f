import XCTest
import Foundation
import XRTensor
@testable import XRPackage
import TestSupport

/// Signed packages: both directions with OpenSSF model signing from the committed fixtures
/// (`fixtures/make_signing_fixtures.py`), signing and re-signing, and the hostile cases.
final class SigningTests: XCTestCase {
    let testKey = Fixtures.url("signing/TEST-ONLY-signing-key.pem")
    let testPub = Fixtures.url("signing/TEST-ONLY-signing-key.pub")
    let unsigned = Fixtures.url("packages/format1.xrpkg")

    // MARK: helpers

    func entries(_ url: URL) throws -> [String: Data] {
        Dictionary(uniqueKeysWithValues: try TarArchive.read(url).map { ($0.name, $0.data) })
    }

    func write(_ e: [String: Data], _ name: String, in dir: URL) throws -> URL {
        let url = dir.appendingPathComponent(name)
        try TarArchive.write(e.map { ArchiveEntry(name: $0.key, data: $0.value) }, to: url, mtime: 1_767_225_600)
        return url
    }

    /// SHA256SUMS recomputed over every entry but itself and the signature: what an attacker who
    /// changes a file does to get past the checksums.
    func recomputeSums(_ e: inout [String: Data]) {
        let files = e.filter { $0.key != "SHA256SUMS" && $0.key != ModelSignature.fileName }
        e["SHA256SUMS"] = Data(Packer.checksums(files.map { ArchiveEntry(name: $0.key, data: $0.value) }).utf8)
    }

    /// A signed copy of the format 1 package in `dir`.
    func signedCopy(_ dir: URL, key: SigningKey? = nil) throws -> URL {
        let url = dir.appendingPathComponent("format1-1.0.0.xrpkg")
        try FileManager.default.copyItem(at: unsigned, to: url)
        _ = try PackageSigner.sign(url, key: key ?? SigningKey.load(testKey))
        return url
    }

    func assertRefused(
        _ url: URL, trust: [TrustedKey], _ expected: [String], field: String? = nil,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertThrowsError(try PackageReader.open(url, trust: trust), file: file, line: line) { error in
            guard let e = error as? XRError else { return XCTFail("not an XRError: \(error)", file: file, line: line) }
            for s in expected { XCTAssertTrue(e.message.contains(s), "'\(s)' not in: \(e.message)", file: file, line: line) }
            if let field { XCTAssertEqual(e.field, field, file: file, line: line) }
            XCTAssertEqual(e.file, url.path, file: file, line: line)
        }
    }

    // MARK: interop with model signing (committed fixtures)

    func testKeyIdentifierIsModelSigningsPublicKeyHint() throws {
        let pub = try TrustedKey.load(testPub)
        let sig = try Data(contentsOf: Fixtures.url("signing/format1.model_signing.sig"))
        XCTAssertEqual(ModelSignature.keyHint(sig), pub.keyID)
        // model signing hashes the PEM as Python's cryptography writes it: byte-identical here.
        XCTAssertEqual(pub.keyID, try SHA256.hexOfFile(testPub))
        XCTAssertEqual(try SigningKey.load(testKey).publicKey.keyID, pub.keyID)
    }

    func testModelSigningSignatureVerifiesOnUnpackedPackageAndInArchive() throws {
        let dir = Fixtures.tempDir("xrlab-sign-interop")
        let folder = dir.appendingPathComponent("format1")
        _ = try PackageReader.unpack(unsigned, to: folder)
        try FileManager.default.copyItem(at: Fixtures.url("signing/format1.model_signing.sig"), to: folder.appendingPathComponent("model.sig"))
        let trust = [try TrustedKey.load(testPub)]
        let p = try PackageReader.open(folder, trust: trust)
        guard case .verified(let s) = p.signature else { return XCTFail("not verified: \(p.signature)") }
        XCTAssertEqual(s.keyName, "TEST-ONLY-signing-key.pub")
        XCTAssertEqual(s.files, 4)
        XCTAssertEqual(s.subject, "format1", "model signing names the model after its folder")
        // The same signature carried inside an archive.
        var e = try entries(unsigned)
        e["model.sig"] = try Data(contentsOf: folder.appendingPathComponent("model.sig"))
        let pkg = try write(e, "ms-signed.xrpkg", in: dir)
        XCTAssertEqual(try PackageReader.open(pkg, trust: trust).signature, p.signature)
        // And refused when a file of the folder changes.
        try Data("changed\n".utf8).write(to: folder.appendingPathComponent("MODEL_CARD.md"))
        assertRefused(folder, trust: trust, ["'MODEL_CARD.md' changed since signing"], field: "MODEL_CARD.md")
    }

    func testXrlabSignedFixtureIsWhatModelSigningVerified() throws {
        let pkg = Fixtures.url("signing/format1.xrlab-signed.xrpkg")
        let record = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("signing/interop.json"))) as? [String: Any] ?? [:]
        let results = record["results"] as? [String: [String: Any]] ?? [:]
        XCTAssertEqual(results["xrlab_signed_package_unpacked"]?["exit"] as? Int, 0)
        XCTAssertEqual(results["xrlab_signed_package_unpacked"]?["output"] as? String, "Verification succeeded")
        for k in ["xrlab_signed_one_byte_changed", "xrlab_signed_extra_file", "xrlab_signed_missing_file"] {
            XCTAssertEqual(results[k]?["exit"] as? Int, 1, k)
        }
        XCTAssertEqual(
            (record["sha256"] as? [String: String])?["format1.xrlab-signed.xrpkg"], try SHA256.hexOfFile(pkg),
            "the committed package is the one model signing verified")
        let p = try PackageReader.open(pkg, trust: [try TrustedKey.load(testPub)])
        guard case .verified = p.signature else { return XCTFail("not verified") }
        // The statement xrlab writes today is the one model signing verified (signatures are
        // randomised; the signed statement is not).
        var files = p.entries
        let bundle = try XCTUnwrap(files.removeValue(forKey: "model.sig"))
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: bundle) as? [String: Any])
        let payload = try XCTUnwrap(((obj["dsseEnvelope"] as? [String: Any])?["payload"] as? String).flatMap { Data(base64Encoded: $0) })
        XCTAssertEqual(payload, ModelSignature.statement(name: "format1-1.0.0", files: files))
        XCTAssertEqual(files, try entries(unsigned), "signing adds model.sig and changes nothing else")
    }

    // MARK: signing

    func testSignRewritesThePackageAndUpdatesTheRegistryIndex() throws {
        let dir = Fixtures.tempDir("xrlab-sign")
        let url = dir.appendingPathComponent("format1-1.0.0.xrpkg")
        try FileManager.default.copyItem(at: unsigned, to: url)
        var index = RegistryIndex()
        index.packages["format1"] = [.init(version: "1.0.0", file: url.lastPathComponent, sha256: try SHA256.hexOfFile(url), created: "2026-01-01T00:00:00Z")]
        try index.save(dir)
        let key = try SigningKey.load(testKey)
        let (signer, replaced) = try PackageSigner.sign(url, key: key)
        XCTAssertFalse(replaced)
        XCTAssertEqual(signer.keyID, key.publicKey.keyID)
        XCTAssertEqual(try PackageSigner.compression(of: url), .gzip)
        let after = try RegistryIndex.load(dir).packages["format1"]?.first
        XCTAssertEqual(after?.signer, key.publicKey.keyID)
        XCTAssertEqual(after?.sha256, try SHA256.hexOfFile(url))
        XCTAssertEqual(try PackageReader.open(url).signature, .unchecked(keyID: key.publicKey.keyID))
        // Re-signing with another key replaces the signature.
        let other = SigningKey.generate()
        XCTAssertTrue(try PackageSigner.sign(url, key: other).replaced)
        guard case .verified(let s) = try PackageReader.open(url, trust: [try TrustedKey.load(testPub), other.publicKey]).signature else { return XCTFail() }
        XCTAssertEqual(s.keyID, other.publicKey.keyID)
        XCTAssertEqual(try RegistryIndex.load(dir).packages["format1"]?.first?.signer, other.publicKey.keyID)
        // Folders are not signed in place.
        XCTAssertThrowsError(try PackageSigner.sign(dir, key: key))
    }

    func testKeygenWritesAPrivateKeyOnlyItsOwnerReads() throws {
        let dir = Fixtures.tempDir("xrlab-keygen")
        let url = dir.appendingPathComponent("keys/site.key")
        let key = SigningKey.generate()
        let pub = try key.write(to: url)
        XCTAssertEqual(pub.lastPathComponent, "site.pub")
        XCTAssertEqual((try FileManager.default.attributesOfItem(atPath: url.path)[.posixPermissions] as? Int).map { $0 & 0o777 }, 0o600)
        XCTAssertNil(SigningKey.looseMode(url))
        XCTAssertEqual(try SigningKey.load(url).publicKey.keyID, key.publicKey.keyID)
        XCTAssertEqual(try TrustedKey.load(pub).keyID, key.publicKey.keyID)
        XCTAssertThrowsError(try SigningKey.generate().write(to: url)) { XCTAssertTrue("\($0)".contains("never overwritten")) }
        XCTAssertThrowsError(try SigningKey.load(pub)) { XCTAssertTrue("\($0)".contains("this is a public key")) }
        XCTAssertThrowsError(try TrustedKey.load(url)) { XCTAssertTrue("\($0)".contains("this is a private key")) }
    }

    func testTrustedKeysFromFilesAndFolders() throws {
        let dir = Fixtures.tempDir("xrlab-trust")
        for i in 0..<2 { try SigningKey.generate().write(to: dir.appendingPathComponent("keys/k\(i).key")) }
        // Private keys (*.key) and other files in the folder are not trust material.
        try Data("notes\n".utf8).write(to: dir.appendingPathComponent("keys/README"))
        let keys = try TrustedKey.load(paths: [dir.appendingPathComponent("keys").path, testPub.path], field: "--trust")
        XCTAssertEqual(keys.map(\.name), ["k0.pub", "k1.pub", "TEST-ONLY-signing-key.pub"])
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("empty"), withIntermediateDirectories: true)
        XCTAssertThrowsError(try TrustedKey.load(paths: [dir.appendingPathComponent("empty").path], field: "--trust")) {
            XCTAssertTrue("\($0)".contains("no public keys"))
        }
        XCTAssertThrowsError(try TrustedKey.load(paths: [dir.appendingPathComponent("absent.pub").path], field: "--trust")) {
            XCTAssertTrue("\($0)".contains("not found"))
        }
        try Data("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".utf8).write(to: dir.appendingPathComponent("bad.pub"))
        XCTAssertThrowsError(try TrustedKey.load(dir.appendingPathComponent("bad.pub"))) { XCTAssertTrue("\($0)".contains("not an ECDSA")) }
    }

    func testPackageFoldersHoldPlainFilesOnly() throws {
        let dir = Fixtures.tempDir("xrlab-sign-folder")
        let folder = dir.appendingPathComponent("pkg")
        _ = try PackageReader.unpack(unsigned, to: folder)
        XCTAssertEqual(try PackageReader.open(folder).manifest.name, "format1")
        try FileManager.default.createSymbolicLink(
            at: folder.appendingPathComponent("weights/link.safetensors"),
            withDestinationURL: folder.appendingPathComponent("weights/head.safetensors"))
        XCTAssertThrowsError(try PackageReader.open(folder)) {
            XCTAssertEqual(($0 as? XRError)?.field, "weights/link.safetensors")
            XCTAssertTrue("\($0)".contains("symbolic links are not allowed"))
        }
    }

    // MARK: hostile packages

    func testTamperAndRecomputeChecksumsIsRefusedUnderTrust() throws {
        let dir = Fixtures.tempDir("xrlab-sign-tamper")
        var e = try entries(try signedCopy(dir))
        var head = e["weights/head.safetensors"]!
        head[head.count - 4] ^= 1
        e["weights/head.safetensors"] = head
        recomputeSums(&e)
        let url = try write(e, "tampered.xrpkg", in: dir)
        // The checksums alone accept it: that is the attack.
        XCTAssertNoThrow(try PackageReader.open(url))
        assertRefused(
            url, trust: [try TrustedKey.load(testPub)],
            ["'weights/head.safetensors' changed since signing", "'SHA256SUMS' changed since signing", "TEST-ONLY-signing-key.pub"],
            field: "weights/head.safetensors")
    }

    func testHostilePackagesRefusedNamingWhatFailed() throws {
        let dir = Fixtures.tempDir("xrlab-sign-hostile")
        let trust = [try TrustedKey.load(testPub)]
        let signed = try entries(try signedCopy(dir))

        // Unsigned.
        assertRefused(unsigned, trust: trust, ["unsigned"], field: "model.sig")

        // Another package's signature: a second valid package (its card differs) with the first's model.sig.
        var other = try entries(unsigned)
        other["MODEL_CARD.md"]! += Data("\nAnother site's copy.\n".utf8)
        recomputeSums(&other)
        XCTAssertNoThrow(try PackageReader.open(try write(other, "other.xrpkg", in: dir)))
        other["model.sig"] = signed["model.sig"]
        assertRefused(
            try write(other, "borrowed.xrpkg", in: dir), trust: trust,
            ["'MODEL_CARD.md' changed since signing", "for 'format1-1.0.0'"], field: "MODEL_CARD.md")

        // One changed file (checksums not recomputed: the signature check comes first and names it).
        var changed = signed
        changed["manifest.json"]! += Data(" ".utf8)
        assertRefused(try write(changed, "changed.xrpkg", in: dir), trust: trust, ["'manifest.json' changed since signing"], field: "manifest.json")

        // An extra file, listed in SHA256SUMS.
        var extra = signed
        extra["weights/extra.safetensors"] = Data("x".utf8)
        recomputeSums(&extra)
        assertRefused(
            try write(extra, "extra.xrpkg", in: dir), trust: trust,
            ["'weights/extra.safetensors' not covered by the signature"], field: "weights/extra.safetensors")

        // A missing file.
        var missing = signed
        missing["MODEL_CARD.md"] = nil
        recomputeSums(&missing)
        assertRefused(
            try write(missing, "missing.xrpkg", in: dir), trust: trust,
            ["'MODEL_CARD.md' covered by the signature but missing"], field: "MODEL_CARD.md")

        // Changed, then re-signed under a key nobody trusts.
        var resigned = changed
        resigned["model.sig"] = nil
        recomputeSums(&resigned)
        let attacker = SigningKey.generate()
        resigned["model.sig"] = try ModelSignature.sign(files: resigned, name: "format1-1.0.0", key: attacker)
        assertRefused(
            try write(resigned, "resigned.xrpkg", in: dir), trust: trust,
            ["unknown key", String(attacker.publicKey.keyID.prefix(16)), "TEST-ONLY-signing-key.pub"], field: "model.sig")
        // ... claiming the trusted key's identifier, or naming none.
        for (i, hint) in [trust[0].keyID, nil].enumerated() {
            var obj = try XCTUnwrap(JSONSerialization.jsonObject(with: resigned["model.sig"]!) as? [String: Any])
            obj["verificationMaterial"] = ["publicKey": hint.map { ["hint": $0] } ?? [:], "tlogEntries": []]
            var forged = resigned
            forged["model.sig"] = try JSONSerialization.data(withJSONObject: obj)
            assertRefused(try write(forged, "forged\(i).xrpkg", in: dir), trust: trust, ["bad signature"], field: "model.sig")
        }

        // The signed statement edited to match a changed file, the signature kept.
        var obj = try XCTUnwrap(JSONSerialization.jsonObject(with: signed["model.sig"]!) as? [String: Any])
        var env = try XCTUnwrap(obj["dsseEnvelope"] as? [String: Any])
        env["payload"] = ModelSignature.statement(name: "format1-1.0.0", files: changed.filter { $0.key != "model.sig" }).base64EncodedString()
        obj["dsseEnvelope"] = env
        var edited = changed
        edited["model.sig"] = try JSONSerialization.data(withJSONObject: obj)
        assertRefused(try write(edited, "edited.xrpkg", in: dir), trust: trust, ["bad signature", "TEST-ONLY-signing-key.pub"], field: "model.sig")

        // Truncated and malformed bundles.
        let sig = signed["model.sig"]!
        let bad: [(Data, String)] = [
            (sig.prefix(sig.count / 2), "not a JSON object"),
            (Data(), "not a JSON object"),
            (Data("[]".utf8), "not a JSON object"),
            (Data(String(decoding: sig, as: UTF8.self).replacingOccurrences(of: "bundle.v0.3", with: "bundle.v0.1").utf8), "media type"),
            (
                Data(String(decoding: sig, as: UTF8.self).replacingOccurrences(of: "\"sig\":\"", with: "\"sig\":\"!").utf8),
                "DSSE signature missing or not base64"
            ),
            (
                Data(String(decoding: sig, as: UTF8.self).replacingOccurrences(of: "\"payload\":\"", with: "\"payload\":\"%").utf8),
                "DSSE payload missing or not base64"
            )
        ]
        for (i, (data, message)) in bad.enumerated() {
            var e = signed
            e["model.sig"] = data
            assertRefused(try write(e, "malformed\(i).xrpkg", in: dir), trust: trust, ["malformed signature bundle", message], field: "model.sig")
        }
        // None of these stop a read without trusted keys when the checksums agree.
        XCTAssertNoThrow(try PackageReader.open(dir.appendingPathComponent("resigned.xrpkg")))
    }
}
