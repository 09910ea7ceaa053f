// Losses, AdamW, the learning-rate schedule and gradient clipping, with PyTorch's semantics.
import Foundation
import XRTensor
import XRKernels

public enum Loss {
    /// Mean softmax cross-entropy over the batch with label smoothing ε (torch's
    /// `F.cross_entropy(label_smoothing=ε)`: target (1 − ε)·onehot + ε/K), and dlogits.
    public static func crossEntropy(logits: [Float], labels: [Int], classes K: Int, smoothing eps: Double = 0) -> (loss: Double, dlogits: [Float]) {
        let B = labels.count
        var loss = 0.0
        var d = [Float](repeating: 0, count: B * K)
        for b in 0..<B {
            let row = (0..<K).map { Double(logits[b * K + $0]) }
            let m = row.max() ?? 0
            let lse = m + log(row.reduce(0) { $0 + exp($1 - m) })
            for k in 0..<K {
                let logp = row[k] - lse
                let target = (k == labels[b] ? 1 - eps : 0) + eps / Double(K)
                loss -= target * logp
                d[b * K + k] = Float((exp(logp) - target) / Double(B))
            }
        }
        return (loss / Double(B), d)
    }

    /// Mean binary cross-entropy with logits over all (B, L) entries (torch's
    /// `BCEWithLogitsLoss`), targets in [0, 1] (label smoothing: y(1 − ε) + ε/2), and dlogits.
    public static func binaryCrossEntropy(logits: [Float], targets: [Float], smoothing eps: Double = 0) -> (loss: Double, dlogits: [Float]) {
        let n = Double(logits.count)
        var loss = 0.0
        var d = [Float](repeating: 0, count: logits.count)
        for i in logits.indices {
            let z = Double(logits[i]), y = Double(targets[i]) * (1 - eps) + eps / 2
            loss += max(z, 0) - z * y + log1p(exp(-abs(z)))
            d[i] = Float((1 / (1 + exp(-z)) - y) / n)
        }
        return (loss / n, d)
    }
}

/// Linear warmup then cosine decay to `minLR`, per optimiser step (0-based).
public struct Schedule: Sendable, Codable, Equatable {
    public var peak: Double
    public var warmup: Int
    public var total: Int
    public var minLR: Double = 0
    public init(peak: Double, warmup: Int, total: Int, minLR: Double = 0) {
        self.peak = peak; self.warmup = warmup; self.total = total; self.minLR = minLR
    }
    public func lr(_ step: Int) -> Double {
        if step < warmup { return peak * Double(step + 1) / Double(warmup) }
        let t = Double(step - warmup) / Double(max(1, total - warmup))
        return minLR + (peak - minLR) * 0.5 * (1 + cos(Double.pi * min(t, 1)))
    }
}

/// torch.optim.AdamW: p ← p·(1 − lr·wd); m, v moments; p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε).
/// Weight decay only where `Parameter.decays`. State is kept per parameter name.
public final class AdamW: @unchecked Sendable {
    public var beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay: Double
    public private(set) var step = 0
    var m: [String: Buffer] = [:], v: [String: Buffer] = [:]
    /// Per-parameter learning-rate multipliers (layer-wise decay); 1 when absent.
    public var lrScale: [String: Double] = [:]

    public init(weightDecay: Double = 0.01) { self.weightDecay = weightDecay }

    public func update(_ params: [Parameter], lr: Double) {
        step += 1
        let bc1 = 1 - pow(beta1, Double(step)), bc2 = 1 - pow(beta2, Double(step))
        for p in params {
            guard let g = p.grad else { continue }
            let plr = lr * (lrScale[p.name] ?? 1)
            let mm =
                m[p.name]
                ?? {
                    let b = Buffer(p.count); m[p.name] = b; return b
                }()
            let vv =
                v[p.name]
                ?? {
                    let b = Buffer(p.count); v[p.name] = b; return b
                }()
            let wd = p.decays ? Float(1 - plr * weightDecay) : 1
            let b1 = Float(beta1), b2 = Float(beta2), stepSize = Float(plr / bc1), sqrtBc2 = Float(bc2.squareRoot()), e = Float(eps)
            let w = SendablePointer(p.value.p), gp = SendablePointer(g.p), mp = SendablePointer(mm.p), vp = SendablePointer(vv.p)
            Parallel.ranges(p.count, minChunk: 65_536) { r in
                // Eight lanes at a time with the scalar tail's operations in the same order (the
                // same roundings: no fused multiply-adds), so results do not depend on alignment.
                var i = r.lowerBound
                while i + 8 <= r.upperBound {
                    let g = UnsafeRawPointer(gp.p + i).loadUnaligned(as: SIMD8<Float>.self)
                    var x = UnsafeRawPointer(w.p + i).loadUnaligned(as: SIMD8<Float>.self)
                    var m1 = UnsafeRawPointer(mp.p + i).loadUnaligned(as: SIMD8<Float>.self)
                    var v1 = UnsafeRawPointer(vp.p + i).loadUnaligned(as: SIMD8<Float>.self)
                    x *= wd
                    m1 = b1 * m1 + (1 - b1) * g
                    v1 = b2 * v1 + (1 - b2) * g * g
                    x -= stepSize * m1 / (v1.squareRoot() / sqrtBc2 + e)
                    UnsafeMutableRawPointer(w.p + i).storeBytes(of: x, as: SIMD8<Float>.self)
                    UnsafeMutableRawPointer(mp.p + i).storeBytes(of: m1, as: SIMD8<Float>.self)
                    UnsafeMutableRawPointer(vp.p + i).storeBytes(of: v1, as: SIMD8<Float>.self)
                    i += 8
                }
                while i < r.upperBound {
                    w.p[i] *= wd
                    mp.p[i] = b1 * mp.p[i] + (1 - b1) * gp.p[i]
                    vp.p[i] = b2 * vp.p[i] + (1 - b2) * gp.p[i] * gp.p[i]
                    w.p[i] -= stepSize * mp.p[i] / (vp.p[i].squareRoot() / sqrtBc2 + e)
                    i += 1
                }
            }
        }
    }

    /// State for checkpoints: step, and m / v per parameter name.
    public var state: (step: Int, m: [String: [Float]], v: [String: [Float]]) { (step, m.mapValues(\.array), v.mapValues(\.array)) }
    public func restore(step: Int, m: [String: [Float]], v: [String: [Float]]) {
        self.step = step
        self.m = m.mapValues { Buffer($0) }
        self.v = v.mapValues { Buffer($0) }
    }
}

/// torch.nn.utils.clip_grad_norm_: scale all gradients by max/(‖g‖ + 1e-6) when ‖g‖ > max.
/// Returns the norm before clipping.
@discardableResult
public func clipGradNorm(_ params: [Parameter], maxNorm: Double) -> Double {
    // Squares summed in double precision, four lanes at a time (a long scalar double reduction
    // does not vectorise).
    var s = 0.0
    for p in params {
        guard let g = p.grad else { continue }
        var acc = SIMD4<Double>(), i = 0
        while i + 4 <= p.count {
            let v = SIMD4<Double>(UnsafeRawPointer(g.p + i).loadUnaligned(as: SIMD4<Float>.self))
            acc += v * v
            i += 4
        }
        s += acc.sum()
        while i < p.count { s += Double(g.p[i]) * Double(g.p[i]); i += 1 }
    }
    let norm = s.squareRoot()
    let coef = maxNorm / (norm + 1e-6)
    if coef < 1 {
        let c = Float(coef)
        for p in params { if let g = p.grad { for i in 0..<p.count { g.p[i] *= c } } }
    }
    return norm
}

/// One optimiser step on a batch: zero gradients, forward, softmax cross-entropy (label
/// smoothing), backward, clip to `clip` (nil = no clipping), AdamW at `lr`. Returns the loss.
@discardableResult
public func trainStep(
    _ model: TrainableViT, _ opt: AdamW, pixels: [Float], labels: [Int], lr: Double,
    smoothing: Double = 0, clip: Double? = nil
) throws -> Double {
    model.zeroGrad()
    model.training = true
    defer { model.training = false }
    let logits = try model.forward(pixels: pixels, batch: labels.count)
    let (loss, d) = Loss.crossEntropy(logits: logits, labels: labels, classes: model.config.classes, smoothing: smoothing)
    guard loss.isFinite else {
        throw XRError(
            "the loss is \(loss) at optimiser step \(opt.step + 1)", field: "lr",
            hint: "lower the learning rate (or raise warmup); parameters were not updated by this step")
    }
    model.backward(dlogits: d)
    let params = model.trainableParameters
    let norm = clipGradNorm(params, maxNorm: clip ?? .infinity)
    guard norm.isFinite else {
        throw XRError(
            "the gradient norm is \(norm) at optimiser step \(opt.step + 1)", field: "lr",
            hint: "lower the learning rate; parameters were not updated by this step")
    }
    opt.update(params, lr: lr)
    return loss
}
