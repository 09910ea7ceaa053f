import Foundation
import XRTensor
import XRModels

/// Content-addressed store of per-image features.
///
/// An entry's key is SHA-256 over (format version, encoder weights hash, preprocessing, output
/// options, the linear layers' precision, image content hash), so a rerun over the same images with the same encoder does no
/// encoder work, and any change to weights, preprocessing or the image misses the cache.
/// Entries are small safetensors files written atomically: `<root>/<k[0..<2]>/<k>.safetensors`.
public struct FeatureCache: Sendable {
    /// Bumped whenever the entry layout changes; old entries then simply miss.
    public static let formatVersion = 1
    public let root: URL

    public init(root: URL) { self.root = root }

    /// The default location: `$XRLAB_CACHE`, else `$XDG_CACHE_HOME/xrlab/features`, else
    /// `~/.cache/xrlab/features`.
    public static func defaultRoot() -> URL {
        let env = ProcessInfo.processInfo.environment
        if let p = env["XRLAB_CACHE"], !p.isEmpty { return URL(fileURLWithPath: p) }
        if let x = env["XDG_CACHE_HOME"], !x.isEmpty {
            return URL(fileURLWithPath: x).appendingPathComponent("xrlab/features")
        }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/xrlab/features")
    }

    /// The key for one image under one encoder configuration run at `precision`: fp32 and int8
    /// features of the same image never share an entry, nor int8 features with 8-bit and 7-bit
    /// activations (`Precision.featureIdentity`, which follows the CPU's kernel); fp32 keys are
    /// those written before precision existed, so existing fp32 entries still hit.
    public static func key(configFingerprint: String, imageHash: String, precision: Precision = .fp32) -> String {
        let p = precision == .fp32 ? "" : "|precision=\(precision.featureIdentity)"
        return SHA256.hex(Data("xrlab-features/v\(formatVersion)|\(configFingerprint)\(p)|\(imageHash)".utf8))
    }

    func url(for key: String) -> URL {
        root.appendingPathComponent(String(key.prefix(2))).appendingPathComponent(key + ".safetensors")
    }

    /// The cached tensors, or nil when absent or unreadable (a damaged entry is a miss, and is
    /// overwritten by the next store).
    public func load(_ key: String) -> [String: Tensor]? {
        let u = url(for: key)
        guard FileManager.default.fileExists(atPath: u.path),
            let f = try? SafeTensorsFile(contentsOf: u)
        else { return nil }
        var out: [String: Tensor] = [:]
        for name in f.names {
            guard let t = try? f.tensor(name) else { return nil }
            out[name] = t
        }
        return out
    }

    public func store(_ key: String, _ tensors: [String: Tensor]) throws {
        let pairs = tensors.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        try SafeTensors.write(pairs, to: url(for: key))
    }
}
