import ArgumentParser
import Foundation
import XRTensor
import XRTorch

/// `xrlab convert`: a PyTorch checkpoint's state dict → safetensors, without executing its pickle.
struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Write a PyTorch checkpoint's weights (.pt, .pth, .bin) as safetensors.",
        discussion: """
            The checkpoint's pickle is interpreted, never executed: it may hold only plain data and
            tensors, and anything else (os.system, unknown classes, …) is refused by name. The state
            dict is the first of module, model, model_ema, state_dict that holds tensors, else the top
            level; --state-dict-key chooses ('.' for the top level). Tensors are written as f32
            (fp16 / bf16 / f64 widened or narrowed) unless --dtype says otherwise; the output is
            written atomically.
            """)

    @Argument(help: "PyTorch checkpoint (.pt, .pth, .bin).")
    var input: String

    @Argument(help: "Output .safetensors file.")
    var output: String

    @Option(name: .long, help: "Top-level key holding the state dict ('.' for the top level).")
    var stateDictKey: String?

    @Option(name: .long, help: "Stored dtype: F32, F16 or BF16.")
    var dtype = StoredDType(.F32)

    func run() throws {
        try runReportingErrors {
            let ckpt = try TorchCheckpoint(contentsOf: URL(fileURLWithPath: input), stateDictKey: stateDictKey)
            let tensors = try ckpt.names.map { ($0, try ckpt.tensor($0)) }
            try SafeTensors.write(
                tensors, dtype: dtype.dtype,
                metadata: [
                    "format": "pt", "source": URL(fileURLWithPath: input).lastPathComponent,
                    "state_dict_key": ckpt.stateDictKey ?? ".", "xrlab_version": XRLabVersion.string
                ],
                to: URL(fileURLWithPath: output))
            print("wrote \(tensors.count) tensors from \(ckpt.stateDictKey.map { "'\($0)'" } ?? "the top level") to \(output)")
        }
    }
}
