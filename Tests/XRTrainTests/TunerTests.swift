import XCTest
import XRTensor
@testable import XRTrain
import TestSupport

final class TunerTests: XCTestCase {
    let f = TrainFixture()

    func setup(_ set: TrainableSet = .lora(rank: 4, alpha: 8, targets: ["qkv"])) throws -> (TrainableViT, TuneData) {
        let m = try f.model()
        try m.setTrainable(set, seed: 1)
        let d = try f.data()
        let n = 3 * 32 * 32
        let px = d.pixels
        let data = TuneData(labels: d.labels, classes: 3, size: 32, mean: [0.5], std: [0.25]) { i in Array(px[(i * n)..<((i + 1) * n)]) }
        return (m, data)
    }

    func options(_ epochs: Int = 4) -> TuneOptions {
        var o = TuneOptions()
        o.epochs = epochs
        o.batchSize = 3
        o.lr = 3e-3
        o.patience = nil
        return o
    }

    func testResumeAfterInterruptionGivesTheSameWeights() throws {
        let (m1, data) = try setup()
        let full = try Tuner(model: m1, options: options(), seed: 7, identity: ["run": "x"]).run(
            train: [0, 1, 2, 3, 4, 5], validation: [6, 7], data: data, checkpoint: nil)
        let ckpt = Fixtures.tempDir("xrlab-tune").appendingPathComponent("cell.ckpt")
        let (m2, _) = try setup()
        let first = try Tuner(model: m2, options: options(), seed: 7, identity: ["run": "x"]).run(
            train: [0, 1, 2, 3, 4, 5], validation: [6, 7], data: data, checkpoint: ckpt, stopAfter: 2)
        XCTAssertEqual(first.history.count, 2)
        let (m3, _) = try setup() // a fresh process: weights from the checkpoint
        let rest = try Tuner(model: m3, options: options(), seed: 7, identity: ["run": "x"]).run(
            train: [0, 1, 2, 3, 4, 5], validation: [6, 7], data: data, checkpoint: ckpt)
        XCTAssertEqual(rest.resumedFrom, 2)
        XCTAssertEqual(rest.history, full.history)
        XCTAssertEqual(rest.bestEpoch, full.bestEpoch)
        for (a, b) in zip(m1.trainableParameters, m3.trainableParameters) { XCTAssertEqual(a.value.array, b.value.array, a.name) }
        // The kept weights are the best validation epoch's.
        let tuner = Tuner(model: m3, options: options(), seed: 7, identity: ["run": "x"])
        XCTAssertEqual(try tuner.evaluate([6, 7], data), full.history.compactMap(\.validationLoss).min()!, accuracy: 1e-6)
        // A checkpoint of another configuration is refused; a corrupt one names the file.
        let (m4, _) = try setup()
        XCTAssertThrowsError(
            try Tuner(model: m4, options: options(), seed: 7, identity: ["run": "other"]).run(train: [0, 1, 2], validation: [], data: data, checkpoint: ckpt)
        ) {
            XCTAssertTrue("\($0)".contains("different training configuration (run: x → other)") && "\($0)".contains(ckpt.path), "\($0)")
        }
        try Data("garbage".utf8).write(to: ckpt)
        XCTAssertThrowsError(
            try Tuner(model: m4, options: options(), seed: 7, identity: ["run": "x"]).run(train: [0, 1, 2], validation: [], data: data, checkpoint: ckpt)
        ) {
            XCTAssertTrue("\($0)".contains(ckpt.path), "\($0)")
        }
    }

    func testGradientAccumulationMatchesALargerBatch() throws {
        var a = options(2), b = options(2)
        a.batchSize = 6; a.accumulate = 1; a.balanced = false; a.augment = nil
        b.batchSize = 3; b.accumulate = 2; b.balanced = false; b.augment = nil
        let (m1, data) = try setup(.lastBlocks(1))
        let (m2, _) = try setup(.lastBlocks(1))
        let ra = try Tuner(model: m1, options: a, seed: 3, identity: ["run": "a"]).run(train: [0, 1, 2, 3, 4, 5], validation: [], data: data, checkpoint: nil)
        let rb = try Tuner(model: m2, options: b, seed: 3, identity: ["run": "b"]).run(train: [0, 1, 2, 3, 4, 5], validation: [], data: data, checkpoint: nil)
        for (x, y) in zip(ra.history, rb.history) { XCTAssertEqual(x.trainLoss, y.trainLoss, accuracy: 1e-5) }
        // (The key bias's true gradient is 0; Adam turns its rounding noise into steps of any sign.)
        for (p, q) in zip(m1.trainableParameters, m2.trainableParameters) where !p.name.hasSuffix("qkv.bias") {
            assertClose(p.value.array, q.value.array, rel: 1e-4, p.name)
        }
    }

    func testNonFiniteLossStopsAndKeepsTheLastGoodCheckpoint() throws {
        let (m, good) = try setup()
        let broken = Box()
        let data = TuneData(labels: good.labels, classes: 3, size: 32, mean: [0.5], std: [0.25]) { i in
            var x = try good.pixels(i)
            if broken.value { x[0] = .nan }
            return x
        }
        let ckpt = Fixtures.tempDir("xrlab-tune").appendingPathComponent("cell.ckpt")
        var o = options()
        o.augment = nil
        let tuner = Tuner(model: m, options: o, seed: 1, identity: ["run": "x"])
        tuner.progress = { r in if r.epoch == 2 { broken.value = true } }
        XCTAssertThrowsError(try tuner.run(train: [0, 1, 2, 3], validation: [], data: data, checkpoint: ckpt)) {
            XCTAssertTrue("\($0)".contains("the loss became nan in epoch 3"), "\($0)")
        }
        let (m2, _) = try setup()
        broken.value = false
        let resumed = try Tuner(model: m2, options: o, seed: 1, identity: ["run": "x"]).run(
            train: [0, 1, 2, 3], validation: [], data: data, checkpoint: ckpt, stopAfter: 0)
        XCTAssertEqual(resumed.history.count, 2, "the checkpoint after epoch 2 is intact")
    }

    func testAugmentationIdentityAndDeterminism() {
        var none = Augmentation()
        none.scale = 1...1; none.ratio = 1...1; none.degrees = 0; none.brightness = 0; none.contrast = 0; none.gamma = 0
        var rng = XRRandom(seed: 1)
        let x = (0..<(3 * 16 * 16)).map { _ in Float(rng.nextDouble()) * 2 - 1 }
        var r1 = XRRandom(seed: 2)
        assertClose(none.apply(x, size: 16, mean: [0.5], std: [0.5], rng: &r1), x, rel: 1e-5, "identity augmentation")
        var a = XRRandom(seed: 5), b = XRRandom(seed: 5)
        let aug = Augmentation()
        XCTAssertEqual(aug.apply(x, size: 16, mean: [0.5], std: [0.5], rng: &a), aug.apply(x, size: 16, mean: [0.5], std: [0.5], rng: &b))
        var flip = none
        flip.horizontalFlip = true
        var seen = Set<Bool>()
        for s in 0..<20 {
            var r = XRRandom(seed: UInt64(s))
            let y = flip.apply(x, size: 16, mean: [0.5], std: [0.5], rng: &r)
            seen.insert(abs(y[0] - x[15]) < 1e-5)
        }
        XCTAssertEqual(seen, [true, false], "flips about half the time, only when asked")
    }
}

final class Box: @unchecked Sendable { var value = false }
