import Foundation
import XRTensor

/// Timed turns for an interleaved comparison (`xrlab bench --serve`, `xrlab bench-train --serve`;
/// bench/vit_peers.py and bench/train_peers.py keep every tool's process loaded and give each a
/// turn in rotation, so all of them sample the same machine conditions). Each line on standard
/// input `run SECONDS` calls `work` until that long has passed (at least once) and prints
/// {"<unit>": count, "seconds": elapsed} merged with `reply`; a line naming one of `commands`,
/// optionally followed by SECONDS (passed to it, else nil), prints that command's object. Returns
/// the totals when the input ends.
func serveTurns(
    unit: String, perCall: Int, reply: [String: Any] = [:], work: () throws -> Void,
    commands: [String: (Double?) throws -> [String: Any]] = [:]
) throws -> (count: Int, seconds: Double) {
    var count = 0, total = 0.0
    while let line = readLine() {
        let words = line.split(separator: " ")
        if words.first == "run", words.count == 2, let seconds = Double(words[1]), seconds >= 0 {
            var n = 0
            let start = Date()
            while n < 1 || Date().timeIntervalSince(start) < seconds {
                try work()
                n += 1
            }
            let elapsed = Date().timeIntervalSince(start)
            count += n * perCall
            total += elapsed
            try printJSONLine(reply.merging([unit: n * perCall, "seconds": elapsed]) { $1 })
        } else if let name = words.first, let command = commands[String(name)],
            words.count == 1
                || (words.count == 2 && Double(words[1]).map { $0 >= 0 } == true)
        {
            try printJSONLine(try command(words.count == 2 ? Double(words[1]) : nil))
        } else {
            let known = (["run SECONDS"] + commands.keys.sorted().map { "\($0) [SECONDS]" }).map { "`\($0)`" }.joined(separator: " or ")
            throw XRError("expected \(known), got '\(line)'", field: "--serve")
        }
    }
    return (count, total)
}

/// One JSON object on its own line, flushed (a reader waits for each line).
func printJSONLine(_ object: [String: Any]) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
    fflush(nil)
}
