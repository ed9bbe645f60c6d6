// libFuzzer entry point for Consul health answers: the JSON of /v1/health/service/NAME decoded as
// ConsulClient decodes it, then turned into instances as ConsulPublisher does. Built by
// scripts/fuzz.sh consul with ConsulModels.swift, ConsulError.swift and the core's Instance sources.
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConsulHealth(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Data(UnsafeBufferPointer(start: data, count: size))
    guard let entries = try? JSONDecoder().decode([HealthEntryJSON].self, from: bytes) else { return 0 }
    let (instances, _) = ConsulServiceEntry.instances(from: entries.map(\.entry), tags: ["a"])
    _ = ConsulServiceEntry.instances(from: entries.map(\.entry), tags: [])
    precondition(instances.allSatisfy { (1...65535).contains($0.port) })
    return 0
}
