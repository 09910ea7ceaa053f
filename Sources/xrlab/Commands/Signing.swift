import ArgumentParser
import Foundation
import XRTensor
import XRPackage

/// `xrlab keygen`: a signing key pair.
struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Create a signing key pair: ECDSA P-256 private key (mode 0600) and its public key beside it (.pub).",
        discussion: """
            The private key signs packages (`xrlab pack --sign KEY`, `xrlab sign PKG --key KEY`, or
            `model_signing sign key --private_key KEY`); give the .pub file to whoever checks them
            (`xrlab verify --trust`, `model_signing verify key --public_key`). Existing files are never
            overwritten.
            """)
    @Option(name: .long, help: "Private key file to create (the public key goes beside it with the extension .pub).")
    var out: String

    func run() throws {
        try runReportingErrors {
            let key = SigningKey.generate()
            try key.write(to: URL(fileURLWithPath: out))
            print("private key: \(out) (mode 0600; keep it private)")
            print("public key:  \((out as NSString).deletingPathExtension).pub")
            print("key id:      \(key.publicKey.keyID)")
        }
    }
}

/// `xrlab sign`: add or replace a package's signature.
struct SignCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sign",
        abstract: "Sign a package (model.sig, OpenSSF model signing format), rewriting it atomically.",
        discussion: """
            The signature covers every file of the package (manifest, weights, model card, SHA256SUMS)
            by its SHA-256. An earlier signature is replaced. When the package is listed in its
            folder's index.json, the checksum and signer recorded there are updated.
            """)
    @Argument(help: "Package (.xrpkg).")
    var package: String
    @Option(name: .long, help: "Private key (PEM, ECDSA P-256), e.g. from `xrlab keygen`.")
    var key: String

    func run() throws {
        try runReportingErrors {
            let k = try loadSigningKey(key)
            let (signer, replaced) = try PackageSigner.sign(URL(fileURLWithPath: package), key: k)
            print("\(replaced ? "re-signed" : "signed") \(package): \(signer.files) files, key id \(signer.keyID)")
        }
    }
}

/// Read a private key, warning when others can read it.
func loadSigningKey(_ path: String) throws -> SigningKey {
    let url = URL(fileURLWithPath: path)
    let key = try SigningKey.load(url)
    if let mode = SigningKey.looseMode(url) {
        FileHandle.standardError.write(Data("warning: \(path) is readable by others (mode \(String(mode & 0o777, radix: 8))); `chmod 600 \(path)`\n".utf8))
    }
    return key
}

/// Help of the `--trust` option (verify, inspect, unpack).
let trustHelp = """
    Trusted public keys (files, or folders of *.pub / *.pem); default $XRLAB_TRUSTED_KEYS (paths separated by ':'). \
    With either, the package must be signed by one of them.
    """
