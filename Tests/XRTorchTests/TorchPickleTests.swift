import Foundation
import XCTest
import XRTorch
import XRTensor

/// The pickle interpreter on hand-assembled opcode streams: what it builds, and the malformed or
/// hostile streams it refuses (each naming the file and byte offset or global).
final class TorchPickleTests: XCTestCase {
    // Opcode helpers (protocol 2).
    func s(_ x: String) -> [UInt8] { [0x58] + le(UInt32(x.utf8.count)) + Array(x.utf8) }
    func le(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    func int(_ v: Int32) -> [UInt8] { [0x4A] + le(UInt32(bitPattern: v)) }
    func global(_ m: String, _ n: String) -> [UInt8] { [0x63] + Array("\(m)\n\(n)\n".utf8) }
    func tensor(numel: Int32, size: [Int32], stride: [Int32], offset: Int32 = 0) -> [UInt8] {
        let pid: [UInt8] = [0x28] + s("storage") + global("torch", "FloatStorage") + s("0") + s("cpu") + int(numel) + [0x74, 0x51]
        let tup = { (xs: [Int32]) in [0x28] + xs.flatMap(self.int) + [0x74] }
        return global("torch._utils", "_rebuild_tensor_v2") + [0x28] + pid + int(offset) + tup(size) + tup(stride)
            + [0x89] + global("collections", "OrderedDict") + [0x29, 0x52, 0x74, 0x52]
    }
    func load(_ body: [UInt8]) throws -> PickleValue { try TorchPickle.load([0x80, 0x02] + body + [0x2E], source: "t.pkl") }
    func refusal(_ body: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> String {
        do { _ = try load(body) } catch let e as XRError {
            XCTAssertEqual(e.file, "t.pkl", file: file, line: line)
            return e.message + " | " + (e.field ?? "")
        } catch { XCTFail("\(error)", file: file, line: line) }
        XCTFail("accepted", file: file, line: line)
        return ""
    }

    func testPlainDataAndATensorView() throws {
        let v = try load(
            [0x7D, 0x71, 0x00, 0x28] + s("w") + tensor(numel: 6, size: [2, 3], stride: [1, 2])
                + s("n") + [0x4B, 7, 0x71, 0x01] + s("x") + [0x47, 0x3F, 0xF8, 0, 0, 0, 0, 0, 0] + s("l") + [0x5D, 0x28, 0x4E, 0x88, 0x65]
                + s("m") + [0x68, 0x01] + [0x75])
        guard case .dict(let d) = v, case .tensor(let t)? = d["w"], case .int(7)? = d["n"], case .float(1.5)? = d["x"],
            case .list(let l)? = d["l"], case .int(7)? = d["m"]
        else { return XCTFail("\(v)") }
        XCTAssertEqual(t.shape, [2, 3])
        XCTAssertEqual(t.strides, [1, 2])
        XCTAssertEqual(l.items.count, 2)
    }

    func testDisallowedGlobalsAndCallsAreNamed() {
        XCTAssertTrue(refusal(global("os", "system")).contains("'os.system' is not allowed"))
        XCTAssertTrue(refusal([0x8C, 2] + Array("os".utf8) + [0x8C, 6] + Array("system".utf8) + [0x93]).contains("os.system"))
        // An allowed name used as something it is not: a storage class called, NEWOBJ, BUILD on a tensor.
        XCTAssertTrue(refusal(global("torch", "FloatStorage") + [0x29, 0x52]).contains("calling 'torch.FloatStorage'"))
        XCTAssertTrue(refusal(global("collections", "OrderedDict") + [0x29, 0x81]).contains("creating an object of class 'collections.OrderedDict'"))
        let build = refusal(tensor(numel: 4, size: [4], stride: [1]) + [0x7D, 0x62])
        XCTAssertTrue(build.contains("BUILD") && build.contains("_rebuild_tensor_v2"), build)
        XCTAssertTrue(refusal([0x69] + Array("os\nsystem\n".utf8)).contains("INST / OBJ"))
    }

    func testMalformedStreamsAreClearErrors() {
        // A dict stored in itself (through the memo).
        XCTAssertTrue(refusal([0x7D, 0x71, 0x00] + s("self") + [0x68, 0x00, 0x73]).contains("stored in itself"))
        // Nesting deeper than the limit, built from lists appended into lists.
        let deep: [UInt8] = Array(repeating: 0x5D, count: 150) + Array(repeating: 0x61, count: 149)
        XCTAssertTrue(refusal(deep).contains("nested deeper than 100"))
        // A list appended to itself (a cycle) and a list changed after being nested.
        XCTAssertTrue(refusal([0x5D, 0x71, 0x00, 0x68, 0x00, 0x61]).contains("appended to itself"))
        XCTAssertTrue(refusal([0x5D, 0x71, 0x00, 0x5D, 0x68, 0x00, 0x61, 0x30, 0x4E, 0x61]).contains("changed after being placed"))
        // Declared lengths past the end of the input, and integers past 64 bits.
        XCTAssertTrue(refusal([0x8D] + [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).contains("runs past the end"))
        XCTAssertTrue(refusal([0x8B, 0xFF, 0xFF, 0xFF, 0x7F]).contains("too large"))
        XCTAssertTrue(refusal([0x8A, 9] + Array(repeating: 0x11, count: 9)).contains("does not fit in 64 bits"))
        XCTAssertTrue(refusal([0x68, 0x05]).contains("memo entry 5"))
        XCTAssertTrue(refusal([0x30]).contains("underflow"))
        XCTAssertTrue(refusal([0xFF]).contains("unsupported pickle opcode 0xff"))
        // Tensor views that leave their storage, or whose size overflows.
        XCTAssertTrue(refusal(tensor(numel: 5, size: [2, 3], stride: [3, 1])).contains("reaches element 5"))
        XCTAssertTrue(refusal(tensor(numel: 5, size: [2, 3], stride: [3, 1], offset: -1)).contains("storage offset"))
        XCTAssertTrue(refusal(tensor(numel: 5, size: [Int32.max, Int32.max, Int32.max], stride: [1, 1, 1])).contains("overflows"))
        // Truncated input.
        XCTAssertThrowsError(try TorchPickle.load([0x80, 0x02, 0x58, 10, 0, 0, 0, 0x41], source: "t.pkl"))
        XCTAssertThrowsError(try TorchPickle.load([], source: "t.pkl"))
    }
}
