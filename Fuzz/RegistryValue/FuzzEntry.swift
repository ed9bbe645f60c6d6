// libFuzzer entry point for instance values as registries store them: host:port, go-kit URLs, this
// library's JSON, Finagle / Aurora ServerSet members and Apache Curator instances. Built by
// scripts/fuzz.sh registry-value with the Instance sources of the core module.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRegistryValue(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    // Odd lengths read ServerSet members through a named additional endpoint.
    let options = RegistryValueOptions(serverSetEndpoint: size % 2 == 0 ? nil : "http")
    guard let instance = try? Instance(registryValue: bytes, options: options) else { return 0 }
    // What parses must round-trip through the JSON form registrars write.
    let again = try? Instance(registryValue: Array(instance.registryJSON.utf8))
    precondition(again == instance, "round trip changed \(instance) into \(String(describing: again))")
    // Every other form a registrar can write reads back to the same address (and Curator's to the
    // same id).
    for format in [RegistryValueFormat.hostPort, .url(scheme: "grpc", path: "/p"), .serverSet, .curator] {
        let text = instance.registryValue(in: format, serviceName: "s", registrationTime: 1)
        let read = try? Instance(registryValue: Array(text.utf8))
        precondition(read?.hostPort == instance.hostPort, "\(format) of \(instance) read back as \(String(describing: read))")
        if format == .curator { precondition(read?.id == instance.id, "Curator form of \(instance) lost its id") }
    }
    return 0
}
