// libFuzzer entry point for instance values as registries store them (host:port or JSON). Built by
// scripts/fuzz.sh registry-value with the Instance sources of the core module.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRegistryValue(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let instance = try? Instance(registryValue: bytes) {
        // What parses must round-trip through the JSON form registrars write.
        let again = try? Instance(registryValue: Array(instance.registryJSON.utf8))
        precondition(again == instance, "round trip changed \(instance) into \(String(describing: again))")
    }
    return 0
}
