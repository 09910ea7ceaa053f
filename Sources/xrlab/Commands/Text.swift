import ArgumentParser
import Foundation
import XRTensor
import XRData
import XRText

/// `xrlab tokenizer`: train or apply a byte-level BPE tokenizer.
struct TokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer", abstract: "Train or apply a byte-level BPE tokenizer (Hugging Face tokenizer.json).",
        subcommands: [Train.self, Encode.self])

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Train a byte-level BPE on report text from CSV files.")
        @Argument(help: "CSV files with report text.")
        var corpus: [String]
        @Option(name: .long, help: "Text columns (joined); default: findings and impression, else report.")
        var column: [String] = []
        @Option(name: .long, help: "Vocabulary size, special tokens included.")
        var vocabSize: Int = 4000
        @Option(name: .long, help: "Minimum pair frequency for a merge.")
        var minFrequency: Int = 2
        @Option(name: .long, help: "Special tokens (ids from 0).")
        var special: [String] = ["<|endoftext|>", "<pad>"]
        @Option(name: .long, help: "Output tokenizer.json.")
        var out: String
        func run() throws {
            try runReportingErrors {
                var texts: [String] = []
                for c in corpus {
                    let url = URL(fileURLWithPath: c)
                    if column.isEmpty {
                        texts += try PairedReports.load(url, imageColumn: try CSVTable(contentsOf: url).header[0]).map { $0.target() }
                    } else {
                        let t = try CSVTable(contentsOf: url)
                        let idx = try column.map { try t.column($0) }
                        texts += t.rows.map { r in ReportText.normalize(idx.map { r[$0] }.joined(separator: " ")) }
                    }
                }
                let tok = try BPETokenizer.train(texts, vocabSize: vocabSize, minFrequency: minFrequency, specialTokens: special)
                try tok.save(URL(fileURLWithPath: out))
                let tokens = texts.reduce(0) { $0 + tok.encode($1).count }, bytes = texts.reduce(0) { $0 + $1.utf8.count }
                print(
                    "trained on \(texts.count) reports: vocabulary \(tok.size), \(tok.merges.count) merges; \(String(format: "%.2f", Double(bytes) / Double(max(tokens, 1)))) bytes per token"
                )
                print("wrote \(out)")
            }
        }
    }

    struct Encode: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print token ids of text (one line per argument).")
        @Option(name: .long, help: "tokenizer.json")
        var tokenizer: String
        @Argument(help: "Text.")
        var text: [String]
        func run() throws {
            try runReportingErrors {
                let tok = try BPETokenizer.load(URL(fileURLWithPath: tokenizer))
                for t in text { print(tok.encode(t).map(String.init).joined(separator: " ")) }
            }
        }
    }
}

/// `xrlab score`: report-generation metrics of generated against reference reports.
struct ScoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Score generated reports against references: BLEU-1..4, ROUGE-L, CIDEr-D, METEOR (as pycocoevalcap) and CheXpert clinical efficacy.",
        discussion: """
            Both CSVs have an id column and a text column; ids are matched, each generated report against every reference row with its id.
            METEOR 1.5 is computed natively when its resources are given (--meteor-data or XRLAB_METEOR_DATA): pycocoevalcap's \
            meteor/ directory (meteor-1.5.jar and data/paraphrase-en.gz), the jar itself, or a directory with the jar's layout.
            """)
    @Option(name: .long, help: "CSV of generated reports.")
    var generated: String
    @Option(name: .long, help: "CSV of reference reports.")
    var references: String
    @Option(name: .long, help: "Id column.")
    var idColumn: String = "id"
    @Option(name: .long, help: "Text column.")
    var textColumn: String = "report"
    @Option(name: .long, help: "Write the scores as JSON here.")
    var out: String?
    @Option(
        name: .long, help: "METEOR resources: pycocoevalcap's meteor/ directory, meteor-1.5.jar, or a directory with its layout (default: $XRLAB_METEOR_DATA).")
    var meteorData: String?
    func run() throws {
        try runReportingErrors {
            func read(_ p: String) throws -> [(String, String)] {
                let t = try CSVTable(contentsOf: URL(fileURLWithPath: p))
                let i = try t.column(idColumn), x = try t.column(textColumn)
                return t.rows.map { ($0[i], $0[x]) }
            }
            let gen = try read(generated), refs = try read(references)
            var byId: [String: [String]] = [:]
            for (id, r) in refs { byId[id, default: []].append(r) }
            for (i, (id, _)) in gen.enumerated() where byId[id] == nil {
                throw XRError("no reference report for id '\(id)'", file: generated, field: "row \(i + 2), column \(idColumn)")
            }
            let candidates = gen.map { PTBTokenizer.tokenize($0.1) }, references = gen.map { byId[$0.0]!.map(PTBTokenizer.tokenize) }
            // Only the synonym and paraphrase entries that can apply to these reports are loaded.
            let meteor = try meteorDataPath(meteorData).map { try Meteor.load(from: $0, restrictingTo: candidates + references.flatMap { $0 }) }
            let s = CaptionMetrics.score(candidates: candidates, references: references, meteor: meteor)
            let e = CheXpertLabeler.efficacy(generated: gen.map(\.1), references: gen.map { byId[$0.0]![0] })
            print(
                String(
                    format: "BLEU-1 %.4f  BLEU-2 %.4f  BLEU-3 %.4f  BLEU-4 %.4f  ROUGE-L %.4f  CIDEr-D %.4f", s.bleu[0], s.bleu[1], s.bleu[2], s.bleu[3],
                    s.rougeL, s.ciderD)
                    + (s.meteor.map { String(format: "  METEOR %.4f", $0) } ?? ""))
            print(
                String(
                    format: "clinical efficacy (CheXpert, micro): precision %.4f  recall %.4f  F1 %.4f; macro F1 %.4f", e.micro.precision, e.micro.recall,
                    e.micro.f1, e.macroF1))
            if let out {
                var obj: [String: Any] = [
                    "bleu": s.bleu, "rouge_l": s.rougeL, "cider_d": s.ciderD, "reports": gen.count,
                    "clinical_efficacy": ["precision": e.micro.precision, "recall": e.micro.recall, "f1": e.micro.f1, "macro_f1": e.macroF1]
                ]
                if let m = s.meteor { obj["meteor"] = m }
                try AtomicFile.write(try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .prettyPrinted]), to: URL(fileURLWithPath: out))
            }
        }
    }
}
