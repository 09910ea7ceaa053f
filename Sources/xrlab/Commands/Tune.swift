import ArgumentParser
import Foundation
import XRTensor
import XRRecipes

/// `xrlab tune`: train one model with a recipe's tuning method and write it out.
struct TuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tune",
        abstract: "Tune the encoder with a recipe's tuning method on one task and write the model (PEFT adapter, merged weights, metrics).",
        discussion: """
            Trains on the task's training rows (all of them, less the validation rows, or --shots per class
            drawn as the study cell draws them), keeps the epoch with the lowest validation loss, evaluates
            on the test rows and writes OUT/model.safetensors (timm names; LoRA merged into the base
            weights; with the head), OUT/adapter/ (PEFT layout, LoRA only: loads with
            PeftModel.from_pretrained on the timm model), OUT/history.csv and OUT/metrics.json. Interrupted
            runs resume from OUT/checkpoint.safetensors. --from-peft starts from a PEFT LoRA adapter
            (--epochs 0 evaluates it as it is).
            """)

    @Argument(help: "Recipe YAML file with a tuning method (lora, adapter, last_k, bitfit, full).")
    var recipe: String
    @Option(name: .long, help: "Output folder.")
    var out: String
    @Option(name: .long, help: "Tuning method of the recipe (default: the first).")
    var method: String?
    @Option(name: .long, help: "Task / label (default: the only one).")
    var task: String?
    @Option(name: .long, help: "Examples per class (default: all training rows).")
    var shots: Int?
    @Option(name: .long, help: "Seed.")
    var seed: Int = 0
    @Option(name: .long, help: "Epochs (overrides the recipe; 0 = evaluate only).")
    var epochs: Int?
    @Option(name: .customLong("from-peft"), help: "Start from a PEFT LoRA adapter folder.")
    var fromPEFT: String?
    @Option(name: .customLong("set"), help: "Override a recipe value: key.path=value (repeatable).")
    var overrides: [String] = []
    @OptionGroup var work: WorkOptions

    func run() throws {
        try runReportingErrors {
            work.apply()
            let r = try RecipeLoader.load(URL(fileURLWithPath: recipe), overrides: overrides)
            var o = FinalTuneOptions(output: URL(fileURLWithPath: out))
            o.method = method; o.task = task; o.shots = shots; o.seed = seed; o.epochs = epochs; o.quiet = work.quiet
            o.fromPEFT = fromPEFT.map { URL(fileURLWithPath: $0) }
            let res = try FinalTune.run(r, options: o)
            print(
                "\(res.method) on \(res.task): \(res.history.count) epochs; test "
                    + res.metrics.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.4f", $0.value))" }.joined(separator: ", "))
            for f in res.files { print("wrote \(f.path)") }
        }
    }
}
