import XCTest
import Foundation
import XRTensor
@testable import XRPackage
import TestSupport

/// Every archive format version ever written stays readable: a package of each is committed
/// (`fixtures/packages/format<N>.xrpkg`) with the predictions it gave when it was written.
/// Re-record (only when adding a new format version) with
/// `XRLAB_RECORD_SNAPSHOTS=1 swift test --filter MigrationTests`.
final class MigrationTests: XCTestCase {
    func testEveryFormatVersionStillReads() throws {
        let dir = Fixtures.url("packages")
        if ProcessInfo.processInfo.environment["XRLAB_RECORD_SNAPSHOTS"] == "1" {
            let tmp = Fixtures.tempDir("xrlab-migration")
            let run = try PackageTests.runStudy(tmp)
            var o = PackOptions(name: "format\(PackageManifest.formatVersion)", registry: tmp.appendingPathComponent("reg"))
            o.version = "1.0.0"
            o.fit.method = "logistic"
            o.created = Date(timeIntervalSince1970: 1_767_225_600)
            o.quiet = true
            let r = try Packer.pack(runDirectory: run, options: o)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let target = dir.appendingPathComponent("format\(PackageManifest.formatVersion).xrpkg")
            try? FileManager.default.removeItem(at: target)
            try FileManager.default.copyItem(at: r.archive, to: target)
            let (x, ids) = try Predictor.loadFeatures(Fixtures.url("recipes/features.safetensors"), representation: r.manifest.base_encoder.representation)
            try AtomicFile.write(
                try Predictor.predict(try PackageReader.open(target), features: x, ids: ids).csv,
                to: dir.appendingPathComponent("format\(PackageManifest.formatVersion).predictions.csv"))
        }
        for v in 1...PackageManifest.formatVersion {
            let url = dir.appendingPathComponent("format\(v).xrpkg")
            let (p, _) = try PackageReader.verify(url, base: Fixtures.url("recipes/features.safetensors"))
            XCTAssertEqual(p.manifest.format_version, v)
            let (x, ids) = try Predictor.loadFeatures(Fixtures.url("recipes/features.safetensors"), representation: p.manifest.base_encoder.representation)
            let csv = try Predictor.predict(p, features: x, ids: ids).csv
            XCTAssertEqual(
                csv, try String(contentsOf: dir.appendingPathComponent("format\(v).predictions.csv"), encoding: .utf8),
                "format \(v) package predicts as it did when written")
        }
    }
}
