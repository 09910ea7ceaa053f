import ArgumentParser
import Foundation
import XRTensor
import XRKernels
import XRModels

/// Run a command body; print xrlab errors as their message (file, field, hint) and exit 1,
/// instead of a stack of Swift error descriptions.
func runReportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as XRError {
        FileHandle.standardError.write(Data(("error: " + e.description + "\n").utf8))
        throw ExitCode(1)
    }
}

/// Set OpenBLAS's thread count once for the process.
func setThreads(_ n: Int) {
    BLAS.threads = max(1, n)
    Parallel.workers = max(1, n)
}

/// `--threads`, shared by every command that runs kernels.
struct ThreadsOption: ParsableArguments {
    @Option(name: .long, help: "Threads to use.")
    var threads: Int = 2

    /// Use `threads` for the rest of the process.
    func apply() { setThreads(threads) }
}

/// `--threads` and `--quiet`, shared by the commands that run long jobs.
struct WorkOptions: ParsableArguments {
    @OptionGroup var threadsOption: ThreadsOption

    @Flag(name: .long, help: "No progress output.")
    var quiet = false

    var threads: Int { threadsOption.threads }

    /// Use `threads` for the rest of the process.
    func apply() { threadsOption.apply() }
}

/// A command renamed in this release: its old name, hidden from help, still runs it (with a note
/// on standard error). Removed in the next release.
protocol RenamedCommand: ParsableCommand {
    /// The name it had, e.g. `bench-train`.
    static var oldName: String { get }
    /// The name it has now, e.g. `bench train`.
    static var newName: String { get }
}

/// The old name of a `RenamedCommand`.
struct OldName<C: RenamedCommand>: ParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(commandName: C.oldName, abstract: "Old name of `xrlab \(C.newName)`.", shouldDisplay: false)
    }

    @OptionGroup var command: C

    mutating func run() throws {
        FileHandle.standardError.write(Data("note: `xrlab \(C.oldName)` is now `xrlab \(C.newName)`; the old name goes in the next release\n".utf8))
        try command.run()
    }
}

/// Look up a named encoder preset.
func resolvePreset(_ name: String?) throws -> ViTConfig? {
    guard let name else { return nil }
    guard let p = ViTConfig.preset(named: name) else {
        throw XRError(
            "unknown preset '\(name)'", field: "--preset",
            hint: "known presets: " + ViTConfig.presetNames.joined(separator: ", "))
    }
    return p
}

/// METEOR's resources: the command's `--meteor-data`, else `XRLAB_METEOR_DATA` (nil: no METEOR).
func meteorDataPath(_ option: String?) -> String? {
    option ?? ProcessInfo.processInfo.environment["XRLAB_METEOR_DATA"].flatMap { $0.isEmpty ? nil : $0 }
}
