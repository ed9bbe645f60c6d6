import LoadBalancer
import LoadBalancerTestKit
import LoadBalancerTestServers
import LoadBalancerZooKeeper
import Testing

@Suite(
    "ZooKeeper: a publisher over many children, against a real server", .enabled(if: ZooKeeperEnsemble.enabled), .serialized,
    .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes))
)
struct ZooKeeperManyChildrenTests {
    @Test("600 children: the first read has every child's data (reads in flight together), each with a data watch")
    func manyChildren() async throws {
        let count = 600
        let ensemble = try await ZooKeeperEnsemble.start()
        defer { ensemble.destroy() }
        let client = ZooKeeperClient(configuration: ensemble.configuration())
        let publisher = ZooKeeperPublisher(path: "/many", client: client)
        let recorder = Recorder()
        try await withRunning([{ try? await client.run() }]) {
            try await connected(client)
            try await client.create("/many", createParents: true)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<count {
                    if i >= 32 { try await group.next() }
                    group.addTask { try await client.create("/many/m\(i)", data: Array("127.0.0.1:\(10_000 + i)".utf8)) }
                }
                try await group.waitForAll()
            }
            try await withRunning([{ try? await publisher.run() }, recorder.recording(publisher)]) {
                let all = Set((0..<count).map { "127.0.0.1:\(10_000 + $0)" })
                try await eventually("every child") { Set(recorder.ids) == all }
                // Every child read carries a data watch: a change of the last one read, and of
                // the first, each comes through.
                try await client.setData("/many/m\(count - 1)", data: Array("127.0.0.2:1".utf8))
                try await client.setData("/many/m0", data: Array("127.0.0.2:2".utf8))
                try await eventually("both changes") {
                    let ids = Set(recorder.ids)
                    return ids.count == count && ids.contains("127.0.0.2:1") && ids.contains("127.0.0.2:2")
                }
                try await client.delete("/many/m1")
                try await eventually("m1 removed") { recorder.ids.count == count - 1 && !recorder.ids.contains("127.0.0.1:10001") }
            }
        }
        #expect(recorder.latest?.error == nil)
    }
}
