import Foundation
import PackagePlugin

/// `swift package lint-recipes [--check-files]`: run `xrlab validate` over every recipe in
/// recipes/. Schema and values are always checked; `--check-files` also requires the files a
/// recipe references to exist (they appear after `xrlab demo`, or with the shared data).
@main
struct LintRecipes: CommandPlugin {
    func performCommand(context: PluginContext, arguments: [String]) async throws {
        let tool = try context.tool(named: "xrlab")
        let dir = context.package.directoryURL.appending(path: "recipes")
        let files = try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "yaml" || $0.pathExtension == "yml" }
            .sorted { $0.path < $1.path }
        guard !files.isEmpty else {
            Diagnostics.error("no recipes found in \(dir.path)")
            return
        }
        let process = Process()
        process.executableURL = tool.url
        process.arguments = ["validate"] + (arguments.contains("--check-files") ? [] : ["--schema-only"]) + files.map(\.path)
        try process.run()
        process.waitUntilExit()
        if process.terminationStatus != 0 {
            Diagnostics.error("recipe validation failed")
            throw ExitCode(process.terminationStatus)
        }
        print("\(files.count) recipes valid")
    }
}

struct ExitCode: Error { let code: Int32; init(_ c: Int32) { code = c } }
