// Splitting a study over processes (`xrlab run --shard I/N`, one Slurm array task each) and
// putting it back together (`xrlab merge`). Every kind of cell — probes, tuning cells, report
// sweeps — runs through `CellRunner`, which picks its shard's cells here, so a shard, a resumed
// run and a merge all see the same plan.
//
// A shard is a stable partition of the whole plan (never of what is left): the same recipe and N
// put each cell in the same shard, whichever cells are finished, so a resubmitted shard computes
// exactly its own missing cells and no two shards ever compute the same cell.
import Foundation
import XRTensor
import XRPipeline

/// Shard `index` of `count` (1-based), written `I/N`.
public struct Shard: Sendable, Equatable, Codable, CustomStringConvertible {
    public var index: Int
    public var count: Int

    public init(index: Int, count: Int) throws {
        guard count >= 1, (1...count).contains(index) else {
            throw XRError("shard \(index)/\(count) is out of range", field: "--shard", hint: "give I/N with 1 ≤ I ≤ N, e.g. --shard 2/4")
        }
        self.index = index
        self.count = count
    }

    /// Parse `I/N`.
    public init(parsing text: String) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, let i = parts[0], let n = parts[1] else {
            throw XRError("cannot read shard '\(text)'", field: "--shard", hint: "give I/N with 1 ≤ I ≤ N, e.g. --shard 2/4")
        }
        try self.init(index: i, count: n)
    }

    public var description: String { "\(index)/\(count)" }
}

/// Partitioning a plan into shards, and whether a cell is finished.
public enum CellWork {
    /// Split `cells` into `count` shards balanced by `cost` (seconds): cells are placed from the
    /// most to the least expensive (ties by id), each on the shard with the least work so far
    /// (ties: the lowest index), so expensive tuning cells spread over the shards first. The
    /// result depends only on the cells and their costs; each shard keeps the plan's order.
    public static func partition(_ cells: [Cell], count: Int, cost: (Cell) -> Double) -> [[Cell]] {
        precondition(count >= 1, "partition: count must be ≥ 1")
        let costs = cells.map { max(cost($0), 0) }
        let order = cells.indices.sorted { costs[$0] != costs[$1] ? costs[$0] > costs[$1] : cells[$0].id < cells[$1].id }
        var load = [Double](repeating: 0, count: count)
        var shardOf = [Int](repeating: 0, count: cells.count)
        for i in order {
            var best = 0
            for s in 1..<count where load[s] < load[best] { best = s }
            shardOf[i] = best
            load[best] += costs[i]
        }
        var out = [[Cell]](repeating: [], count: count)
        for (i, c) in cells.enumerated() { out[shardOf[i]].append(c) }
        return out
    }

    /// The cells of `shard` among a recipe's whole plan, balanced by the planner's estimates.
    public static func cells(of shard: Shard, all: [Cell], recipe r: LoadedRecipe) throws -> [Cell] {
        if shard.count == 1 { return all }
        let costs = CellCosts(r, rows: try StudyLoader.rows(r))
        return partition(all, count: shard.count, cost: costs.seconds)[shard.index - 1]
    }

    /// Whether a cell's result file exists.
    public static func isFinished(_ cell: Cell, cellsDirectory: URL) -> Bool {
        FileManager.default.fileExists(atPath: CellRunner.file(cell, in: cellsDirectory).path)
    }

    /// Whether this call writes the run's outputs (results, summary, plots, report): a shard
    /// leaves them to `xrlab merge`, so shards never write the same files.
    public static func writesOutputs(_ options: RunOptions) -> Bool { options.shard == nil }
}

/// The encoding stage on its own (`xrlab run --stage encode [--shard I/N]`): fills the feature
/// cache with the features of every `N`-th image (rows I, I+N, …) of the manifest, so an array
/// of encoding tasks covers the study before its cells run. The cache is safe with many writers:
/// each entry is written under a temporary name and renamed into place, and an entry that does
/// not read completely is a miss.
public enum EncodeStage {
    /// What the stage did.
    public struct Summary: Sendable {
        public var images: Int
        public var encoded: Int
        public var cached: Int
    }

    public static func run(_ r: LoadedRecipe, shard: Shard?, quiet: Bool) throws -> Summary {
        guard r.recipe.model != nil, r.recipe.features == nil, !r.recipe.isReport else { return Summary(images: 0, encoded: 0, cached: 0) }
        let source = EncoderFeatureSource()
        let images = try EncoderFeatureSource.images(r, rows: try StudyLoader.rows(r))
        let mine = shard.map { s in images.enumerated().filter { $0.offset % s.count == s.index - 1 }.map(\.element) } ?? images
        guard !mine.isEmpty else { return Summary(images: 0, encoded: 0, cached: 0) }
        let encoder = try source.encoder(r)
        let res = try encoder.embed(mine, options: source.options(r, quiet: quiet))
        return Summary(images: mine.count, encoded: res.encoded, cached: res.cacheHits)
    }
}
