// libFuzzer entry point for the DNS message parser. Built by scripts/fuzz-dns.sh together with
// Sources/LoadBalancerDNS/DNSMessage.swift and DNSMessage+Wire.swift (which need nothing else).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDNSMessage(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let message = try? DNSMessage.parse(bytes) {
        // What parses must serialise and parse again without trapping.
        _ = try? DNSMessage.parse(message.serialized())
    }
    return 0
}
