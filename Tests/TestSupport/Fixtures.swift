import Foundation
import XCTest

/// Locations shared by all test targets.
public enum Fixtures {
    /// The repository root (the folder holding Package.swift).
    public static let repoRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        fatalError("Package.swift not found above \(#filePath)")
    }()

    /// `fixtures/` at the repository root.
    public static var dir: URL { repoRoot.appendingPathComponent("fixtures") }

    /// A file under `fixtures/`.
    public static func url(_ relative: String) -> URL { dir.appendingPathComponent(relative) }

    /// The shared real-data folder: `$XRLAB_SHARED_DATA`, else `../shared/data` beside the repo.
    public static var sharedData: URL {
        if let env = ProcessInfo.processInfo.environment["XRLAB_SHARED_DATA"], !env.isEmpty {
            return URL(fileURLWithPath: env)
        }
        return repoRoot.deletingLastPathComponent().appendingPathComponent("shared/data")
    }

    /// Skip the calling test with a clear message when the shared data folder is absent.
    public static func requireSharedData(file: StaticString = #filePath, line: UInt = #line) throws -> URL {
        let url = sharedData
        guard FileManager.default.fileExists(atPath: url.appendingPathComponent("manifest.csv").path) else {
            throw XCTSkip("shared X-ray data not found at \(url.path) (set XRLAB_SHARED_DATA to its folder); skipping real-data test")
        }
        return url
    }

    /// A fresh empty temporary directory, removed by the caller's tearDown if wanted.
    public static func tempDir(_ name: String = "xrlab-test") -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// Relative L2 error ||a - b|| / max(||b||, tiny), and the index of the largest absolute difference.
public func relativeL2(_ a: [Float], _ b: [Float]) -> (rel: Double, maxAbs: Double, argmax: Int) {
    precondition(a.count == b.count, "length mismatch \(a.count) vs \(b.count)")
    var num = 0.0, den = 0.0, maxAbs = 0.0, arg = 0
    for i in 0..<a.count {
        let d = Double(a[i]) - Double(b[i])
        num += d * d
        den += Double(b[i]) * Double(b[i])
        if abs(d) > maxAbs { maxAbs = abs(d); arg = i }
    }
    return ((num / max(den, 1e-30)).squareRoot(), maxAbs, arg)
}

/// Assert two float arrays agree to a relative L2 tolerance; on failure print the max
/// difference and where it is.
public func assertClose(
    _ a: [Float], _ b: [Float], rel tol: Double, _ what: String,
    file: StaticString = #filePath, line: UInt = #line
) {
    guard a.count == b.count else {
        XCTFail("\(what): length \(a.count) vs expected \(b.count)", file: file, line: line)
        return
    }
    let r = relativeL2(a, b)
    XCTAssertLessThanOrEqual(
        r.rel, tol,
        "\(what): relative L2 error \(r.rel) > \(tol); max |diff| \(r.maxAbs) at index \(r.argmax) (got \(a[r.argmax]), expected \(b[r.argmax]))",
        file: file, line: line)
}
