import Foundation
import XCTest
import XRTensor
import TestSupport

/// keygen → pack --sign / sign → verify, inspect, unpack and predict under --trust and
/// XRLAB_TRUSTED_KEYS, as a user runs them.
extension CLITests {
    func testKeygenPackSignVerifyWithTrustedKeys() throws {
        let dir = Fixtures.tempDir("cli-sign")
        let keygen = try xrlab(["keygen", "--out", "keys/site.key"], cwd: dir)
        XCTAssertEqual(keygen.status, 0, keygen.err)
        XCTAssertTrue(keygen.out.contains("public key:  keys/site.pub"), keygen.out)
        XCTAssertEqual(
            (try FileManager.default.attributesOfItem(atPath: dir.appendingPathComponent("keys/site.key").path)[.posixPermissions] as? Int).map { $0 & 0o777 },
            0o600)
        XCTAssertEqual(try xrlab(["keygen", "--out", "keys/site.key"], cwd: dir).status, 1, "keys are never overwritten")
        _ = try xrlab(["keygen", "--out", "other/other.key"], cwd: dir)

        // pack --sign: the registry index records the signer.
        let run = try xrlab(
            [
                "run", Fixtures.repoRoot.appendingPathComponent("recipes/synthetic-features.yaml").path,
                "--set", "output=\(dir.appendingPathComponent("run").path)", "--set", "shots=[4]", "--set", "seeds=1",
                "--set", "bootstrap=20", "--quiet"
            ], cwd: dir)
        XCTAssertEqual(run.status, 0, run.err)
        let pack = try xrlab(
            ["pack", "run", "--name", "site", "--version", "1.0.0", "--registry", "reg", "--sign", "keys/site.key", "--quiet"],
            cwd: dir, environment: ["SOURCE_DATE_EPOCH": "1767225600"])
        XCTAssertEqual(pack.status, 0, pack.err)
        let keyID = try XCTUnwrap(pack.out.split(separator: "\n").first { $0.hasPrefix("signed:  key id ") }).dropFirst("signed:  key id ".count)
        let index = try String(contentsOf: dir.appendingPathComponent("reg/index.json"), encoding: .utf8)
        XCTAssertTrue(index.contains("\"signer\" : \"\(keyID)\""), index)
        let pkg = "reg/site-1.0.0.xrpkg"

        let ok = try xrlab(["verify", pkg, "--trust", "other", "keys/site.pub"], cwd: dir)
        XCTAssertEqual(ok.status, 0, ok.err)
        XCTAssertTrue(ok.out.contains("ok  signature: signed by trusted key site.pub (\(keyID.prefix(16))…), valid, covering all 4 files"), ok.out)
        let unknown = try xrlab(["verify", pkg, "--trust", "other/other.pub"], cwd: dir)
        XCTAssertEqual(unknown.status, 1)
        XCTAssertTrue(unknown.err.contains("model.sig: unknown key: signed by key \(keyID.prefix(16))…"), unknown.err)
        let inspect = try xrlab(["inspect", pkg], cwd: dir)
        XCTAssertTrue(inspect.out.hasPrefix("signature: signed by key \(keyID.prefix(16))…, not checked"), inspect.out)
        let env = ["XRLAB_TRUSTED_KEYS": "\(dir.path)/other:\(dir.path)/keys/site.pub"]
        XCTAssertTrue(try xrlab(["inspect", pkg], cwd: dir, environment: env).out.hasPrefix("signature: signed by trusted key site.pub"))

        // The tamper-and-recompute attack: a weight byte flipped, SHA256SUMS recomputed, repacked.
        let unpacked = dir.appendingPathComponent("unpacked")
        XCTAssertEqual(try xrlab(["unpack", pkg, "--to", unpacked.path, "--trust", "keys/site.pub"], cwd: dir).status, 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: unpacked.appendingPathComponent("model.sig").path))
        let head = unpacked.appendingPathComponent("weights/head.safetensors")
        var bytes = try Data(contentsOf: head)
        bytes[bytes.count - 4] ^= 1
        try bytes.write(to: head)
        var sums = ""
        for name in ["MODEL_CARD.md", "manifest.json", "weights/head.safetensors"] {
            sums += "\(try SHA256.hexOfFile(unpacked.appendingPathComponent(name)))  \(name)\n"
        }
        try sums.write(to: unpacked.appendingPathComponent("SHA256SUMS"), atomically: true, encoding: .utf8)
        let plain = try xrlab(["verify", unpacked.path], cwd: dir)
        XCTAssertEqual(plain.status, 0, "checksums alone accept the tampered folder: \(plain.err)")
        let refused = try xrlab(["verify", unpacked.path, "--trust", "keys/site.pub"], cwd: dir)
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.err.contains("weights/head.safetensors: the files do not match the signature"), refused.err)
        XCTAssertTrue(refused.err.contains("'weights/head.safetensors' changed since signing"), refused.err)

        // predict and unpack refuse an unsigned package under XRLAB_TRUSTED_KEYS, accept the signed one.
        let features = Fixtures.url("recipes/features.safetensors").path
        let unsigned = Fixtures.url("packages/format1.xrpkg").path
        let p1 = try xrlab(["predict", "--package", unsigned, "--features", features], cwd: dir, environment: env)
        XCTAssertEqual(p1.status, 1)
        XCTAssertTrue(p1.err.contains("format1.xrpkg: model.sig: unsigned"), p1.err)
        let u1 = try xrlab(["unpack", unsigned, "--to", "u1"], cwd: dir, environment: env)
        XCTAssertEqual(u1.status, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("u1").path))
        let p2 = try xrlab(["predict", "--package", pkg, "--trust", "keys/site.pub", "--features", features], cwd: dir)
        XCTAssertEqual(p2.status, 0, p2.err)

        // sign: an existing package, re-signed with another key.
        let copy = dir.appendingPathComponent("format1.xrpkg")
        try FileManager.default.copyItem(atPath: unsigned, toPath: copy.path)
        let sign = try xrlab(["sign", copy.path, "--key", "other/other.key"], cwd: dir)
        XCTAssertEqual(sign.status, 0, sign.err)
        XCTAssertTrue(sign.out.hasPrefix("signed \(copy.path): 4 files"), sign.out)
        XCTAssertEqual(try xrlab(["verify", copy.path], cwd: dir, environment: env).status, 0)
        XCTAssertTrue(try xrlab(["sign", copy.path, "--key", "keys/site.key"], cwd: dir).out.hasPrefix("re-signed"))
        let wrongKey = try xrlab(["sign", copy.path, "--key", "keys/site.pub"], cwd: dir)
        XCTAssertTrue(wrongKey.err.contains("this is a public key"), wrongKey.err)
    }
}
