import Foundation
import XCTest
import XRTorch
import XRTensor
import TestSupport

/// PyTorch checkpoints from fixtures/make_torch_fixtures.py (torch 2.13.0): state-dict keys,
/// dtypes, shared storages, strided views, damaged archives and hostile pickles.
final class TorchCheckpointTests: XCTestCase {
    func fixture(_ name: String) -> URL { Fixtures.url("torch/\(name)") }

    func error(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> XRError? {
        do { try body() } catch let e as XRError { return e } catch {
            XCTFail("not an XRError: \(error)", file: file, line: line)
            return nil
        }
        XCTFail("no error", file: file, line: line)
        return nil
    }

    /// The same fp16-exact weights saved three ways read back identically, and equal to what the
    /// safetensors library wrote for the same model.
    func testStateDictKeysDtypesAndViewsGiveTheSameWeights() throws {
        let st = try SafeTensorsFile(contentsOf: fixture("hub_vit/model.safetensors"))
        for (name, key) in [("vit_model.pt", "model"), ("vit_module_fp16.pt", "module"), ("vit_views.pth", "state_dict")] {
            let c = try TorchCheckpoint(contentsOf: fixture(name))
            XCTAssertEqual(c.stateDictKey, key, name)
            XCTAssertEqual(c.names, st.names, name)
            for n in st.names {
                XCTAssertEqual(try c.tensor(n), try st.tensor(n), "\(name): \(n)")
            }
        }
        XCTAssertEqual(try TorchCheckpoint(contentsOf: fixture("vit_module_fp16.pt")).dtype("norm.weight"), .float16)
        let top = try TorchCheckpoint(contentsOf: fixture("dinov2_top.bin"))
        XCTAssertNil(top.stateDictKey)
        XCTAssertEqual(top.shape("reg_token"), [1, 4, 24])
    }

    func testEveryDtypeAndUnusualViewConvertsExactly() throws {
        let c = try TorchCheckpoint(contentsOf: fixture("dtypes.pt"))
        let want = try SafeTensorsFile(contentsOf: fixture("dtypes_expected.safetensors"))
        XCTAssertEqual(c.names, want.names)
        for n in want.names { XCTAssertEqual(try c.tensor(n), try want.tensor(n), n) }
        XCTAssertEqual(c.dtype("bf16"), .bfloat16)
        XCTAssertEqual(c.dtype("f64"), .float64)
        XCTAssertEqual(c.shape("scalar"), [])
        XCTAssertEqual(c.shape("empty"), [0, 3])
    }

    /// Hand-written archives that torch.load reads (checked by the generator): a transposed view,
    /// and storages written on a big-endian machine.
    func testHandWrittenAndBigEndianArchives() throws {
        let h = try TorchCheckpoint(contentsOf: fixture("handmade.pt"))
        XCTAssertEqual(try h.tensor("w"), Tensor(shape: [2, 2], scalars: [1, 3, 2, 4]))
        let b = try TorchCheckpoint(contentsOf: fixture("big_endian.pt"))
        XCTAssertEqual(try b.tensor("w"), Tensor(shape: [2, 2], scalars: [1, 3, 2, 4]))
        XCTAssertEqual(try b.tensor("h"), Tensor(shape: [2], scalars: [0.5, -2]))
    }

    func testStateDictKeyChoosesAndNamesWhatIsWrong() throws {
        XCTAssertEqual(try TorchCheckpoint(contentsOf: fixture("dtypes.pt"), stateDictKey: "state_dict").names.count, 9)
        let missing = error { _ = try TorchCheckpoint(contentsOf: fixture("vit_model.pt"), stateDictKey: "ema") }
        XCTAssertEqual(missing?.field, "--state-dict-key")
        XCTAssertTrue(missing?.message.contains("model, epoch, note") == true, "\(String(describing: missing))")
        // The top level holds the state dict under 'model', an int and a string: not a state dict.
        let top = error { _ = try TorchCheckpoint(contentsOf: fixture("vit_model.pt"), stateDictKey: ".") }
        XCTAssertEqual(top?.field, "model")
        XCTAssertTrue(top?.message.contains("a dict") == true, "\(String(describing: top))")
        let notDict = error { _ = try TorchCheckpoint(contentsOf: fixture("vit_model.pt"), stateDictKey: "epoch") }
        XCTAssertTrue(notDict?.message.contains("an int") == true, "\(String(describing: notDict))")
    }

    /// Each payload creates /tmp/xrlab-hostile-<name> under torch.load(weights_only=False)
    /// (checked by the generator); here each is refused with its global named, and nothing runs.
    func testHostilePicklesAreRefusedByNameAndRunNothing() throws {
        let cases = [
            ("os_system", "os.system"), ("builtins_eval", "builtins.eval"), ("subprocess_popen", "subprocess.Popen"),
            ("unknown_class", "xrlab_fixture_payload.Dropper"), ("reduce_in_rebuild", "posix.system"),
            ("build_unknown", "xrlab_fixture_payload.Dropper")
        ]
        for (name, global) in cases {
            let marker = URL(fileURLWithPath: "/tmp/xrlab-hostile-\(name)")
            try? FileManager.default.removeItem(at: marker)
            let url = fixture("hostile_\(name).pt")
            let e = error { _ = try TorchCheckpoint(contentsOf: url) }
            XCTAssertEqual(e?.file, url.path, name)
            XCTAssertTrue(e?.message.contains("'\(global)' is not allowed") == true, "\(name): \(String(describing: e))")
            XCTAssertEqual(e?.field, "data.pkl global \(global)", name)
            // The same bytes from memory: the fuzzing entry point.
            let m = error { _ = try TorchCheckpoint(data: try Data(contentsOf: url), source: name) }
            XCTAssertTrue(m?.message.contains(global) == true, "\(name): \(String(describing: m))")
            Thread.sleep(forTimeInterval: 0.05)
            XCTAssertFalse(FileManager.default.fileExists(atPath: marker.path), "\(name): the payload ran")
        }
    }

    func testStorageKeyOutsideTheArchiveIsRefused() {
        let e = error { _ = try TorchCheckpoint(contentsOf: fixture("hostile_storage_outside.pt")) }
        XCTAssertTrue(e?.message.contains("'../../../../etc/passwd' is not a plain name") == true, "\(String(describing: e))")
    }

    func testDamagedArchivesAreClearErrors() throws {
        let cases = [
            ("bad_missing_storage.pt", "storage '1' is missing", "archive/data/1"),
            ("bad_short_storage.pt", "reaches element 7 of storage '0', which holds 4", nil),
            ("bad_short_bytes.pt", "holds 16 bytes, but 8 float32 elements need 32", "archive/data/0"),
            ("bad_huge_size.pt", "overflows", nil),
            ("legacy.pt", "legacy torch.save format", nil),
            ("bad_expanding.pt", "expands to more than 16 times its size", "archive/data/0")
        ]
        for (name, text, field) in cases {
            let e = error { _ = try TorchCheckpoint(contentsOf: fixture(name)) }
            XCTAssertTrue(e?.message.contains(text) == true, "\(name): \(String(describing: e))")
            XCTAssertEqual(e?.file, fixture(name).path, name)
            if let field { XCTAssertEqual(e?.field, field, name) }
        }
        // Truncated anywhere, including just before the end-of-central-directory record.
        let whole = try Data(contentsOf: fixture("vit_model.pt"))
        for n in [0, 3, 100, whole.count / 2, whole.count - 22, whole.count - 1] {
            let e = error { _ = try TorchCheckpoint(data: whole.prefix(n), source: "cut-\(n)") }
            XCTAssertEqual(e?.file, "cut-\(n)")
        }
    }

    /// Random byte changes anywhere in a real checkpoint: an error or a checkpoint, never a crash.
    func testCorruptedBytesNeverCrash() throws {
        let whole = [UInt8](try Data(contentsOf: fixture("dtypes.pt")))
        var rng = XRRandom(seed: 21)
        var refused = 0
        for _ in 0..<300 {
            var b = whole
            for _ in 0..<1 + rng.nextInt(below: 4) { b[rng.nextInt(below: b.count)] = UInt8(truncatingIfNeeded: rng.next()) }
            do {
                let c = try TorchCheckpoint(data: Data(b), source: "mutant")
                for n in c.names { _ = try? c.tensor(n) }
            } catch is XRError { refused += 1 }
        }
        XCTAssertGreaterThan(refused, 0)
    }
}
