import ArgumentParser

struct XRLab: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "xrlab", abstract: "Adapt X-ray foundation models to small local datasets, on CPU.")
}
XRLab.main()
