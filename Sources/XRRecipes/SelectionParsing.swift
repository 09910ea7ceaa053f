// The `selection` key of a recipe: an active-labelling simulation run with the study.
import Foundation
import XRProbe
import XRTensor

extension RecipeLoader {
    /// `selection: {strategies, start, rounds, task?}`; errors name the node's line and column.
    static func parseSelection(_ v: YNode) throws -> Recipe.SelectionSettings? {
        let m = try v.mapping(allowed: ["strategies", "start", "rounds", "task"])
        guard let sn = m["strategies"] else { throw v.error("selection needs strategies", hint: "e.g. strategies: [random, typiclust, kcenter]") }
        var strategies: [SelectionStrategy] = []
        for t in try sn.listOrScalar() {
            do {
                let st = try Suggest.strategy(try t.string(), field: "selection.strategies"); if !strategies.contains(st) { strategies.append(st) }
            } catch let e as XRError { throw t.error(e.message, hint: e.hint) }
        }
        guard let startNode = m["start"] else { throw v.error("selection needs start (labelled rows before the first round)") }
        let start = try startNode.int()
        if start < 2 { throw startNode.error("selection.start must be at least 2 labelled rows, got \(start)") }
        guard let rn = m["rounds"] else { throw v.error("selection needs rounds (labelled rows after each round)", hint: "e.g. rounds: [20, 40, 80]") }
        let items = try rn.listOrScalar()
        if items.isEmpty || items.count > 100 { throw rn.error("selection.rounds needs 1…100 label counts, got \(items.count)") }
        var rounds: [Int] = [], last = start
        for n in items {
            let r = try n.int()
            if r <= last { throw n.error("selection.rounds must increase from start (\(start)): \(r) follows \(last)") }
            if r > Limits.Recipe.shotValue { throw n.error("selection.rounds value \(r) is over the limit of \(Limits.Recipe.shotValue)") }
            rounds.append(r); last = r
        }
        return Recipe.SelectionSettings(strategies: strategies, start: start, rounds: rounds, task: try m["task"]?.string())
    }
}
