import Foundation
import XCTest
import XRProbe
import XRTensor
import TestSupport

/// Retrieval and mask metrics against NumPy / SciPy (fixtures/make_task_metric_fixtures.py).
final class TaskMetricTests: XCTestCase {
    func json(_ name: String) throws -> [String: Any] {
        let url = Fixtures.url("stats/\(name)")
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    }

    func compare(_ got: [RetrievalQuery], _ want: [[String: Any]], _ what: String) throws {
        XCTAssertEqual(got.count, want.count)
        for (i, (g, w)) in zip(got, want).enumerated() {
            XCTAssertEqual(g.top, try XCTUnwrap(w["top"] as? [Int]), "\(what) query \(i): ranking")
            XCTAssertEqual(g.relevant, try XCTUnwrap(w["R"] as? Int), "\(what) query \(i): R")
            XCTAssertEqual(g.mapAtR, try XCTUnwrap(w["map_at_r"] as? Double), accuracy: 1e-12, "\(what) query \(i): mAP@R")
            XCTAssertEqual(g.reciprocalRank, try XCTUnwrap(w["reciprocal_rank"] as? Double), accuracy: 1e-12)
            let p = try XCTUnwrap(w["precision"] as? [String: Double]), r = try XCTUnwrap(w["recall"] as? [String: Double])
            for k in [1, 5, 10] {
                XCTAssertEqual(g.precision[k] ?? -1, p[String(k)] ?? -2, accuracy: 1e-12, "\(what) query \(i): P@\(k)")
                XCTAssertEqual(g.recall[k] ?? -1, r[String(k)] ?? -2, accuracy: 1e-12, "\(what) query \(i): R@\(k)")
            }
        }
    }

    func testRetrievalMatchesNumPyWithTiesAndLeaveOneOut() throws {
        let f = try json("retrieval.json")
        let gallery = try XCTUnwrap(f["gallery"] as? [[Double]]).flatMap { $0.map(Float.init) }
        let queries = try XCTUnwrap(f["queries"] as? [[Double]]).flatMap { $0.map(Float.init) }
        let gl = try XCTUnwrap(f["gallery_labels"] as? [[String]]).map(Set.init)
        let ql = try XCTUnwrap(f["query_labels"] as? [[String]]).map(Set.init)
        let tvt = try XCTUnwrap(f["test_vs_train"] as? [String: [[String: Any]]])
        for rel in RetrievalRelevance.allCases {
            let got = Retrieval.evaluate(queries: queries, gallery: gallery, dim: 6, relevant: { rel.matches(ql[$0], gl[$1]) }, ks: [1, 5, 10], keep: 15)
            try compare(got, try XCTUnwrap(tvt[rel.rawValue]), "queries vs gallery, \(rel)")
        }
        // Gallery = every row; each query (a gallery row) leaves itself out.
        let first20 = Array(gallery.prefix(20 * 6))
        let got = Retrieval.evaluate(
            queries: first20, gallery: gallery, dim: 6, relevant: { RetrievalRelevance.any.matches(gl[$0], gl[$1]) },
            exclude: (0..<20).map { $0 }, ks: [1, 5, 10], keep: 15)
        try compare(got, try XCTUnwrap(f["all_any"] as? [[String: Any]]), "leave-one-out")
        XCTAssertTrue(got.enumerated().allSatisfy { !$0.element.top.contains($0.offset) }, "a query ranked itself")
    }

    func testRetrievalScoreEdgeCases() {
        let none = Retrieval.score([false, false, false], top: [0, 1, 2], ks: [1, 2])
        XCTAssertEqual(none.mapAtR, 0)
        XCTAssertEqual(none.reciprocalRank, 0)
        XCTAssertEqual(none.recall[2], 0)
        let perfect = Retrieval.score([true, true, false, false], top: [], ks: [2])
        XCTAssertEqual(perfect.mapAtR, 1)
        XCTAssertEqual(perfect.precision[2], 1)
        // Relevant at ranks 2 and 3 of R = 2: mAP@R = (0 + 1/2) / 2.
        XCTAssertEqual(Retrieval.score([false, true, true], top: [], ks: []).mapAtR, 0.25)
    }

    func testMaskMetricsMatchSciPy() throws {
        let f = try json("segmentation.json")
        let w = try XCTUnwrap(f["width"] as? Int), h = try XCTUnwrap(f["height"] as? Int)
        let cases = try XCTUnwrap(f["cases"] as? [String: [String: Any]])
        XCTAssertEqual(cases.count, 7)
        for (name, c) in cases {
            let a = try XCTUnwrap(c["prediction"] as? [Int]).map { $0 != 0 }, b = try XCTUnwrap(c["truth"] as? [Int]).map { $0 != 0 }
            let s = MaskMetrics.scores(prediction: a, truth: b, width: w, height: h)
            XCTAssertEqual(s.dice, try XCTUnwrap(c["dice"] as? Double), accuracy: 1e-12, name)
            XCTAssertEqual(s.iou, try XCTUnwrap(c["iou"] as? Double), accuracy: 1e-12, name)
            if let hd = c["hausdorff"] as? Double {
                XCTAssertEqual(try XCTUnwrap(s.hausdorff, name), hd, accuracy: 1e-9, name)
                XCTAssertEqual(try XCTUnwrap(s.hd95, name), try XCTUnwrap(c["hd95"] as? Double), accuracy: 1e-9, name)
            } else {
                XCTAssertNil(s.hausdorff, name)
                XCTAssertNil(s.hd95, name)
            }
        }
    }

    func testDistanceTransformAgainstBruteForce() {
        var rng = XRRandom(seed: 9)
        for (w, h) in [(1, 1), (7, 1), (1, 9), (13, 11)] {
            let mask = (0..<(w * h)).map { _ in rng.nextInt(below: 5) == 0 }
            let d = MaskMetrics.squaredDistances(to: mask, width: w, height: h)
            for y in 0..<h {
                for x in 0..<w {
                    var best = Double.infinity
                    for yy in 0..<h { for xx in 0..<w where mask[yy * w + xx] { best = min(best, Double((x - xx) * (x - xx) + (y - yy) * (y - yy))) } }
                    XCTAssertEqual(d[y * w + x], best, "\(w)x\(h) at (\(x), \(y))")
                }
            }
        }
    }

    func testDetectionMetricsMatchThePlainImplementation() throws {
        let f = try json("detection.json")
        func box(_ v: [Double]) -> Box { Box(x: v[0], y: v[1], width: v[2], height: v[3]) }
        let truth = try XCTUnwrap(f["truth"] as? [[[Double]]]).map { $0.map(box) }
        let preds = try XCTUnwrap(f["predictions"] as? [[String: Any]]).map { p in
            ScoredBox(image: p["image"] as? Int ?? -1, box: box(p["box"] as? [Double] ?? []), score: p["score"] as? Double ?? .nan)
        }
        XCTAssertEqual(truth.count, 12)
        let ap = try XCTUnwrap(f["ap"] as? [String: Double]), froc = try XCTUnwrap(f["froc"] as? [String: [String: Double]])
        for t in [0.1, 0.3, 0.5] {
            XCTAssertEqual(
                try XCTUnwrap(DetectionMetrics.averagePrecision(preds, truth: truth, threshold: t)), try XCTUnwrap(ap[String(t)]), accuracy: 1e-12, "AP@\(t)")
            let got = try XCTUnwrap(DetectionMetrics.froc(preds, truth: truth, images: 12, threshold: t))
            let want = try XCTUnwrap(froc[String(t)])
            for (rate, key) in [(0.5, "0.5"), (1.0, "1"), (2.0, "2"), (4.0, "4")] {
                XCTAssertEqual(got[rate] ?? -1, try XCTUnwrap(want[key]), accuracy: 1e-12, "FROC@\(t) at \(key) FP/image")
            }
        }
        let points = try XCTUnwrap(f["points"] as? [[Double]]).map { (x: $0[0], y: $0[1]) }
        XCTAssertEqual(
            try XCTUnwrap(DetectionMetrics.pointingGame(points: points, truth: truth)), try XCTUnwrap(f["pointing_game"] as? Double), accuracy: 1e-12)
        // No true boxes: nothing to measure.
        XCTAssertNil(DetectionMetrics.averagePrecision(preds, truth: truth.map { _ in [] }, threshold: 0.5))
        XCTAssertNil(DetectionMetrics.pointingGame(points: points, truth: truth.map { _ in [] }))
        // A perfect detector: AP 1, FROC 1 at every rate.
        let perfect = truth.enumerated().flatMap { i, bs in bs.map { ScoredBox(image: i, box: $0, score: 1) } }
        XCTAssertEqual(DetectionMetrics.averagePrecision(perfect, truth: truth, threshold: 0.5), 1)
        XCTAssertEqual(DetectionMetrics.froc(perfect, truth: truth, images: 12, threshold: 0.5)?[0.5], 1)
    }
}
