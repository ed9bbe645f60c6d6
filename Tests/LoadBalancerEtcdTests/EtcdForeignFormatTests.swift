import Foundation
import LoadBalancer
import LoadBalancerEtcd
import LoadBalancerTestKit
import LoadBalancerTestServers
import Testing

/// The registry value fixtures (Tests/Fixtures/RegistryValues), written from the formats' public
/// documentation.
private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/RegistryValues")

private func fixture(_ name: String) throws -> String {
    try String(contentsOf: fixtures.appendingPathComponent(name), encoding: .utf8)
}

@Suite(
    "etcd and the formats other stacks write (etcdctl)", .enabled(if: EtcdCluster.enabled), .serialized,
    .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct EtcdForeignFormatTests {
    @Test("keys etcdctl puts in each format are discovered; non-serving ones left out, bad ones reported by key")
    func etcdctlValuesAreDiscovered() async throws {
        let cluster = try await EtcdCluster.start()
        let files = [
            "gokit-url-http.txt", "gokit-url-https-path.txt", "gokit-url-grpc.txt", "serverset-member.json", "serverset-stopping.json",
            "curator-instance.json", "curator-spring.json", "curator-disabled.json", "library.json", "invalid-text.txt",
            "invalid-json.json",
        ]
        for file in files {
            try await Etcdctl.run(["put", "/fleet/users/" + file, try fixture(file)], cluster: cluster)
        }
        try await Etcdctl.run(["put", "/fleet/plain/gokit-hostport.txt", try fixture("gokit-hostport.txt")], cluster: cluster)
        let client = try EtcdClient(configuration: cluster.configuration)
        let publisher = EtcdPublisher(prefix: "/fleet/users/", client: client)
        let admin = EtcdPublisher(
            prefix: "/fleet/users/", client: client, valueOptions: RegistryValueOptions(serverSetEndpoint: "admin"))
        let plain = EtcdPublisher(prefix: "/fleet/plain/", client: client)
        let recorder = Recorder()
        let adminRecorder = Recorder()
        let plainRecorder = Recorder()
        try await withRunning(
            client,
            [
                { try? await publisher.run() }, recording(publisher, into: recorder), { try? await admin.run() },
                recording(admin, into: adminRecorder), { try? await plain.run() }, recording(plain, into: plainRecorder),
            ]
        ) {
            let expected: Set<String> = [
                "10.1.2.3:8080", "api.internal:8443", "[fd00::7]:50051", "10.2.0.5:31010",
                "6d1f4c2a-8e3b-4a57-9c0d-1b2e3f4a5b6c", "orders-7f3a", "api-1",
            ]
            try await eventually("every instance listed") { Set(recorder.ids) == expected }
            try await eventually("the host:port listed") { plainRecorder.ids == ["10.1.2.3:8080"] }
            // The two values in no form are reported by key; the non-serving ones are not.
            let error = try #require(recorder.latest?.error)
            #expect(error.code == .invalidInstances)
            #expect(error.message.contains("/fleet/users/invalid-text.txt") && error.message.contains("/fleet/users/invalid-json.json"))
            #expect(!error.message.contains("stopping") && !error.message.contains("disabled"), "\(error.message)")

            // With the admin endpoint chosen, the member is its admin address.
            try await eventually("the admin endpoint") {
                adminRecorder.latest?.instances.contains { $0.hostPort == "10.2.0.5:9990" } == true
            }

            // A watch sees a change etcdctl makes: the member stops serving, and leaves.
            try await Etcdctl.run(["put", "/fleet/users/serverset-member.json", try fixture("serverset-stopping.json")], cluster: cluster)
            try await eventually("the stopped member left") { Set(recorder.ids) == expected.subtracting(["10.2.0.5:31010"]) }
            try await Etcdctl.run(["del", "/fleet/users/invalid-text.txt"], cluster: cluster)
            try await Etcdctl.run(["del", "/fleet/users/invalid-json.json"], cluster: cluster)
            try await eventually("no error once the bad values are gone") { recorder.latest?.error == nil }
        }
    }

    @Test("what our registrar writes in the Curator and ServerSet forms, etcdctl reads and Foundation's JSON decodes")
    func registrarFormatsReadByEtcdctl() async throws {
        let cluster = try await EtcdCluster.start()
        let client = try EtcdClient(configuration: cluster.configuration)
        let instance = try Instance(
            host: "127.0.0.1", port: 8081, metadata: ["curator.sslPort": "8443", "serverset.shard": "2"], id: "a7b3")
        let curator = EtcdRegistrar(instance: instance, prefix: "/services/billing/", client: client, format: .curator)
        let serverSet = EtcdRegistrar(instance: instance, prefix: "/serversets/billing/", client: client, format: .serverSet)
        let url = EtcdRegistrar(instance: instance, prefix: "/gokit/billing/", client: client, format: .url(scheme: "http", path: "/v1"))
        try await withRunning(client, [{ try? await curator.run() }, { try? await serverSet.run() }, { try? await url.run() }]) {
            try await eventually("registered") {
                curator.currentLease != nil && serverSet.currentLease != nil && url.currentLease != nil
            }
            let curatorText = try await Etcdctl.run(["get", "/services/billing/a7b3", "--print-value-only"], cluster: cluster)
            let decoded = try #require(
                try JSONSerialization.jsonObject(with: Data(curatorText.utf8)) as? [String: Any], "\(curatorText)")
            #expect(decoded["name"] as? String == "billing")
            #expect(decoded["id"] as? String == "a7b3")
            #expect(decoded["address"] as? String == "127.0.0.1")
            #expect(decoded["port"] as? Int == 8081 && decoded["sslPort"] as? Int == 8443)
            #expect(decoded["serviceType"] as? String == "DYNAMIC")
            #expect(decoded["payload"] is NSNull && decoded["uriSpec"] is NSNull)
            let registered = try #require(decoded["registrationTimeUTC"] as? Int)
            #expect(abs(Int(Date().timeIntervalSince1970 * 1000) - registered) < 600_000)

            let memberText = try await Etcdctl.run(["get", "/serversets/billing/a7b3", "--print-value-only"], cluster: cluster)
            let member = try #require(try JSONSerialization.jsonObject(with: Data(memberText.utf8)) as? [String: Any])
            let endpoint = try #require(member["serviceEndpoint"] as? [String: Any])
            #expect(endpoint["host"] as? String == "127.0.0.1" && endpoint["port"] as? Int == 8081)
            #expect(member["status"] as? String == "ALIVE" && member["shard"] as? Int == 2)

            let urlText = try await Etcdctl.run(["get", "/gokit/billing/a7b3", "--print-value-only"], cluster: cluster)
            #expect(urlText.trimmingCharacters(in: .whitespacesAndNewlines) == "http://127.0.0.1:8081/v1")
        }
    }
}
