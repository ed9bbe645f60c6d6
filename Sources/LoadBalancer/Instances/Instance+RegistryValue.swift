extension Instance {
    /// The most bytes a registry value may have (64 KiB); longer values are rejected unread.
    public static let maxRegistryValueLength = 65_536

    /// Parses the value a registry (etcd, ZooKeeper) stores for one instance, in any of the forms
    /// this library and other stacks write.
    ///
    /// The forms, told apart by their shape:
    /// - `host:port` or `[ipv6]:port`, as in ``init(parsing:)`` (go-kit's registrars write this);
    /// - a URL, `scheme://host:port/path` (go-kit instance strings): the scheme goes into the
    ///   metadata `url.scheme` (lowercased), what follows `host:port` (path, query) into `url.path`.
    ///   Without a port, `http` means 80 and `https` 443; other schemes need one. User
    ///   information (`user@`) is rejected;
    /// - this library's JSON object: `{"host": "10.0.0.7", "port": 8080, "weight": 2, "priority": 1,
    ///   "tags": ["a"], "metadata": {"k": "v"}, "zone": "b", "id": "..."}`, of which `host` and `port` are
    ///   required (the zone may also come as the metadata entry `zone`). Unknown fields are ignored,
    ///   so registrars may add their own;
    /// - a Finagle / Aurora ServerSet member, a JSON object with `serviceEndpoint`
    ///   (`{"host": ..., "port": ...}`), optional `additionalEndpoints` (name to `{host, port}`),
    ///   `status` and `shard`. The address is `serviceEndpoint`'s, or that of the additional
    ///   endpoint ``RegistryValueOptions/serverSetEndpoint`` names. A `status` other than `ALIVE`
    ///   throws ``InstanceParseError/Code/notServing`` (a member without `status` counts as alive).
    ///   Metadata: `serverset.shard`, `serverset.endpoint.NAME` (`host:port`) for each additional
    ///   endpoint, and `serverset.endpoint` (the name used, when one was chosen);
    /// - an Apache Curator service instance, a JSON object with `address` (and no `host`), `port`
    ///   and/or `sslPort` (the port is `port`, else `sslPort`), `id` (the instance id), `name`,
    ///   `payload`, `serviceType`, `registrationTimeUTC`, `uriSpec` and `enabled` (`false` throws
    ///   ``InstanceParseError/Code/notServing``). Metadata: `curator.name`, `curator.sslPort`,
    ///   `curator.serviceType`, `curator.registrationTimeUTC`, `curator.payload` (the payload as
    ///   compact JSON) and `curator.uriSpec` (the URI template, such as `{scheme}://{address}:{port}`).
    ///
    /// The value must be UTF-8. The id is the JSON's `id` (this library's form, Curator), else
    /// `host:port`.
    ///
    /// - Parameters:
    ///   - bytes: The value, at most ``maxRegistryValueLength`` bytes.
    ///   - options: Choices some forms offer. Default: ``RegistryValueOptions/defaults``.
    /// - Throws: ``InstanceParseError``; a value in none of these forms, malformed JSON, a missing
    ///   field or a field of the wrong type is ``InstanceParseError/Code/malformedValue``.
    public init(
        registryValue bytes: some Collection<UInt8>,
        options: RegistryValueOptions = .defaults
    ) throws(InstanceParseError) {
        guard bytes.count <= Self.maxRegistryValueLength else {
            throw InstanceParseError(
                code: .malformedValue,
                input: "<\(bytes.count) bytes>",
                message: "the value is longer than \(Self.maxRegistryValueLength) bytes"
            )
        }
        let text = String(decoding: bytes, as: UTF8.self)
        guard let first = bytes.first(where: { !JSONReader.isSpace($0) }), first == UInt8(ascii: "{") else {
            if let url = try Self.parseURL(text) {
                self = url
            } else {
                try self.init(parsing: text)
            }
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
        let object = JSONObject(fields: fields, text: text)
        if object["host"] == nil, object["serviceEndpoint"] != nil {
            self = try Self.serverSetMember(object, options: options)
        } else if object["host"] == nil, object["address"] != nil {
            self = try Self.curatorInstance(object)
        } else {
            self = try Self.libraryJSON(object)
        }
    }

    /// This library's own JSON object.
    private static func libraryJSON(_ object: JSONObject) throws(InstanceParseError) -> Instance {
        func malformed(_ message: String) -> InstanceParseError { object.malformed(message) }
        guard case .string(let host)? = object["host"] else {
            throw malformed(
                "\"host\" must be a string (and a ServerSet member needs \"serviceEndpoint\", a Curator instance \"address\")")
        }
        guard case .number(let portNumber)? = object["port"], let port = Int(exactly: portNumber) else {
            throw malformed("\"port\" must be an integer")
        }
        var weight = 1
        if let raw = object["weight"] {
            guard case .number(let number) = raw, let value = Int(exactly: number) else {
                throw malformed("\"weight\" must be an integer")
            }
            weight = value
        }
        var priority = 0
        if let raw = object["priority"] {
            guard case .number(let number) = raw, let value = Int(exactly: number) else {
                throw malformed("\"priority\" must be an integer")
            }
            priority = value
        }
        var tags: [String] = []
        if let raw = object["tags"] {
            guard case .array(let items) = raw else { throw malformed("\"tags\" must be an array of strings") }
            for item in items {
                guard case .string(let tag) = item else { throw malformed("\"tags\" must be an array of strings") }
                tags.append(tag)
            }
        }
        var metadata: [String: String] = [:]
        if let raw = object["metadata"] {
            guard case .object(let pairs) = raw else { throw malformed("\"metadata\" must be an object of strings") }
            for (key, item) in pairs {
                guard case .string(let value) = item else {
                    throw malformed("\"metadata\" must be an object of strings")
                }
                metadata[key] = value
            }
        }
        // The zone: a "zone" field, or a "zone" entry of the metadata.
        var zone = metadata["zone"]
        if let raw = object["zone"] {
            guard case .string(let value) = raw, !value.isEmpty else { throw malformed("\"zone\" must be a non-empty string") }
            zone = value
        }
        var id: String?
        if let raw = object["id"] {
            guard case .string(let value) = raw, !value.isEmpty else { throw malformed("\"id\" must be a non-empty string") }
            id = value
        }
        return try Instance(
            host: host, port: port, weight: weight, priority: priority, tags: tags, metadata: metadata, zone: zone, id: id)
    }

    /// This library's JSON form, which ``init(registryValue:options:)`` reads, for registrars to store.
    public var registryJSON: String {
        var parts = ["\"host\":\(JSONReader.quote(host))", "\"port\":\(port)"]
        if weight != 1 { parts.append("\"weight\":\(weight)") }
        if priority != 0 { parts.append("\"priority\":\(priority)") }
        if !tags.isEmpty { parts.append("\"tags\":[\(tags.map(JSONReader.quote).joined(separator: ","))]") }
        if !metadata.isEmpty {
            let pairs = metadata.sorted { $0.key < $1.key }.map { "\(JSONReader.quote($0.key)):\(JSONReader.quote($0.value))" }
            parts.append("\"metadata\":{\(pairs.joined(separator: ","))}")
        }
        if let zone, zone != metadata["zone"] { parts.append("\"zone\":\(JSONReader.quote(zone))") }
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
