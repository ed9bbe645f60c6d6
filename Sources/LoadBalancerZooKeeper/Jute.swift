// ZooKeeper's wire encoding ("jute"): big-endian integers, strings and byte buffers prefixed by a
// 32-bit length (-1 for null), vectors prefixed by a 32-bit count, booleans as one byte.
// Written from ZooKeeper's documented protocol (zookeeper.jute); no NIO here, so the decoder can
// be fuzzed on its own.

/// A malformed ZooKeeper frame or record.
public struct ZooKeeperDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable {
            case truncated, badLength, frameTooLarge, unexpectedReply
        }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        /// A field runs past the end of the record.
        public static let truncated = Code(.truncated)
        /// A length or a count is negative, or larger than what is left.
        public static let badLength = Code(.badLength)
        /// A frame's length is outside what a ZooKeeper frame may be.
        public static let frameTooLarge = Code(.frameTooLarge)
        /// A reply to a request the client did not make.
        public static let unexpectedReply = Code(.unexpectedReply)

        /// The code's name, such as `truncated`.
        public var description: String { String(describing: wrapped) }
    }

    /// What is wrong.
    public var code: Code
    /// What is wrong, and where.
    public var message: String
    /// The underlying error, if any.
    public var cause: (any Error)?

    /// Creates an error.
    public init(code: Code, message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// `malformed ZooKeeper data: MESSAGE`.
    public var description: String { "malformed ZooKeeper data: \(message)" }

    /// Errors are equal when their codes and messages are (the cause is not compared).
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code && lhs.message == rhs.message }

    /// Hashes what `==` compares.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(message)
    }
}

/// Writes jute records.
struct JuteWriter {
    private(set) var bytes: [UInt8] = []

    init() { bytes.reserveCapacity(64) }

    mutating func int(_ value: Int32) {
        let bits = UInt32(bitPattern: value)
        bytes.append(UInt8(truncatingIfNeeded: bits >> 24))
        bytes.append(UInt8(truncatingIfNeeded: bits >> 16))
        bytes.append(UInt8(truncatingIfNeeded: bits >> 8))
        bytes.append(UInt8(truncatingIfNeeded: bits))
    }

    mutating func long(_ value: Int64) {
        let bits = UInt64(bitPattern: value)
        int(Int32(bitPattern: UInt32(truncatingIfNeeded: bits >> 32)))
        int(Int32(bitPattern: UInt32(truncatingIfNeeded: bits)))
    }

    mutating func bool(_ value: Bool) { bytes.append(value ? 1 : 0) }

    mutating func buffer(_ value: [UInt8]?) {
        guard let value else {
            int(-1)
            return
        }
        int(Int32(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func string(_ value: String) { buffer(Array(value.utf8)) }

    mutating func strings(_ values: [String]) {
        int(Int32(values.count))
        for value in values { string(value) }
    }

    /// The record as a frame: a 32-bit length, then the bytes.
    var frame: [UInt8] {
        var out = JuteWriter()
        out.int(Int32(bytes.count))
        return out.bytes + bytes
    }
}

/// Reads jute records, never past the end: every read checks the bytes left.
struct JuteReader {
    let bytes: [UInt8]
    private(set) var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var remaining: Int { bytes.count - position }

    mutating func int() throws(ZooKeeperDecodingError) -> Int32 {
        guard remaining >= 4 else {
            throw ZooKeeperDecodingError(code: .truncated, message: "expected 4 bytes at \(position), \(remaining) left")
        }
        var value: UInt32 = 0
        for i in 0..<4 { value = value << 8 | UInt32(bytes[position + i]) }
        position += 4
        return Int32(bitPattern: value)
    }

    mutating func long() throws(ZooKeeperDecodingError) -> Int64 {
        let high = UInt64(UInt32(bitPattern: try int()))
        let low = UInt64(UInt32(bitPattern: try int()))
        return Int64(bitPattern: high << 32 | low)
    }

    mutating func bool() throws(ZooKeeperDecodingError) -> Bool {
        guard remaining >= 1 else { throw ZooKeeperDecodingError(code: .truncated, message: "expected a boolean at \(position)") }
        defer { position += 1 }
        return bytes[position] != 0
    }

    /// A length-prefixed buffer; `nil` for length -1.
    mutating func buffer() throws(ZooKeeperDecodingError) -> [UInt8]? {
        let length = try int()
        if length == -1 { return nil }
        guard length >= 0 else { throw ZooKeeperDecodingError(code: .badLength, message: "negative length \(length) at \(position - 4)") }
        guard Int(length) <= remaining else {
            throw ZooKeeperDecodingError(
                code: .truncated, message: "length \(length) at \(position - 4) runs past the end (\(remaining) left)")
        }
        defer { position += Int(length) }
        return Array(bytes[position..<position + Int(length)])
    }

    mutating func string() throws(ZooKeeperDecodingError) -> String {
        guard let bytes = try buffer() else { return "" }
        return String(decoding: bytes, as: UTF8.self)
    }

    mutating func strings() throws(ZooKeeperDecodingError) -> [String] {
        let count = try int()
        if count == -1 { return [] }
        guard count >= 0 else { throw ZooKeeperDecodingError(code: .badLength, message: "negative count \(count)") }
        // Each string takes at least its 4-byte length: a count beyond that is a lie.
        guard Int(count) <= remaining / 4 else {
            throw ZooKeeperDecodingError(code: .badLength, message: "count \(count) runs past the end")
        }
        var values: [String] = []
        values.reserveCapacity(Int(count))
        for _ in 0..<count { values.append(try string()) }
        return values
    }
}

/// Splits a byte stream into ZooKeeper frames (a 32-bit big-endian length, then that many bytes).
///
/// A negative length, or one above ``maxFrameLength``, is an error: the connection is broken and
/// must be closed, never trusted further.
struct ZooKeeperFrameDecoder {
    /// The largest frame accepted: ZooKeeper's default `jute.maxbuffer` is 1 MiB; this allows a
    /// generous margin for large child lists.
    static let maxFrameLength = 16 << 20

    private var buffer: [UInt8] = []
    private var start = 0

    /// Adds bytes read from the connection.
    mutating func append(_ bytes: some Sequence<UInt8>) {
        buffer.append(contentsOf: bytes)
    }

    /// The next whole frame's payload, or `nil` until more bytes arrive.
    mutating func next() throws(ZooKeeperDecodingError) -> [UInt8]? {
        guard buffer.count - start >= 4 else { return nil }
        var length: UInt32 = 0
        for i in 0..<4 { length = length << 8 | UInt32(buffer[start + i]) }
        let signed = Int32(bitPattern: length)
        guard signed >= 0, Int(signed) <= Self.maxFrameLength else {
            throw ZooKeeperDecodingError(code: .frameTooLarge, message: "frame length \(signed) is outside 0...\(Self.maxFrameLength)")
        }
        guard buffer.count - start - 4 >= Int(signed) else { return nil }
        let payload = Array(buffer[start + 4..<start + 4 + Int(signed)])
        start += 4 + Int(signed)
        if start > 65_536, start * 2 > buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
        return payload
    }
}
