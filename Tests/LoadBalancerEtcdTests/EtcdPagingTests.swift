import LoadBalancer
import LoadBalancerEtcd
import LoadBalancerTestKit
import LoadBalancerTestServers
import Synchronization
import Testing

/// What a publisher's list handed to its page hook, in order.
final class PageLog: Sendable {
    private let pages = Mutex<[EtcdRange]>([])
    var all: [EtcdRange] { pages.withLock { $0 } }
    /// Records `page`; returns how many pages were recorded before it.
    func add(_ page: EtcdRange) -> Int {
        pages.withLock { pages in
            defer { pages.append(page) }
            return pages.count
        }
    }
}

/// Puts `count` keys `prefix` + `k0000`... with the values `127.0.0.1:(10000 + i)`, 32 at a time.
func putInstances(_ count: Int, under prefix: String, client: EtcdClient) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for i in 0..<count {
            if i >= 32 { try await group.next() }
            group.addTask { try await client.put(key(prefix, i), value: "127.0.0.1:\(10_000 + i)") }
        }
        try await group.waitForAll()
    }
}

func key(_ prefix: String, _ i: Int) -> String {
    let digits = String(i)
    return prefix + "k" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits
}

@Suite(
    "etcd: the initial list in pages, against a real etcd", .enabled(if: EtcdCluster.enabled), .serialized,
    .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes))
)
struct EtcdPagingTests {
    @Test("2,500 keys in pages of 1,000 at one revision; a put and a delete after the first page come with the watch")
    func pagedListIsASnapshot() async throws {
        let cluster = try await EtcdCluster.start()
        defer { cluster.destroy() }
        let client = try EtcdClient(configuration: cluster.configuration)
        let pages = PageLog()
        let wrote = Flag()
        let publisher = EtcdPublisher(prefix: "/paged/", client: client, pageSize: 1_000) { page in
            // After the first page: a key after every listed one, and the removal of one the
            // third page holds. Neither may show in the pages (they read the first page's
            // revision); both must reach the set through the watch.
            if pages.add(page) == 0 {
                do {
                    try await client.put("/paged/zzz", value: "127.0.0.2:1")
                    try await client.delete(key("/paged/", 2_400))
                    wrote.set()
                } catch {}
            }
        }
        let recorder = Recorder()
        try await withRunning(client) {
            try await putInstances(2_500, under: "/paged/", client: client)
            try await withRunning([{ try? await publisher.run() }, recorder.recording(publisher)]) {
                try await eventually("every instance, the late put in and the deleted key out", timeout: .seconds(30)) {
                    let ids = Set(recorder.ids)
                    return ids.count == 2_500 && ids.contains("127.0.0.2:1") && !ids.contains("127.0.0.1:12400")
                }
            }
        }
        #expect(wrote.isSet, "the put and the delete between pages succeeded")
        let all = pages.all
        #expect(all.map(\.keyValues.count) == [1_000, 1_000, 500])
        #expect(all.map(\.more) == [true, true, false])
        #expect(Set(all.map(\.revision)).count == 1, "every page at the first page's revision")
        let listed = all.flatMap(\.keyValues).map(\.key)
        #expect(listed == (0..<2_500).map { key("/paged/", $0) }, "every key once, in order, as of the first page")
        #expect(publisher.pageSize == 1_000)
        #expect(recorder.latest?.error == nil)
    }

    @Test("compaction of the listed revision before the last page: the list starts again at a new revision")
    func compactionBetweenPagesListsAgain() async throws {
        let cluster = try await EtcdCluster.start()
        defer { cluster.destroy() }
        let client = try EtcdClient(configuration: cluster.configuration)
        let pages = PageLog()
        let log = MessageLog()
        let compacted = Flag()
        let publisher = EtcdPublisher(prefix: "/paged/", client: client, pageSize: 500, logger: log.logger) { page in
            // After the first page: a put, and a compaction up to it (past the list's revision).
            if pages.add(page) == 0 {
                do {
                    try await client.compact(revision: try await client.put("/paged/zzz", value: "127.0.0.2:1"))
                    compacted.set()
                } catch {}
            }
        }
        let recorder = Recorder()
        try await withRunning(client) {
            try await putInstances(1_200, under: "/paged/", client: client)
            try await withRunning([{ try? await publisher.run() }, recorder.recording(publisher)]) {
                try await eventually("every instance and the late put", timeout: .seconds(30)) {
                    let ids = Set(recorder.ids)
                    return ids.count == 1_201 && ids.contains("127.0.0.2:1")
                }
            }
        }
        #expect(compacted.isSet, "the put and the compaction between pages succeeded")
        let all = pages.all
        // One page of the compacted snapshot, then a whole list at a later revision, which holds
        // the late put.
        #expect(all.map(\.keyValues.count) == [500, 500, 500, 201])
        #expect(all[1].revision > all[0].revision)
        #expect(Set(all.dropFirst().map(\.revision)).count == 1)
        #expect(all.last?.keyValues.last?.key == "/paged/zzz")
        #expect(log.all.contains { $0.contains("listing again") })
        #expect(!recorder.all.contains { $0.error != nil }, "a compaction mid-list is not a failure to report")
    }
}
