// The trainable ViT's parts: a block's parameters (named by `PreNormBlockKeys`), bottleneck
// adapters, per-block activation caches, and the row-parallel helpers forward and backward share.
// B batch, T tokens, C width, M MLP width.
import Foundation
import XRTensor
import XRKernels
import XRModels

/// One pre-norm block's parameters, under the names `PreNormBlockKeys` gives them.
final class BlockParams {
    let norm1w, norm1b, norm2w, norm2b: Parameter
    let qkv, proj, fc1, fc2: Linear
    let ls1, ls2: Parameter?
    var adapter: Adapter?
    /// `get` reads a parameter by canonical name. A config without a qkv bias gets a zero one.
    init(_ i: Int, _ get: (String) throws -> Parameter, c: TrainConfig) rethrows {
        let k = PreNormBlockKeys(block: i)
        func layer(_ weight: String) -> String { String(weight.dropLast(".weight".count)) }
        norm1w = try get(k.norm1Weight); norm1b = try get(k.norm1Bias)
        norm2w = try get(k.norm2Weight); norm2b = try get(k.norm2Bias)
        let qkvBias = c.encoder.qkvBias ? try get(k.qkvBias) : Parameter(k.qkvBias, [3 * c.dim])
        qkv = Linear(layer(k.qkvWeight), weight: try get(k.qkvWeight), bias: qkvBias)
        proj = Linear(layer(k.projWeight), weight: try get(k.projWeight), bias: try get(k.projBias))
        fc1 = Linear(layer(k.fc1Weight), weight: try get(k.fc1Weight), bias: try get(k.fc1Bias))
        fc2 = Linear(layer(k.fc2Weight), weight: try get(k.fc2Weight), bias: try get(k.fc2Bias))
        ls1 = c.layerScale ? try get(k.ls1) : nil
        ls2 = c.layerScale ? try get(k.ls2) : nil
    }
    var linears: [Linear] { [qkv, proj, fc1, fc2] }
    var parameters: [Parameter] {
        [norm1w, norm1b, qkv.weight, qkv.bias!, proj.weight, proj.bias!] + (ls1.map { [$0] } ?? [])
            + [norm2w, norm2b, fc1.weight, fc1.bias!, fc2.weight, fc2.bias!] + (ls2.map { [$0] } ?? [])
    }
}

/// A bottleneck adapter: up(GELU(down(x))), `down` (r, C), `up` (C, r).
final class Adapter {
    let down, up: Linear
    let parallel: Bool
    let scale: Float
    init(prefix: String, dim: Int, width C: Int, parallel: Bool, scale: Double, rng: inout XRRandom) {
        let bound = 1 / Float(C).squareRoot()
        let dw = Parameter(prefix + "down.weight", [dim, C], (0..<(dim * C)).map { _ in (Float(rng.nextDouble()) * 2 - 1) * bound })
        down = Linear(prefix + "down", weight: dw, bias: Parameter(prefix + "down.bias", [dim]))
        up = Linear(prefix + "up", weight: Parameter(prefix + "up.weight", [C, dim]), bias: Parameter(prefix + "up.bias", [C]))
        self.parallel = parallel
        self.scale = Float(scale)
        for p in [down.weight, down.bias!, up.weight, up.bias!] { p.trainable = true }
    }
}

/// Per-block activations for one batch size.
final class BlockCache {
    let xIn, h1, qkv, attn, y1, xMid, h2, y2: Buffer
    let mean1, rstd1, mean2, rstd2: Buffer
    let probs, u, a: Buffer
    var lora: [String: LoRAActivations] = [:]
    /// Adapter input (sequential: the MLP output before the adapter), pre-activation, activation.
    var adIn: Buffer? = nil, adPre: Buffer? = nil, adAct: Buffer? = nil
    /// An EVA-02 block's further activations (`u` then holds the SwiGLU input (R, 2M), `a` its output).
    let eva: EVAActivations?
    init(rows R: Int, c: TrainConfig, batch B: Int) {
        let C = c.dim, M = c.mlpHidden, T = c.tokens, eva = c.encoder.blockKind == .eva02
        xIn = Buffer(R * C); h1 = Buffer(R * C); qkv = Buffer(R * 3 * C); attn = Buffer(R * C); y1 = Buffer(R * C)
        xMid = Buffer(R * C); h2 = Buffer(R * C); y2 = Buffer(R * C)
        mean1 = Buffer(R); rstd1 = Buffer(R); mean2 = Buffer(R); rstd2 = Buffer(R)
        probs = Buffer(B * c.heads * T * T); u = Buffer(R * (eva ? 2 * M : M)); a = Buffer(R * M)
        self.eva = eva ? EVAActivations(rows: R, c: c) : nil
    }
}

/// Row-parallel LayerNorm forward (saving mean / rstd).
func parallelLayerNorm(
    _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ w: Parameter, _ b: Parameter,
    rows R: Int, cols C: Int, eps: Float, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>
) {
    Parallel.ranges(R, minChunk: 16) { r in
        let lo = r.lowerBound
        layerNormForward(out + lo * C, inp + lo * C, w.value.p, b.value.p, rows: r.count, cols: C, eps: eps, mean: mean + lo, rstd: rstd + lo)
    }
}

/// Row-parallel LayerNorm backward: dx rows split across workers, parameter gradients by columns.
func parallelLayerNormBackward(
    dx: UnsafeMutablePointer<Float>?, accumulate: Bool, dy: UnsafePointer<Float>, x: UnsafePointer<Float>,
    _ w: Parameter, _ b: Parameter, mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>, rows R: Int, cols C: Int
) {
    if let dx {
        Parallel.ranges(R, minChunk: 16) { r in
            let lo = r.lowerBound
            layerNormBackward(
                dx: dx + lo * C, accumulate: accumulate, dy: dy + lo * C, x: x + lo * C, weight: w.value.p,
                mean: mean + lo, rstd: rstd + lo, dweight: nil, dbias: nil, rows: r.count, cols: C)
        }
    }
    if w.grad != nil || b.grad != nil {
        Parallel.ranges(C, minChunk: 16) { cr in
            layerNormParameterGradients(dweight: w.grad?.p, dbias: b.grad?.p, dy: dy, x: x, mean: mean, rstd: rstd, rows: R, cols: C, columns: cr)
        }
    }
}

/// Row-parallel elementwise work over (R, C) rows.
func parallelRows(_ R: Int, _ body: (Range<Int>) -> Void) { Parallel.ranges(R, minChunk: 16, body) }
