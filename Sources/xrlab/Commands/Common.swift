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

/// Look up a named encoder preset.
func resolvePreset(_ name: String?) throws -> ViTConfig? {
    guard let name else { return nil }
    guard let p = ViTConfig.preset(named: name) else {
        throw XRError("unknown preset '\(name)'", field: "--preset",
                      hint: "known presets: " + ViTConfig.presetNames.joined(separator: ", "))
    }
    return p
}

/// METEOR's resources: the command's `--meteor-data`, else `XRLAB_METEOR_DATA` (nil: no METEOR).
func meteorDataPath(_ option: String?) -> String? {
    option ?? ProcessInfo.processInfo.environment["XRLAB_METEOR_DATA"].flatMap { $0.isEmpty ? nil : $0 }
}
