import Foundation
import XRTensor

/// Keyed hashes that replace patient and study identifiers in everything xrlab writes:
/// HMAC-SHA256(site secret, kind + ":" + value), first 16 hex digits. The same identifier gives
/// the same key at one site, and nothing outside the site can reverse or recompute it.
public struct SiteKey: Sendable {
    let secret: [UInt8]
    public let file: URL

    /// Default location of the site secret: `$XRLAB_SITE_KEY`, else `~/.config/xrlab/site.key`.
    public static func defaultFile() -> URL {
        if let p = ProcessInfo.processInfo.environment["XRLAB_SITE_KEY"], !p.isEmpty { return URL(fileURLWithPath: p) }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".config/xrlab/site.key")
    }

    /// Load the secret, creating it (32 random bytes, hex, mode 0600) on first use. A key file
    /// inside `outputDirectory` is refused: the secret must never travel with the outputs.
    public static func load(_ file: URL = defaultFile(), outputDirectory: URL? = nil) throws -> SiteKey {
        let path = file.standardizedFileURL.path
        if let out = outputDirectory?.standardizedFileURL.path, path.hasPrefix(out.hasSuffix("/") ? out : out + "/") {
            throw XRError(
                "the site key must live outside the output directory", file: path, field: "--site-key",
                hint: "keep it in ~/.config/xrlab/site.key or another private place")
        }
        if !FileManager.default.fileExists(atPath: path) {
            var rng = SystemRandomNumberGenerator()
            let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try AtomicFile.write(hexString(bytes) + "\n", to: file)
            chmod(path, 0o600)
        }
        guard let text = try? String(contentsOf: file, encoding: .utf8) else {
            throw XRError("cannot read the site key", file: path, field: "--site-key")
        }
        let hex = text.trimmingCharacters(in: .whitespacesAndNewlines)
        var secret: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex, let j = hex.index(i, offsetBy: 2, limitedBy: hex.endIndex), let b = UInt8(hex[i..<j], radix: 16) {
            secret.append(b); i = j
        }
        guard secret.count >= 16 else { throw XRError("the site key must hold at least 16 hex bytes", file: path, field: "--site-key") }
        return SiteKey(secret: secret, file: file)
    }

    public init(secret: [UInt8], file: URL = URL(fileURLWithPath: "/dev/null")) {
        self.secret = secret
        self.file = file
    }

    /// The keyed hash of an identifier ("" stays "").
    public func key(_ kind: String, _ value: String) -> String {
        let v = value.trimmingCharacters(in: .whitespaces)
        if v.isEmpty { return "" }
        return String(hexString(HMACSHA256.mac(key: secret, message: Array("\(kind):\(v)".utf8))).prefix(16))
    }
}
