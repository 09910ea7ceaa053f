import Foundation
import XRTensor

/// Decodes an X-ray file by its content: PNG (signature) or DICOM Part-10 ("DICM").
public enum ImageDecoder {
    public static let extensions: Set<String> = ["png", "dcm", "dicom"]
    /// Largest image decoded unless a caller passes its own limit (width × height).
    public static let defaultMaxPixels = 100_000_000

    public static func decode(
        _ data: Data, source: String, maxPixels: Int = defaultMaxPixels,
        dicomValues: DICOMFile.Values = .stored
    ) throws -> XRImage {
        try decodeWithWarnings(data, source: source, maxPixels: maxPixels, dicomValues: dicomValues).image
    }

    /// Decode, also returning warnings (e.g. a multi-frame DICOM read as its first frame).
    public static func decodeWithWarnings(
        _ data: Data, source: String, maxPixels: Int = defaultMaxPixels,
        dicomValues: DICOMFile.Values = .stored
    ) throws -> (image: XRImage, warnings: [String]) {
        if DICOMFile.isDICOM(data) {
            let f = try DICOMFile.parse(data, source: source)
            try f.checkDeclaredSize(maxPixels: maxPixels)
            return (try f.image(dicomValues), f.warnings)
        }
        return (try decodePNGOrFail(data, source: source, maxPixels: maxPixels), [])
    }

    static func decodePNGOrFail(_ data: Data, source: String, maxPixels: Int) throws -> XRImage {
        if data.isEmpty { throw XRError("cannot decode image: empty file", file: source, field: "signature") }
        if data.count >= 8 && data.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) {
            return try PNGCodec.decode(data, source: source, maxPixels: maxPixels)
        }
        throw XRError("not a PNG or DICOM file", file: source, field: "signature")
    }
}
