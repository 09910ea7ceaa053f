// The segmentation keys of a recipe's `data`: `mask_column` (required for `task: segmentation`,
// an error on any other task) and `mask_classes`. Errors name the key with its line:column.
import Foundation
import XRData
import XRHeads
import XRTensor

extension RecipeLoader {
    /// `data.mask_column` and `data.mask_classes`: read for a segmentation task, errors for any
    /// other; a segmentation task takes no labels.
    static func parseMaskKeys(_ d: [String: YNode], node dn: YNode, into data: inout Recipe.DataSpec) {
        let ctx = dn.ctx
        let isSegmentation = data.task == .segmentation
        for key in ["mask_column", "mask_classes"] {
            if !isSegmentation, let n = d[key], !n.isNull {
                ctx.record(n.error("\(key) applies to segmentation tasks only", hint: "set data.task: segmentation, or remove \(key)"))
            }
        }
        guard isSegmentation else { return }
        if let n = d["mask_column"], !n.isNull { data.mask_column = ctx.attempt { try n.string() } }
        if data.mask_column == nil, d["mask_column"]?.isNull ?? true {
            ctx.record(
                dn.error(
                    "a segmentation task needs mask_column: the manifest column of mask PNG paths",
                    hint: "e.g. mask_column: mask (paths relative to the manifest's folder; empty = not annotated)"))
        }
        // (`labels: []`, as resolved recipes write it, says nothing.)
        for key in ["labels", "label_column", "label_columns"] {
            if let n = d[key], !n.isNull, key != "labels" || (try? n.listOrScalar())?.isEmpty == false {
                ctx.record(n.error("\(key) does not apply to a segmentation task", hint: "the masks are the labels: give mask_column (and mask_classes)"))
            }
        }
        if let n = d["mask_classes"], !n.isNull {
            data.mask_classes = ctx.attempt {
                let values = try n.list().map { v -> Int in
                    let x = try v.int()
                    if x < 0 || x > 65535 { throw v.error("a mask value is between 0 and 65535 (8- or 16-bit PNG), got \(x)") }
                    return x
                }
                if values.count < 2 || values.count > 255 {
                    throw n.error(
                        "mask_classes lists the pixel value of each class, background first: 2 to 255 values, got \(values.count)",
                        hint: "e.g. mask_classes: [0, 1, 2]; leave it out for 0 / non-zero masks")
                }
                if Set(values).count != values.count { throw n.error("a mask value is listed twice") }
                return values
            }
        }
    }
}

extension PatchGrid {
    /// The patch grid of an image whose model input is `g`, checked against the grid of the
    /// images before it (`agreeingWith`): the input must be a whole number of patches and the
    /// same for every image of a `task` (segmentation, detection) study of the recipe at `recipe`.
    static func of(_ g: ImageGeometry, patch: Int, image: String, agreeingWith previous: PatchGrid?, recipe: String, task: String) throws -> PatchGrid {
        let gh = g.inputHeight / patch, gw = g.inputWidth / patch
        guard gh > 0, gw > 0, gh * patch == g.inputHeight, gw * patch == g.inputWidth else {
            throw XRError(
                "the model input of '\(image)' is \(g.inputWidth)×\(g.inputHeight), not a multiple of the \(patch)-pixel patch",
                file: recipe, field: "model.preprocessing", hint: "give model.preprocessing a crop that is a multiple of the patch size")
        }
        let here = PatchGrid(gridHeight: gh, gridWidth: gw, inputHeight: g.inputHeight, inputWidth: g.inputWidth)
        if let previous, previous != here {
            throw XRError(
                "'\(image)' gives a \(gw)×\(gh) patch grid, other images \(previous.gridWidth)×\(previous.gridHeight)", file: recipe,
                field: "model.preprocessing", hint: "a \(task) task needs a fixed model input: give model.preprocessing a crop")
        }
        return here
    }
}
