import Foundation
import LoadBalancer
import Testing

@testable import LoadBalancerEtcd

/// The publisher's table, fed decoded messages directly (no server needed).
@Suite("etcd instance table")
struct EtcdInstanceTableTests {
    func kv(_ key: String, _ value: String, revision: Int64) -> Etcdserverpb_KeyValue {
        var kv = Etcdserverpb_KeyValue()
        kv.key = Data(key.utf8)
        kv.value = Data(value.utf8)
        kv.modRevision = revision
        kv.createRevision = revision
        return kv
    }

    func event(_ type: Etcdserverpb_Event.EventType, _ kv: Etcdserverpb_KeyValue) -> EtcdEvent {
        var event = Etcdserverpb_Event()
        event.type = type
        event.kv = kv
        return EtcdEvent(event)
    }

    func parse(_ kv: EtcdKeyValue) -> Instance? { try? Instance(registryValue: kv.value) }

    @Test("a list resets the table; values that are not instances are skipped; watching starts after the list")
    func list() {
        var table = EtcdInstanceTable()
        let range = EtcdRange(
            revision: 7,
            keyValues: [kv("/s/b", "h:2", revision: 3), kv("/s/a", "h:1", revision: 5), kv("/s/c", "not an instance", revision: 6)].map(
                EtcdKeyValue.init))
        table.reset(to: range, parse: parse)
        #expect(table.ordered.map(\.id) == ["h:1", "h:2"])
        #expect(table.nextRevision == 8)
        #expect(table.invalid == ["/s/c": Array("not an instance".utf8)], "kept to be reported in band")
    }

    @Test("values that are not instances are tracked until replaced by an instance or deleted")
    func invalidValues() {
        var table = EtcdInstanceTable()
        table.reset(to: EtcdRange(revision: 1, keyValues: []), parse: parse)
        let bad = EtcdWatchBatch(
            revision: 3, events: [event(.put, kv("/s/x", "bad", revision: 2)), event(.put, kv("/s/y", "bad too", revision: 3))])
        _ = table.apply(bad, parsed: bad.events.map { parse($0.keyValue) })
        #expect(table.invalid.keys.sorted() == ["/s/x", "/s/y"])
        #expect(table.ordered.isEmpty)
        let fixed = EtcdWatchBatch(
            revision: 5, events: [event(.put, kv("/s/x", "h:1", revision: 4)), event(.delete, kv("/s/y", "", revision: 5))])
        _ = table.apply(fixed, parsed: fixed.events.map { $0.kind == .put ? parse($0.keyValue) : nil })
        #expect(table.invalid.isEmpty)
        #expect(table.ordered.map(\.id) == ["h:1"])
    }

    @Test("batches apply puts and deletes in order; a replay of revisions already seen changes nothing")
    func batches() {
        var table = EtcdInstanceTable()
        table.reset(to: EtcdRange(revision: 10, keyValues: [EtcdKeyValue(kv("/s/a", "h:1", revision: 10))]), parse: parse)
        let batch = EtcdWatchBatch(
            revision: 12, events: [event(.put, kv("/s/b", "h:2", revision: 11)), event(.delete, kv("/s/a", "", revision: 12))])
        let parsed = batch.events.map { $0.kind == .put ? parse($0.keyValue) : nil }
        let changed = table.apply(batch, parsed: parsed)
        #expect(changed)
        #expect(table.ordered.map(\.id) == ["h:2"])
        #expect(table.nextRevision == 13)
        // The same batch again (a watch resumed on another member from an older revision).
        let replayed = table.apply(batch, parsed: parsed)
        #expect(!replayed)
        #expect(table.ordered.map(\.id) == ["h:2"])
        // A progress notification moves the revision on without a change.
        let progressed = table.apply(EtcdWatchBatch(revision: 20, events: []), parsed: [])
        #expect(!progressed)
        #expect(table.nextRevision == 21)
    }

    @Test("the largest revision a server could send does not overflow")
    func largestRevision() {
        var table = EtcdInstanceTable()
        table.reset(to: EtcdRange(revision: .max, keyValues: []), parse: parse)
        #expect(table.nextRevision == .max)
        let batch = EtcdWatchBatch(revision: .max, events: [event(.put, kv("/s/a", "h:1", revision: .max))])
        _ = table.apply(batch, parsed: [parse(batch.events[0].keyValue)])
        #expect(table.nextRevision == .max)
    }
}
