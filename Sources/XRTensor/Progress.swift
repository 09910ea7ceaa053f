import Foundation

/// Progress for long jobs: items done / total, rate, and time left.
///
/// On a terminal it redraws one line on stderr; when stderr is not a terminal (CI, logs,
/// pipes) it prints a plain line at most every `logInterval` seconds and at the end, so logs
/// stay short. Thread-safe.
public final class ProgressReporter: @unchecked Sendable {
    public let label: String
    public let total: Int
    public let unit: String
    private let lock = NSLock()
    private var done = 0
    private let start: Date
    private var lastPrint: Date
    private let isTTY: Bool
    private let quiet: Bool
    private let logInterval: TimeInterval
    private var finished = false
    private var printedDone = -1

    /// - Parameters:
    ///   - quiet: print nothing at all (tests, `--quiet`).
    ///   - forceTTY: override terminal detection (tests).
    public init(
        _ label: String, total: Int, unit: String = "items", quiet: Bool = false,
        logInterval: TimeInterval = 10, forceTTY: Bool? = nil
    ) {
        self.label = label
        self.total = max(0, total)
        self.unit = unit
        self.quiet = quiet
        self.logInterval = logInterval
        self.isTTY = forceTTY ?? (isatty(STDERR_FILENO) != 0)
        self.start = Date()
        self.lastPrint = .distantPast
    }

    /// Record `n` more finished items.
    public func advance(by n: Int = 1) {
        lock.lock(); defer { lock.unlock() }
        done += n
        let now = Date()
        let interval = isTTY ? 0.1 : logInterval
        if now.timeIntervalSince(lastPrint) >= interval || done >= total {
            lastPrint = now
            printedDone = done
            emit(line(now: now), final: done >= total && !isTTY)
            if done >= total && !isTTY { finished = true }
        }
    }

    /// Print the final line (idempotent).
    public func finish() {
        lock.lock(); defer { lock.unlock() }
        if finished { return }
        finished = true
        if printedDone == done && !isTTY { return }
        emit(line(now: Date()), final: true)
    }

    /// The status text, e.g. `embed  37/120 (31%)  4.2 images/s  0:20 left`.
    public func line(now: Date = Date()) -> String {
        let elapsed = max(now.timeIntervalSince(start), 1e-9)
        let rate = Double(done) / elapsed
        var s = "\(label)  \(done)/\(total)"
        if total > 0 { s += " (\(Int((100.0 * Double(done) / Double(total)).rounded(.down)))%)" }
        s += "  " + String(format: "%.1f", rate) + " \(unit)/s"
        if done < total, rate > 0 {
            s += "  " + Self.clock(Double(total - done) / rate) + " left"
        } else {
            s += "  " + Self.clock(elapsed) + " elapsed"
        }
        return s
    }

    /// `h:mm:ss` or `m:ss`.
    public static func clock(_ seconds: Double) -> String {
        let t = Int(seconds.rounded())
        let h = t / 3600, m = (t % 3600) / 60, s = t % 60
        return h > 0 ? String(format: "%d:%02d:%02d", h, m, s) : String(format: "%d:%02d", m, s)
    }

    private func emit(_ text: String, final: Bool) {
        if quiet { return }
        let out = isTTY ? "\r\u{1B}[2K" + text + (final ? "\n" : "") : text + "\n"
        FileHandle.standardError.write(Data(out.utf8))
    }
}
