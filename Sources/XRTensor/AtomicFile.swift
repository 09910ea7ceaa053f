import Foundation

/// Writes files so that readers never see a half-written output: data goes to a temporary
/// file in the same directory, which is then renamed over the destination (rename is atomic
/// within one filesystem).
public enum AtomicFile {
    /// Write `data` to `url` atomically, creating parent directories as needed.
    public static func write(_ data: Data, to url: URL) throws {
        try write(to: url) { tmp in try data.write(to: tmp) }
    }

    /// Write a UTF-8 string atomically.
    public static func write(_ text: String, to url: URL) throws {
        try write(Data(text.utf8), to: url)
    }

    /// Let `body` produce the file at a temporary path, then move it into place.
    /// If `body` throws, the temporary file is removed and the destination is untouched.
    public static func write(to url: URL, _ body: (URL) throws -> Void) throws {
        let fm = FileManager.default
        let dir = url.deletingLastPathComponent()
        do {
            try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        } catch {
            throw XRError("cannot create directory: \(error.localizedDescription)", file: dir.path)
        }
        let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).tmp-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0...UInt32.max))")
        do {
            try body(tmp)
        } catch {
            try? fm.removeItem(at: tmp)
            throw error
        }
        if rename(tmp.path, url.path) != 0 {
            let reason = String(cString: strerror(errno))
            try? fm.removeItem(at: tmp)
            throw XRError("cannot move finished output into place: \(reason)", file: url.path)
        }
    }
}
