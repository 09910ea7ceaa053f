import XCTest
import XRTensor

final class ProgressTests: XCTestCase {
    func testLineShowsDoneTotalRateAndTimeLeft() {
        let p = ProgressReporter("embed", total: 10, unit: "images", quiet: true)
        p.advance(by: 4)
        let line = p.line(now: Date().addingTimeInterval(2))
        XCTAssertTrue(line.hasPrefix("embed  4/10 (40%)"), line)
        XCTAssertTrue(line.contains("images/s"), line)
        XCTAssertTrue(line.hasSuffix("left"), line)
    }

    func testClockFormat() {
        XCTAssertEqual(ProgressReporter.clock(5), "0:05")
        XCTAssertEqual(ProgressReporter.clock(3725), "1:02:05")
    }
}
