import Foundation

/// How far this process's peak resident set size rose above its resident size while `body`
/// ran, in MB; nil where the peak cannot be reset (Linux's /proc/self/clear_refs "5" resets
/// VmHWM to the current VmRSS). For tests that a hostile input is refused without a blow-up.
public func peakMemoryGrowthMB(_ body: () throws -> Void) rethrows -> Double? {
    func status(_ key: String) -> Double? {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = s.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") }),
            let kb = Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        else { return nil }
        return kb / 1024
    }
    guard let h = FileHandle(forWritingAtPath: "/proc/self/clear_refs"),
        (try? h.write(contentsOf: Data("5".utf8))) != nil
    else { try body(); return nil }
    try? h.close()
    guard let before = status("VmRSS") else { try body(); return nil }
    try body()
    guard let peak = status("VmHWM") else { return nil }
    return max(0, peak - before)
}
