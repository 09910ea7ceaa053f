// YAML recipes through schema and value validation, as `xrlab validate --schema-only` runs them
// (file checks are left out: they would make the fuzzer read whatever paths it invents).
import Foundation
import FuzzSupport
import XRRecipes

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let url = Scratch.file("recipe.yaml", fuzzData(bytes, size))
    _ = Planner.validate(url, overrides: [], checkFiles: false)
    return 0
}

@_cdecl("fuzz_recipe_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, fuzzOne)
}
