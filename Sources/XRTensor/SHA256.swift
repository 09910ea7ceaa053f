import Foundation
import Crypto

/// SHA-256 (FIPS 180-4), streaming: swift-crypto's (BoringSSL's assembly, with the CPU's SHA
/// extensions when present). Used for weight fingerprints, image content hashes, cache keys,
/// archive checksums, signatures' file digests, and (through HMAC) keyed de-identification hashes.
public struct SHA256: Sendable {
    private var state = Crypto.SHA256()

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) { state.update(bufferPointer: bytes) }
    public mutating func update(_ data: Data) { state.update(data: data) }
    public mutating func update(_ bytes: [UInt8]) { state.update(data: bytes) }

    /// The 32-byte digest.
    public mutating func finalize() -> [UInt8] { Array(state.finalize()) }

    public static func hash(_ data: Data) -> [UInt8] { Array(Crypto.SHA256.hash(data: data)) }
    public static func hash(_ bytes: [UInt8]) -> [UInt8] { Array(Crypto.SHA256.hash(data: bytes)) }
    public static func hex(_ data: Data) -> String { hexString(hash(data)) }

    /// Hash a file in 1 MiB chunks.
    public static func hexOfFile(_ url: URL) throws -> String {
        guard let fh = try? FileHandle(forReadingFrom: url) else {
            throw XRError("cannot open file for hashing", file: url.path)
        }
        defer { try? fh.close() }
        var s = SHA256()
        while true {
            let chunk: Data
            do { chunk = try fh.read(upToCount: 1 << 20) ?? Data() } catch {
                throw XRError("read error while hashing: \(error.localizedDescription)", file: url.path)
            }
            if chunk.isEmpty { break }
            s.update(chunk)
        }
        return hexString(s.finalize())
    }
}

/// Lower-case hex of bytes.
public func hexString(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8](); out.reserveCapacity(bytes.count * 2)
    for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
    return String(decoding: out, as: UTF8.self)
}

/// HMAC-SHA256 (RFC 2104): keyed hashes for de-identification and integrity.
public enum HMACSHA256 {
    public static func mac(key: [UInt8], message: [UInt8]) -> [UInt8] {
        Array(HMAC<Crypto.SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
    }
}
