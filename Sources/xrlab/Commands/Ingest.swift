import ArgumentParser
import Foundation
import XRTensor
import XRData

/// `xrlab ingest DIR --labels labels.csv --out manifest.csv`
struct IngestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest",
        abstract: "Build a de-identified manifest from a folder of DICOM and PNG radiographs.",
        discussion: """
            Columns: path, sha256 (of the PNG file, or of a DICOM's decoded pixel values), patient_key,
            study_key (keyed hashes of Patient ID / Study Instance UID under the site secret), view,
            body_part, laterality, sex, age, modality, labels, split. Labels
            (and split) are joined from a CSV with a `filename`, `accession` or `study` column and a
            `labels` column. No name, id, birth date or accession number is written.
            """)

    @Argument(help: "Folder of DICOM / PNG files (walked recursively).")
    var dir: String

    @Option(name: .long, help: "Labels CSV (key column + labels [+ split]).")
    var labels: String?

    @Option(name: .long, help: "Join labels on: filename, accession or study.")
    var joinOn: Ingest.JoinKey = .filename

    @Option(name: .long, help: "Manifest to write.")
    var out: String

    @Option(name: .long, help: "Site secret for keyed hashes (default $XRLAB_SITE_KEY or ~/.config/xrlab/site.key; created if missing).")
    var siteKey: String?

    func run() throws {
        try runReportingErrors {
            let outURL = URL(fileURLWithPath: out)
            let key = try SiteKey.load(
                siteKey.map { URL(fileURLWithPath: $0) } ?? SiteKey.defaultFile(),
                outputDirectory: outURL.deletingLastPathComponent())
            let r = try Ingest.run(
                URL(fileURLWithPath: dir), labels: labels.map { URL(fileURLWithPath: $0) }, joinOn: joinOn,
                out: outURL, key: key)
            print(r.summary, terminator: "")
            print("wrote \(r.manifest.path)")
        }
    }
}

/// `xrlab check manifest.csv`
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Leakage and hygiene checks: patients or identical images across splits, near-duplicates, label values, imbalance.")

    @Argument(help: "Manifest CSV.")
    var manifest: String

    @Option(name: .long, help: "Allowed label values, comma-separated.")
    var labels: String?

    @Option(name: .long, help: "Image path column.")
    var pathColumn: String = "path"

    @Option(name: .long, help: "Patient column (default: patient_key, patient_id or patient).")
    var patientColumn: String?

    @Option(name: .long, help: "Split column.")
    var splitColumn: String = "split"

    @Option(name: .long, help: "Label column (pipe-separated values).")
    var labelColumn: String = "labels"

    @Option(name: .long, help: "Perceptual-hash distance counted as a near-duplicate.")
    var threshold: Int = 4

    @Flag(name: .long, help: "Skip the near-duplicate search (it decodes every image).")
    var noNearDuplicates = false

    func run() throws {
        try runReportingErrors {
            var o = ManifestCheck.Options()
            o.pathColumn = pathColumn
            o.patientColumn = patientColumn
            o.splitColumn = splitColumn
            o.labelColumn = labelColumn
            o.allowedLabels = labels.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
            o.threshold = threshold
            o.nearDuplicates = !noNearDuplicates
            let findings = try ManifestCheck.run(URL(fileURLWithPath: manifest), options: o)
            for f in findings { print(f) }
            let errors = findings.filter { $0.severity == .error }.count
            print("\(errors) errors, \(findings.count - errors) warnings")
            if errors > 0 { throw ExitCode(1) }
        }
    }
}
