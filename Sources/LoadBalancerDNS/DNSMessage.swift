/// A DNS message (RFC 1035), as much of it as service discovery needs: the header, the questions,
/// and the A, AAAA, SRV and CNAME records of every section (other records are kept as raw data).
///
/// ``parse(_:)`` accepts any byte sequence: a truncated, looping or otherwise malformed message is
/// a ``DNSParseError``, never a crash.
public struct DNSMessage: Sendable, Hashable {
    /// The query id.
    public var id: UInt16
    /// The header flags (QR, opcode, AA, TC, RD, RA, Z, RCODE), as on the wire.
    public var flags: UInt16
    /// The question section.
    public var questions: [DNSQuestion]
    /// The answer section.
    public var answers: [DNSRecord]
    /// The authority section.
    public var authorities: [DNSRecord]
    /// The additional section.
    public var additionals: [DNSRecord]

    /// Creates a message.
    public init(
        id: UInt16,
        flags: UInt16,
        questions: [DNSQuestion],
        answers: [DNSRecord] = [],
        authorities: [DNSRecord] = [],
        additionals: [DNSRecord] = []
    ) {
        self.id = id
        self.flags = flags
        self.questions = questions
        self.answers = answers
        self.authorities = authorities
        self.additionals = additionals
    }

    /// Whether this is a response.
    public var isResponse: Bool { flags & 0x8000 != 0 }
    /// Whether the answer was truncated (TC): ask again over TCP.
    public var isTruncated: Bool { flags & 0x0200 != 0 }
    /// The response code (the low 4 bits of the flags; extended codes are not used here).
    public var responseCode: DNSResponseCode { DNSResponseCode(rawValue: UInt8(flags & 0x000F)) }
}

/// A response code.
public struct DNSResponseCode: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The 4-bit code, as on the wire.
    public var rawValue: UInt8
    /// Creates a response code from its wire value.
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// NOERROR (0): the query succeeded (the answer may still be empty).
    public static let noError = DNSResponseCode(rawValue: 0)
    /// FORMERR (1): the server could not interpret the query.
    public static let formatError = DNSResponseCode(rawValue: 1)
    /// SERVFAIL (2): the server failed to answer.
    public static let serverFailure = DNSResponseCode(rawValue: 2)
    /// NXDOMAIN (3): the name does not exist.
    public static let nameError = DNSResponseCode(rawValue: 3)
    /// NOTIMP (4): the server does not support the query.
    public static let notImplemented = DNSResponseCode(rawValue: 4)
    /// REFUSED (5): the server refused to answer.
    public static let refused = DNSResponseCode(rawValue: 5)

    /// The mnemonic (`NOERROR`, `NXDOMAIN`, `SRV`, `AAAA`...), or the number when it has none here.
    public var description: String {
        switch self {
        case .noError: "NOERROR"
        case .formatError: "FORMERR"
        case .serverFailure: "SERVFAIL"
        case .nameError: "NXDOMAIN"
        case .notImplemented: "NOTIMP"
        case .refused: "REFUSED"
        default: "RCODE \(rawValue)"
        }
    }
}

/// A record type.
public struct DNSRecordType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The type's number, as on the wire.
    public var rawValue: UInt16
    /// Creates a record type from its number.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// A (1): an IPv4 address.
    public static let a = DNSRecordType(rawValue: 1)
    /// CNAME (5): an alias.
    public static let cname = DNSRecordType(rawValue: 5)
    /// AAAA (28): an IPv6 address.
    public static let aaaa = DNSRecordType(rawValue: 28)
    /// SRV (33): a service location (RFC 2782).
    public static let srv = DNSRecordType(rawValue: 33)
    /// OPT (41): the EDNS0 pseudo-record.
    public static let opt = DNSRecordType(rawValue: 41)

    /// The mnemonic (`NOERROR`, `NXDOMAIN`, `SRV`, `AAAA`...), or the number when it has none here.
    public var description: String {
        switch self {
        case .a: "A"
        case .cname: "CNAME"
        case .aaaa: "AAAA"
        case .srv: "SRV"
        case .opt: "OPT"
        default: "TYPE\(rawValue)"
        }
    }
}

/// A question.
public struct DNSQuestion: Sendable, Hashable {
    /// The name, lowercased, without the trailing dot.
    public var name: String
    /// The record type.
    public var type: DNSRecordType
    /// The class (1, IN).
    public var recordClass: UInt16

    /// Creates a question.
    public init(name: String, type: DNSRecordType, recordClass: UInt16 = 1) {
        self.name = name
        self.type = type
        self.recordClass = recordClass
    }
}

/// A resource record.
public struct DNSRecord: Sendable, Hashable {
    /// The owner name, lowercased, without the trailing dot.
    public var name: String
    /// The record type.
    public var type: DNSRecordType
    /// The class (1, IN).
    public var recordClass: UInt16
    /// Time to live, in seconds.
    public var ttl: UInt32
    /// The record's data, decoded for the types service discovery uses.
    public var data: DNSRecordData

    /// Creates a record.
    public init(name: String, type: DNSRecordType, recordClass: UInt16 = 1, ttl: UInt32, data: DNSRecordData) {
        self.name = name
        self.type = type
        self.recordClass = recordClass
        self.ttl = ttl
        self.data = data
    }
}

/// The data of a record.
public enum DNSRecordData: Sendable, Hashable {
    /// An IPv4 address, as text (`10.0.0.1`).
    case ipv4(String)
    /// An IPv6 address, as text (`fd00::1`).
    case ipv6(String)
    /// A service location (RFC 2782).
    case srv(priority: UInt16, weight: UInt16, port: UInt16, target: String)
    /// An alias.
    case cname(String)
    /// Anything else, as raw bytes.
    case other([UInt8])
}

/// A message that cannot be parsed.
public struct DNSParseError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong with the message. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable {
            case truncated, pointerOutOfRange, compressionLoop, labelTooLong, nameTooLong, badLabelType, badRecordLength
        }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }
        /// A field runs past the end of the message.
        public static let truncated = Code(.truncated)
        /// A compression pointer points outside the message, or forward.
        public static let pointerOutOfRange = Code(.pointerOutOfRange)
        /// Compression pointers form a loop.
        public static let compressionLoop = Code(.compressionLoop)
        /// A label is longer than 63 bytes.
        public static let labelTooLong = Code(.labelTooLong)
        /// A name is longer than 255 bytes.
        public static let nameTooLong = Code(.nameTooLong)
        /// A label length uses the reserved 0x40/0x80 forms.
        public static let badLabelType = Code(.badLabelType)
        /// A record's data length does not fit its type.
        public static let badRecordLength = Code(.badRecordLength)
        /// The code's name, such as `truncated`.
        public var description: String { String(describing: wrapped) }
    }

    /// What is wrong.
    public var code: Code
    /// Where in the message the problem was found.
    public var offset: Int
    /// The underlying error, if any.
    public var cause: (any Error)?

    /// Creates an error.
    public init(code: Code, offset: Int, cause: (any Error)? = nil) {
        self.code = code
        self.offset = offset
        self.cause = cause
    }

    /// `CODE at byte OFFSET`.
    public var message: String { "\(code) at byte \(offset)" }

    /// `malformed DNS message: CODE at byte OFFSET`.
    public var description: String { "malformed DNS message: \(message)" }

    /// Errors are equal when their codes and offsets are (the cause is not compared).
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code && lhs.offset == rhs.offset }

    /// Hashes what `==` compares.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(offset)
    }
}
