extension Instance {
    /// The most bytes a registry value may have (64 KiB); longer values are rejected unread.
    public static let maxRegistryValueLength = 65_536

    /// Parses the value a registry (etcd, ZooKeeper) stores for one instance.
    ///
    /// Two forms are accepted:
    /// - `host:port` or `[ipv6]:port`, as in ``init(parsing:)``;
    /// - a JSON object: `{"host": "10.0.0.7", "port": 8080, "weight": 2, "priority": 1,
    ///   "tags": ["a"], "metadata": {"zone": "b"}, "id": "..."}`, of which `host` and `port` are
    ///   required. Unknown fields are ignored, so registrars may add their own.
    ///
    /// The value must be UTF-8. The id is `id` from the JSON, else `host:port`.
    ///
    /// - Throws: ``InstanceParseError``; malformed JSON, a missing field or a field of the wrong type
    ///   is ``InstanceParseError/Code/malformedValue``.
    public init(registryValue bytes: some Collection<UInt8>) throws(InstanceParseError) {
        guard bytes.count <= Self.maxRegistryValueLength else {
            throw InstanceParseError(
                code: .malformedValue,
                input: "<\(bytes.count) bytes>",
                message: "the value is longer than \(Self.maxRegistryValueLength) bytes"
            )
        }
        let text = String(decoding: bytes, as: UTF8.self)
        guard let first = bytes.first(where: { !JSONReader.isSpace($0) }), first == UInt8(ascii: "{") else {
            try self.init(parsing: text)
            return
        }
        let value: JSONReader.Value
        do {
            value = try JSONReader.parse(Array(bytes))
        } catch {
            throw InstanceParseError(code: .malformedValue, input: text, message: "invalid JSON: \(error.message)")
        }
        guard case .object(let fields) = value else {
            throw InstanceParseError(code: .malformedValue, input: text, message: "expected a JSON object")
        }
        func field(_ name: String) -> JSONReader.Value? { fields.last(where: { $0.0 == name })?.1 }
        func malformed(_ message: String) -> InstanceParseError {
            InstanceParseError(code: .malformedValue, input: text, message: message)
        }
        guard case .string(let host)? = field("host") else { throw malformed("\"host\" must be a string") }
        guard case .number(let portNumber)? = field("port"), let port = Int(exactly: portNumber) else {
            throw malformed("\"port\" must be an integer")
        }
        var weight = 1
        if let raw = field("weight") {
            guard case .number(let number) = raw, let value = Int(exactly: number) else {
                throw malformed("\"weight\" must be an integer")
            }
            weight = value
        }
        var priority = 0
        if let raw = field("priority") {
            guard case .number(let number) = raw, let value = Int(exactly: number) else {
                throw malformed("\"priority\" must be an integer")
            }
            priority = value
        }
        var tags: [String] = []
        if let raw = field("tags") {
            guard case .array(let items) = raw else { throw malformed("\"tags\" must be an array of strings") }
            for item in items {
                guard case .string(let tag) = item else { throw malformed("\"tags\" must be an array of strings") }
                tags.append(tag)
            }
        }
        var metadata: [String: String] = [:]
        if let raw = field("metadata") {
            guard case .object(let pairs) = raw else { throw malformed("\"metadata\" must be an object of strings") }
            for (key, item) in pairs {
                guard case .string(let value) = item else {
                    throw malformed("\"metadata\" must be an object of strings")
                }
                metadata[key] = value
            }
        }
        var id: String?
        if let raw = field("id") {
            guard case .string(let value) = raw, !value.isEmpty else { throw malformed("\"id\" must be a non-empty string") }
            id = value
        }
        try self.init(host: host, port: port, weight: weight, priority: priority, tags: tags, metadata: metadata, id: id)
    }

    /// The JSON form ``init(registryValue:)`` reads, for registrars to store.
    public var registryJSON: String {
        var parts = ["\"host\":\(JSONReader.quote(host))", "\"port\":\(port)"]
        if weight != 1 { parts.append("\"weight\":\(weight)") }
        if priority != 0 { parts.append("\"priority\":\(priority)") }
        if !tags.isEmpty { parts.append("\"tags\":[\(tags.map(JSONReader.quote).joined(separator: ","))]") }
        if !metadata.isEmpty {
            let pairs = metadata.sorted { $0.key < $1.key }.map { "\(JSONReader.quote($0.key)):\(JSONReader.quote($0.value))" }
            parts.append("\"metadata\":{\(pairs.joined(separator: ","))}")
        }
        if id != hostPort { parts.append("\"id\":\(JSONReader.quote(id))") }
        return "{\(parts.joined(separator: ","))}"
    }
}

/// A strict JSON (RFC 8259) reader for registry values: the whole grammar, nesting limited to 32
/// levels, numbers as `Double`. Small on purpose, so the core module needs no Foundation.
enum JSONReader {
    indirect enum Value: Equatable {
        case null
        case bool(Bool)
        case number(Double)
        case string(String)
        case array([Value])
        /// Members in document order (a repeated name keeps every occurrence; readers take the last).
        case object([(String, Value)])

        static func == (lhs: Value, rhs: Value) -> Bool {
            switch (lhs, rhs) {
            case (.null, .null): true
            case (.bool(let a), .bool(let b)): a == b
            case (.number(let a), .number(let b)): a == b
            case (.string(let a), .string(let b)): a == b
            case (.array(let a), .array(let b)): a == b
            case (.object(let a), .object(let b)): a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
            default: false
            }
        }
    }

    /// JSON that does not parse: where, and why.
    struct Failure: Error {
        /// What kind of failure it is.
        struct Code: Hashable, Sendable {
            private enum Wrapped: Hashable, Sendable { case malformed }
            private let wrapped: Wrapped
            private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

            /// The text is not JSON (or nests deeper than ``maxDepth``).
            static let malformed = Code(.malformed)
        }

        var code = Code.malformed
        var message: String
        var cause: (any Error)?
    }

    static let maxDepth = 32

    static func isSpace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
    }

    static func parse(_ bytes: [UInt8]) throws(Failure) -> Value {
        var reader = Cursor(bytes: bytes)
        let value = try reader.value(depth: 0)
        reader.skipSpace()
        guard reader.position == bytes.count else { throw reader.failure("unexpected data after the value") }
        return value
    }

    static func quote(_ string: String) -> String {
        var out = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    struct Cursor {
        let bytes: [UInt8]
        var position = 0

        func failure(_ message: String) -> Failure { Failure(message: "\(message) at byte \(position)") }

        mutating func skipSpace() {
            while position < bytes.count, JSONReader.isSpace(bytes[position]) { position += 1 }
        }

        mutating func expect(_ literal: String, _ value: Value) throws(Failure) -> Value {
            for byte in literal.utf8 {
                guard position < bytes.count, bytes[position] == byte else { throw failure("invalid literal") }
                position += 1
            }
            return value
        }

        mutating func value(depth: Int) throws(Failure) -> Value {
            guard depth < JSONReader.maxDepth else { throw failure("nesting deeper than \(JSONReader.maxDepth)") }
            skipSpace()
            guard position < bytes.count else { throw failure("unexpected end") }
            switch bytes[position] {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): return try expect("true", .bool(true))
            case UInt8(ascii: "f"): return try expect("false", .bool(false))
            case UInt8(ascii: "n"): return try expect("null", .null)
            default: return .number(try number())
            }
        }

        mutating func object(depth: Int) throws(Failure) -> Value {
            position += 1
            var members: [(String, Value)] = []
            skipSpace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
                position += 1
                return .object(members)
            }
            while true {
                skipSpace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { throw failure("expected a member name") }
                let name = try string()
                skipSpace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { throw failure("expected ':'") }
                position += 1
                members.append((name, try value(depth: depth + 1)))
                skipSpace()
                guard position < bytes.count else { throw failure("unexpected end in an object") }
                if bytes[position] == UInt8(ascii: ",") {
                    position += 1
                } else if bytes[position] == UInt8(ascii: "}") {
                    position += 1
                    return .object(members)
                } else {
                    throw failure("expected ',' or '}'")
                }
            }
        }

        mutating func array(depth: Int) throws(Failure) -> Value {
            position += 1
            var items: [Value] = []
            skipSpace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
                position += 1
                return .array(items)
            }
            while true {
                items.append(try value(depth: depth + 1))
                skipSpace()
                guard position < bytes.count else { throw failure("unexpected end in an array") }
                if bytes[position] == UInt8(ascii: ",") {
                    position += 1
                } else if bytes[position] == UInt8(ascii: "]") {
                    position += 1
                    return .array(items)
                } else {
                    throw failure("expected ',' or ']'")
                }
            }
        }

        mutating func hex4() throws(Failure) -> UInt32 {
            guard position + 4 <= bytes.count else { throw failure("short \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[position]
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: throw failure("invalid \\u escape")
                }
                value = value << 4 | UInt32(digit)
                position += 1
            }
            return value
        }

        mutating func string() throws(Failure) -> String {
            position += 1
            var scalars = String.UnicodeScalarView()
            var run = position
            while true {
                guard position < bytes.count else { throw failure("unterminated string") }
                let byte = bytes[position]
                if byte == UInt8(ascii: "\"") {
                    scalars.append(contentsOf: String(decoding: bytes[run..<position], as: UTF8.self).unicodeScalars)
                    position += 1
                    return String(scalars)
                }
                if byte < 0x20 { throw failure("control character in a string") }
                if byte != UInt8(ascii: "\\") {
                    position += 1
                    continue
                }
                scalars.append(contentsOf: String(decoding: bytes[run..<position], as: UTF8.self).unicodeScalars)
                position += 1
                guard position < bytes.count else { throw failure("unterminated escape") }
                let escape = bytes[position]
                position += 1
                switch escape {
                case UInt8(ascii: "\""): scalars.append("\"")
                case UInt8(ascii: "\\"): scalars.append("\\")
                case UInt8(ascii: "/"): scalars.append("/")
                case UInt8(ascii: "b"): scalars.append("\u{08}")
                case UInt8(ascii: "f"): scalars.append("\u{0C}")
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800..<0xDC00).contains(code) {
                        guard position + 2 <= bytes.count, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u")
                        else {
                            throw failure("unpaired surrogate")
                        }
                        position += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw failure("unpaired surrogate") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00..<0xE000).contains(code) {
                        throw failure("unpaired surrogate")
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw failure("invalid code point") }
                    scalars.append(scalar)
                default:
                    throw failure("invalid escape")
                }
                run = position
            }
        }

        mutating func number() throws(Failure) -> Double {
            let start = position
            func digits() -> Int {
                let from = position
                while position < bytes.count, bytes[position] >= UInt8(ascii: "0"), bytes[position] <= UInt8(ascii: "9") {
                    position += 1
                }
                return position - from
            }
            if position < bytes.count, bytes[position] == UInt8(ascii: "-") { position += 1 }
            let integerStart = position
            let integerDigits = digits()
            guard integerDigits > 0 else { throw failure("invalid value") }
            if integerDigits > 1, bytes[integerStart] == UInt8(ascii: "0") { throw failure("leading zero in a number") }
            if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
                position += 1
                guard digits() > 0 else { throw failure("digits expected after '.'") }
            }
            if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
                position += 1
                if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") {
                    position += 1
                }
                guard digits() > 0 else { throw failure("digits expected in the exponent") }
            }
            guard let value = Double(String(decoding: bytes[start..<position], as: UTF8.self)), value.isFinite else {
                throw failure("number out of range")
            }
            return value
        }
    }
}
