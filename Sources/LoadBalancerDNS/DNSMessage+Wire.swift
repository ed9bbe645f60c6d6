extension DNSMessage {
    /// Parses a message from its wire form.
    public static func parse(_ bytes: [UInt8]) throws(DNSParseError) -> DNSMessage {
        var reader = WireReader(bytes: bytes)
        let id = try reader.u16()
        let flags = try reader.u16()
        let counts = (try reader.u16(), try reader.u16(), try reader.u16(), try reader.u16())
        var questions: [DNSQuestion] = []
        // Counts come from the wire: never reserve from them.
        for _ in 0..<counts.0 {
            let name = try reader.name()
            let type = DNSRecordType(rawValue: try reader.u16())
            let recordClass = try reader.u16()
            questions.append(DNSQuestion(name: name, type: type, recordClass: recordClass))
        }
        func records(_ count: UInt16) throws(DNSParseError) -> [DNSRecord] {
            var records: [DNSRecord] = []
            for _ in 0..<count { records.append(try reader.record()) }
            return records
        }
        let answers = try records(counts.1)
        let authorities = try records(counts.2)
        let additionals = try records(counts.3)
        return DNSMessage(
            id: id, flags: flags, questions: questions, answers: answers, authorities: authorities, additionals: additionals
        )
    }

    /// A standard query for `name` and `type`, recursion desired, with an EDNS0 OPT record
    /// advertising `udpPayloadSize` (0 leaves EDNS0 out).
    public static func query(id: UInt16, name: String, type: DNSRecordType, udpPayloadSize: UInt16 = 4096) -> [UInt8] {
        var bytes: [UInt8] = []
        func u16(_ value: UInt16) {
            bytes.append(UInt8(value >> 8))
            bytes.append(UInt8(value & 0xFF))
        }
        u16(id)
        u16(0x0100) // RD
        u16(1)
        u16(0)
        u16(0)
        u16(udpPayloadSize > 0 ? 1 : 0)
        appendName(name, to: &bytes)
        u16(type.rawValue)
        u16(1)
        if udpPayloadSize > 0 {
            bytes.append(0) // root name
            u16(DNSRecordType.opt.rawValue)
            u16(udpPayloadSize)
            bytes.append(contentsOf: [0, 0, 0, 0]) // extended RCODE, version, flags
            u16(0)
        }
        return bytes
    }

    /// Writes a message (tests and the fuzzer's seed corpus use it): names uncompressed.
    public func serialized() -> [UInt8] {
        var bytes: [UInt8] = []
        func u16(_ value: UInt16) {
            bytes.append(UInt8(value >> 8))
            bytes.append(UInt8(value & 0xFF))
        }
        func u32(_ value: UInt32) {
            u16(UInt16(value >> 16))
            u16(UInt16(value & 0xFFFF))
        }
        u16(id)
        u16(flags)
        u16(UInt16(questions.count))
        u16(UInt16(answers.count))
        u16(UInt16(authorities.count))
        u16(UInt16(additionals.count))
        for question in questions {
            Self.appendName(question.name, to: &bytes)
            u16(question.type.rawValue)
            u16(question.recordClass)
        }
        for record in answers + authorities + additionals {
            Self.appendName(record.name, to: &bytes)
            u16(record.type.rawValue)
            u16(record.recordClass)
            u32(record.ttl)
            var data: [UInt8] = []
            switch record.data {
            case .ipv4(let text):
                data = text.split(separator: ".").compactMap { UInt8($0) }
            case .ipv6(let text):
                data = IPv6.parse(text) ?? []
            case .srv(let priority, let weight, let port, let target):
                for value in [priority, weight, port] {
                    data.append(UInt8(value >> 8))
                    data.append(UInt8(value & 0xFF))
                }
                Self.appendName(target, to: &data)
            case .cname(let target):
                Self.appendName(target, to: &data)
            case .other(let raw):
                data = raw
            }
            u16(UInt16(data.count))
            bytes.append(contentsOf: data)
        }
        return bytes
    }

    static func appendName(_ name: String, to bytes: inout [UInt8]) {
        for label in name.split(separator: ".") where !label.isEmpty {
            let utf8 = Array(label.utf8.prefix(63))
            bytes.append(UInt8(utf8.count))
            bytes.append(contentsOf: utf8)
        }
        bytes.append(0)
    }
}

/// Reads a DNS message, checking every length against the end.
struct WireReader {
    let bytes: [UInt8]
    var offset = 0

    mutating func u8() throws(DNSParseError) -> UInt8 {
        guard offset < bytes.count else { throw DNSParseError(code: .truncated, offset: offset) }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func u16() throws(DNSParseError) -> UInt16 {
        guard offset + 2 <= bytes.count else { throw DNSParseError(code: .truncated, offset: offset) }
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    mutating func u32() throws(DNSParseError) -> UInt32 {
        UInt32(try u16()) << 16 | UInt32(try u16())
    }

    /// Reads a name at the current offset (following compression pointers) and moves past it.
    mutating func name() throws(DNSParseError) -> String {
        let (name, end) = try Self.name(in: bytes, at: offset)
        offset = end
        return name
    }

    /// Reads the name at `start`; returns it and the offset just after its in-place part.
    static func name(in bytes: [UInt8], at start: Int) throws(DNSParseError) -> (String, Int) {
        // The name's text is built in one buffer (one allocation, none for short names).
        var text: [UInt8] = []
        var position = start
        var end: Int?
        var jumps = 0
        var length = 0
        while true {
            guard position < bytes.count else { throw DNSParseError(code: .truncated, offset: position) }
            let byte = bytes[position]
            switch byte & 0xC0 {
            case 0x00:
                let count = Int(byte)
                if count == 0 {
                    return (String(decoding: text, as: UTF8.self), end ?? position + 1)
                }
                guard position + 1 + count <= bytes.count else { throw DNSParseError(code: .truncated, offset: position) }
                length += count + 1
                guard length <= 255 else { throw DNSParseError(code: .nameTooLong, offset: position) }
                if text.isEmpty { text.reserveCapacity(64) } else { text.append(UInt8(ascii: ".")) }
                // Names compare case-insensitively: keep them lowercased.
                for index in (position + 1)..<(position + 1 + count) {
                    let c = bytes[index]
                    text.append(c >= 65 && c <= 90 ? c + 32 : c)
                }
                position += 1 + count
            case 0xC0:
                guard position + 1 < bytes.count else { throw DNSParseError(code: .truncated, offset: position) }
                let target = Int(byte & 0x3F) << 8 | Int(bytes[position + 1])
                if end == nil { end = position + 2 }
                // Pointers must point backwards (RFC 1035 compression refers to prior occurrences);
                // together with the jump limit this rules out loops.
                guard target < position else { throw DNSParseError(code: .pointerOutOfRange, offset: position) }
                jumps += 1
                guard jumps <= 64 else { throw DNSParseError(code: .compressionLoop, offset: position) }
                position = target
            default:
                throw DNSParseError(code: .badLabelType, offset: position)
            }
        }
    }

    mutating func record() throws(DNSParseError) -> DNSRecord {
        let name = try name()
        let type = DNSRecordType(rawValue: try u16())
        let recordClass = try u16()
        let ttl = try u32()
        let length = Int(try u16())
        let start = offset
        guard start + length <= bytes.count else { throw DNSParseError(code: .truncated, offset: start) }
        defer { offset = start + length }
        let data: DNSRecordData
        switch type {
        case .a:
            guard length == 4 else { throw DNSParseError(code: .badRecordLength, offset: start) }
            data = .ipv4(IPv4.format(bytes[start], bytes[start + 1], bytes[start + 2], bytes[start + 3]))
        case .aaaa:
            guard length == 16 else { throw DNSParseError(code: .badRecordLength, offset: start) }
            data = .ipv6(IPv6.format(Array(bytes[start..<start + 16])))
        case .srv:
            guard length >= 7 else { throw DNSParseError(code: .badRecordLength, offset: start) }
            var inner = WireReader(bytes: bytes, offset: start)
            let priority = try inner.u16()
            let weight = try inner.u16()
            let port = try inner.u16()
            let target = try inner.name()
            guard inner.offset <= start + length else { throw DNSParseError(code: .badRecordLength, offset: start) }
            data = .srv(priority: priority, weight: weight, port: port, target: target)
        case .cname:
            var inner = WireReader(bytes: bytes, offset: start)
            let target = try inner.name()
            guard inner.offset <= start + length else { throw DNSParseError(code: .badRecordLength, offset: start) }
            data = .cname(target)
        default:
            data = .other(Array(bytes[start..<start + length]))
        }
        return DNSRecord(name: name, type: type, recordClass: recordClass, ttl: ttl, data: data)
    }
}

/// IPv4 dotted-quad text, built without intermediate strings.
enum IPv4 {
    static func format(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> String {
        var text: [UInt8] = []
        text.reserveCapacity(15)
        for (index, octet) in [a, b, c, d].enumerated() {
            if index > 0 { text.append(UInt8(ascii: ".")) }
            if octet >= 100 { text.append(48 + octet / 100) }
            if octet >= 10 { text.append(48 + (octet / 10) % 10) }
            text.append(48 + octet % 10)
        }
        return String(decoding: text, as: UTF8.self)
    }
}

/// IPv6 text forms (RFC 5952 output; `::` input).
enum IPv6 {
    static func format(_ bytes: [UInt8]) -> String {
        let groups = (0..<8).map { UInt16(bytes[2 * $0]) << 8 | UInt16(bytes[2 * $0 + 1]) }
        // The longest run (at least two) of zero groups becomes "::".
        var bestStart = -1
        var bestLength = 0
        var index = 0
        while index < 8 {
            if groups[index] == 0 {
                var end = index
                while end < 8, groups[end] == 0 { end += 1 }
                if end - index > bestLength, end - index >= 2 {
                    bestStart = index
                    bestLength = end - index
                }
                index = end
            } else {
                index += 1
            }
        }
        func hex(_ range: Range<Int>) -> String { range.map { String(groups[$0], radix: 16) }.joined(separator: ":") }
        if bestStart < 0 { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
    }

    static func parse(_ text: String) -> [UInt8]? {
        let halves = text.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String) -> [UInt16]? {
            if part.isEmpty { return [] }
            let values = part.split(separator: ":", omittingEmptySubsequences: false).map { UInt16($0, radix: 16) }
            return values.contains(nil) ? nil : values.map { $0! }
        }
        guard let head = groups(halves[0]) else { return nil }
        var all = head
        if halves.count == 2 {
            guard let tail = groups(halves[1]), head.count + tail.count < 8 else { return nil }
            all += [UInt16](repeating: 0, count: 8 - head.count - tail.count) + tail
        }
        guard all.count == 8 else { return nil }
        return all.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
    }
}

extension String {
    fileprivate func components(separatedBy separator: String) -> [String] {
        var parts: [String] = []
        var rest = Substring(self)
        while let range = rest.firstRange(of: separator) {
            parts.append(String(rest[..<range.lowerBound]))
            rest = rest[range.upperBound...]
        }
        parts.append(String(rest))
        return parts
    }
}
