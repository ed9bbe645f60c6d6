extension Instance {
    /// Parses `host:port`, or `[ipv6]:port`.
    ///
    /// Leading and trailing whitespace is ignored. The resulting instance has weight 1, priority 0,
    /// no tags or metadata, and the id `host:port` (normalised: an IPv6 host is bracketed).
    ///
    /// - Throws: ``InstanceParseError`` with a code saying what is wrong: ``InstanceParseError/Code/empty``,
    ///   ``InstanceParseError/Code/emptyHost``, ``InstanceParseError/Code/invalidHost``,
    ///   ``InstanceParseError/Code/unbracketedIPv6``, ``InstanceParseError/Code/missingPort``,
    ///   ``InstanceParseError/Code/nonNumericPort`` or ``InstanceParseError/Code/portOutOfRange``.
    public init(parsing input: String) throws(InstanceParseError) {
        let (host, port) = try Self.parseHostPort(input)
        try self.init(host: host, port: port)
    }

    /// Splits `host:port` or `[ipv6]:port` into its host and its port, validating both.
    public static func parseHostPort(_ input: String) throws(InstanceParseError) -> (host: String, port: Int) {
        // Unicode scalars, not characters: a host's last scalar may join the ':' after it into one
        // character (a prepended concatenation mark does), which must not hide the separator.
        let text = Substring(input).trimmingWhitespace().unicodeScalars
        guard !text.isEmpty else {
            throw InstanceParseError(code: .empty, input: input, message: "the instance string is empty")
        }

        let host: Substring
        let portText: Substring?
        if text.first == "[" {
            guard let close = text.firstIndex(of: "]") else {
                throw InstanceParseError(code: .invalidHost, input: input, message: "'[' without a closing ']'")
            }
            host = Substring(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if rest.isEmpty {
                portText = nil
            } else if rest.first == ":" {
                portText = Substring(rest.dropFirst())
            } else {
                throw InstanceParseError(
                    code: .invalidHost,
                    input: input,
                    message: "unexpected '\(Substring(rest))' after the bracketed address"
                )
            }
            guard host.unicodeScalars.contains(":") else {
                throw InstanceParseError(
                    code: .invalidHost,
                    input: input,
                    message: "brackets are only for IPv6 addresses"
                )
            }
        } else if let colon = text.lastIndex(of: ":") {
            host = Substring(text[..<colon])
            portText = Substring(text[text.index(after: colon)...])
            if host.unicodeScalars.contains(":") {
                let looksLikeIPv6 = host.unicodeScalars.allSatisfy { $0 == ":" || $0 == "." || $0.properties.isASCIIHexDigit }
                if looksLikeIPv6 {
                    throw InstanceParseError(
                        code: .unbracketedIPv6,
                        input: input,
                        message: "an IPv6 address must be written in brackets, as [\(host)]:\(portText ?? "")"
                    )
                }
                throw InstanceParseError(
                    code: .invalidHost,
                    input: input,
                    message: "the host '\(host)' contains ':' (expected host:port, with no scheme)"
                )
            }
        } else {
            host = Substring(text)
            portText = nil
        }

        try validate(host: host, input: input)
        guard let portText, !portText.isEmpty else {
            throw InstanceParseError(code: .missingPort, input: input, message: "the port is missing (expected host:port)")
        }
        guard portText.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
            throw InstanceParseError(code: .nonNumericPort, input: input, message: "the port '\(portText)' is not a number")
        }
        guard let port = Int(portText), (1...65535).contains(port) else {
            throw InstanceParseError(
                code: .portOutOfRange,
                input: input,
                message: "the port \(portText) is outside 1...65535"
            )
        }
        return (String(host), port)
    }

    static func validate(host: some StringProtocol, input: String) throws(InstanceParseError) {
        guard !host.isEmpty else {
            throw InstanceParseError(code: .emptyHost, input: input, message: "the host is empty")
        }
        for scalar in host.unicodeScalars {
            switch scalar {
            // Braces too: a value starting with '{' is read as JSON.
            case " ", "\t", "\n", "\r", "/", "?", "#", "@", "[", "]", ",", "{", "}":
                throw InstanceParseError(
                    code: .invalidHost,
                    input: input,
                    message: "the host contains '\(scalar.escaped(asASCII: true))'"
                )
            default:
                if scalar.properties.isWhitespace {
                    throw InstanceParseError(code: .invalidHost, input: input, message: "the host contains white space")
                }
                if scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) {
                    throw InstanceParseError(
                        code: .invalidHost,
                        input: input,
                        message: "the host contains a control character"
                    )
                }
            }
        }
    }
}

extension Substring {
    func trimmingWhitespace() -> Substring {
        var s = self
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return s
    }
}
