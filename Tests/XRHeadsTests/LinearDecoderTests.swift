import Foundation
import TestSupport
import XCTest
import XRData
import XRProbe
import XRTensor

@testable import XRHeads

/// The linear decoder: gradient, upsampling adjoint, determinism, and learning a planted mask.
final class LinearDecoderTests: XCTestCase {
    /// Small random problem on a grid that does not divide its input (3 × 4 patches over 7 × 10).
    func problem(classes: Int, seed: UInt64) -> (LinearDecoder, [PatchExample]) {
        var rng = XRRandom(seed: seed)
        let grid = PatchGrid(gridHeight: 3, gridWidth: 4, inputHeight: 7, inputWidth: 10)
        var d = LinearDecoder(grid: grid, channels: 5, classes: classes)
        d.weight = d.weight.map { _ in 0.5 * rng.nextGaussian() }
        d.bias = d.bias.map { _ in 0.3 * rng.nextGaussian() }
        let examples = (0..<3).map { _ in
            PatchExample(
                tokens: (0..<(12 * 5)).map { _ in rng.nextGaussian() },
                target: (0..<70).map { _ in rng.nextInt(below: 6) == 0 ? LinearDecoder.ignore : UInt8(rng.nextInt(below: classes)) })
        }
        return (d, examples)
    }

    /// Central differences on every weight and bias against the analytic gradient.
    func checkGradient(classes: Int, positiveWeight: Double) {
        let (d, examples) = problem(classes: classes, seed: UInt64(classes))
        let batch = [0, 2], l2 = 0.3
        let (_, gw, gb) = d.lossAndGradient(examples, batch: batch, l2: l2, positiveWeight: positiveWeight)
        let eps: Float = 1e-2
        func numeric(_ change: (inout LinearDecoder, Float) -> Void) -> Double {
            var plus = d, minus = d
            change(&plus, eps)
            change(&minus, -eps)
            return
                (plus.lossAndGradient(examples, batch: batch, l2: l2, positiveWeight: positiveWeight).loss
                - minus.lossAndGradient(examples, batch: batch, l2: l2, positiveWeight: positiveWeight).loss) / Double(2 * eps)
        }
        var worst = 0.0
        for j in d.weight.indices {
            let n = numeric { $0.weight[j] += $1 }
            worst = max(worst, abs(n - Double(gw[j])))
            XCTAssertEqual(Double(gw[j]), n, accuracy: 2e-3, "\(classes) classes: weight \(j)")
        }
        for r in d.bias.indices {
            let n = numeric { $0.bias[r] += $1 }
            XCTAssertEqual(Double(gb[r]), n, accuracy: 2e-3, "\(classes) classes: bias \(r)")
        }
        XCTAssertGreaterThan(gw.map { abs(Double($0)) }.max() ?? 0, 0.01, "a vanishing gradient checks nothing")
        print("decoder gradient, \(classes) classes: max |analytic − numeric| \(worst)")
    }

    func testGradientMatchesFiniteDifferencesBinary() { checkGradient(classes: 2, positiveWeight: 3) }
    func testGradientMatchesFiniteDifferencesMulticlass() { checkGradient(classes: 3, positiveWeight: 1) }

    func testUpsamplingBackwardIsTheAdjoint() {
        var rng = XRRandom(seed: 9)
        let grid = PatchGrid(gridHeight: 3, gridWidth: 5, inputHeight: 11, inputWidth: 16)
        let up = Upsampler(grid)
        let g = (0..<(2 * 15)).map { _ in rng.nextGaussian() }, u = (0..<(2 * 176)).map { _ in rng.nextGaussian() }
        let a = zip(up.up(g, rows: 2), u).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        let b = zip(g, up.down(u, rows: 2)).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        XCTAssertEqual(a, b, accuracy: 1e-4 * max(1, abs(a)))
    }

    func testPatchClassFractions() {
        let grid = PatchGrid(gridHeight: 2, gridWidth: 2, inputHeight: 4, inputWidth: 4)
        let target: [UInt8] = [
            1, 1, 0, 0,
            1, 0, 0, 0,
            2, 2, 255, 255,
            2, 2, 255, 255
        ]
        let (f, scored) = grid.classFractions(target, classes: 3)
        XCTAssertEqual(Array(f[0..<3]), [0.25, 0.75, 0])
        XCTAssertEqual(Array(f[3..<6]), [1, 0, 0])
        XCTAssertEqual(Array(f[6..<9]), [0, 0, 1])
        XCTAssertEqual(scored, [true, true, true, false])
    }

    /// Three classes: the largest logit wins (ties to the lower class), pixels the crop cut away
    /// are background.
    func testMulticlassPredictionAndCutAwayPixels() {
        // One-pixel patches over a 2 × 3 input; tokens are the logits (identity weights).
        var d = LinearDecoder(grid: PatchGrid(gridHeight: 2, gridWidth: 3, inputHeight: 2, inputWidth: 3), channels: 3, classes: 3)
        d.weight = [1, 0, 0, 0, 1, 0, 0, 0, 1]
        let tokens: [Float] = [
            1, 0, 0, 0, 2, 0, 0, 0, 3,
            0, 5, 5, 4, 0, 0, 0, 1, 0
        ]
        XCTAssertEqual(d.predict(tokens, geometry: .identity(height: 2, width: 3)), [0, 1, 2, 1, 0, 1])
        // A 2 × 5 image whose centre 2 × 3 is the input: the outer columns are background.
        let g = ImageGeometry(imageHeight: 2, imageWidth: 5, resizedHeight: 2, resizedWidth: 5, inputHeight: 2, inputWidth: 3, top: 0, left: 1)
        XCTAssertEqual(d.predict(tokens, geometry: g), [0, 0, 1, 2, 0, 0, 1, 0, 1, 0])
        XCTAssertTrue(d.imageLogits(tokens, geometry: g)[0].isNaN)
    }

    func testFitIsDeterministicForASeed() {
        let data = SyntheticPatches(images: 6, seed: 1)
        let ex = data.examples(0..<6)
        let opts = DecoderTraining(epochs: 3, batchImages: 4, learningRate: 0.05, l2: 1e-3, seed: 7)
        let a = LinearDecoder.fit(ex, grid: SyntheticPatches.grid, channels: 16, classes: 2, options: opts)
        let b = LinearDecoder.fit(ex, grid: SyntheticPatches.grid, channels: 16, classes: 2, options: opts)
        XCTAssertEqual(a.decoder, b.decoder)
        XCTAssertEqual(a.epochLoss, b.epochLoss)
        var other = opts
        other.seed = 8
        XCTAssertNotEqual(LinearDecoder.fit(ex, grid: SyntheticPatches.grid, channels: 16, classes: 2, options: other).decoder, a.decoder)
    }

    /// End to end through the geometry: train on 24 images, predict 12 at the original size.
    /// The planted blocks are two patches wide, so a head or geometry one patch off scores a
    /// Dice of at most about 0.5 — shown by scoring the same predictions against the shifted truth.
    func testLearnsPlantedMaskThroughTheGeometry() {
        let data = SyntheticPatches(images: 36, seed: 3)
        let (decoder, losses) = LinearDecoder.fit(
            data.examples(0..<24), grid: SyntheticPatches.grid, channels: 16, classes: 2,
            options: DecoderTraining(epochs: 40, batchImages: 8, learningRate: 0.05, l2: 1e-4, seed: 1))
        XCTAssertLessThan(losses.last ?? 1, 0.5 * (losses.first ?? 0), "the loss did not fall: \(losses)")
        let test = 24..<36
        let predictions = test.map { decoder.predict(data.tokens[$0], geometry: data.geometry) }
        let dice = data.meanDice(predictions, test), shifted = data.meanDice(predictions, test, shift: 1)
        let chance = Double(test.map { data.truth($0).count(where: { $0 == 1 }) }.reduce(0, +)) / Double(test.count * 60 * 80)
        print("linear decoder: mean Dice \(dice) (one patch off: \(shifted); foreground share \(chance))")
        XCTAssertGreaterThan(dice, 0.75)
        XCTAssertLessThan(shifted, 0.6)
        // Reading the same logits through a geometry that misplaces the crop by one patch fails the bar.
        var misplaced = data.geometry
        misplaced.left += SyntheticPatches.patch
        let off = data.meanDice(test.map { decoder.predict(data.tokens[$0], geometry: misplaced) }, test)
        XCTAssertLessThan(off, 0.6, "a crop one patch off")
        // Cut-away columns (the crop's outer patch on each side) are background.
        XCTAssertTrue(predictions.allSatisfy { p in (0..<60).allSatisfy { p[$0 * 80] == 0 && p[$0 * 80 + 79] == 0 } })
    }

    func testPatchKNNTransfersLabels() {
        let data = SyntheticPatches(images: 36, seed: 4)
        let knn = PatchKNN(data.examples(0..<24), grid: SyntheticPatches.grid, channels: 16, classes: 2, k: 10, temperature: 0.1)
        XCTAssertEqual(knn.labelledPatches, 24 * 36)
        let test = 24..<36
        let predictions = test.map { knn.predict(data.tokens[$0], geometry: data.geometry) }
        let dice = data.meanDice(predictions, test), shifted = data.meanDice(predictions, test, shift: 1)
        print("knn_patches: mean Dice \(dice) (one patch off: \(shifted))")
        XCTAssertGreaterThan(dice, 0.75)
        XCTAssertLessThan(shifted, 0.6)
        // A patch's scores are class shares: they sum to 1.
        let s = knn.patchScores(data.tokens[30])
        for p in 0..<36 { XCTAssertEqual(s[p] + s[36 + p], 1, accuracy: 1e-5) }
    }
}
