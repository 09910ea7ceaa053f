import XCTest
import Foundation
@testable import XRText
import XRData
import TestSupport

/// Byte-level BPE against Hugging Face tokenizers 0.23.3 (`fixtures/make_text_fixtures.py`).
final class BPETests: XCTestCase {
    struct Enc: Decodable { var text: String; var ids: [Int]; var decoded: String }
    struct File: Decodable { var encodings: [Enc] }

    func testEncodingsMatchHuggingFaceTokenizers() throws {
        let tok = try BPETokenizer.load(Fixtures.url("text/bpe/tokenizer.json"))
        XCTAssertEqual(tok.size, 600)
        let f = try JSONDecoder().decode(File.self, from: Data(contentsOf: Fixtures.url("text/bpe/encodings.json")))
        for e in f.encodings {
            XCTAssertEqual(tok.encode(e.text), e.ids, e.text)
            XCTAssertEqual(tok.decode(e.ids), e.decoded, e.text)
        }
    }

    func testRoundTripIsLossless() throws {
        let tok = try BPETokenizer.load(Fixtures.url("text/bpe/tokenizer.json"))
        var rng = SystemRandomNumberGenerator()
        let samples =
            ["", " ", "\n\n\t ", "XXXX", "e\u{301}", "🫁🫀 中文 العربية हिन्दी", "\u{0}\u{7}\u{7f}\u{ad}", "it's", "''''", "<|endoftext|>"]
            + (0..<200).map { _ in
                String(
                    String.UnicodeScalarView(
                        (0..<Int.random(in: 0...30, using: &rng)).compactMap { _ in
                            Unicode.Scalar(
                                UInt32.random(in: [0x20...0x7e, 0xa0...0x2ff, 0x4e00...0x4eff, 0x1f300...0x1f3ff].randomElement(using: &rng)!, using: &rng))
                        }))
            }
        for s in samples { XCTAssertEqual(tok.decode(tok.encode(s)), s, s.debugDescription) }
    }

    func testTrainSaveLoad() throws {
        let corpus = (0..<200).map { i in "The heart size is normal. No pleural effusion \(i % 7). Mild cardiomegaly. XXXX opacity." }
        let tok = try BPETokenizer.train(corpus, vocabSize: 320, minFrequency: 2, specialTokens: ["<|endoftext|>", "<pad>"])
        XCTAssertEqual(tok.size, 320)
        XCTAssertEqual(tok.added["<|endoftext|>"], 0)
        let url = Fixtures.tempDir("xrlab-bpe").appendingPathComponent("tokenizer.json")
        try tok.save(url)
        let back = try BPETokenizer.load(url)
        let s = "The heart size is normal.<|endoftext|> Unseen wörds 🫁"
        XCTAssertEqual(back.encode(s), tok.encode(s))
        XCTAssertEqual(back.decode(back.encode(s)), s)
        XCTAssertLessThan(tok.encode(corpus[0]).count, corpus[0].utf8.count / 3, "merges compress the training text")
    }

    /// A tokenizer xrlab trained (fixtures/text/bpe/xrlab_tokenizer.json, written by `xrlab tokenizer
    /// train` from the fixture corpus) loads in Hugging Face tokenizers with the same ids, and
    /// training again reproduces it.
    func testTrainedTokenizerLoadsInHuggingFace() throws {
        let committed = try BPETokenizer.load(Fixtures.url("text/bpe/xrlab_tokenizer.json"))
        let f = try JSONDecoder().decode(File2.self, from: Data(contentsOf: Fixtures.url("text/bpe/xrlab_tokenizer_encodings.json")))
        for e in f.encodings { XCTAssertEqual(committed.encode(e.text), e.ids, e.text) }
        let table = try CSVTable(contentsOf: Fixtures.url("text/bpe/corpus.csv"))
        let c = try table.column("report")
        let again = try BPETokenizer.train(
            table.rows.map { ReportText.normalize($0[c]) }, vocabSize: 600, minFrequency: 2, specialTokens: ["<|endoftext|>", "<pad>"])
        XCTAssertEqual(again.vocab, committed.vocab)
        XCTAssertEqual(again.merges.map { $0.0 + " " + $0.1 }, committed.merges.map { $0.0 + " " + $0.1 })
    }
    struct Enc2: Decodable { var text: String; var ids: [Int] }
    struct File2: Decodable { var encodings: [Enc2] }

    func testOtherFormatsAreRefusedNamingTheField() throws {
        let dir = Fixtures.tempDir("xrlab-bpe")
        func refuse(_ text: String, _ fragment: String) throws {
            let u = dir.appendingPathComponent("t-\(UUID().uuidString).json")
            try text.write(to: u, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try BPETokenizer.load(u)) { XCTAssertTrue("\($0)".contains(fragment) && "\($0)".contains(u.path), "\($0)") }
        }
        try refuse(#"{"model": {"type": "WordPiece", "vocab": {"a": 0}}, "pre_tokenizer": {"type": "BertPreTokenizer"}}"#, "model.type")
        try refuse(#"{"model": {"type": "Unigram", "vocab": [["a", -1.0]]}}"#, "model.type")
        try refuse(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Whitespace"}}"#, "pre_tokenizer.type")
        try refuse(#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}, "pre_tokenizer": {"type": "ByteLevel"}}"#, "model.merges[0]")
        try refuse("not json at all", "not a JSON object")
        let real = try String(contentsOf: Fixtures.url("text/bpe/tokenizer.json"), encoding: .utf8)
        try refuse(String(real.prefix(real.count / 2)), "not a JSON object")
    }

    /// Added tokens are checked at load: an empty one used to make `encode` loop forever, growing without bound.
    func testAddedTokensAreValidatedAtLoad() throws {
        let dir = Fixtures.tempDir("xrlab-bpe-added")
        func refuse(_ added: String, vocab: String = #"{"a": 0, "b": 1}"#, _ fragments: [String]) throws {
            let u = dir.appendingPathComponent("t-\(UUID().uuidString).json")
            let text =
                #"{"added_tokens": "# + added + #", "model": {"type": "BPE", "vocab": "# + vocab + #", "merges": []}, "pre_tokenizer": {"type": "ByteLevel"}}"#
            try text.write(to: u, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try BPETokenizer.load(u)) { e in
                for f in fragments + [u.path] { XCTAssertTrue("\(e)".contains(f), "\(e) lacks \(f)") }
            }
        }
        try refuse(#"[{"id": 2, "content": ""}]"#, ["added_tokens[0]", "empty content"])
        try refuse(#"[{"id": 2, "content": "<s>"}, {"id": 3, "content": "<s>"}]"#, ["added_tokens[1]", "'<s>' is listed twice"])
        try refuse(#"[{"id": 2, "content": "<s>"}, {"id": 2, "content": "</s>"}]"#, ["added_tokens[1]", "share id 2"])
        try refuse(#"[{"id": 9223372036854775807, "content": "<s>"}]"#, ["added_tokens[0]", "outside 0..<3"])
        try refuse(#"[{"id": -1, "content": "<s>"}]"#, ["added_tokens[0]", "outside"])
        try refuse(#"[{"id": 1, "content": "<s>"}]"#, ["added_tokens[0]", "gives to 'b'"])
        try refuse("[]", vocab: #"{"a": 0, "b": 4000000000}"#, ["model.vocab", "outside 0..<2"])
        // The same tokens, valid, load and encode.
        let ok = dir.appendingPathComponent("ok.json")
        try
            #"{"added_tokens": [{"id": 2, "content": "<s>"}], "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}, "pre_tokenizer": {"type": "ByteLevel"}}"#
            .write(to: ok, atomically: true, encoding: .utf8)
        XCTAssertEqual(try BPETokenizer.load(ok).splitAdded("a<s>b").map(\.0), ["a", "<s>", "b"])
        // Built in code with an empty token, the split still ends.
        let direct = BPETokenizer(vocab: ["a": 0], merges: [], added: [("", 1, true)])
        XCTAssertEqual(direct.splitAdded("aa").map(\.0), ["aa"])
    }
}
