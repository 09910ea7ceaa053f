import Foundation
import XRTensor
import XRModels
import XRData

/// Writes `xrlab embed` results: the feature tensors plus a sidecar JSON that says which row is
/// which image, which encoder produced them and how images were prepared.
public enum EmbedOutput {
    /// Sidecar format version; readers refuse newer versions.
    public static let formatVersion = 1

    public enum Format: String, Sendable, CaseIterable { case safetensors, npy }

    /// The sidecar path for an output: `feats.safetensors` → `feats.json`.
    public static func sidecarURL(for output: URL) -> URL {
        output.deletingPathExtension().appendingPathExtension("json")
    }

    /// Write tensors (safetensors: one file; npy: `<stem>.<tensor>.npy` each) and the sidecar,
    /// each atomically. Returns the files written.
    @discardableResult
    public static func write(
        _ result: EmbedResult, encoder: Encoder, modelPath: String,
        format: Format, to output: URL, dicomValues: DICOMFile.Values = .stored
    ) throws -> [URL] {
        var written: [URL] = []
        let names = result.tensors.keys.sorted()
        switch format {
        case .safetensors:
            try SafeTensors.write(
                names.compactMap { n in result.tensors[n].map { (n, $0) } },
                metadata: ["format": "xrlab-embed", "xrlab_version": XRLabVersion.string],
                to: output)
            written.append(output)
        case .npy:
            let stem = output.deletingPathExtension()
            for n in names {
                guard let t = result.tensors[n] else { continue }
                let u = stem.appendingPathExtension(n).appendingPathExtension("npy")
                try NPY.write(t, to: u)
                written.append(u)
            }
        }
        let side = sidecarURL(for: output)
        try AtomicFile.write(try sidecar(result, encoder: encoder, modelPath: modelPath, format: format, dicomValues: dicomValues), to: side)
        written.append(side)
        return written
    }

    static func sidecar(_ r: EmbedResult, encoder: Encoder, modelPath: String, format: Format, dicomValues: DICOMFile.Values) throws -> Data {
        var tensors: [String: [Int]] = [:]
        for (k, v) in r.tensors { tensors[k] = v.shape }
        let doc = Sidecar(
            format: "xrlab-embed", format_version: formatVersion, xrlab_version: XRLabVersion.string,
            file_format: format.rawValue,
            model: .init(
                path: modelPath, layout: encoder.loaded.layout, weights_sha256: encoder.weightsHash,
                config: encoder.loaded.config, notes: encoder.loaded.notes, precision: encoder.precision),
            preprocessing: encoder.preprocessing, preprocessing_source: encoder.preprocessingSource,
            tensors: tensors,
            inputs: zip(r.inputs, r.imageHashes).map { .init(path: $0.id, sha256: $1) },
            skipped: r.failed,
            cache: .init(hits: r.cacheHits, encoded: r.encoded),
            warnings: r.warnings, dicom_values: dicomValues.rawValue)
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return try e.encode(doc)
    }

    /// The sidecar document (snake_case keys, as Python users read it).
    public struct Sidecar: Codable, Sendable {
        public struct Model: Codable, Sendable {
            public var path: String
            public var layout: String
            public var weights_sha256: String
            public var config: ViTConfig
            public var notes: [String]
            /// The precision of the encoder's linear layers; absent (fp32) in sidecars written before it existed.
            public var precision: Precision? = nil
        }
        public struct Input: Codable, Sendable {
            public var path: String
            public var sha256: String
        }
        public struct Cache: Codable, Sendable {
            public var hits: Int
            public var encoded: Int
        }
        public var format: String
        public var format_version: Int
        public var xrlab_version: String
        public var file_format: String
        public var model: Model
        public var preprocessing: Preprocessing
        public var preprocessing_source: String
        public var tensors: [String: [Int]]
        public var inputs: [Input]
        public var skipped: [FailedInput]
        public var cache: Cache
        public var warnings: [String]
        /// Which DICOM pixel values were used (stored, modality, voi).
        public var dicom_values: String
    }

    /// Read a sidecar, refusing unknown formats and newer versions with a hint.
    public static func readSidecar(_ url: URL) throws -> Sidecar {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw XRError("cannot read embed sidecar", file: url.path, hint: "it is written by `xrlab embed` beside the features")
        }
        struct Head: Decodable { var format: String?; var format_version: Int? }
        guard let head = try? JSONDecoder().decode(Head.self, from: data), head.format == "xrlab-embed" else {
            throw XRError("not an xrlab embed sidecar", file: url.path, field: "format")
        }
        guard let v = head.format_version, v <= formatVersion else {
            throw XRError(
                "sidecar format version \(head.format_version.map(String.init) ?? "?") is newer than this xrlab understands (\(formatVersion))",
                file: url.path, field: "format_version", hint: "upgrade xrlab, or rerun `xrlab embed` with this version")
        }
        do { return try JSONDecoder().decode(Sidecar.self, from: data) } catch {
            throw XRError("malformed embed sidecar: \(error)", file: url.path)
        }
    }
}
