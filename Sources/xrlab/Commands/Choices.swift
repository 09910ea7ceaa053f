import ArgumentParser
import XRTensor
import XRData
import XRModels
import XRPipeline
import XRPackage
import XRTrain
import XRText
import XRReport

// Options that take one of a fixed set of names. A bad value is refused by the parser with an
// error naming the option and listing the choices; the names themselves are defined once, in
// the library type each option sets.

extension EmbedOutput.Format: ExpressibleByArgument {}
extension DICOMFile.Values: ExpressibleByArgument {}
extension Preprocessing.Interpolation: ExpressibleByArgument {}
extension Ingest.JoinKey: ExpressibleByArgument {}
extension SemanticVersion.Part: ExpressibleByArgument {}
extension DecoderConfig.VisualInput: ExpressibleByArgument {}
extension ReportTarget: ExpressibleByArgument {}
extension ReportEncoderSpec.Kind: ExpressibleByArgument {}
extension Precision: ExpressibleByArgument {}

/// `--compression` of packages: the compressed kinds of `TarArchive.Compression`.
enum PackCompression: String, CaseIterable, ExpressibleByArgument {
    case gzip, zstd
    var compression: TarArchive.Compression {
        switch self {
        case .gzip: return .gzip
        case .zstd: return .zstd
        }
    }
}

/// `--dtype` of converted checkpoints: the float types safetensors files are written in (any case).
struct StoredDType: ExpressibleByArgument {
    static let choices: [SafeTensorsDType] = [.F32, .F16, .BF16]
    let dtype: SafeTensorsDType
    init(_ dtype: SafeTensorsDType) { self.dtype = dtype }
    init?(argument: String) {
        guard let d = SafeTensorsDType(rawValue: argument.uppercased()), Self.choices.contains(d) else { return nil }
        dtype = d
    }
    static var allValueStrings: [String] { choices.map(\.rawValue) }
    var defaultValueDescription: String { dtype.rawValue }
}
