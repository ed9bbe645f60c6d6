// libFuzzer entry point for etcd's responses: protobuf messages decoded as EtcdClient decodes them
// and applied to the table of instances as EtcdPublisher applies them. Built by scripts/fuzz.sh
// etcd with SwiftProtobuf, the generated messages (etcd.pb.swift), EtcdModels.swift and the core's
// Instance sources.
//
// An input is a sequence of messages, each a kind byte, a two-byte big-endian length and that
// many bytes: kind 0 a RangeResponse (a list: the table is reset), 1 a WatchResponse (a batch is
// applied), 2 a LeaseGrantResponse, 3 a LeaseKeepAliveResponse, 4 a StatusResponse, 5 an
// AuthenticateResponse.
import Foundation
import SwiftProtobuf

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEtcdResponses(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeBufferPointer(start: data, count: size)
    var table = EtcdInstanceTable()
    var offset = 0
    while offset + 3 <= input.count {
        let kind = input[offset]
        let length = Int(input[offset + 1]) << 8 | Int(input[offset + 2])
        offset += 3
        let end = min(input.count, offset + length)
        let message = Data(input[offset..<end])
        offset = end
        switch kind % 6 {
        case 0:
            guard let response = try? Etcdserverpb_RangeResponse(serializedBytes: message) else { continue }
            let range = EtcdRange(revision: response.header.revision, keyValues: response.kvs.map(EtcdKeyValue.init))
            table.reset(to: range) { try? Instance(registryValue: $0.value) }
            precondition(table.instances.count <= range.keyValues.count)
        case 1:
            guard let response = try? Etcdserverpb_WatchResponse(serializedBytes: message) else { continue }
            if response.canceled { continue } // the client ends the watch with an error
            let batch = EtcdWatchBatch(revision: response.header.revision, events: response.events.map(EtcdEvent.init))
            let before = table.nextRevision
            let parsed = batch.events.map { $0.kind == .put ? try? Instance(registryValue: $0.keyValue.value) : nil }
            _ = table.apply(batch, parsed: parsed)
            // The revision to watch from never goes backwards.
            precondition(before.map { table.nextRevision! >= $0 } ?? true)
        case 2:
            _ = try? Etcdserverpb_LeaseGrantResponse(serializedBytes: message)
        case 3:
            _ = try? Etcdserverpb_LeaseKeepAliveResponse(serializedBytes: message)
        case 4:
            _ = try? Etcdserverpb_StatusResponse(serializedBytes: message)
        default:
            _ = try? Etcdserverpb_AuthenticateResponse(serializedBytes: message)
        }
    }
    _ = table.ordered
    return 0
}
