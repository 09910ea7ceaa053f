import ArgumentParser
import XRTensor

/// `xrlab`: parse, validate, dispatch. Each subcommand lives in its own file under Commands/.
@main
struct XRLab: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xrlab",
        abstract: "Adapt X-ray foundation models to small local datasets, on CPU.",
        version: XRLabVersion.string,
        subcommands: XRLab.allSubcommands
    )
}
