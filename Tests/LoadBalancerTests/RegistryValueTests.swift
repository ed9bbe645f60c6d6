import Testing

@testable import LoadBalancer

@Suite("Registry values: host:port and JSON")
struct RegistryValueTests {
    private func parse(_ text: String) throws -> Instance {
        try Instance(registryValue: Array(text.utf8))
    }

    @Test("the host:port form, with spaces and a bracketed IPv6 host")
    func hostPortForm() throws {
        let instance = try parse("  10.0.0.7:8080\n")
        #expect(instance.host == "10.0.0.7")
        #expect(instance.port == 8080)
        #expect(instance.weight == 1)
        #expect(try parse("[::1]:9000").id == "[::1]:9000")
    }

    @Test("the JSON form with every field; unknown fields are skipped")
    func jsonFormWithEveryField() throws {
        let instance = try parse(
            #"{"host":"api-1.internal","port":8443,"weight":3,"priority":2,"tags":["a","b\u00e9"],"metadata":{"zone":"eu-1"},"id":"api-1","extra":[1,{"x":null}]}"#
        )
        #expect(instance.host == "api-1.internal")
        #expect(instance.port == 8443)
        #expect(instance.weight == 3)
        #expect(instance.priority == 2)
        #expect(instance.tags == ["a", "bé"])
        #expect(instance.metadata == ["zone": "eu-1"])
        #expect(instance.id == "api-1")
    }

    @Test("registryJSON round-trips, escapes included; defaults are left out")
    func jsonRoundTrip() throws {
        let original = try Instance(
            host: "::1", port: 7000, weight: 0, priority: 5, tags: ["q\"uote", "tab\t"],
            metadata: ["k": "v\\", "z": "\u{01}"], id: "custom"
        )
        #expect(try parse(original.registryJSON) == original)
        let plain = try Instance(host: "h", port: 1)
        #expect(plain.registryJSON == #"{"host":"h","port":1}"#)
        #expect(try parse(plain.registryJSON) == plain)
    }

    @Test("malformed values are typed errors")
    func malformedValuesAreTypedErrors() {
        let bad: [String] = [
            "", "   ", "host", "host:", ":80", "h:0", "h:70000",
            "{", "{}", #"{"host":1,"port":80}"#, #"{"host":"h"}"#, #"{"host":"h","port":"80"}"#,
            #"{"host":"h","port":80.5}"#, #"{"host":"h","port":80,"weight":-1}"#,
            #"{"host":"h","port":80,"tags":"a"}"#, #"{"host":"h","port":80,"metadata":{"a":1}}"#,
            #"{"host":"h","port":80} x"#, #"{"host":"h","port":80,}"#, #"{"host":"h" "port":80}"#,
            #"{"host":"h\x","port":80}"#, #"{"host":"\ud800","port":80}"#, "{\"host\":\"a\u{01}\",\"port\":1}",
            #"{"host":"h","port":01}"#, #"{"host":"h","port":1e999}"#, #"{"host":"h","port":-}"#,
            String(repeating: "[", count: 100) + String(repeating: "]", count: 100),
            "{\"a\":" + String(repeating: "[", count: 40) + String(repeating: "]", count: 40) + "}",
            #"{"host":"h","port":80,"id":""}"#, #"{"host":"a b","port":80}"#,
        ]
        for text in bad {
            #expect(throws: InstanceParseError.self, "accepted \(text.debugDescription)") { try parse(text) }
        }
        #expect(throws: InstanceParseError.self) {
            try Instance(registryValue: [UInt8](repeating: 0x20, count: Instance.maxRegistryValueLength + 1))
        }
    }

    @Test("the JSON reader's grammar")
    func jsonReaderGrammar() throws {
        #expect(
            try JSONReader.parse(Array(#" [1, -2.5e3, true, false, null, "\"\\\/\b\f\n\r\t\u0041\ud83d\ude00"] "#.utf8))
                == .array([.number(1), .number(-2500), .bool(true), .bool(false), .null, .string("\"\\/\u{08}\u{0C}\n\r\tA😀")])
        )
        #expect(
            try JSONReader.parse(Array(#"{"a":{"b":[]},"a":0}"#.utf8))
                == .object([("a", .object([("b", .array([]))])), ("a", .number(0))])
        )
        for text in ["tru", "nul", "[1,]", "[1 2]", "\"abc", "1.", "1e", "-", "[", "{\"a\"}", "{\"a\":}", "01"] {
            #expect(throws: (any Error).self, "\(text)") { try JSONReader.parse(Array(text.utf8)) }
        }
    }

    @Test("random bytes never crash the parser")
    func randomBytesNeverCrash() {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array(#"{}[]":,\ uetrfaln0123456789.-+eEhostpr"#.utf8)
        for _ in 0..<20_000 {
            let length = Int.random(in: 0..<40, using: &generator)
            let bytes = (0..<length).map { _ in
                Bool.random(using: &generator) ? alphabet.randomElement(using: &generator)! : UInt8.random(in: 0...255, using: &generator)
            }
            _ = try? Instance(registryValue: bytes)
        }
    }
}
