import ArgumentParser
import Foundation
import XRTensor
import XRPipeline
import XRRecipes

/// `xrlab demo`: the main job on a fresh machine — generate a small encoder and a synthetic
/// X-ray set, then run the demo recipe on them. Nothing is downloaded.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate a demo encoder and X-ray-like images, then run the demo recipe on them.",
        discussion: """
            Writes DIR/model (a random-initialised Dinov2Model folder), DIR/images and DIR/manifest.csv,
            then runs RECIPE with its model, manifest and output pointed into DIR. The numbers show the
            mechanics of a label-efficiency study, not clinical performance.
            """)

    @Option(name: .long, help: "Folder for the generated model, images and run.")
    var dir: String = "demo"

    @Option(name: .long, help: "The recipe to run (its paths are redirected into --dir).")
    var recipe: String = "recipes/demo.yaml"

    @Option(name: .long, help: "Number of synthetic patients.")
    var patients: Int = 150

    @Option(name: .long, help: "Seeds per cell (overrides the recipe).")
    var seeds: Int?

    @OptionGroup var work: WorkOptions

    func run() throws {
        try runReportingErrors {
            work.apply()
            let root = URL(fileURLWithPath: dir).standardizedFileURL
            let recipeURL = URL(fileURLWithPath: recipe)
            guard FileManager.default.fileExists(atPath: recipeURL.path) else {
                throw XRError("demo recipe not found", file: recipeURL.path, hint: "run from the repository root, or pass --recipe PATH")
            }
            let summary = try DemoData.generate(in: root, patients: patients)
            print("generated \(summary.images) images of \(summary.patients) patients: \(summary.manifest.path)")
            print("generated encoder: \(summary.modelDir.path)")
            var overrides = [
                "model.path=\(summary.modelDir.path)", "data.manifest=\(summary.manifest.path)",
                "output=\(root.appendingPathComponent("run").path)"
            ]
            if let seeds { overrides.append("seeds=\(seeds)") }
            let r = try RecipeLoader.load(recipeURL, overrides: overrides)
            var o = RunOptions()
            o.quiet = work.quiet
            o.force = true
            let s = try Runner.run(r, options: o)
            print("ran \(r.recipe.name): \(s.computed) cells\(s.skipped.isEmpty ? "" : ", \(s.skipped.count) skipped")")
            for p in s.plots { print("plot:   \(p.path)") }
            print("report: \(s.report.path)")
        }
    }
}
