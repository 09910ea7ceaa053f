import Foundation
import XCTest
import XRKernels
import XRTensor
import TestSupport

/// The SIMD resampling kernel against its slow reference on ragged sizes (not multiples of 8
/// or 32), up and down, non-square, both filters, with and without antialiasing.
final class ResampleKernelTests: XCTestCase {
    func testFastMatchesReference() {
        var rng = XRRandom(seed: 7)
        let shapes: [(Int, Int, Int, Int, Int)] = [ // channels, inH, inW, outH, outW
            (1, 131, 97, 86, 64), (3, 13, 29, 40, 71), (1, 1, 1, 9, 5), (2, 37, 53, 37, 53), (1, 200, 7, 11, 33),
            (1, 5, 300, 3, 97), (3, 64, 64, 33, 35)
        ]
        for (c, ih, iw, oh, ow) in shapes {
            let x = (0..<(c * ih * iw)).map { _ in Float(rng.nextDouble()) }
            for (filter, aa) in [(ResampleFilter.bicubic, true), (.bilinear, true), (.bicubic, false)] {
                var out = [Float](repeating: .nan, count: c * oh * ow)
                out.withUnsafeMutableBufferPointer { o in
                    x.withUnsafeBufferPointer { i in
                        resample(o.baseAddress!, i.baseAddress!, channels: c, inH: ih, inW: iw, outH: oh, outW: ow, filter: filter, antialias: aa)
                    }
                }
                let want = resampleReference(x, channels: c, inH: ih, inW: iw, outH: oh, outW: ow, filter: filter, antialias: aa)
                assertClose(out, want, rel: 1e-6, "\(c)×\(ih)×\(iw) → \(oh)×\(ow) \(filter) aa=\(aa)")
            }
        }
    }
}
