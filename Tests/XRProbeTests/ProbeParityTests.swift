import Foundation
import XCTest
import XRProbe
import XRTensor
import TestSupport

/// Probes and metrics against scikit-learn 1.9.1 and NumPy (fixtures/make_probe_fixtures.py).
final class ProbeParityTests: XCTestCase {
    struct Meta: Decodable {
        struct Task: Decodable { var classes: Int; var auroc: [String: Double] }
        var tasks: [String: Task]
        var metrics: [String: Double]
    }
    var ref: SafeTensorsFile!
    var meta: Meta!

    override func setUpWithError() throws {
        ref = try SafeTensorsFile(contentsOf: Fixtures.url("probe/reference.safetensors"))
        meta = try JSONDecoder().decode(Meta.self, from: Data(contentsOf: Fixtures.url("probe/reference.json")))
    }

    func task(_ name: String) throws -> (xtr: [Float], ytr: [Int], xte: [Float], yte: [Int], d: Int) {
        let xtr = try ref.tensor("\(name).xtr")
        return (
            xtr.scalars, try ref.tensor("\(name).ytr").scalars.map { Int($0) }, try ref.tensor("\(name).xte").scalars,
            try ref.tensor("\(name).yte").scalars.map { Int($0) }, xtr.shape[1]
        )
    }

    func auroc(_ p: [[Double]], _ y: [Int], classes: Int) -> Double {
        if classes == 2 { return Metrics.auroc(p.map { $0[1] }, y.map { $0 == 1 }) ?? .nan }
        // One-vs-rest macro average (sklearn multi_class="ovr").
        return (0..<classes).map { c in Metrics.auroc(p.map { $0[c] }, y.map { $0 == c }) ?? .nan }.reduce(0, +) / Double(classes)
    }

    /// Test AUROC within 0.002 of scikit-learn's for every task and C; probabilities close too.
    func testLogisticMatchesScikitLearn() throws {
        for (name, t) in meta.tasks.sorted(by: { $0.key < $1.key }) {
            let (xtr, ytr, xte, yte, d) = try task(name)
            for (cs, want) in t.auroc {
                guard let c = Double(cs) else { continue }
                let r = Probe.run(
                    .logistic(grid: [c], cvMinShots: 99, defaultC: c, folds: 3, standardize: .shots), train: xtr, labels: ytr,
                    test: xte, d: d, classes: t.classes)
                let got = auroc(r.probabilities, yte, classes: t.classes)
                XCTAssertEqual(got, want, accuracy: 0.002, "\(name) C=\(c) AUROC")
                let sk = try ref.tensor("\(name).prob_C\(cs == "1.0" ? "1.0" : cs)").scalars
                let mine = r.probabilities.flatMap { $0.map(Float.init) }
                let maxDiff = zip(mine, sk).map { abs($0 - $1) }.max() ?? 0
                XCTAssertLessThan(maxDiff, 2e-3, "\(name) C=\(c): max |Δprob| \(maxDiff)")
            }
        }
    }

    func testKNNMatchesNumpy() throws {
        for (name, t) in meta.tasks {
            let (xtr, ytr, xte, _, d) = try task(name)
            let p = Probe.knn(train: xtr, labels: ytr, test: xte, d: d, classes: t.classes, k: 5, temperature: 0.07)
            assertClose(p.flatMap { $0.map(Float.init) }, try ref.tensor("\(name).knn").scalars, rel: 1e-5, "\(name) knn")
        }
    }

    func testPrototypeMatchesNumpy() throws {
        for (name, t) in meta.tasks {
            let (xtr, ytr, xte, _, d) = try task(name)
            let p = Probe.prototype(train: xtr, labels: ytr, test: xte, d: d, classes: t.classes, temperature: 0.07)
            assertClose(p.flatMap { $0.map(Float.init) }, try ref.tensor("\(name).proto").scalars, rel: 1e-5, "\(name) prototype")
        }
    }

    func testMetricsMatchScikitLearn() throws {
        let s = try ref.tensor("metric.scores").scalars.map(Double.init)
        let y = try ref.tensor("metric.labels").scalars.map { $0 == 1 }
        XCTAssertEqual(Metrics.auroc(s, y) ?? .nan, meta.metrics["auroc"] ?? 0, accuracy: 1e-12)
        XCTAssertEqual(Metrics.averagePrecision(s, y) ?? .nan, meta.metrics["average_precision"] ?? 0, accuracy: 1e-12)
        let p = try ref.tensor("metric.pred").scalars.map { Int($0) }, t = try ref.tensor("metric.truth").scalars.map { Int($0) }
        XCTAssertEqual(Metrics.accuracy(p, t), meta.metrics["accuracy"] ?? 0, accuracy: 1e-12)
        XCTAssertEqual(Metrics.balancedAccuracy(p, t), meta.metrics["balanced_accuracy"] ?? 0, accuracy: 1e-12)
        XCTAssertEqual(Metrics.macroF1(p, t), meta.metrics["f1_macro"] ?? 0, accuracy: 1e-12)
    }

    func testCrossValidationPicksAGridValue() throws {
        let (xtr, ytr, xte, _, d) = try task("binary_few")
        let r = Probe.run(
            .logistic(grid: [0.01, 0.1, 1, 10], cvMinShots: 4, defaultC: 1, folds: 3, standardize: .shots), train: xtr, labels: ytr,
            test: xte, d: d, classes: 2)
        XCTAssertNotNil(r.chosenC)
        XCTAssertTrue([0.01, 0.1, 1, 10].contains(r.chosenC ?? -1))
    }
}

final class SamplerAndStatisticsTests: XCTestCase {
    func testSamplerIsDeterministicPatientGroupedAndReportsShortfall() {
        // 40 rows, 20 patients (2 rows each), labels alternate by patient.
        let patients = (0..<40).map { "p\($0 / 2)" }
        let labels = (0..<40).map { ($0 / 2) % 2 }
        let test = Array(30..<40), pool = Array(0..<30)
        let a = FewShotSampler.sample(labels: labels, classes: 2, pool: pool, test: test, patients: patients, k: 4, seed: 1, stream: [7])
        let b = FewShotSampler.sample(labels: labels, classes: 2, pool: pool, test: test, patients: patients, k: 4, seed: 1, stream: [7])
        let c = FewShotSampler.sample(labels: labels, classes: 2, pool: pool, test: test, patients: patients, k: 4, seed: 2, stream: [7])
        guard case let .success(sa) = a, case let .success(sb) = b, case let .success(sc) = c else { return XCTFail("sampling failed") }
        XCTAssertEqual(sa, sb)
        XCTAssertNotEqual(sa, sc)
        XCTAssertEqual(sa.count, 8)
        XCTAssertEqual(Set(sa.map { patients[$0] }).count, 8, "one image per patient per class")
        XCTAssertTrue(sa.allSatisfy { $0 < 30 })
        // Patient p15 has rows 30, 31 in test: a row of p15 in the pool must never be drawn.
        let leaky = FewShotSampler.sample(labels: labels, classes: 2, pool: pool + [30], test: [31], patients: patients, k: 7, seed: 3, stream: [])
        if case let .success(s) = leaky { XCTAssertFalse(s.contains(30)) }
        // 15 pool patients: 8 of class 0, 7 of class 1 → 8 shots of class 1 are not available.
        if case let .failure(e) = FewShotSampler.sample(labels: labels, classes: 2, pool: pool, test: test, patients: patients, k: 8, seed: 1, stream: []) {
            XCTAssertEqual(e.classIndex, 1)
            XCTAssertEqual(e.available, 7)
        } else {
            XCTFail("expected a shortfall")
        }
    }

    func testSeedSummaryTInterval() {
        let s = SeedSummary([0.7, 0.8, 0.9])
        XCTAssertEqual(s.mean, 0.8, accuracy: 1e-12)
        XCTAssertEqual(s.std, 0.1, accuracy: 1e-12)
        XCTAssertEqual(s.high - s.mean, 4.303 * 0.1 / 3.0.squareRoot(), accuracy: 1e-9)
    }

    func testBootstrapIntervalCoversAndIsDeterministic() {
        var rng = XRRandom(seed: 5)
        let scores = (0..<200).map { _ in rng.nextDouble() }
        let labels = scores.map { $0 + 0.3 * (rng.nextDouble() - 0.5) > 0.5 }
        let full = Metrics.auroc(scores, labels) ?? 0
        let f: ([Int]) -> Double? = { idx in Metrics.auroc(idx.map { scores[$0] }, idx.map { labels[$0] }) }
        let a = Bootstrap.interval(rows: 200, groups: nil, resamples: 300, seed: 1, metric: f)
        let b = Bootstrap.interval(rows: 200, groups: nil, resamples: 300, seed: 1, metric: f)
        XCTAssertEqual(a, b)
        XCTAssertLessThan(a?.low ?? 1, full)
        XCTAssertGreaterThan(a?.high ?? 0, full)
    }

    func testSubgroupGapFlaggedWhenReal() {
        // Group A: perfect scores; group B: random → a real AUROC gap.
        var rng = XRRandom(seed: 9)
        var scores: [Double] = [], labels: [Bool] = [], group: [String?] = []
        for i in 0..<300 {
            let y = i % 2 == 0
            let g = i < 150 ? "A" : "B"
            scores.append(g == "A" ? (y ? 0.9 : 0.1) + 0.05 * rng.nextDouble() : rng.nextDouble())
            labels.append(y); group.append(g)
        }
        let r = SubgroupResult.analyse(attribute: "sex", group: group, patients: nil, resamples: 300, seed: 2) { idx in
            Metrics.auroc(idx.map { scores[$0] }, idx.map { labels[$0] })
        }
        XCTAssertEqual(r.highest, "A")
        XCTAssertTrue(r.flagged, "\(r)")
        XCTAssertEqual(r.counts["A"], 150)
    }

    func testMetricEdgeCases() {
        XCTAssertNil(Metrics.auroc([0.1, 0.2], [true, true]), "one class: undefined")
        XCTAssertEqual(Metrics.auroc([0.5, 0.5], [true, false]), 0.5, "ties count one half")
        XCTAssertEqual(Metrics.expectedCalibrationError([[0, 1], [1, 0]], [1, 0]), 0, accuracy: 1e-12)
    }
}
