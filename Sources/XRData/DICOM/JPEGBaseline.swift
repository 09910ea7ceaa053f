// JPEG Baseline / Extended with 8-bit samples (ITU-T T.81 Processes 1 and 2) through libjpeg,
// for the DICOM transfer syntaxes 1.2.840.10008.1.2.4.50 and .51. Lossy: the pixels are what
// libjpeg's default (accurate integer) inverse DCT gives. 12-bit Extended data is refused by the
// 8-bit libjpeg with a clear error.
import Foundation
import CXRJPEG
import XRTensor

enum JPEGBaseline {
    /// Decode a single-component codestream: 8-bit samples, row-major (rows, columns).
    static func decode(_ bytes: [UInt8], source: String, maxPixels: Int = 100_000_000) throws
        -> (rows: Int, columns: Int, precision: Int, samples: [UInt8])
    {
        var img = xrjpeg_image()
        bytes.withUnsafeBufferPointer { b in xrjpeg_decode(b.baseAddress, b.count, UInt64(maxPixels), &img) }
        defer { xrjpeg_free(&img) }
        let message = withUnsafeBytes(of: img.error) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        guard message.isEmpty, let pixels = img.pixels else {
            let why = message.isEmpty ? "decode error" : message
            throw XRError(
                "cannot decode the JPEG data: \(why)", file: source, field: "(7FE0,0010) Pixel Data (JPEG)",
                hint: img.precision > 8 ? "\(img.precision)-bit JPEG Extended needs a 12-bit libjpeg; convert with `gdcmconv --raw`" : nil)
        }
        let n = Int(img.width) * Int(img.height)
        return (Int(img.height), Int(img.width), Int(img.precision), Array(UnsafeBufferPointer(start: pixels, count: n)))
    }
}
