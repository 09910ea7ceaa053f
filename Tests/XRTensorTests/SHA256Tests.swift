import Foundation
import XCTest
import XRTensor
import TestSupport

final class SHA256Tests: XCTestCase {
    func testNISTVectors() {
        XCTAssertEqual(SHA256.hex(Data()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hex(Data("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(
            SHA256.hex(Data("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(
            SHA256.hex(Data("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu".utf8)),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1")
        XCTAssertEqual(
            SHA256.hex(Data(repeating: UInt8(ascii: "a"), count: 1_000_000)),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    func testStreamingEqualsOneShot() {
        var rng = XRRandom(seed: 4)
        let bytes = (0..<1000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        var s = SHA256()
        var i = 0
        for step in [1, 63, 64, 65, 7, 200, 600] where i < bytes.count {
            s.update(Array(bytes[i..<min(bytes.count, i + step)])); i += step
        }
        XCTAssertEqual(s.finalize(), SHA256.hash(bytes))
    }

    func testFilesMatchPythonHashlib() throws {
        struct E: Decodable { var sha256: [String: String] }
        let e = try JSONDecoder().decode(E.self, from: Data(contentsOf: Fixtures.url("tensor/expected.json")))
        XCTAssertFalse(e.sha256.isEmpty)
        for (name, digest) in e.sha256 {
            XCTAssertEqual(try SHA256.hexOfFile(Fixtures.url("tensor/\(name)")), digest, name)
        }
    }

    func testHMACRFC4231() {
        // Test case 1 and 2 of RFC 4231.
        XCTAssertEqual(
            hexString(HMACSHA256.mac(key: [UInt8](repeating: 0x0b, count: 20), message: Array("Hi There".utf8))),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        XCTAssertEqual(
            hexString(HMACSHA256.mac(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        // Test case 6: key longer than the block size.
        XCTAssertEqual(
            hexString(
                HMACSHA256.mac(
                    key: [UInt8](repeating: 0xaa, count: 131),
                    message: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8))),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }
}
