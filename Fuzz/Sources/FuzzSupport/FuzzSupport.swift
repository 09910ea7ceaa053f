// What every fuzz target shares: libFuzzer's driver entry and a per-process scratch directory.
import Foundation

/// The signature of `LLVMFuzzerTestOneInput`: one input, return 0.
public typealias FuzzCallback = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: FuzzCallback
) -> CInt

/// Hand the process over to libFuzzer. SwiftPM links an executable target with its entry point
/// renamed to `<module>_main`; each target defines that symbol and calls this, so libFuzzer's
/// own `main` is not needed (`-parse-as-library` leaves no top-level code to run first).
public func runLibFuzzer(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ callback: FuzzCallback) -> CInt {
    var c = argc
    var v = argv
    return LLVMFuzzerRunDriver(&c, &v, callback)
}

/// The input as `Data` (libFuzzer passes a null pointer for the empty input).
public func fuzzData(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> Data {
    guard let bytes, size > 0 else { return Data() }
    return Data(bytes: bytes, count: size)
}

/// A directory of this process's own, emptied before each input that uses it.
public enum Scratch {
    public static let root: URL = {
        let u = FileManager.default.temporaryDirectory.appendingPathComponent("xrlab-fuzz-\(getpid())", isDirectory: true)
        try? FileManager.default.removeItem(at: u)
        try? FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(at: Scratch.root) }
        return u
    }()

    /// A fresh, empty directory under `root`.
    public static func fresh() -> URL {
        let d = root.appendingPathComponent("in", isDirectory: true)
        try? FileManager.default.removeItem(at: d)
        try? FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    /// Write `data` to `name` in a fresh directory and return its URL.
    public static func file(_ name: String, _ data: Data) -> URL {
        let u = fresh().appendingPathComponent(name)
        try? data.write(to: u)
        return u
    }
}

/// Split `data` at each occurrence of `separator` (structure for targets that read several files).
public func splitParts(_ data: Data, separator: String) -> [Data] {
    let sep = Data(separator.utf8)
    var parts: [Data] = []
    var start = data.startIndex
    while let r = data.range(of: sep, in: start..<data.endIndex) {
        parts.append(data[start..<r.lowerBound])
        start = r.upperBound
    }
    parts.append(data[start..<data.endIndex])
    return parts
}
