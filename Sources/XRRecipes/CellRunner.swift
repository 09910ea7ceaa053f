// The one loop every kind of cell runs through: probe cells, tuning cells and report cells are
// per-cell closures on `CellRunner`, which owns what they share — this process's cells (its
// shard's, without the finished ones, so an interrupted run resumes), progress, writing each result
// atomically to `cells/<id>.json`, and gathering the finished results in plan order. A new kind of
// cell adds a closure, not a loop.
import Foundation
import XRTensor
import XRKernels

/// Runs cells through a per-cell closure and writes each result atomically to
/// `cells/<id>.json`; a cell's file exists exactly when the cell is finished.
public struct CellRunner: Sendable {
    /// Where the cells' results are written.
    public let cellsDirectory: URL
    /// No progress output.
    public let quiet: Bool

    public init(cellsDirectory: URL, quiet: Bool) {
        self.cellsDirectory = cellsDirectory
        self.quiet = quiet
    }

    /// The result file of a cell.
    public func file(_ cell: Cell) -> URL { Self.file(cell, in: cellsDirectory) }

    /// The result file of a cell in a run's `cells/` directory: `<id>.json`.
    public static func file(_ cell: Cell, in cellsDirectory: URL) -> URL { cellsDirectory.appendingPathComponent(cell.id + ".json") }

    /// `cells` without the finished ones, in order, at most `limit` of them: what a resumed run computes.
    public func unfinished(_ cells: [Cell], limit: Int? = nil) -> [Cell] {
        let open = cells.filter { !CellWork.isFinished($0, cellsDirectory: cellsDirectory) }
        return Array(open.prefix(limit ?? open.count))
    }

    /// The cells this call computes: the shard's (all, without one) that are not finished, at
    /// most `maxNewCells`; none when merging.
    public func todo(_ plan: [Cell], recipe r: LoadedRecipe, options: RunOptions) throws -> [Cell] {
        if options.mergeOnly { return [] }
        let mine = try options.shard.map { try CellWork.cells(of: $0, all: plan, recipe: r) } ?? plan
        return unfinished(mine, limit: options.maxNewCells)
    }

    /// Compute `cells` one after another on this thread (a cell may use every core) and write
    /// each result as it is finished, with progress (done / total, rate, time left) labelled `label`.
    ///
    /// - Parameters:
    ///   - written: called after a cell's result file is in place (e.g. to drop the cell's checkpoint).
    ///   - body: computes one cell; nil writes nothing for it. An error stops the run and is
    ///     rethrown: the failing cell leaves no file, finished cells stay.
    public func run(
        _ cells: [Cell], label: String = "run", written: ((Cell, CellResult) -> Void)? = nil,
        _ body: (Cell) throws -> CellResult?
    ) throws {
        try run(cells, producing: CellResult.self, label: label, written: written, body)
    }

    /// `run` for cells whose result is another type than `CellResult` (e.g. an active-labelling
    /// trajectory): the same resume, progress and atomic writes.
    public func run<Result: Encodable>(
        _ cells: [Cell], producing: Result.Type, label: String = "run", written: ((Cell, Result) -> Void)? = nil,
        _ body: (Cell) throws -> Result?
    ) throws {
        let progress = progress(label, cells)
        let encoder = Self.encoder()
        for cell in cells {
            if let result = try body(cell) {
                try write(result, of: cell, encoder)
                written?(cell, result)
            }
            progress.advance()
        }
        progress.finish()
    }

    /// Compute `cells` `workers` at a time (worker w takes cells w, w + workers, …; each worker
    /// thread flushes denormals to zero) and write each result as it is finished, with progress.
    /// An error stops every worker after its current cell and is rethrown: the failing cell leaves
    /// no file, finished cells stay.
    public func run(_ cells: [Cell], label: String = "run", workers: Int, _ body: @Sendable (Cell) throws -> CellResult?) throws {
        let progress = progress(label, cells)
        let failure = ErrorBox()
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            Parallel.flushDenormals()
            let encoder = Self.encoder()
            var i = w
            while i < cells.count, !failure.isSet {
                do {
                    if let result = try body(cells[i]) { try write(result, of: cells[i], encoder) }
                } catch { failure.set(error) }
                progress.advance()
                i += workers
            }
        }
        if let e = failure.error { throw e }
        progress.finish()
    }

    private func progress(_ label: String, _ cells: [Cell]) -> ProgressReporter {
        ProgressReporter(label, total: cells.count, unit: "cells", quiet: quiet || cells.isEmpty)
    }

    /// A cell's result, written atomically (temporary file, then rename).
    private func write<Result: Encodable>(_ result: Result, of cell: Cell, _ encoder: JSONEncoder) throws {
        try AtomicFile.write(try encoder.encode(result), to: file(cell))
    }

    /// Every finished cell of the plan (this call's, earlier runs' and other shards'), in plan
    /// order, so outputs do not depend on which process computed what; an unreadable cell file is
    /// an error naming it.
    public func results(_ plan: [Cell]) throws -> [CellResult] { try results(plan, as: CellResult.self) }

    /// Every finished cell of the plan decoded as `type` (cells of other kinds than probe,
    /// tuning and report cells keep their own result type), in plan order.
    public func results<Result: Decodable>(_ plan: [Cell], as type: Result.Type) throws -> [Result] {
        var results: [Result] = []
        let decoder = JSONDecoder()
        for cell in plan {
            let u = file(cell)
            guard let d = try? Data(contentsOf: u) else { continue }
            do { results.append(try decoder.decode(type, from: d)) } catch {
                throw XRError("unreadable cell result", file: u.path, hint: "delete it to recompute that cell")
            }
        }
        return results
    }

    /// Gather the plan's finished cells, write the run's outputs with `write` (results, whether
    /// every cell is finished) unless this call is a shard (`xrlab merge` writes them), and say
    /// what the run did.
    func summary(
        _ plan: [Cell], computed: Int, directory dir: URL, options: RunOptions,
        write: ([CellResult], Bool) throws -> Outputs.Written
    ) throws -> RunSummary {
        let results = try results(plan)
        let complete = results.count == plan.count
        let written =
            CellWork.writesOutputs(options)
            ? try write(results, complete)
            : Outputs.Written(plots: [], report: dir.appendingPathComponent("report.md"))
        return RunSummary(
            directory: dir, computed: computed, reused: results.count - computed,
            skipped: results.filter { $0.status != "ok" }, complete: complete,
            plots: written.plots, report: written.report)
    }

    /// Cell files: sorted keys, one line.
    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}

/// The first error raised by any worker.
final class ErrorBox: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var error: Error?
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return error != nil }
    func set(_ e: Error) { lock.lock(); if error == nil { error = e }; lock.unlock() }
}
