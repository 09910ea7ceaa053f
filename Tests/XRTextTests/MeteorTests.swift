import XCTest
import Foundation
@testable import XRText
import XRTensor
import CArchive
import TestSupport

/// Native METEOR against METEOR 1.5 as pycocoevalcap 1.2 runs it (`fixtures/make_text_fixtures.py`
/// for captions.json, `fixtures/make_meteor_fixtures.py` for the resource subset and reference.json).
/// Measured worst differences: see `testCorpusAndItemsMatchPycocoevalcap` and
/// `testStemSynonymParaphrasePairsMatchPycocoevalcap`.
final class MeteorTests: XCTestCase {
    struct Item: Decodable { var candidate_tokens: String; var reference_tokens: [String] }
    struct Captions: Decodable { var items: [Item]; var scores: [String: Double]; var per_item: [String: [Double]] }
    struct Probe: Decodable { var text: String; var normalised: String }
    struct Pair: Decodable { var candidate: String; var references: [String] }
    struct Reference: Decodable { var stems: [[String]]; var normalisation: [Probe]; var pairs: [Pair]; var meteor: Double; var per_item: [Double] }

    static let dataDir = Fixtures.url("text/meteor").path
    static let meteor = Result { try Meteor.load(from: dataDir) }

    func meteor() throws -> Meteor { try Self.meteor.get() }

    func reference() throws -> Reference {
        try JSONDecoder().decode(Reference.self, from: Data(contentsOf: Fixtures.url("text/meteor/reference.json")))
    }

    /// Worst |Δ| over items and the corpus; fails above `tol`.
    func checkParity(_ got: (corpus: Double, items: [Double]), corpus: Double, items: [Double], tol: Double, _ what: String) -> (Double, Double) {
        XCTAssertEqual(got.items.count, items.count)
        var worst = 0.0, worstAt = -1
        for (i, (a, b)) in zip(got.items, items).enumerated() where abs(a - b) > worst { worst = abs(a - b); worstAt = i }
        XCTAssertLessThanOrEqual(
            worst, tol, "\(what): worst item difference \(worst) at item \(worstAt) (\(got.items[max(worstAt, 0)]) vs \(items[max(worstAt, 0)]))")
        XCTAssertEqual(got.corpus, corpus, accuracy: tol, "\(what) corpus")
        print(String(format: "%@: corpus %.6f vs %.6f (|Δ| %.2e), worst item |Δ| %.2e", what, got.corpus, corpus, abs(got.corpus - corpus), worst))
        return (abs(got.corpus - corpus), worst)
    }

    /// The 42 captions.json items on pycocoevalcap's PTB tokens (what pycocoevalcap sends to METEOR).
    /// Measured: corpus and every item equal to the printed Java doubles (|Δ| < 1e-12).
    func testCorpusAndItemsMatchPycocoevalcap() throws {
        let f = try JSONDecoder().decode(Captions.self, from: Data(contentsOf: Fixtures.url("text/captions.json")))
        let s = try meteor().score(candidates: f.items.map(\.candidate_tokens), references: f.items.map(\.reference_tokens))
        _ = checkParity(s, corpus: f.scores["meteor"]!, items: f.per_item["meteor"]!, tol: 0.01, "captions.json")
        // Not the mean of the item scores.
        XCTAssertNotEqual(s.corpus, s.items.reduce(0, +) / Double(s.items.count), accuracy: 1e-6)
    }

    /// Raw-text pairs that need the stem, synonym and paraphrase modules and the normaliser.
    func testStemSynonymParaphrasePairsMatchPycocoevalcap() throws {
        let r = try reference()
        let s = try meteor().score(candidates: r.pairs.map(\.candidate), references: r.pairs.map(\.references))
        _ = checkParity(s, corpus: r.meteor, items: r.per_item, tol: 0.01, "reference.json pairs")
    }

    /// The reference pairs exercise every module (a parity test that only ever used exact matches
    /// would not check the others).
    func testModulesContributeMatches() throws {
        let m = try meteor(), r = try reference()
        var perModule = [Double](repeating: 0, count: 4)
        for p in r.pairs {
            let s = m.stats(candidate: p.candidate, references: p.references)
            for k in 0..<4 { perModule[k] += s.testContent[k] + s.testFunction[k] }
        }
        print("matched candidate words per module (exact, stem, synonym, paraphrase):", perModule)
        for k in 0..<4 { XCTAssertGreaterThan(perModule[k], 0, "module \(k)") }
        let stem = m.stats(candidate: "No pleural effusions are seen.", references: ["There is no pleural effusion."])
        XCTAssertEqual(stem.testContent[1], 1)
    }

    /// CaptionScores carries METEOR only when resources were given, and stays Codable either way.
    func testCaptionScoresCarryMeteorWhenGiven() throws {
        let f = try JSONDecoder().decode(Captions.self, from: Data(contentsOf: Fixtures.url("text/captions.json")))
        let c = f.items.map(\.candidate_tokens), r = f.items.map(\.reference_tokens)
        let without = CaptionMetrics.score(candidates: c, references: r)
        XCTAssertNil(without.meteor)
        XCTAssertNil(without.itemMeteor)
        let with = CaptionMetrics.score(candidates: c, references: r, meteor: try meteor())
        XCTAssertEqual(with.meteor!, f.scores["meteor"]!, accuracy: 0.01)
        XCTAssertEqual(with.itemMeteor?.count, c.count)
        XCTAssertEqual(with.ciderD, without.ciderD, accuracy: 1e-9) // CIDEr-D sums in dictionary order
        for s in [with, without] {
            XCTAssertEqual(try JSONDecoder().decode(CaptionScores.self, from: JSONEncoder().encode(s)), s)
        }
    }

    func testStemmerMatchesSnowballFromTheJar() throws {
        let r = try reference()
        XCTAssertGreaterThan(r.stems.count, 300)
        for p in r.stems { XCTAssertEqual(SnowballEnglish.stem(p[0]), p[1], p[0]) }
    }

    func testNormalisationMatchesMeteorNorm() throws {
        let r = try reference(), m = try meteor()
        for p in r.normalisation { XCTAssertEqual(m.normalizer.normalize(p.text), p.normalised, p.text) }
    }

    func testIdenticalScoresHighAndEmptyScoresZero() throws {
        let m = try meteor()
        let same = m.score(candidates: ["the heart is normal in size", "no effusion"], references: [["the heart is normal in size"], ["no effusion", "x"]])
        for v in same.items { XCTAssertGreaterThan(v, 0.9) }
        XCTAssertGreaterThan(same.corpus, 0.9)
        let empty = m.score(candidates: [""], references: [["no acute disease"]])
        XCTAssertEqual(empty.items, [0])
        XCTAssertEqual(empty.corpus, 0)
    }

    /// Restricting the resources to the texts being scored leaves the scores unchanged.
    func testRestrictedResourcesGiveTheSameScores() throws {
        let r = try reference()
        let texts = r.pairs.flatMap { [$0.candidate] + $0.references }
        let small = try Meteor.load(from: Self.dataDir, restrictingTo: texts)
        XCTAssertLessThan(small.resources.paraphrases.entries.count, try meteor().resources.paraphrases.entries.count)
        let a = small.score(candidates: r.pairs.map(\.candidate), references: r.pairs.map(\.references))
        let b = try meteor().score(candidates: r.pairs.map(\.candidate), references: r.pairs.map(\.references))
        XCTAssertEqual(a.items, b.items)
        XCTAssertEqual(a.corpus, b.corpus)
    }

    func testBadResourcesNameTheFile() throws {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("xrlab-meteor-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: tmp) }
        try FileManager.default.copyItem(at: Fixtures.url("text/meteor"), to: tmp)
        func expectError(_ needle: String, _ message: String) {
            XCTAssertThrowsError(try Meteor.load(from: tmp.path)) { e in
                guard let x = e as? XRError else { return XCTFail("\(e)") }
                XCTAssertTrue(x.file?.hasSuffix(needle) ?? false, "\(x)")
                XCTAssertTrue(x.message.contains(message), "\(x)")
            }
        }
        let nowhere = tmp.appendingPathComponent("nowhere").path
        XCTAssertThrowsError(try Meteor.load(from: nowhere)) { e in
            XCTAssertEqual((e as? XRError)?.file, nowhere, "\(e)")
            XCTAssertTrue("\(e)".contains("METEOR data not found"), "\(e)")
        }
        // A "jar" that is not a zip.
        let jarDir = tmp.appendingPathComponent("jar")
        try FileManager.default.createDirectory(at: jarDir, withIntermediateDirectories: true)
        let jar = jarDir.appendingPathComponent("meteor-1.5.jar")
        try Data("not a zip file".utf8).write(to: jar)
        for path in [jar.path, jarDir.path] {
            XCTAssertThrowsError(try Meteor.load(from: path)) { e in
                XCTAssertEqual((e as? XRError)?.file, jar.path, "\(e)")
                XCTAssertTrue("\(e)".contains("not a readable jar / zip file"), "\(e)")
            }
        }
        // A synset id that is not a number.
        let syn = tmp.appendingPathComponent("synonym/english.synsets")
        let good = try Data(contentsOf: syn)
        try Data("heart\n0312x\n".utf8).write(to: syn)
        expectError("synonym/english.synsets", "not an integer")
        try good.write(to: syn)
        // The paraphrase table is not gzip, then truncated, then missing.
        let para = tmp.appendingPathComponent("data/paraphrase-en.gz")
        try Data("0.5\nheart\ncardiac\n".utf8).write(to: para)
        expectError("data/paraphrase-en.gz", "not a gzip file")
        try gzip("0.5\nheart\ncardiac\n0.4\nlung\n").write(to: para)
        expectError("data/paraphrase-en.gz", "truncated entry")
        try FileManager.default.removeItem(at: para)
        expectError("data/paraphrase-en.gz", "not found")
        // A missing function-word list.
        try FileManager.default.removeItem(at: tmp.appendingPathComponent("function/english.words"))
        expectError("function/english.words", "not found")
    }

    /// A jar entry that inflates to 100 MiB of zeros, and a paraphrase table whose one line never
    /// ends: each refused at its limit instead of growing in memory.
    func testExpandingResourcesAreRefusedAtTheirLimits() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("xrlab-meteor-bomb-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let jar = dir.appendingPathComponent("meteor-1.5.jar")
        let a = try XCTUnwrap(archive_write_new())
        XCTAssertEqual(archive_write_set_format_zip(a), ARCHIVE_OK)
        XCTAssertEqual(archive_write_open_filename(a, jar.path), ARCHIVE_OK)
        let entry = try XCTUnwrap(archive_entry_new())
        archive_entry_set_pathname(entry, "function/english.words")
        archive_entry_set_filetype(entry, 0o100000)
        archive_entry_set_perm(entry, 0o644)
        archive_entry_set_size(entry, 100 << 20)
        XCTAssertEqual(archive_write_header(a, entry), ARCHIVE_OK)
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        for _ in 0..<100 { XCTAssertEqual(zeros.withUnsafeBytes { archive_write_data(a, $0.baseAddress, $0.count) }, 1 << 20) }
        archive_entry_free(entry)
        XCTAssertEqual(archive_write_close(a), ARCHIVE_OK)
        archive_write_free(a)
        XCTAssertLessThan(try Data(contentsOf: jar).count, 1 << 20, "small on disk")
        XCTAssertThrowsError(try Meteor.load(from: jar.path)) { e in
            XCTAssertEqual((e as? XRError)?.file, jar.path + "!/function/english.words", "\(e)")
            XCTAssertTrue("\(e)".contains("\(Limits.meteorEntryBytes)-byte limit"), "\(e)")
        }
        let para = dir.appendingPathComponent("paraphrase-en.gz")
        try gzip(String(repeating: "a", count: 2 << 20)).write(to: para)
        XCTAssertThrowsError(try MeteorResources.parseParaphrases(para.path, vocabulary: nil)) { e in
            XCTAssertEqual((e as? XRError)?.file, para.path, "\(e)")
            XCTAssertTrue("\(e)".contains("line runs past the \(Limits.textLineBytes)-byte limit"), "\(e)")
        }
    }

    func gzip(_ s: String) throws -> Data {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("xrlab-gz-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let f = dir.appendingPathComponent("t")
        try Data(s.utf8).write(to: f)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/gzip")
        p.arguments = ["-n", f.path]
        try p.run()
        p.waitUntilExit()
        return try Data(contentsOf: dir.appendingPathComponent("t.gz"))
    }

    /// A source cut down to some texts reads the resources again only when new words arrive,
    /// and scores as the whole resource set does.
    func testSourceReloadsOnlyForNewWords() throws {
        let full = try Self.meteor.get()
        let f = try JSONDecoder().decode(Captions.self, from: Data(contentsOf: Fixtures.url("text/captions.json")))
        let refs = f.items.map { $0.reference_tokens }, cands = f.items.map { $0.candidate_tokens }
        let src = try MeteorSource(path: Self.dataDir, texts: refs.flatMap { $0 })
        _ = try src.meteor(covering: Array(refs.flatMap { $0 }.prefix(5)))
        XCTAssertEqual(src.loads, 1, "words already covered")
        let m = try src.meteor(covering: cands + ["zzunseenword"])
        XCTAssertEqual(src.loads, 2, "new words read the resources again")
        XCTAssertEqual(m.score(candidates: cands, references: refs).corpus, full.score(candidates: cands, references: refs).corpus, accuracy: 1e-12)
    }
}
