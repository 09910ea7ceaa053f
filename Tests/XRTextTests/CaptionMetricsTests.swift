import XCTest
import Foundation
@testable import XRText
import TestSupport

/// Against pycocoevalcap 1.2 (`fixtures/make_text_fixtures.py`): its Java PTB tokenisation and
/// its BLEU, ROUGE-L and CIDEr-D, corpus-level and per item.
final class CaptionMetricsTests: XCTestCase {
    struct Item: Decodable { var id: String; var candidate: String; var references: [String]; var candidate_tokens: String; var reference_tokens: [String] }
    struct Probe: Decodable { var text: String; var tokens: String }
    struct Fixture: Decodable { var items: [Item]; var scores: [String: Double]; var per_item: [String: [Double]]; var tokenizer_probes: [Probe] }

    func fixture() throws -> Fixture {
        try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: Fixtures.url("text/captions.json")))
    }

    func testTokenizationMatchesStanfordPTB() throws {
        let f = try fixture()
        for p in f.tokenizer_probes { XCTAssertEqual(PTBTokenizer.tokenize(p.text), p.tokens, p.text) }
        for it in f.items {
            XCTAssertEqual(PTBTokenizer.tokenize(it.candidate), it.candidate_tokens, it.id)
            for (r, t) in zip(it.references, it.reference_tokens) { XCTAssertEqual(PTBTokenizer.tokenize(r), t, it.id) }
        }
    }

    func check(_ s: CaptionScores, _ f: Fixture, tol: Double, _ what: String) {
        for k in 0..<4 {
            XCTAssertEqual(s.bleu[k], f.scores["bleu_\(k + 1)"]!, accuracy: tol, "\(what) BLEU-\(k + 1)")
            for (a, b) in zip(s.itemBleu[k], f.per_item["bleu_\(k + 1)"]!) { XCTAssertEqual(a, b, accuracy: tol, "\(what) item BLEU-\(k + 1)") }
        }
        XCTAssertEqual(s.rougeL, f.scores["rouge_l"]!, accuracy: tol, "\(what) ROUGE-L")
        XCTAssertEqual(s.ciderD, f.scores["cider_d"]!, accuracy: tol, "\(what) CIDEr-D")
        for (a, b) in zip(s.itemRougeL, f.per_item["rouge_l"]!) { XCTAssertEqual(a, b, accuracy: tol, "\(what) item ROUGE-L") }
        for (a, b) in zip(s.itemCiderD, f.per_item["cider_d"]!) { XCTAssertEqual(a, b, accuracy: tol, "\(what) item CIDEr-D") }
    }

    func testScoresMatchPycocoevalcapOnItsTokens() throws {
        let f = try fixture()
        let s = CaptionMetrics.score(candidates: f.items.map(\.candidate_tokens), references: f.items.map(\.reference_tokens))
        check(s, f, tol: 1e-9, "pycocoevalcap tokens")
    }

    func testScoresMatchPycocoevalcapFromRawText() throws {
        let f = try fixture()
        let s = CaptionMetrics.score(rawCandidates: f.items.map(\.candidate), rawReferences: f.items.map(\.references))
        check(s, f, tol: 1e-4, "raw text")
        print(String(format: "BLEU-1..4 %.4f %.4f %.4f %.4f, ROUGE-L %.4f, CIDEr-D %.4f", s.bleu[0], s.bleu[1], s.bleu[2], s.bleu[3], s.rougeL, s.ciderD))
    }

    func testIdenticalCorpusScoresOneAndEmptyCandidateScoresZero() {
        let refs = [["the heart is normal", "normal heart"], ["no effusion seen"]]
        let s = CaptionMetrics.score(candidates: ["the heart is normal", "no effusion seen"], references: refs)
        for b in s.bleu { XCTAssertEqual(b, 1, accuracy: 1e-9) }
        XCTAssertEqual(s.rougeL, 1, accuracy: 1e-12)
        let e = CaptionMetrics.score(candidates: ["", ""], references: refs)
        XCTAssertEqual(e.rougeL, 0)
        XCTAssertEqual(e.ciderD, 0)
        XCTAssertLessThan(e.bleu[0], 1e-6)
    }
}
