import LoadBalancerDNS
import Testing

@Suite("DNS messages")
struct DNSMessageTests {
    static let sample = DNSMessage(
        id: 0xBEEF,
        flags: 0x8180,
        questions: [DNSQuestion(name: "_http._tcp.svc.test", type: .srv)],
        answers: [
            DNSRecord(
                name: "_http._tcp.svc.test", type: .srv, ttl: 30, data: .srv(priority: 10, weight: 5, port: 8080, target: "a.svc.test")),
            DNSRecord(
                name: "_http._tcp.svc.test", type: .srv, ttl: 60, data: .srv(priority: 20, weight: 1, port: 8081, target: "b.svc.test")),
        ],
        additionals: [
            DNSRecord(name: "a.svc.test", type: .a, ttl: 30, data: .ipv4("127.0.0.11")),
            DNSRecord(name: "b.svc.test", type: .aaaa, ttl: 30, data: .ipv6("fd00::12")),
        ]
    )

    @Test("a message survives serialisation and parsing")
    func roundTrip() throws {
        let parsed = try DNSMessage.parse(Self.sample.serialized())
        #expect(parsed == Self.sample)
        #expect(parsed.isResponse)
        #expect(!parsed.isTruncated)
        #expect(parsed.responseCode == .noError)
    }

    @Test("names are lowercased; compression pointers are followed")
    func compression() throws {
        var bytes: [UInt8] = [0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]
        // Question: Svc.Test SRV IN, at offset 12.
        bytes += [3] + Array("Svc".utf8) + [4] + Array("Test".utf8) + [0, 0, 33, 0, 1]
        // Answer: name = pointer to 12; SRV 1 2 3 target "x" + pointer to 12.
        bytes += [0xC0, 12, 0, 33, 0, 1, 0, 0, 0, 9, 0, 10, 0, 1, 0, 2, 0, 3, 1, UInt8(ascii: "x"), 0xC0, 12]
        let message = try DNSMessage.parse(bytes)
        #expect(message.questions == [DNSQuestion(name: "svc.test", type: .srv)])
        #expect(message.answers.first?.name == "svc.test")
        #expect(message.answers.first?.data == .srv(priority: 1, weight: 2, port: 3, target: "x.svc.test"))
        #expect(message.answers.first?.ttl == 9)
    }

    static func header(questions: UInt16 = 1, answers: UInt16 = 0) -> [UInt8] {
        [0, 1, 0x81, 0x80, 0, UInt8(questions), 0, UInt8(answers), 0, 0, 0, 0]
    }

    @Test(
        "malformed messages are typed errors",
        arguments: [
            ([UInt8](), DNSParseError.Code.truncated),
            ([0, 1, 2], .truncated),
            (header() + [5, 65, 66], .truncated),
            (header() + [0xC0, 12, 0, 1, 0, 1], .pointerOutOfRange), // points at itself
            (header() + [0xC0, 200, 0, 1, 0, 1], .pointerOutOfRange), // forward, past the end
            (header() + [0x40, 0, 0, 1, 0, 1], .badLabelType),
            (
                header() + Array(repeating: [63] + [UInt8](repeating: 97, count: 63), count: 5).flatMap { $0 } + [0, 0, 1, 0, 1],
                .nameTooLong
            ),
            (header(questions: 0, answers: 1) + [0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 3, 1, 2, 3], .badRecordLength),
            (header(questions: 0, answers: 1) + [0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 50, 1, 2, 3, 4], .truncated),
            (header(questions: 0, answers: 1) + [0, 0, 33, 0, 1, 0, 0, 0, 1, 0, 3, 1, 2, 3], .badRecordLength),
        ]
    )
    func malformed(bytes: [UInt8], code: DNSParseError.Code) {
        #expect {
            try DNSMessage.parse(bytes)
        } throws: { error in
            (error as? DNSParseError)?.code == code
        }
    }

    @Test("a compression loop through two pointers is caught")
    func loop() {
        // Name at 12 points to 14, which points back to 12: forward pointers are refused.
        let bytes = Self.header() + [0xC0, 14, 0xC0, 12, 0, 1, 0, 1]
        #expect(throws: DNSParseError.self) { try DNSMessage.parse(bytes) }
    }

    @Test("any byte sequence parses or fails with a typed error (100,000 random and mutated inputs)")
    func randomInput() {
        var state: UInt64 = 7
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        let seed = Self.sample.serialized()
        var parsed = 0
        for round in 0..<100_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int(next() % 300)).map { _ in UInt8(truncatingIfNeeded: next()) }
            } else {
                bytes = seed
                for _ in 0..<Int(next() % 6) + 1 {
                    bytes[Int(next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: next())
                }
                if next() % 4 == 0 { bytes.removeLast(Int(next() % UInt64(bytes.count))) }
            }
            if (try? DNSMessage.parse(bytes)) != nil { parsed += 1 }
        }
        #expect(parsed > 0)
    }

    @Test("queries carry an EDNS0 OPT record")
    func query() throws {
        let query = try DNSMessage.parse(DNSMessage.query(id: 7, name: "Web.Example.", type: .aaaa))
        #expect(query.id == 7)
        #expect(query.flags == 0x0100)
        #expect(query.questions == [DNSQuestion(name: "web.example", type: .aaaa)])
        #expect(query.additionals.first?.type == .opt)
        #expect(query.additionals.first?.recordClass == 4096)
    }

    @Test("resolv.conf: nameservers, search, ndots, timeout, attempts")
    func resolvConf() {
        let configuration = DNSConfiguration(
            resolvConf: """
                # comment
                nameserver 10.0.0.2
                nameserver fd00::53
                search corp.example svc.example
                options ndots:2 timeout:3 attempts:4 rotate
                """)
        #expect(configuration.nameservers == ["10.0.0.2:53", "[fd00::53]:53"])
        #expect(configuration.search == ["corp.example", "svc.example"])
        #expect(configuration.ndots == 2)
        #expect(configuration.timeout == .seconds(3))
        #expect(configuration.attempts == 4)
        #expect(configuration.candidates(for: "web") == ["web.corp.example", "web.svc.example", "web"])
        #expect(configuration.candidates(for: "a.b.c") == ["a.b.c", "a.b.c.corp.example", "a.b.c.svc.example"])
        #expect(configuration.candidates(for: "web.") == ["web"])
        #expect(DNSConfiguration(resolvConf: "").nameservers == ["127.0.0.1:53"])
        #expect(DNSConfiguration.nameserver("127.0.0.1:5353").nameservers == ["127.0.0.1:5353"])
        #expect(DNSConfiguration.nameserver("::1").nameservers == ["[::1]:53"])
    }
}
