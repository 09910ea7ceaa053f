import ArgumentParser
import Foundation
import XRTensor
import XRKernels

/// `xrlab`: parse, validate, dispatch. Each subcommand lives in its own file under Commands/.
@main
struct XRLab: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xrlab",
        abstract: "Adapt X-ray foundation models to small local datasets, on CPU.",
        version: XRLabVersion.string,
        subcommands: XRLab.allSubcommands
    )

    static func main() {
        // OpenBLAS chose legacy kernels for a CPU it did not recognise: run again with the
        // kernels the CPU supports (see BLASCore).
        if let core = BLASCore.preferredCore() {
            setenv("OPENBLAS_CORETYPE", core, 1)
            let argv = CommandLine.unsafeArgv
            execv("/proc/self/exe", argv)
            // exec failed: carry on with the kernels loaded.
        }
        Parallel.flushDenormals()
        main(nil)
    }
}
