import Foundation
import Testing

@testable import LoadBalancer

/// The registry value fixtures (Tests/Fixtures/RegistryValues), written from the formats' public
/// documentation: go-kit instance strings, Finagle / Aurora ServerSet members, Apache Curator
/// service instances (also as Spring Cloud ZooKeeper registers them), this library's JSON.
enum RegistryFixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/RegistryValues")

    static func bytes(_ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: directory.appendingPathComponent(name)))
    }
}

@Suite("Registry values other stacks write: go-kit, ServerSet, Curator")
struct RegistryFormatTests {
    private func parse(_ text: String, options: RegistryValueOptions = .defaults) throws(InstanceParseError) -> Instance {
        try Instance(registryValue: Array(text.utf8), options: options)
    }

    private func fixture(_ name: String, options: RegistryValueOptions = .defaults) throws -> Instance {
        try Instance(registryValue: try RegistryFixtures.bytes(name), options: options)
    }

    /// Expects `body` to throw an InstanceParseError of `code`, and returns it.
    @discardableResult
    private func expectError(
        _ code: InstanceParseError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Instance
    ) -> InstanceParseError? {
        do {
            let instance = try body()
            Issue.record("expected \(code), got \(instance)", sourceLocation: sourceLocation)
        } catch let error as InstanceParseError {
            #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
            return error
        } catch {
            Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
        }
        return nil
    }

    struct Expected: Sendable, CustomTestStringConvertible {
        var file: String
        var id: String
        var host: String
        var port: Int
        var metadata: [String: String] = [:]
        var testDescription: String { file }
    }

    static let fixtures: [Expected] = [
        Expected(file: "gokit-hostport.txt", id: "10.1.2.3:8080", host: "10.1.2.3", port: 8080),
        Expected(file: "gokit-url-http.txt", id: "10.1.2.3:8080", host: "10.1.2.3", port: 8080, metadata: ["url.scheme": "http"]),
        Expected(
            file: "gokit-url-https-path.txt", id: "api.internal:8443", host: "api.internal", port: 8443,
            metadata: ["url.scheme": "https", "url.path": "/v1/users?region=eu"]),
        Expected(file: "gokit-url-grpc.txt", id: "[fd00::7]:50051", host: "fd00::7", port: 50051, metadata: ["url.scheme": "grpc"]),
        Expected(
            file: "gokit-url-default-port.txt", id: "secure.internal:443", host: "secure.internal", port: 443,
            metadata: ["url.scheme": "https", "url.path": "/"]),
        Expected(
            file: "serverset-member.json", id: "10.2.0.5:31010", host: "10.2.0.5", port: 31010,
            metadata: [
                "serverset.shard": "3", "serverset.endpoint.http": "10.2.0.5:31011", "serverset.endpoint.admin": "10.2.0.5:9990",
            ]),
        Expected(
            file: "curator-instance.json", id: "6d1f4c2a-8e3b-4a57-9c0d-1b2e3f4a5b6c", host: "10.3.0.9", port: 8080,
            metadata: [
                "curator.name": "billing", "curator.sslPort": "8443", "curator.serviceType": "DYNAMIC",
                "curator.registrationTimeUTC": "1764500000000", "curator.uriSpec": "{scheme}://{address}:{port}",
            ]),
        Expected(
            file: "curator-spring.json", id: "orders-7f3a", host: "10.3.1.4", port: 9000,
            metadata: [
                "curator.name": "orders", "curator.serviceType": "DYNAMIC", "curator.registrationTimeUTC": "1764500123456",
                "curator.uriSpec": "{scheme}://{address}:{port}",
                "curator.payload":
                    #"{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"orders","name":"orders","metadata":{"instance_status":"UP","zone":"eu-1a"}}"#,
            ]),
        Expected(
            file: "curator-ssl-only.json", id: "vault-1", host: "vault.internal", port: 8200,
            metadata: [
                "curator.name": "vault", "curator.sslPort": "8200", "curator.serviceType": "STATIC",
                "curator.registrationTimeUTC": "0",
            ]),
        Expected(file: "library.json", id: "api-1", host: "10.4.0.1", port: 7000, metadata: ["zone": "eu-1b"]),
    ]

    @Test("each fixture reads as the instance its documentation describes", arguments: fixtures)
    func fixtureReads(_ expected: Expected) throws {
        let instance = try fixture(expected.file)
        #expect(instance.id == expected.id)
        #expect(instance.host == expected.host)
        #expect(instance.port == expected.port)
        #expect(instance.metadata == expected.metadata)
        // Whatever form it came in, this library's JSON keeps all of it.
        #expect(try parse(instance.registryJSON) == instance)
    }

    @Test("ServerSet: a named additional endpoint can be chosen; a missing one is a typed error naming the choices")
    func serverSetEndpointChoice() throws {
        let http = try fixture("serverset-member.json", options: RegistryValueOptions(serverSetEndpoint: "http"))
        #expect(http.hostPort == "10.2.0.5:31011")
        #expect(http.metadata["serverset.endpoint"] == "http")
        #expect(http.metadata["serverset.shard"] == "3")
        let error = expectError(.missingEndpoint) {
            try fixture("serverset-member.json", options: RegistryValueOptions(serverSetEndpoint: "thrift"))
        }
        #expect(error?.message.contains("admin, http") == true, "\(String(describing: error))")
    }

    @Test("values that say they are not serving are a code of their own, not malformed")
    func notServing() {
        expectError(.notServing) { try fixture("serverset-stopping.json") }
        expectError(.notServing) { try fixture("curator-disabled.json") }
        for status in ["DEAD", "STARTING", "STOPPED", "WARNING", "alive"] {
            expectError(.notServing) { try parse(#"{"serviceEndpoint":{"host":"h","port":1},"status":"\#(status)"}"#) }
        }
        // Without status a member counts as alive; an enabled Curator instance is used.
        #expect((try? parse(#"{"serviceEndpoint":{"host":"h","port":1}}"#))?.hostPort == "h:1")
        #expect((try? parse(#"{"address":"h","port":1,"enabled":true}"#))?.hostPort == "h:1")
    }

    @Test("values in none of the forms stay malformedValue errors")
    func noneOfTheForms() throws {
        expectError(.malformedValue) { try fixture("invalid-json.json") }
        expectError(.invalidHost) { try fixture("invalid-text.txt") }
        expectError(.invalidHost) { try parse("ftp//h:1") }
        let malformed: [String] = [
            #"{"serviceEndpoint":"h:1"}"#, #"{"serviceEndpoint":{"host":"h"}}"#, #"{"serviceEndpoint":{"host":1,"port":1}}"#,
            #"{"serviceEndpoint":{"host":"h","port":1},"additionalEndpoints":[]}"#,
            #"{"serviceEndpoint":{"host":"h","port":1},"additionalEndpoints":{"a":{"host":"h"}}}"#,
            #"{"serviceEndpoint":{"host":"h","port":1},"status":1}"#, #"{"serviceEndpoint":{"host":"h","port":1},"shard":"1"}"#,
            #"{"address":"h"}"#, #"{"address":"h","port":null,"sslPort":null}"#, #"{"address":1,"port":1}"#,
            #"{"address":"h","port":"1"}"#, #"{"address":"h","port":1,"id":""}"#, #"{"address":"h","port":1,"name":3}"#,
            #"{"address":"h","port":1,"enabled":"no"}"#, #"{"address":"h","port":1,"uriSpec":"{scheme}"}"#,
            #"{"address":"h","port":1,"uriSpec":{"parts":[{"value":1}]}}"#, "1http://h:1", "ht tp://h:1", "-://h:1",
        ]
        for text in malformed {
            expectError(.malformedValue) { try parse(text) }
        }
        // Bad addresses keep their specific codes, in every form.
        expectError(.portOutOfRange) { try parse(#"{"serviceEndpoint":{"host":"h","port":0}}"#) }
        expectError(.portOutOfRange) { try parse(#"{"address":"h","port":70000}"#) }
        expectError(.invalidHost) { try parse(#"{"address":"a b","port":1}"#) }
        expectError(.missingPort) { try parse("grpc://h") }
        expectError(.invalidHost) { try parse("http://user:secret@h:80") }
        expectError(.emptyHost) { try parse("http://:80") }
        expectError(.emptyHost) { try parse("http://") }
        expectError(.nonNumericPort) { try parse("http://h:x/") }
        expectError(.unbracketedIPv6) { try parse("http://fd00::1:80") }
    }

    @Test("URLs: the scheme is lowercased, the path and query kept, default ports only for http and https")
    func urls() throws {
        let upper = try parse("  HTTP://Example.com:8080/a/b  ")
        #expect(upper.host == "Example.com" && upper.port == 8080)
        #expect(upper.metadata == ["url.scheme": "http", "url.path": "/a/b"])
        #expect(try parse("http://h").port == 80)
        #expect(try parse("http://h:/").port == 80)
        #expect(try parse("https://[::1]/x").hostPort == "[::1]:443")
        #expect(try parse("grpc+tls://h:1#frag").metadata == ["url.scheme": "grpc+tls", "url.path": "#frag"])
    }

    @Test(
        "every format an instance can be written in reads back to the same address",
        arguments: [
            RegistryValueFormat.json, .hostPort, .url(scheme: "http"), .url(scheme: "grpc", path: "/svc"), .serverSet, .curator,
        ])
    func writtenFormsReadBack(_ format: RegistryValueFormat) throws {
        for instance in [
            try Instance(host: "10.0.0.1", port: 8080), try Instance(host: "::1", port: 9000, id: "node/1 \"q\""),
            try Instance(host: "h.example", port: 1, metadata: ["serverset.endpoint.admin": "h.example:2", "serverset.shard": "7"]),
        ] {
            let read = try parse(instance.registryValue(in: format, serviceName: "api"))
            #expect(read.hostPort == instance.hostPort, "\(format)")
            if format == .json || format == .curator { #expect(read.id == instance.id, "\(format)") }
        }
    }

    @Test("the ServerSet form: the address, additional endpoints from the metadata, ALIVE, the shard")
    func serverSetWriting() throws {
        let instance = try Instance(
            host: "10.0.0.1", port: 8080,
            metadata: ["serverset.endpoint.admin": "10.0.0.1:9990", "serverset.endpoint.bad": "nope", "serverset.shard": "2"])
        let text = instance.registryValue(in: .serverSet)
        #expect(
            text
                == #"{"serviceEndpoint":{"host":"10.0.0.1","port":8080},"additionalEndpoints":{"admin":{"host":"10.0.0.1","port":9990}},"status":"ALIVE","shard":2}"#
        )
        let admin = try parse(text, options: RegistryValueOptions(serverSetEndpoint: "admin"))
        #expect(admin.hostPort == "10.0.0.1:9990")
        #expect(try Instance(host: "h", port: 1).registryValue(in: .serverSet).contains("shard") == false)
    }

    @Test("the Curator form: every field Curator reads; a Curator value read and written again keeps its fields")
    func curatorWriting() throws {
        let plain = try Instance(host: "10.0.0.1", port: 8080, id: "a1")
        #expect(
            plain.registryValue(in: .curator, serviceName: "api", registrationTime: 1_764_500_000_000)
                == #"{"name":"api","id":"a1","address":"10.0.0.1","port":8080,"sslPort":null,"payload":null,"registrationTimeUTC":1764500000000,"serviceType":"DYNAMIC","uriSpec":null}"#
        )
        for file in ["curator-instance.json", "curator-spring.json", "curator-ssl-only.json"] {
            let original = try fixture(file)
            let again = try parse(original.registryValue(in: .curator))
            if file == "curator-ssl-only.json" {
                // Written back, the chosen port is `port`; sslPort stays.
                #expect(again.port == 8200 && again.metadata["curator.sslPort"] == "8200")
            } else {
                #expect(again == original, "\(file)")
            }
        }
    }

    @Test("hosts that could not be written and read back are rejected; host:port splits on scalars, not characters")
    func hostsSurviveEveryForm() throws {
        for host in ["{a", "a}", "a\u{A0}b", "\u{2028}a", "a\u{85}"] {
            expectError(.invalidHost) { try Instance(host: host, port: 1) }
        }
        // U+0604 joins the character after it: the ':' must still split host and port.
        let marked = try parse("a\u{604}:80")
        #expect(marked.host == "a\u{604}" && marked.port == 80)
        let url = try parse("http://\u{73B}a:80/p")
        #expect(url.host == "\u{73B}a" && url.metadata["url.path"] == "/p")
        for format in [RegistryValueFormat.hostPort, .url(scheme: "http"), .serverSet, .curator] {
            #expect(try parse(marked.registryValue(in: format)).hostPort == marked.hostPort, "\(format)")
        }
    }

    @Test("the URL form writes scheme, address and path")
    func urlWriting() throws {
        let instance = try Instance(host: "::1", port: 50051)
        #expect(instance.registryValue(in: .url(scheme: "grpc")) == "grpc://[::1]:50051")
        #expect(instance.registryValue(in: .url(scheme: "https", path: "/v1")) == "https://[::1]:50051/v1")
        #expect(instance.registryValue(in: .hostPort) == "[::1]:50051")
        #expect(RegistryValueFormat.url(scheme: "https", path: "/v1").description == "url(https://.../v1)")
    }
}
