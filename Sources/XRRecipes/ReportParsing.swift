// The `report:` section of report recipes (`data.task: report`), every default filled in; each
// value checked against its range with the key's line:column in the error.
import Foundation
import XRText
import XRTrain

extension RecipeLoader {
    /// The `report:` section, every default filled in; nil when it is not a mapping of known keys.
    static func parseReport(_ rn: YNode) -> Recipe.ReportSettings? {
        let ctx = rn.ctx
        guard let m = ctx.attempt({ try rn.mapping(allowed: Recipe.ReportSettings.keys) }) else { return nil }
        var r = Recipe.ReportSettings()
        func int(_ k: String, min lo: Int, _ set: (Int) -> Void) {
            guard let v = m[k] else { return }
            if let x = ctx.attempt({ () -> Int in
                let x = try v.int()
                if x < lo { throw v.error("\(k) must be at least \(lo), got \(x)") }
                return x
            }) {
                set(x)
            }
        }
        func double(_ k: String, _ range: ClosedRange<Double>, _ set: (Double) -> Void) {
            guard let v = m[k] else { return }
            if let x = ctx.attempt({ () -> Double in
                let x = try v.double()
                if !range.contains(x) { throw v.error("\(k) must be between \(range.lowerBound) and \(range.upperBound), got \(x)") }
                return x
            }) {
                set(x)
            }
        }
        if let v = m["target"] {
            r.target =
                ctx.attempt {
                    let t = try v.string()
                    guard ReportTarget(rawValue: t) != nil else { throw v.error("target must be findings, impression or both, got '\(t)'") }
                    return t
                } ?? r.target
        }
        if let v = m["visual_input"] {
            r.visual_input =
                ctx.attempt { () throws -> String in
                    let t = try v.string()
                    guard DecoderConfig.visualInputs.contains(t) else {
                        throw v.error("visual_input must be \(DecoderConfig.visualInputs.joined(separator: " or ")), got '\(t)'")
                    }
                    return t
                } ?? r.visual_input
        }
        if let v = m["tokenizer"], !v.isNull { r.tokenizer = ctx.attempt { try v.string() } }
        if let v = m["init_from"], !v.isNull { r.init_from = ctx.attempt { try v.string() } }
        if let v = m["meteor_data"], !v.isNull { r.meteor_data = ctx.attempt { try v.string() } }
        if let v = m["keep_models"] { r.keep_models = ctx.attempt { try v.bool() } ?? false }
        int("vocab_size", min: 259) { r.vocab_size = $0 }
        int("dim", min: 8) { r.dim = $0 }
        int("layers", min: 1) { r.layers = $0 }
        int("heads", min: 1) { r.heads = $0 }
        int("max_tokens", min: 4) { r.max_tokens = $0 }
        int("pool", min: 1) { r.pool = $0 }
        int("epochs", min: 1) { r.epochs = $0 }
        int("batch_size", min: 1) { r.batch_size = $0 }
        int("beams", min: 1) { r.beams = $0 }
        int("max_new_tokens", min: 1) { r.max_new_tokens = $0 }
        int("no_repeat_ngram", min: 0) { r.no_repeat_ngram = $0 }
        double("lr", 1e-9...1) { r.lr = $0 }
        double("weight_decay", 0...1) { r.weight_decay = $0 }
        double("warmup", 0...1) { r.warmup = $0 }
        double("label_smoothing", 0...0.5) { r.label_smoothing = $0 }
        double("clip", 1e-9...1e9) { r.clip = $0 }
        double("length_penalty", 0...10) { r.length_penalty = $0 }
        if r.dim % r.heads != 0, let v = m["heads"] ?? m["dim"] { ctx.record(v.error("dim \(r.dim) is not divisible by heads \(r.heads)")) }
        return r
    }
}
