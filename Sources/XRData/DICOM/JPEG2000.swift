// JPEG 2000 (ISO/IEC 15444-1) through OpenJPEG (libopenjp2), for the DICOM transfer syntaxes
// 1.2.840.10008.1.2.4.90 (lossless) and .91. DICOM stores a raw codestream (J2K); a JP2 file
// wrapper, which some writers add, is accepted too.
import Foundation
import COpenJPEG
import XRTensor

enum JPEG2000 {
    /// A decoded single-component image: sample values as OpenJPEG gives them (signed when the
    /// codestream says so), row-major (rows, columns).
    struct Frame {
        var precision: Int
        var signed: Bool
        var rows: Int
        var columns: Int
        var samples: [Int32] // (rows * columns)
    }

    /// What a read callback returns at the end of the data: OpenJPEG's `(OPJ_SIZE_T)-1`.
    /// `OPJ_SIZE_T` (C `size_t`) is imported as `Int`, so that is -1 here, not `OPJ_SIZE_T.max`
    /// (`Int.max`, which OpenJPEG took for a read of 2^63 bytes and then copied past its buffer).
    static let endOfStream: OPJ_SIZE_T = -1

    /// The bytes OpenJPEG reads through its stream callbacks, and the messages it reports.
    final class Source {
        let bytes: [UInt8]
        var pos = 0
        var errors: [String] = []
        init(_ bytes: [UInt8]) { self.bytes = bytes }
    }

    /// Decode a codestream. `size` (rows, columns), when given, must match the image header —
    /// checked before OpenJPEG decodes (and allocates) anything.
    static func decode(_ bytes: [UInt8], source: String, size: (rows: Int, columns: Int)? = nil) throws -> Frame {
        let field = "(7FE0,0010) Pixel Data (JPEG 2000)"
        func fail(_ m: String) -> XRError { XRError(m, file: source, field: field) }
        // Raw codestream starts with SOC SIZ (FF4F FF51); a JP2 file with its signature box.
        let format: OPJ_CODEC_FORMAT
        if bytes.count >= 4 && bytes[0] == 0xFF && bytes[1] == 0x4F && bytes[2] == 0xFF && bytes[3] == 0x51 {
            format = OPJ_CODEC_J2K
        } else if bytes.count >= 12 && Array(bytes[4..<8]) == Array("jP  ".utf8) {
            format = OPJ_CODEC_JP2
        } else {
            throw fail("JPEG 2000 data starts with neither a codestream (FF4F FF51) nor a JP2 signature")
        }
        let src = Source(bytes)
        let user = Unmanaged.passUnretained(src).toOpaque()
        guard let codec = opj_create_decompress(format) else { throw fail("cannot create an OpenJPEG decoder") }
        defer { opj_destroy_codec(codec) }
        let onError: opj_msg_callback = { msg, user in
            guard let msg, let user else { return }
            let s = Unmanaged<Source>.fromOpaque(user).takeUnretainedValue()
            s.errors.append(String(cString: msg).trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let quiet: opj_msg_callback = { _, _ in }
        opj_set_error_handler(codec, onError, user)
        opj_set_warning_handler(codec, quiet, user)
        opj_set_info_handler(codec, quiet, user)
        var params = opj_dparameters_t()
        opj_set_default_decoder_parameters(&params)
        guard opj_setup_decoder(codec, &params) != 0 else { throw fail("OpenJPEG rejected the decoder parameters") }

        guard let stream = opj_stream_create(1 << 16, 1) else { throw fail("cannot create an OpenJPEG stream") }
        defer { opj_stream_destroy(stream) }
        opj_stream_set_user_data(stream, user, nil)
        opj_stream_set_user_data_length(stream, UInt64(bytes.count))
        opj_stream_set_read_function(stream) { buffer, n, user in
            guard let buffer, let user else { return JPEG2000.endOfStream }
            let s = Unmanaged<Source>.fromOpaque(user).takeUnretainedValue()
            let k = min(Int(n), s.bytes.count - s.pos)
            if k <= 0 { return JPEG2000.endOfStream }
            s.bytes.withUnsafeBytes { b in
                if let base = b.baseAddress { buffer.copyMemory(from: base + s.pos, byteCount: k) }
            }
            s.pos += k
            return OPJ_SIZE_T(k)
        }
        opj_stream_set_skip_function(stream) { n, user in
            guard let user else { return -1 }
            let s = Unmanaged<Source>.fromOpaque(user).takeUnretainedValue()
            let to = max(0, min(s.bytes.count, s.pos + Int(n)))
            defer { s.pos = to }
            return OPJ_OFF_T(to - s.pos)
        }
        opj_stream_set_seek_function(stream) { n, user in
            guard let user else { return 0 }
            let s = Unmanaged<Source>.fromOpaque(user).takeUnretainedValue()
            guard n >= 0, Int(n) <= s.bytes.count else { return 0 }
            s.pos = Int(n)
            return 1
        }

        func reason() -> String { src.errors.isEmpty ? "" : ": " + src.errors.joined(separator: "; ") }
        var imagePtr: UnsafeMutablePointer<opj_image_t>? = nil
        guard opj_read_header(stream, codec, &imagePtr) != 0, let image = imagePtr else {
            throw fail("cannot read the JPEG 2000 header\(reason())")
        }
        defer { opj_image_destroy(image) }
        let header = (rows: Int(image.pointee.y1) - Int(image.pointee.y0), columns: Int(image.pointee.x1) - Int(image.pointee.x0))
        if let size, size != header {
            throw fail("compressed frame is \(header.columns)x\(header.rows), Rows / Columns say \(size.columns)x\(size.rows)")
        }
        guard opj_decode(codec, stream, image) != 0, opj_end_decompress(codec, stream) != 0 else {
            throw fail("cannot decode the JPEG 2000 data (corrupt or truncated)\(reason())")
        }
        let img = image.pointee
        guard img.numcomps == 1, let comps = img.comps else {
            throw fail("JPEG 2000 image has \(img.numcomps) components: only grayscale is read")
        }
        let c = comps[0]
        let w = Int(c.w), h = Int(c.h)
        guard let data = c.data, w > 0, h > 0, c.dx == 1, c.dy == 1 else { throw fail("JPEG 2000 image has no samples") }
        let samples = Array(UnsafeBufferPointer(start: data, count: w * h))
        return Frame(precision: Int(c.prec), signed: c.sgnd != 0, rows: h, columns: w, samples: samples)
    }
}
