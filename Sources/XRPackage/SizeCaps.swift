// How large each package entry may be, from what its manifest declares: a head can hold no more
// than its classes, training rows and (for tuned heads) the encoder's parameters; merged weights
// no more than the encoder. An entry declaring more is refused from its tar header, so a
// decompression bomb is never decompressed.
import Foundation
import XRTensor
import XRModels
import XRRecipes

/// Per-entry size caps derived from a package manifest.
struct PackageSizeCaps {
    /// Room for safetensors headers, model cards and rounding.
    static let slack: Int64 = 16 << 20
    /// Largest metadata entry (model card and the like).
    static let metadata = Int64(Limits.packageInMemoryEntryBytes)

    let head: Int64
    let merged: Int64

    init(_ m: PackageManifest) {
        // 8 bytes per encoder parameter: twice the whole encoder in f32, room for any tuned subset
        // with its extra tensors (LoRA factors, adapters, heads).
        let encoder = m.base_encoder.config.map { Self.mul(Self.parameters($0), 8) } ?? 0
        var head: Int64 = 0
        for h in m.heads {
            let rows = Self.add(Self.add(Int64(max(0, h.n_train)), Int64(max(0, h.n_validation))), Int64(h.classes.count + 1))
            let probe = Self.mul(Self.mul(rows, Int64(max(0, m.base_encoder.dim)) + 2), 4)
            let tuned = Recipe.MethodName(rawValue: h.kind)?.isTuning == true ? encoder : 0
            // A retrieval projection: at most D directions of D values.
            let dim = Int64(max(0, m.base_encoder.dim))
            let projection = h.kind == "linear_projection" ? Self.mul(Self.mul(dim, dim + 2), 4) : 0
            head = Self.add(head, Self.add(Self.add(probe, tuned), projection))
        }
        self.head = min(Self.add(head, Self.slack), Limits.packageEntryBytes)
        merged = min(Self.add(encoder, Self.slack), Limits.packageEntryBytes)
    }

    /// The largest size `name` may declare.
    func cap(_ name: String) -> Int64 {
        if name == "weights/head.safetensors" { return head }
        if name.hasPrefix("weights/merged.") && name.hasSuffix(".safetensors") { return merged }
        return Self.metadata
    }

    /// Parameters of a ViT with this configuration (patch embedding, position embeddings,
    /// registers, blocks, final norm), rounded up generously per block.
    static func parameters(_ c: ViTConfig) -> Int64 {
        let d = Int64(max(0, c.dim)), mlp = Int64(max(0, c.mlpHidden)), p = Int64(max(0, c.patchSize))
        let grid = Int64(max(0, c.imageSize / max(1, c.patchSize)))
        let block = add(add(mul(mul(d, d), 4), mul(mul(d, mlp), 2)), add(mul(d, 16), mul(mlp, 2)))
        let embed = add(mul(mul(mul(p, p), 3), d), mul(add(mul(grid, grid), Int64(max(0, c.numRegisters)) + 8), d))
        return add(mul(block, Int64(max(0, c.depth))), embed)
    }

    /// Saturating arithmetic: sizes come from a file and must not trap.
    static func mul(_ a: Int64, _ b: Int64) -> Int64 { let (r, o) = a.multipliedReportingOverflow(by: b); return o ? .max : r }
    static func add(_ a: Int64, _ b: Int64) -> Int64 { let (r, o) = a.addingReportingOverflow(b); return o ? .max : r }
}
