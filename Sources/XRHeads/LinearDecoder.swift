// A linear decoder on frozen patch tokens (segmentation, and box heatmaps for detection).
//
// Letters: N images, P = gh·gw patches (grid order, row by row), C token channels, K classes,
// R logit rows (1 for two classes, K otherwise), oh × ow model input, H × W original image.
import Foundation
import XRData
import XRKernels
import XRTensor
import XRTrain

/// The patch grid of an encoder and the model input it covers: gh × gw patches over oh × ow
/// pixels (gh = oh / patch size for a ViT whose input divides into patches).
public struct PatchGrid: Sendable, Codable, Equatable {
    public var gridHeight: Int, gridWidth: Int
    public var inputHeight: Int, inputWidth: Int
    public var patches: Int { gridHeight * gridWidth }

    public init(gridHeight: Int, gridWidth: Int, inputHeight: Int, inputWidth: Int) {
        precondition(gridHeight > 0 && gridWidth > 0 && inputHeight > 0 && inputWidth > 0, "PatchGrid: empty size")
        self.gridHeight = gridHeight
        self.gridWidth = gridWidth
        self.inputHeight = inputHeight
        self.inputWidth = inputWidth
    }

    /// The patch holding model-input pixel (y, x): the one its centre falls in (exact integers).
    @inline(__always) func patch(y: Int, x: Int) -> Int {
        ((2 * y + 1) * gridHeight / (2 * inputHeight)) * gridWidth + (2 * x + 1) * gridWidth / (2 * inputWidth)
    }

    /// (P, K) share of each class among a patch's scored pixels (`target` (oh, ow); pixels equal to
    /// `LinearDecoder.ignore` are not counted), and whether the patch has any scored pixel.
    public func classFractions(_ target: [UInt8], classes k: Int) -> (fractions: [Float], scored: [Bool]) {
        precondition(target.count == inputHeight * inputWidth, "classFractions: target of \(target.count) pixels for \(inputHeight)×\(inputWidth)")
        var counts = [Int](repeating: 0, count: patches * k), totals = [Int](repeating: 0, count: patches)
        for y in 0..<inputHeight {
            for x in 0..<inputWidth {
                let t = target[y * inputWidth + x]
                if t == LinearDecoder.ignore { continue }
                precondition(Int(t) < k, "classFractions: label \(t) with \(k) classes")
                let p = patch(y: y, x: x)
                counts[p * k + Int(t)] += 1
                totals[p] += 1
            }
        }
        var f = [Float](repeating: 0, count: patches * k)
        for p in 0..<patches where totals[p] > 0 { for c in 0..<k { f[p * k + c] = Float(counts[p * k + c]) / Float(totals[p]) } }
        return (f, totals.map { $0 > 0 })
    }
}

/// One annotated image for a patch-token head.
public struct PatchExample: Sendable {
    /// (P, C) frozen patch tokens, row-major, in grid order.
    public var tokens: [Float]
    /// (oh, ow) class index of every model-input pixel — a mask or rasterised boxes taken through
    /// `ImageGeometry.forward` with padding filled with `LinearDecoder.ignore` (not scored).
    public var target: [UInt8]

    public init(tokens: [Float], target: [UInt8]) {
        self.tokens = tokens
        self.target = target
    }
}

/// Bilinear upsampling of (R, gh, gw) grids to (R, oh, ow), torch's
/// `interpolate(mode="bilinear", align_corners=False)`, as two matrix products per channel,
/// U = Uh · G · Uwᵀ, and its adjoint dG = Uhᵀ · dU · Uw (the backward pass).
struct Upsampler {
    let grid: PatchGrid
    let uh: [Float] // (oh, gh)
    let uw: [Float] // (ow, gw)

    init(_ grid: PatchGrid) {
        self.grid = grid
        uh = ImageGeometry.bilinearMatrix(inSize: grid.gridHeight, outSize: grid.inputHeight)
        uw = ImageGeometry.bilinearMatrix(inSize: grid.gridWidth, outSize: grid.inputWidth)
    }

    /// (R, gh, gw) → (R, oh, ow).
    func up(_ g: [Float], rows: Int) -> [Float] {
        let gh = grid.gridHeight, gw = grid.gridWidth, oh = grid.inputHeight, ow = grid.inputWidth
        var mid = [Float](repeating: 0, count: oh * gw), out = [Float](repeating: 0, count: rows * oh * ow)
        for r in 0..<rows {
            BLAS.sgemm(&mid, uh, Array(g[(r * gh * gw)..<((r + 1) * gh * gw)]), m: oh, n: gw, k: gh)
            out.withUnsafeMutableBufferPointer { o in
                guard let op = o.baseAddress else { return }
                BLAS.sgemm(op + r * oh * ow, mid, uw, transB: true, m: oh, n: ow, k: gw)
            }
        }
        return out
    }

    /// The adjoint: (R, oh, ow) → (R, gh, gw).
    func down(_ d: [Float], rows: Int) -> [Float] {
        let gh = grid.gridHeight, gw = grid.gridWidth, oh = grid.inputHeight, ow = grid.inputWidth
        var mid = [Float](repeating: 0, count: oh * gw), out = [Float](repeating: 0, count: rows * gh * gw)
        for r in 0..<rows {
            d.withUnsafeBufferPointer { dp in
                guard let p = dp.baseAddress else { return }
                BLAS.sgemm(&mid, p + r * oh * ow, uw, m: oh, n: gw, k: ow)
            }
            out.withUnsafeMutableBufferPointer { o in
                guard let op = o.baseAddress else { return }
                BLAS.sgemm(op + r * gh * gw, uh, transA: true, mid, m: gh, n: gw, k: oh)
            }
        }
        return out
    }
}

/// How a `LinearDecoder` is trained: AdamW (no decoupled decay) on mini-batches of images in a
/// seeded order, a cosine learning-rate schedule, and an L2 penalty on the weights in the loss.
public struct DecoderTraining: Sendable, Codable, Equatable {
    public var epochs: Int
    /// Images per optimiser step.
    public var batchImages: Int
    /// Peak learning rate (cosine decay to 0 over all steps, no warm-up).
    public var learningRate: Double
    /// λ of the penalty (λ / 2) · ‖W‖² (the bias is not penalised).
    public var l2: Double
    /// Weight of foreground pixels in the binary loss (torch's `pos_weight`); 1 = unweighted.
    public var positiveWeight: Double
    /// Seeds the initial weights (normal, std 0.01, as DINOv2's linear head) and the image order.
    public var seed: UInt64

    public init(
        epochs: Int = 100, batchImages: Int = 8, learningRate: Double = 1e-3, l2: Double = 1e-4,
        positiveWeight: Double = 1, seed: UInt64 = 0
    ) {
        self.epochs = epochs
        self.batchImages = batchImages
        self.learningRate = learningRate
        self.l2 = l2
        self.positiveWeight = positiveWeight
        self.seed = seed
    }
}

/// A per-patch linear classifier on frozen patch tokens whose logits are bilinearly upsampled to
/// the model input and trained with a per-pixel loss — the linear protocol of DINOv2 (Oquab et
/// al. 2023, §7.4 "linear": a linear layer on patch tokens, logits upsampled to full resolution).
///
/// Two classes use one logit row and the binary cross-entropy with logits; K > 2 classes use
/// K rows and the softmax cross-entropy. The loss is the mean over the scored pixels of a batch
/// plus (λ / 2) · ‖W‖². Predictions at the original image size read the patch logits through
/// `ImageGeometry.backward(grid:)`, the same bilinear function the training upsampled with.
public struct LinearDecoder: Sendable, Codable, Equatable {
    /// Target value of pixels that are not scored (padding around a cropped image).
    public static let ignore: UInt8 = 255

    public var grid: PatchGrid
    /// C
    public var channels: Int
    /// K ≥ 2 (class 0 = background).
    public var classes: Int
    /// (R, C)
    public var weight: [Float]
    /// (R)
    public var bias: [Float]

    /// Logit rows: 1 for two classes, K otherwise.
    public var rows: Int { classes == 2 ? 1 : classes }

    /// A decoder with zero weights.
    public init(grid: PatchGrid, channels: Int, classes: Int) {
        precondition(channels > 0 && classes >= 2 && classes < Int(LinearDecoder.ignore), "LinearDecoder: \(channels) channels, \(classes) classes")
        self.grid = grid
        self.channels = channels
        self.classes = classes
        let r = classes == 2 ? 1 : classes
        weight = [Float](repeating: 0, count: r * channels)
        bias = [Float](repeating: 0, count: r)
    }

    /// (R, gh, gw) patch logits W · xᵀ + b of one image's tokens (P, C).
    public func patchLogits(_ tokens: [Float]) -> [Float] {
        precondition(tokens.count == grid.patches * channels, "patchLogits: \(tokens.count) values, not \(grid.patches)×\(channels)")
        var z = [Float](repeating: 0, count: rows * grid.patches)
        BLAS.sgemm(&z, weight, tokens, transB: true, m: rows, n: grid.patches, k: channels)
        for r in 0..<rows { for p in 0..<grid.patches { z[r * grid.patches + p] += bias[r] } }
        return z
    }

    /// (R, oh, ow) logits at the model input (bilinear upsampling of the patch logits).
    public func inputLogits(_ tokens: [Float]) -> [Float] { Upsampler(grid).up(patchLogits(tokens), rows: rows) }

    /// (R, H, W) logits at the original image size; NaN where the crop cut the image away (the
    /// model never saw those pixels).
    public func imageLogits(_ tokens: [Float], geometry: ImageGeometry) -> [Float] {
        precondition(geometry.inputHeight == grid.inputHeight && geometry.inputWidth == grid.inputWidth, "imageLogits: geometry \(geometry) vs grid \(grid)")
        return geometry.backward(grid: patchLogits(tokens), channels: rows, gridHeight: grid.gridHeight, gridWidth: grid.gridWidth, fill: .nan)
    }

    /// (H, W) predicted classes: logit > 0 (two classes) or the largest logit (ties to the lower
    /// class); background where the crop cut the image away.
    public func predict(_ tokens: [Float], geometry: ImageGeometry) -> [UInt8] {
        Self.classes(fromLogits: imageLogits(tokens, geometry: geometry), rows: rows, pixels: geometry.imageHeight * geometry.imageWidth)
    }

    /// Class per pixel from (R, n) logits or scores (R = 1: logit > 0); NaN pixels → class 0.
    static func classes(fromLogits z: [Float], rows: Int, pixels n: Int) -> [UInt8] {
        (0..<n).map { i in
            if rows == 1 { return z[i] > 0 ? 1 : 0 }
            var best = 0
            for r in 1..<rows where z[r * n + i] > z[best * n + i] { best = r }
            return z[i].isNaN ? 0 : UInt8(best)
        }
    }

    /// Loss and gradient over the images `batch` of `examples`: mean per-pixel cross-entropy over
    /// their scored pixels plus (λ / 2) · ‖W‖²; gradients (R, C) and (R).
    public func lossAndGradient(
        _ examples: [PatchExample], batch: [Int], l2: Double, positiveWeight: Double = 1
    ) -> (loss: Double, weight: [Float], bias: [Float]) {
        let g = lossAndGradients(examples, batch: batch, l2: l2, positiveWeight: positiveWeight, tokens: false)
        return (g.loss, g.weight, g.bias)
    }

    /// As `lossAndGradient`, plus, with `tokens`, d(loss)/d(tokens) of each image of `batch`
    /// ((P, C) each, in batch order): dX = dZᵀ · W, the gradient a tuned encoder backpropagates
    /// from its patch tokens.
    public func lossAndGradients(
        _ examples: [PatchExample], batch: [Int], l2: Double, positiveWeight: Double = 1, tokens: Bool
    ) -> (loss: Double, weight: [Float], bias: [Float], tokens: [[Float]]) {
        let up = Upsampler(grid)
        let pix = grid.inputHeight * grid.inputWidth, r = rows
        let scored = batch.reduce(0) { n, i in n + examples[i].target.count(where: { $0 != Self.ignore }) }
        let scale = 1 / Double(max(scored, 1))
        var loss = 0.0
        var gw = [Float](repeating: 0, count: r * channels), gb = [Float](repeating: 0, count: r)
        var dtokens: [[Float]] = []
        for i in batch {
            let ex = examples[i]
            precondition(ex.target.count == pix, "example \(i): target of \(ex.target.count) pixels for \(grid.inputHeight)×\(grid.inputWidth)")
            let u = up.up(patchLogits(ex.tokens), rows: r) // (R, oh, ow)
            var du = [Float](repeating: 0, count: r * pix)
            for p in 0..<pix {
                let t = ex.target[p]
                if t == Self.ignore { continue }
                precondition(Int(t) < classes, "example \(i): label \(t) with \(classes) classes")
                if r == 1 {
                    let z = Double(u[p]), y = t == 1
                    let sig = z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z))
                    let softplus = max(z, 0) + log1p(exp(-abs(z))) // −log(1 − σ(z))
                    loss += y ? positiveWeight * (softplus - z) : softplus
                    du[p] = Float((y ? positiveWeight * (sig - 1) : sig) * scale)
                } else {
                    var m = -Double.infinity
                    for c in 0..<r { m = max(m, Double(u[c * pix + p])) }
                    var s = 0.0
                    for c in 0..<r { s += exp(Double(u[c * pix + p]) - m) }
                    let lse = m + log(s)
                    loss += lse - Double(u[Int(t) * pix + p])
                    for c in 0..<r { du[c * pix + p] = Float((exp(Double(u[c * pix + p]) - lse) - (c == Int(t) ? 1 : 0)) * scale) }
                }
            }
            let dz = up.down(du, rows: r) // (R, P)
            BLAS.sgemm(&gw, dz, ex.tokens, m: r, n: channels, k: grid.patches, beta: 1)
            for c in 0..<r { for p in 0..<grid.patches { gb[c] += dz[c * grid.patches + p] } }
            if tokens {
                var dx = [Float](repeating: 0, count: grid.patches * channels) // (P, C)
                BLAS.sgemm(&dx, dz, transA: true, weight, m: grid.patches, n: channels, k: r)
                dtokens.append(dx)
            }
        }
        loss *= scale
        var penalty = 0.0
        for j in weight.indices {
            penalty += Double(weight[j]) * Double(weight[j])
            gw[j] += Float(l2) * weight[j]
        }
        return (loss + 0.5 * l2 * penalty, gw, gb, dtokens)
    }

    /// Train a decoder on annotated images. Deterministic for a given `options.seed` (and BLAS
    /// thread count). Returns the decoder and the mean batch loss of each epoch.
    public static func fit(
        _ examples: [PatchExample], grid: PatchGrid, channels: Int, classes: Int, options: DecoderTraining
    ) -> (decoder: LinearDecoder, epochLoss: [Double]) {
        var d = LinearDecoder(grid: grid, channels: channels, classes: classes)
        var rng = XRRandom(seed: options.seed)
        for j in d.weight.indices { d.weight[j] = 0.01 * rng.nextGaussian() }
        guard !examples.isEmpty, options.epochs > 0 else { return (d, []) }
        let w = Parameter("decoder.weight", [d.rows, channels], d.weight), b = Parameter("decoder.bias", [d.rows], d.bias)
        w.trainable = true
        b.trainable = true
        let optimizer = AdamW(weightDecay: 0)
        let batch = max(1, options.batchImages), perEpoch = (examples.count + batch - 1) / batch
        let schedule = Schedule(peak: options.learningRate, warmup: 0, total: perEpoch * options.epochs)
        var history: [Double] = []
        var step = 0
        for _ in 0..<options.epochs {
            var order = Array(examples.indices)
            rng.shuffle(&order)
            var total = 0.0
            for s in stride(from: 0, to: order.count, by: batch) {
                let (loss, gw, gb) = d.lossAndGradient(
                    examples, batch: Array(order[s..<min(s + batch, order.count)]), l2: options.l2, positiveWeight: options.positiveWeight)
                total += loss
                w.grad?.p.update(from: gw, count: gw.count)
                b.grad?.p.update(from: gb, count: gb.count)
                optimizer.update([w, b], lr: schedule.lr(step))
                step += 1
                d.weight = w.value.array
                d.bias = b.value.array
            }
            history.append(total / Double(perEpoch))
        }
        return (d, history)
    }
}
