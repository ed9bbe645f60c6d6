// The registry value forms other stacks write: go-kit URLs, Finagle / Aurora ServerSet members and
// Apache Curator service instances, read and written (documented on Instance.init(registryValue:options:)
// and RegistryValueFormat).

/// A JSON object being read as an instance: its members (the last of a repeated name wins) and the
/// text it came from, for errors.
struct JSONObject {
    let fields: [(String, JSONReader.Value)]
    let text: String

    subscript(name: String) -> JSONReader.Value? { fields.last(where: { $0.0 == name })?.1 }

    func malformed(_ message: String) -> InstanceParseError {
        InstanceParseError(code: .malformedValue, input: text, message: message)
    }

    /// The member `name` as an integer, `nil` when absent or `null`.
    func optionalInteger(_ name: String, in context: String = "") throws(InstanceParseError) -> Int? {
        switch self[name] {
        case nil, .null?: return nil
        case .number(let number)?:
            guard let value = Int(exactly: number) else { throw malformed("\"\(context)\(name)\" must be an integer") }
            return value
        default: throw malformed("\"\(context)\(name)\" must be an integer")
        }
    }

    /// The member `name` as a string, `nil` when absent or `null`.
    func optionalString(_ name: String, in context: String = "") throws(InstanceParseError) -> String? {
        switch self[name] {
        case nil, .null?: return nil
        case .string(let value)?: return value
        default: throw malformed("\"\(context)\(name)\" must be a string")
        }
    }
}

extension Instance {
    /// The metadata key of a URL's scheme.
    static let urlSchemeKey = "url.scheme"
    /// The metadata key of what follows `host:port` in a URL.
    static let urlPathKey = "url.path"

    // MARK: go-kit URLs

    /// `scheme://host[:port][/path...]`, or `nil` when `text` has no `://` (then it is `host:port`).
    static func parseURL(_ text: String) throws(InstanceParseError) -> Instance? {
        // Unicode scalars, not characters: a combining mark after '/' must not hide the separator.
        let trimmed = Substring(text).trimmingWhitespace().unicodeScalars
        guard let separator = trimmed.firstRange(of: "://".unicodeScalars) else { return nil }
        let scheme = Substring(trimmed[..<separator.lowerBound])
        func invalid(_ code: InstanceParseError.Code, _ message: String) -> InstanceParseError {
            InstanceParseError(code: code, input: text, message: message)
        }
        guard let head = scheme.unicodeScalars.first, head.properties.isAlphabetic, head.isASCII,
            scheme.unicodeScalars.allSatisfy({
                $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "+" || $0 == "-" || $0 == ".")
            })
        else {
            throw invalid(.malformedValue, "'\(scheme)' is not a URL scheme (expected host:port or scheme://host:port)")
        }
        let rest = trimmed[separator.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authority = Substring(rest[..<authorityEnd])
        let path = String(Substring(rest[authorityEnd...]))
        guard !authority.unicodeScalars.contains("@") else {
            throw invalid(.invalidHost, "user information ('...@') in an instance URL is not supported")
        }
        let lowered = scheme.lowercased()
        let host: String
        let port: Int
        do {
            (host, port) = try parseHostPort(String(authority))
        } catch  where error.code == .missingPort {
            let defaultPort = ["http": 80, "https": 443][lowered]
            guard let defaultPort else {
                throw invalid(.missingPort, "the port is missing (only http and https URLs have a default port)")
            }
            var bare = authority.unicodeScalars[...]
            if bare.last == ":" { bare = bare.dropLast() }
            if bare.first == "[", bare.last == "]" { bare = bare.dropFirst().dropLast() }
            try validate(host: Substring(bare), input: text)
            host = String(Substring(bare))
            port = defaultPort
        } catch  where error.code == .empty {
            throw invalid(.emptyHost, "the URL has no host")
        } catch {
            throw InstanceParseError(code: error.code, input: text, message: error.message, cause: error)
        }
        var metadata = [urlSchemeKey: lowered]
        if !path.isEmpty { metadata[urlPathKey] = path }
        return try Instance(host: host, port: port, metadata: metadata)
    }

    // MARK: ServerSet members

    static let serverSetShardKey = "serverset.shard"
    static let serverSetEndpointKey = "serverset.endpoint"
    static let serverSetEndpointPrefix = "serverset.endpoint."

    /// A Finagle / Aurora ServerSet member.
    static func serverSetMember(_ object: JSONObject, options: RegistryValueOptions) throws(InstanceParseError) -> Instance {
        func endpoint(_ value: JSONReader.Value, _ name: String) throws(InstanceParseError) -> (host: String, port: Int) {
            guard case .object(let fields) = value else { throw object.malformed("\"\(name)\" must be an object with host and port") }
            let inner = JSONObject(fields: fields, text: object.text)
            guard case .string(let host)? = inner["host"] else { throw object.malformed("\"\(name).host\" must be a string") }
            guard let port = try inner.optionalInteger("port", in: name + ".") else {
                throw object.malformed("\"\(name).port\" must be an integer")
            }
            return (host, port)
        }
        guard let service = object["serviceEndpoint"] else { throw object.malformed("\"serviceEndpoint\" is missing") }
        var address = try endpoint(service, "serviceEndpoint")
        var metadata: [String: String] = [:]
        var names: [String] = []
        switch object["additionalEndpoints"] {
        case nil, .null?: break
        case .object(let members)?:
            for (name, value) in members {
                let (host, port) = try endpoint(value, "additionalEndpoints.\(name)")
                metadata[serverSetEndpointPrefix + name] = hostPort(host: host, port: port)
                names.append(name)
            }
        default: throw object.malformed("\"additionalEndpoints\" must be an object of endpoints")
        }
        if let status = try object.optionalString("status"), status != "ALIVE" {
            throw InstanceParseError(
                code: .notServing, input: object.text, message: "the ServerSet member's status is \(status), not ALIVE")
        }
        if let shard = try object.optionalInteger("shard") { metadata[serverSetShardKey] = String(shard) }
        if let wanted = options.serverSetEndpoint {
            guard case .object(let members)? = object["additionalEndpoints"],
                let chosen = members.last(where: { $0.0 == wanted })?.1
            else {
                let known = names.isEmpty ? "none" : names.sorted().joined(separator: ", ")
                throw InstanceParseError(
                    code: .missingEndpoint, input: object.text,
                    message: "the ServerSet member has no additional endpoint \"\(wanted)\" (it has: \(known))")
            }
            address = try endpoint(chosen, "additionalEndpoints.\(wanted)")
            metadata[serverSetEndpointKey] = wanted
        }
        return try Instance(host: address.host, port: address.port, metadata: metadata)
    }

    // MARK: Curator service instances

    static let curatorNameKey = "curator.name"
    static let curatorSSLPortKey = "curator.sslPort"
    static let curatorServiceTypeKey = "curator.serviceType"
    static let curatorRegistrationTimeKey = "curator.registrationTimeUTC"
    static let curatorPayloadKey = "curator.payload"
    static let curatorURISpecKey = "curator.uriSpec"

    /// An Apache Curator service discovery instance.
    static func curatorInstance(_ object: JSONObject) throws(InstanceParseError) -> Instance {
        guard case .string(let address)? = object["address"] else { throw object.malformed("\"address\" must be a string") }
        let port = try object.optionalInteger("port")
        let sslPort = try object.optionalInteger("sslPort")
        guard let chosen = port ?? sslPort else {
            throw object.malformed("a Curator instance needs \"port\" or \"sslPort\"")
        }
        var id: String?
        if let raw = object["id"], raw != .null {
            guard case .string(let value) = raw, !value.isEmpty else { throw object.malformed("\"id\" must be a non-empty string") }
            id = value
        }
        switch object["enabled"] {
        case nil, .null?, .bool(true)?: break
        case .bool(false)?:
            throw InstanceParseError(code: .notServing, input: object.text, message: "the Curator instance is not enabled")
        default: throw object.malformed("\"enabled\" must be a boolean")
        }
        var metadata: [String: String] = [:]
        if let name = try object.optionalString("name") { metadata[curatorNameKey] = name }
        if let sslPort { metadata[curatorSSLPortKey] = String(sslPort) }
        if let type = try object.optionalString("serviceType") { metadata[curatorServiceTypeKey] = type }
        if let time = try object.optionalInteger("registrationTimeUTC") { metadata[curatorRegistrationTimeKey] = String(time) }
        if let payload = object["payload"], payload != .null { metadata[curatorPayloadKey] = JSONReader.serialize(payload) }
        switch object["uriSpec"] {
        case nil, .null?: break
        case let spec?: metadata[curatorURISpecKey] = try uriTemplate(spec, object)
        }
        return try Instance(host: address, port: chosen, metadata: metadata, id: id)
    }

    /// Curator's `uriSpec` (`{"parts": [{"value": ..., "variable": ...}]}`) as a template string:
    /// variables in braces, the rest as is.
    private static func uriTemplate(_ spec: JSONReader.Value, _ object: JSONObject) throws(InstanceParseError) -> String {
        let bad = object.malformed("\"uriSpec\" must be an object with \"parts\", an array of {value, variable}")
        guard case .object(let fields) = spec, case .array(let parts)? = JSONObject(fields: fields, text: object.text)["parts"] else {
            throw bad
        }
        var template = ""
        for part in parts {
            guard case .object(let members) = part else { throw bad }
            let entry = JSONObject(fields: members, text: object.text)
            guard case .string(let value)? = entry["value"] else { throw bad }
            switch entry["variable"] {
            case .bool(true)?: template += "{\(value)}"
            case nil, .null?, .bool(false)?: template += value
            default: throw bad
            }
        }
        return template
    }

    /// The parts of a URI template: `{name}` is a variable, the rest literal text.
    private static func uriParts(_ template: String) -> [(value: String, variable: Bool)] {
        var parts: [(String, Bool)] = []
        var rest = Substring(template)
        while !rest.isEmpty {
            if rest.first == "{", let close = rest.firstIndex(of: "}") {
                parts.append((String(rest[rest.index(after: rest.startIndex)..<close]), true))
                rest = rest[rest.index(after: close)...]
            } else {
                let next = rest.dropFirst().firstIndex(of: "{") ?? rest.endIndex
                parts.append((String(rest[..<next]), false))
                rest = rest[next...]
            }
        }
        return parts
    }

    // MARK: Writing

    /// The value to store for this instance in `format`.
    ///
    /// - ``RegistryValueFormat/json``: ``registryJSON``.
    /// - ``RegistryValueFormat/hostPort``: ``hostPort``.
    /// - ``RegistryValueFormat/url(scheme:path:)``: `scheme://host:port` and the path.
    /// - ``RegistryValueFormat/serverSet``: `serviceEndpoint` is this instance's address,
    ///   `additionalEndpoints` come from the metadata `serverset.endpoint.NAME` (values that are not
    ///   `host:port` are left out), `status` is `ALIVE`, and `shard` is the metadata
    ///   `serverset.shard` when it is an integer.
    /// - ``RegistryValueFormat/curator``: `name` is `serviceName` (else the metadata `curator.name`,
    ///   else the host), `id` the instance id, `address` and `port` this instance's, `serviceType`
    ///   the metadata `curator.serviceType` (default `DYNAMIC`), `registrationTimeUTC` the
    ///   argument (else the metadata `curator.registrationTimeUTC`, else 0); `sslPort`, `payload`
    ///   and `uriSpec` from their `curator.*` metadata when valid, else `null`.
    ///
    /// ``init(registryValue:options:)`` reads every one of them back with the same address (and,
    /// for JSON and Curator, the same id).
    ///
    /// - Parameters:
    ///   - format: The form to write.
    ///   - serviceName: The service's name, for the formats that carry one (Curator).
    ///   - registrationTime: When the instance registered, in milliseconds since 1970-01-01 UTC, for
    ///     the formats that carry it (Curator).
    public func registryValue(
        in format: RegistryValueFormat,
        serviceName: String? = nil,
        registrationTime: Int64? = nil
    ) -> String {
        if let (scheme, path) = format.url { return "\(scheme)://\(hostPort)\(path)" }
        if format.isServerSet { return serverSetJSON }
        if format.isCurator { return curatorJSON(serviceName: serviceName, registrationTime: registrationTime) }
        if format == .hostPort { return hostPort }
        return registryJSON
    }

    private static func endpointJSON(host: String, port: Int) -> String {
        "{\"host\":\(JSONReader.quote(host)),\"port\":\(port)}"
    }

    private var serverSetJSON: String {
        var additional: [String] = []
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) where key.hasPrefix(Self.serverSetEndpointPrefix) {
            guard let (host, port) = try? Self.parseHostPort(value) else { continue }
            let name = String(key.dropFirst(Self.serverSetEndpointPrefix.count))
            additional.append("\(JSONReader.quote(name)):\(Self.endpointJSON(host: host, port: port))")
        }
        var parts = [
            "\"serviceEndpoint\":\(Self.endpointJSON(host: host, port: port))",
            "\"additionalEndpoints\":{\(additional.joined(separator: ","))}",
            "\"status\":\"ALIVE\"",
        ]
        if let shard = metadata[Self.serverSetShardKey].flatMap({ Int($0) }) { parts.append("\"shard\":\(shard)") }
        return "{\(parts.joined(separator: ","))}"
    }

    private func curatorJSON(serviceName: String?, registrationTime: Int64?) -> String {
        func number(_ key: String) -> String { metadata[key].flatMap { Int($0) }.map(String.init) ?? "null" }
        let payload = metadata[Self.curatorPayloadKey].flatMap { try? JSONReader.parse(Array($0.utf8)) }.map(JSONReader.serialize)
        let uriSpec = metadata[Self.curatorURISpecKey].map { template in
            let parts = Self.uriParts(template).map { "{\"value\":\(JSONReader.quote($0.value)),\"variable\":\($0.variable)}" }
            return "{\"parts\":[\(parts.joined(separator: ","))]}"
        }
        let registered = registrationTime ?? metadata[Self.curatorRegistrationTimeKey].flatMap { Int64($0) } ?? 0
        let parts = [
            "\"name\":\(JSONReader.quote(serviceName ?? metadata[Self.curatorNameKey] ?? host))",
            "\"id\":\(JSONReader.quote(id))",
            "\"address\":\(JSONReader.quote(host))",
            "\"port\":\(port)",
            "\"sslPort\":\(number(Self.curatorSSLPortKey))",
            "\"payload\":\(payload ?? "null")",
            "\"registrationTimeUTC\":\(registered)",
            "\"serviceType\":\(JSONReader.quote(metadata[Self.curatorServiceTypeKey] ?? "DYNAMIC"))",
            "\"uriSpec\":\(uriSpec ?? "null")",
        ]
        return "{\(parts.joined(separator: ","))}"
    }
}

extension JSONReader {
    /// Compact JSON text for `value` (numbers that are integers without a fraction).
    static func serialize(_ value: Value) -> String {
        switch value {
        case .null: return "null"
        case .bool(let flag): return flag ? "true" : "false"
        case .number(let number):
            if let integer = Int64(exactly: number) { return String(integer) }
            return "\(number)"
        case .string(let string): return quote(string)
        case .array(let items): return "[\(items.map(serialize).joined(separator: ","))]"
        case .object(let members):
            return "{\(members.map { "\(quote($0.0)):\(serialize($0.1))" }.joined(separator: ","))}"
        }
    }
}
