// ZooKeeper's client protocol: operation codes, error codes and the records this client sends and
// reads, from ZooKeeper's documented protocol (ZooDefs.OpCode, KeeperException.Code, zookeeper.jute).

/// Operation codes.
enum ZooKeeperOp: Int32 {
    case notification = 0
    case create = 1
    case delete = 2
    case exists = 3
    case getData = 4
    case setData = 5
    case getChildren2 = 12
    case ping = 11
    case closeSession = -11
    case setWatches = 101
}

/// Reserved request ids.
enum ZooKeeperXid {
    static let notification: Int32 = -1
    static let ping: Int32 = -2
    static let setWatches: Int32 = -8
}

/// A znode's metadata.
public struct ZooKeeperStat: Sendable, Hashable {
    /// The transaction id of the node's creation.
    public var czxid: Int64
    /// The transaction id of the node's last change.
    public var mzxid: Int64
    /// When the node was created, in milliseconds since 1970.
    public var ctime: Int64
    /// When the node last changed, in milliseconds since 1970.
    public var mtime: Int64
    /// The number of changes to the node's data.
    public var version: Int32
    /// The number of changes to the node's children.
    public var cversion: Int32
    /// The number of changes to the node's ACL.
    public var aversion: Int32
    /// The session that owns the node if it is ephemeral, else 0.
    public var ephemeralOwner: Int64
    /// The length of the node's data, in bytes.
    public var dataLength: Int32
    /// The number of children.
    public var numChildren: Int32
    /// The transaction id of the last change to the node's children.
    public var pzxid: Int64

    init(_ reader: inout JuteReader) throws(ZooKeeperDecodingError) {
        czxid = try reader.long()
        mzxid = try reader.long()
        ctime = try reader.long()
        mtime = try reader.long()
        version = try reader.int()
        cversion = try reader.int()
        aversion = try reader.int()
        ephemeralOwner = try reader.long()
        dataLength = try reader.int()
        numChildren = try reader.int()
        pzxid = try reader.long()
    }
}

/// How a node is created.
public enum ZooKeeperCreateMode: Sendable, Hashable {
    /// A node that stays until deleted.
    case persistent
    /// A node deleted when the session that created it ends.
    case ephemeral
    /// A persistent node whose name gets a unique, increasing 10-digit suffix.
    case persistentSequential
    /// An ephemeral node whose name gets a unique, increasing 10-digit suffix.
    case ephemeralSequential

    var flags: Int32 {
        switch self {
        case .persistent: 0
        case .ephemeral: 1
        case .persistentSequential: 2
        case .ephemeralSequential: 3
        }
    }
}

/// A watch notification.
public struct ZooKeeperWatchEvent: Sendable, Hashable {
    /// What changed.
    public enum Kind: Sendable, Hashable {
        /// The node was created (an `exists` watch).
        case nodeCreated
        /// The node was deleted.
        case nodeDeleted
        /// The node's data changed.
        case nodeDataChanged
        /// A child was added or removed.
        case nodeChildrenChanged
        /// A type this client does not know (newer servers).
        case other(Int32)
    }
    /// What changed.
    public var kind: Kind
    /// The node's path (relative to the chroot).
    public var path: String

    /// Creates an event.
    public init(kind: Kind, path: String) {
        self.kind = kind
        self.path = path
    }
}

/// The records of the protocol.
enum ZooKeeperRecords {
    /// The session request sent first on every connection.
    static func connectRequest(lastZxid: Int64, timeoutMilliseconds: Int32, sessionID: Int64, password: [UInt8]) -> [UInt8] {
        var writer = JuteWriter()
        writer.int(0) // protocol version
        writer.long(lastZxid)
        writer.int(timeoutMilliseconds)
        writer.long(sessionID)
        writer.buffer(password)
        writer.bool(false) // read-only not allowed
        return writer.frame
    }

    struct ConnectResponse: Equatable {
        var timeoutMilliseconds: Int32
        var sessionID: Int64
        var password: [UInt8]
    }

    static func connectResponse(_ payload: [UInt8]) throws(ZooKeeperDecodingError) -> ConnectResponse {
        var reader = JuteReader(payload)
        _ = try reader.int() // protocol version
        let timeout = try reader.int()
        let session = try reader.long()
        let password = try reader.buffer() ?? []
        // A trailing read-only flag is optional.
        return ConnectResponse(timeoutMilliseconds: timeout, sessionID: session, password: password)
    }

    /// A request frame: header (xid, op) and body.
    static func request(xid: Int32, op: ZooKeeperOp, body: [UInt8]) -> [UInt8] {
        var writer = JuteWriter()
        writer.int(xid)
        writer.int(op.rawValue)
        var frame = JuteWriter()
        frame.int(Int32(8 + body.count))
        return frame.bytes + writer.bytes + body
    }

    struct ReplyHeader: Equatable {
        var xid: Int32
        var zxid: Int64
        var error: Int32
    }

    /// Splits a reply into its header and the rest.
    static func reply(_ payload: [UInt8]) throws(ZooKeeperDecodingError) -> (ReplyHeader, JuteReader) {
        var reader = JuteReader(payload)
        let header = ReplyHeader(xid: try reader.int(), zxid: try reader.long(), error: try reader.int())
        return (header, reader)
    }

    static func watchEvent(_ reader: inout JuteReader) throws(ZooKeeperDecodingError) -> (type: Int32, state: Int32, path: String) {
        let type = try reader.int()
        let state = try reader.int()
        let path = try reader.string()
        return (type, state, path)
    }

    static func pathAndWatch(_ path: String, watch: Bool) -> [UInt8] {
        var writer = JuteWriter()
        writer.string(path)
        writer.bool(watch)
        return writer.bytes
    }

    static func create(_ path: String, data: [UInt8], mode: ZooKeeperCreateMode) -> [UInt8] {
        var writer = JuteWriter()
        writer.string(path)
        writer.buffer(data)
        // One ACL: world:anyone with every permission (ZooDefs.Ids.OPEN_ACL_UNSAFE).
        writer.int(1)
        writer.int(31)
        writer.string("world")
        writer.string("anyone")
        writer.int(mode.flags)
        return writer.bytes
    }

    static func delete(_ path: String, version: Int32) -> [UInt8] {
        var writer = JuteWriter()
        writer.string(path)
        writer.int(version)
        return writer.bytes
    }

    static func setData(_ path: String, data: [UInt8], version: Int32) -> [UInt8] {
        var writer = JuteWriter()
        writer.string(path)
        writer.buffer(data)
        writer.int(version)
        return writer.bytes
    }

    static func setWatches(relativeZxid: Int64, data: [String], exist: [String], child: [String]) -> [UInt8] {
        var writer = JuteWriter()
        writer.long(relativeZxid)
        writer.strings(data)
        writer.strings(exist)
        writer.strings(child)
        return writer.bytes
    }
}

/// Decodes one server frame in the connected state, as the client does (for the fuzzer and tests):
/// a reply header, then a watch event for notifications. Throws a typed error for anything malformed.
public enum ZooKeeperFrame {
    /// Decodes `payload` (a frame without its length prefix) and throws if it is malformed.
    public static func validate(_ payload: [UInt8]) throws(ZooKeeperDecodingError) {
        var (header, reader) = try ZooKeeperRecords.reply(payload)
        switch header.xid {
        case ZooKeeperXid.notification:
            _ = try ZooKeeperRecords.watchEvent(&reader)
        default:
            if header.error == 0, reader.remaining > 0 {
                // Try every body this client reads; one must fit if the frame is well formed, but
                // a frame that fits none is only an error for the request that expected it.
                var stat = reader
                _ = try? ZooKeeperStat(&stat)
                var children = reader
                if (try? children.strings()) != nil { _ = try? ZooKeeperStat(&children) }
                var data = reader
                if (try? data.buffer()) != nil { _ = try? ZooKeeperStat(&data) }
                var path = reader
                _ = try? path.string()
            }
        }
    }
}
