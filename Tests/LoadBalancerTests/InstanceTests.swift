import LoadBalancer
import Testing

@Suite("Instance")
struct InstanceTests {
    @Test(
        "parses host:port and [v6]:port",
        arguments: [
            ("127.0.0.1:8080", "127.0.0.1", 8080, "127.0.0.1:8080"),
            ("example.com:1", "example.com", 1, "example.com:1"),
            ("  svc.internal:65535\n", "svc.internal", 65535, "svc.internal:65535"),
            ("[::1]:80", "::1", 80, "[::1]:80"),
            ("[fe80::1%eth0]:443", "fe80::1%eth0", 443, "[fe80::1%eth0]:443"),
            ("[2001:db8::7]:00080", "2001:db8::7", 80, "[2001:db8::7]:80"),
        ]
    )
    func parses(input: String, host: String, port: Int, id: String) throws {
        let instance = try Instance(parsing: input)
        #expect(instance.host == host)
        #expect(instance.port == port)
        #expect(instance.id == id)
        #expect(instance.weight == 1)
        #expect(instance.priority == 0)
        #expect(instance.hostPort == id)
    }

    @Test(
        "rejects bad strings with a typed error",
        arguments: [
            ("", InstanceParseError.Code.empty),
            ("   ", .empty),
            (":80", .emptyHost),
            ("[]:80", .invalidHost),
            ("host", .missingPort),
            ("host:", .missingPort),
            ("[::1]", .missingPort),
            ("[::1]:", .missingPort),
            ("host:http", .nonNumericPort),
            ("host:-1", .nonNumericPort),
            ("host:+80", .nonNumericPort),
            ("host:8 0", .nonNumericPort),
            ("host:0", .portOutOfRange),
            ("host:65536", .portOutOfRange),
            ("host:99999999999999999999999", .portOutOfRange),
            ("::1:80", .unbracketedIPv6),
            ("[::1]x80", .invalidHost),
            ("[::1:80", .invalidHost),
            ("[127.0.0.1]:80", .invalidHost),
            ("ho st:80", .invalidHost),
            ("http://host:80", .invalidHost),
            ("user@host:80", .invalidHost),
            ("a,b:80", .invalidHost),
            ("ho\u{0}st:80", .invalidHost),
        ]
    )
    func rejects(input: String, code: InstanceParseError.Code) {
        #expect {
            try Instance(parsing: input)
        } throws: { error in
            guard let error = error as? InstanceParseError else { return false }
            return error.code == code && error.input == input && !error.message.isEmpty
        }
    }

    @Test("the error text names the input and the problem")
    func errorText() {
        let error = #expect(throws: InstanceParseError.self) { try Instance(parsing: "db:99999") }
        #expect(error?.description == "invalid instance \"db:99999\": the port 99999 is outside 1...65535")
    }

    @Test("the field initialiser validates and defaults the id")
    func fieldInit() throws {
        let a = try Instance(host: "::1", port: 9000, weight: 3, priority: 10, tags: ["a"], metadata: ["zone": "z1"])
        #expect(a.id == "[::1]:9000")
        #expect(a.weight == 3 && a.priority == 10 && a.tags == ["a"] && a.metadata["zone"] == "z1")
        let b = try Instance(host: "h", port: 1, id: "custom")
        #expect(b.id == "custom")
        #expect(throws: InstanceParseError.self) { try Instance(host: "", port: 80) }
        #expect(throws: InstanceParseError.self) { try Instance(host: "h", port: 0) }
        #expect(throws: InstanceParseError.self) { try Instance(host: "h", port: 70000) }
        #expect(throws: InstanceParseError.self) { try Instance(host: "h", port: 80, weight: -1) }
    }

    @Test("instances order by id")
    func ordering() throws {
        let sorted = try ["b:1", "a:2", "c:3", "a:1"].map { try Instance(parsing: $0) }.sorted()
        #expect(sorted.map(\.id) == ["a:1", "a:2", "b:1", "c:3"])
    }
}
