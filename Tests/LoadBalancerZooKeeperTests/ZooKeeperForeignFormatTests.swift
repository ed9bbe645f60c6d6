import Foundation
import InMemoryLogging
import LoadBalancer
import LoadBalancerTestKit
import LoadBalancerTestServers
import LoadBalancerZooKeeper
import Logging
import Testing

/// The registry value fixtures (Tests/Fixtures/RegistryValues), written from the formats' public
/// documentation.
private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/RegistryValues").path

/// Creates, with kazoo, the nodes each stack makes: Finagle's ServerSet members (ephemeral
/// sequential `member_` nodes), Curator's service instances (`basePath/name/id`, ephemeral for
/// DYNAMIC and ephemeral sequential for DYNAMIC_SEQUENTIAL), go-kit's instance strings (ephemeral
/// sequential, with the `_c_GUID-` prefix of ZooKeeper's protected create), each with a fixture
/// as data; prints `ready`, then holds the session (and so the nodes) until its input ends.
private let kazooWriter = #"""
    import os, sys, uuid
    from kazoo.client import KazooClient
    hosts, fixtures = sys.argv[1], sys.argv[2]
    def data(name):
        with open(os.path.join(fixtures, name), "rb") as f:
            return f.read()
    zk = KazooClient(hosts=hosts)
    zk.start(timeout=30)
    for name in ["serverset-member.json", "serverset-stopping.json"]:
        zk.create("/finagle/billing/member_", data(name), ephemeral=True, sequence=True, makepath=True)
    zk.create("/curator/services/billing/6d1f4c2a-8e3b-4a57-9c0d-1b2e3f4a5b6c", data("curator-instance.json"), ephemeral=True, makepath=True)
    zk.create("/curator/services/billing/orders-7f3a", data("curator-spring.json"), ephemeral=True, sequence=True)
    zk.create("/curator/services/billing/vault-1", data("curator-ssl-only.json"), ephemeral=True, sequence=True)
    zk.create("/curator/services/billing/billing-old", data("curator-disabled.json"), ephemeral=True)
    for name in ["gokit-url-http.txt", "gokit-url-https-path.txt", "gokit-url-grpc.txt", "gokit-url-default-port.txt", "invalid-text.txt"]:
        zk.create("/gokit/users/_c_" + uuid.uuid4().hex + "-", data(name), ephemeral=True, sequence=True, makepath=True)
    zk.create("/gokit/plain/_c_" + uuid.uuid4().hex + "-", data("gokit-hostport.txt"), ephemeral=True, sequence=True, makepath=True)
    print("ready", flush=True)
    sys.stdin.read()
    zk.stop()
    zk.close()
    """#

/// Reads, with kazoo, what our registrars wrote in the ServerSet and Curator forms, decodes it with
/// Python's json and checks every field as Finagle/Aurora and Curator readers use them.
private let kazooChecker = #"""
    import json, re, sys, time
    from kazoo.client import KazooClient
    zk = KazooClient(hosts=sys.argv[1])
    zk.start(timeout=30)
    members = zk.get_children("/aurora/jobs/api")
    assert len(members) == 1 and re.fullmatch(r"member_\d{10}", members[0]), members
    raw, stat = zk.get("/aurora/jobs/api/" + members[0])
    assert stat.ephemeralOwner != 0, "the ServerSet member is not ephemeral"
    member = json.loads(raw)
    assert member["serviceEndpoint"] == {"host": "127.0.0.1", "port": 8080}, member
    assert member["additionalEndpoints"] == {"admin": {"host": "127.0.0.1", "port": 9990}, "http": {"host": "127.0.0.1", "port": 8088}}, member
    assert member["status"] == "ALIVE", member
    assert member["shard"] == 1 and isinstance(member["shard"], int), member
    ids = zk.get_children("/curator/services/api")
    assert ids == ["f47ac10b-58cc-4372-a567-0e02b2c3d479"], ids
    raw, stat = zk.get("/curator/services/api/" + ids[0])
    assert stat.ephemeralOwner != 0, "the Curator instance is not ephemeral"
    instance = json.loads(raw)
    assert instance["name"] == "api" and instance["id"] == ids[0], instance
    assert instance["address"] == "127.0.0.1" and instance["port"] == 8081 and instance["sslPort"] == 8443, instance
    assert instance["payload"] is None and instance["serviceType"] == "DYNAMIC", instance
    now = int(time.time() * 1000)
    assert isinstance(instance["registrationTimeUTC"], int) and abs(now - instance["registrationTimeUTC"]) < 600000, instance
    parts = instance["uriSpec"]["parts"]
    assert parts == [{"value": "scheme", "variable": True}, {"value": "://", "variable": False}, {"value": "address", "variable": True}, {"value": ":", "variable": False}, {"value": "port", "variable": True}], parts
    zk.stop()
    zk.close()
    print("checked", flush=True)
    """#

@Suite(
    "ZooKeeper and the formats other stacks write (kazoo)", .enabled(if: ZooKeeperEnsemble.enabled), .serialized,
    .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct ZooKeeperForeignFormatTests {
    @Test("nodes kazoo creates as Finagle, Curator and go-kit do are discovered; non-serving ones left out, bad ones reported")
    func kazooNodesAreDiscovered() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        defer { ensemble.destroy() }
        let client = ZooKeeperClient(configuration: ensemble.configuration())
        let finagle = ZooKeeperPublisher(path: "/finagle/billing", client: client)
        let finagleHTTP = ZooKeeperPublisher(
            path: "/finagle/billing", client: client, valueOptions: RegistryValueOptions(serverSetEndpoint: "http"))
        let curator = ZooKeeperPublisher(path: "/curator/services/billing", client: client)
        let gokit = ZooKeeperPublisher(path: "/gokit/users", client: client)
        let plain = ZooKeeperPublisher(path: "/gokit/plain", client: client)
        let recorders = (0..<5).map { _ in Recorder() }
        let publishers = [finagle, finagleHTTP, curator, gokit, plain]
        var services: [@Sendable () async -> Void] = [{ try? await client.run() }]
        for (publisher, recorder) in zip(publishers, recorders) {
            services.append { try? await publisher.run() }
            services.append(recorder.recording(publisher))
        }
        let writer = try Kazoo.start(kazooWriter, [ensemble.connectString, fixtures])
        do {
            try await writer.waitForOutput("ready")
            try await withRunning(services) {
                try await eventually("the ServerSet member") { recorders[0].ids == ["10.2.0.5:31010"] }
                try await eventually("its http endpoint") { recorders[1].ids == ["10.2.0.5:31011"] }
                try await eventually("the Curator instances") {
                    recorders[2].ids == ["6d1f4c2a-8e3b-4a57-9c0d-1b2e3f4a5b6c", "orders-7f3a", "vault-1"]
                }
                try await eventually("the go-kit URLs") {
                    Set(recorders[3].latest?.instances.map(\.hostPort) ?? [])
                        == ["10.1.2.3:8080", "api.internal:8443", "[fd00::7]:50051", "secure.internal:443"]
                }
                try await eventually("the go-kit host:port") { recorders[4].ids == ["10.1.2.3:8080"] }

                // The STOPPING member and the disabled Curator instance are left out, not errors.
                #expect(recorders[0].latest?.error == nil && recorders[1].latest?.error == nil)
                #expect(recorders[2].latest?.error == nil)
                let orders = try #require(recorders[2].latest?.instances.first { $0.id == "orders-7f3a" })
                #expect(orders.hostPort == "10.3.1.4:9000" && orders.metadata["curator.name"] == "orders")
                #expect(orders.metadata["curator.payload"]?.contains("ZookeeperInstance") == true)
                let member = try #require(recorders[0].latest?.instances.first)
                #expect(member.metadata["serverset.shard"] == "3" && member.metadata["serverset.endpoint.admin"] == "10.2.0.5:9990")
                let urls = recorders[3].latest?.instances ?? []
                #expect(urls.first { $0.port == 8443 }?.metadata == ["url.scheme": "https", "url.path": "/v1/users?region=eu"])
                #expect(urls.first { $0.port == 50051 }?.metadata == ["url.scheme": "grpc"])
                // The value in no form is reported in band, naming its node.
                try await eventually("the bad node reported") { recorders[3].latest?.error?.code == .invalidInstances }
                let message = recorders[3].latest?.error?.message ?? ""
                #expect(message.contains("/gokit/users/_c_") && message.contains("not an instance"), "\(message)")

                // kazoo's session ends: its ephemeral nodes go, and so do the instances.
                writer.closeInput()
                #expect(try await writer.exitStatus(timeout: .seconds(60)) == 0, "\(writer.stderr)")
                try await eventually("the nodes gone with kazoo's session") {
                    recorders.allSatisfy { $0.latest?.instances.isEmpty == true }
                }
            }
        } catch {
            try? await writer.stop()
            throw error
        }
    }

    @Test("what our registrars write as a ServerSet member and a Curator instance, kazoo reads and Python decodes")
    func registrarFormatsReadByKazoo() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        defer { ensemble.destroy() }
        let client = ZooKeeperClient(configuration: ensemble.configuration())
        let member = try Instance(
            host: "127.0.0.1", port: 8080,
            metadata: ["serverset.endpoint.admin": "127.0.0.1:9990", "serverset.endpoint.http": "127.0.0.1:8088", "serverset.shard": "1"])
        let service = try Instance(
            host: "127.0.0.1", port: 8081, metadata: ["curator.sslPort": "8443", "curator.uriSpec": "{scheme}://{address}:{port}"],
            id: "f47ac10b-58cc-4372-a567-0e02b2c3d479")
        let serverSet = ZooKeeperRegistrar(instance: member, path: "/aurora/jobs/api", client: client, format: .serverSet)
        let curator = ZooKeeperRegistrar(instance: service, path: "/curator/services/api", client: client, format: .curator)
        let readBack = ZooKeeperPublisher(path: "/curator/services/api", client: client)
        let recorder = Recorder()
        let services: [@Sendable () async -> Void] = [
            { try? await client.run() }, { try? await readBack.run() }, recorder.recording(readBack),
        ]
        try await withRunning(services) {
            // A node left under the instance's id (as by an earlier process whose session has not
            // expired yet): the Curator registration replaces it with its own ephemeral node.
            try await connected(client)
            try await client.create(
                "/curator/services/api/f47ac10b-58cc-4372-a567-0e02b2c3d479", data: Array("stale".utf8), createParents: true)
            let registrations = [Task { try? await serverSet.run() }, Task { try? await curator.run() }]
            try await eventually("both registered") { serverSet.registeredNode != nil && curator.registeredNode != nil }
            #expect(curator.registeredNode == "/curator/services/api/f47ac10b-58cc-4372-a567-0e02b2c3d479")
            #expect(serverSet.registeredNode?.hasPrefix("/aurora/jobs/api/member_") == true)
            let output = try await Kazoo.run(kazooChecker, [ensemble.connectString])
            #expect(output.contains("checked"))
            // Our own publisher reads the Curator form back with the same id and address.
            try await eventually("read back") { recorder.ids == [service.id] }
            #expect(recorder.latest?.instances.first?.hostPort == "127.0.0.1:8081")
            // Deregistered on cancellation: both nodes go.
            for registration in registrations { registration.cancel() }
            for registration in registrations { await registration.value }
            #expect(try await client.getChildren("/curator/services/api").children.isEmpty)
            #expect(try await client.getChildren("/aurora/jobs/api").children.isEmpty)
        }
    }

    @Test("a Curator registration whose id holds '/' fails at once with a clear error, is not retried, and creates nothing")
    func curatorIDWithSlash() async throws {
        let ensemble = try await ZooKeeperEnsemble.start()
        defer { ensemble.destroy() }
        let client = ZooKeeperClient(configuration: ensemble.configuration())
        let log = InMemoryLogHandler()
        var logger = Logger(label: "test") { _ in log }
        logger.logLevel = .debug
        let registrar = ZooKeeperRegistrar(
            instance: try Instance(host: "127.0.0.1", port: 8080, id: "a/b"), path: "/curator/services/x", client: client,
            format: .curator, backoff: Backoff(base: .milliseconds(10), cap: .milliseconds(50)), logger: logger)
        try await withRunning([{ try? await client.run() }, { try? await registrar.run() }]) {
            try await eventually("the failure logged") {
                log.entries.contains { entry in
                    entry.metadata["loadbalancer.error"].map { "\($0)".contains("must not contain '/'") } ?? false
                }
            }
            #expect(registrar.registeredNode == nil)
            try await eventually("the client connected") { client.isConnected }
            #expect(try await client.exists("/curator/services/x/a") == nil)
        }
        // run() itself ends at once with the typed error: no retry could succeed.
        await #expect(throws: ZooKeeperError.self) { try await registrar.run() }
        do {
            try await registrar.run()
        } catch let error as ZooKeeperError {
            #expect(error.code == .invalidArgument)
        }
    }
}
