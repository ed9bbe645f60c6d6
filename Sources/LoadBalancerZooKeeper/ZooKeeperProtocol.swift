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
    case getACL = 6
    case setACL = 7
    case getChildren2 = 12
    case ping = 11
    case removeWatches = 18
    case closeSession = -11
    case setWatches = 101
    case setWatches2 = 105
    case addWatch = 106
    case auth = 100
}

/// Reserved request ids.
enum ZooKeeperXid {
    static let notification: Int32 = -1
    static let ping: Int32 = -2
    static let auth: Int32 = -4
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

/// The kind of watch ``ZooKeeperClient/addWatch(_:mode:)`` sets (ZooKeeper 3.6 and later): one that
/// stays after it fires, until it is removed or the session ends.
public enum ZooKeeperAddWatchMode: Sendable, Hashable {
    /// Fires for the node's own changes (created, deleted, data changed) and its children's set
    /// (children changed), as a data watch and a child watch would, without being consumed.
    case persistent
    /// Fires for the node and every node below it, at any depth: created, deleted, data changed
    /// (never children changed: a child's creation or deletion is an event of its own).
    case persistentRecursive

    /// `AddWatchMode`'s number on the wire.
    var rawValue: Int32 {
        switch self {
        case .persistent: 0
        case .persistentRecursive: 1
        }
    }
}

/// Which watches ``ZooKeeperClient/removeWatches(_:kind:)`` removes (ZooKeeper's `WatcherType`).
public enum ZooKeeperWatcherKind: Sendable, Hashable {
    /// The child watch.
    case children
    /// The data (and exists) watch.
    case data
    /// Every watch this session has on the node, persistent ones included.
    case any

    /// `WatcherType`'s number on the wire.
    var rawValue: Int32 {
        switch self {
        case .children: 1
        case .data: 2
        case .any: 3
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

/// One entry of a node's access control list: an identity and what it may do.
///
/// ZooKeeper checks a node's ACL for reading it (`read`: data, children), writing its data
/// (`write`), creating children under it (`create`), deleting children under it (`delete`: the
/// permission to delete a node is its *parent's*) and changing its ACL (`admin`). An ACL is not
/// inherited: each node has its own.
public struct ZooKeeperACL: Sendable, Hashable, CustomStringConvertible {
    /// What an identity may do.
    public struct Permissions: OptionSet, Sendable, Hashable {
        /// ZooKeeper's permission bits (`ZooDefs.Perms`).
        public let rawValue: Int32
        /// Permissions from ZooKeeper's bits.
        public init(rawValue: Int32) { self.rawValue = rawValue }

        /// Read the node's data and list its children.
        public static let read = Permissions(rawValue: 1)
        /// Set the node's data.
        public static let write = Permissions(rawValue: 2)
        /// Create children.
        public static let create = Permissions(rawValue: 4)
        /// Delete children.
        public static let delete = Permissions(rawValue: 8)
        /// Set the node's ACL.
        public static let admin = Permissions(rawValue: 16)
        /// Every permission.
        public static let all: Permissions = [.read, .write, .create, .delete, .admin]
    }

    /// An identity: an authentication scheme and an id in it.
    public struct Id: Sendable, Hashable, CustomStringConvertible {
        /// The scheme: `world`, `auth`, `digest`, `ip`, `x509`, `sasl`...
        public var scheme: String
        /// The id in the scheme (`anyone` for `world`, `user:base64(sha1(user:password))` for
        /// `digest`, an address or a CIDR block for `ip`).
        public var id: String

        /// An identity.
        public init(scheme: String, id: String) {
            self.scheme = scheme
            self.id = id
        }

        /// Everyone (`world:anyone`), authenticated or not.
        public static let anyone = Id(scheme: "world", id: "anyone")
        /// The identities the creating session has authenticated as (`auth:`): the server replaces
        /// it with them when the node is created. A session with no credentials cannot use it (the
        /// server answers ``ZooKeeperError/Code/invalidACL``).
        public static let creator = Id(scheme: "auth", id: "")

        /// `scheme:id`.
        public var description: String { "\(scheme):\(id)" }
    }

    /// What ``id`` may do.
    public var permissions: Permissions
    /// Who.
    public var id: Id

    /// An ACL entry.
    public init(permissions: Permissions, id: Id) {
        self.permissions = permissions
        self.id = id
    }

    /// `scheme:id:perms`, the permissions as ZooKeeper's shell writes them (`cdrwa`).
    public var description: String {
        let letters: [(Permissions, Character)] = [(.create, "c"), (.delete, "d"), (.read, "r"), (.write, "w"), (.admin, "a")]
        return "\(id):" + String(letters.compactMap { permissions.contains($0.0) ? $0.1 : nil })
    }
}

extension Array where Element == ZooKeeperACL {
    /// Everyone may do everything (ZooKeeper's `OPEN_ACL_UNSAFE`): what nodes get when the client
    /// has no credentials and no ACL is configured.
    public static var openUnsafe: [ZooKeeperACL] { [ZooKeeperACL(permissions: .all, id: .anyone)] }
    /// The creator may do everything, nobody else anything (`CREATOR_ALL_ACL`). Needs credentials.
    public static var creatorAll: [ZooKeeperACL] { [ZooKeeperACL(permissions: .all, id: .creator)] }
    /// Everyone may read, nothing more (`READ_ACL_UNSAFE`).
    public static var readUnsafe: [ZooKeeperACL] { [ZooKeeperACL(permissions: .read, id: .anyone)] }
    /// The creator may do everything, everyone else may read: what nodes get when the client has
    /// credentials and no ACL is configured. Needs credentials.
    public static var creatorAllAnyoneRead: [ZooKeeperACL] { creatorAll + readUnsafe }
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

    static func path(_ path: String) -> [UInt8] {
        var writer = JuteWriter()
        writer.string(path)
        return writer.bytes
    }

    static func pathAndWatch(_ path: String, watch: Bool) -> [UInt8] {
        var writer = JuteWriter()
        writer.string(path)
        writer.bool(watch)
        return writer.bytes
    }

    static func create(_ path: String, data: [UInt8], mode: ZooKeeperCreateMode, acl: [ZooKeeperACL]) -> [UInt8] {
        var writer = JuteWriter()
        writer.string(path)
        writer.buffer(data)
        writeACL(acl, to: &writer)
        writer.int(mode.flags)
        return writer.bytes
    }

    static func writeACL(_ acl: [ZooKeeperACL], to writer: inout JuteWriter) {
        writer.int(Int32(acl.count))
        for entry in acl {
            writer.int(entry.permissions.rawValue)
            writer.string(entry.id.scheme)
            writer.string(entry.id.id)
        }
    }

    /// A vector of ACL entries (as getACL returns).
    static func readACL(_ reader: inout JuteReader) throws(ZooKeeperDecodingError) -> [ZooKeeperACL] {
        let count = try reader.int()
        if count == -1 { return [] }
        guard count >= 0 else { throw ZooKeeperDecodingError(code: .badLength, message: "negative ACL count \(count)") }
        // Each entry takes at least 12 bytes (perms and two lengths): a count beyond that is a lie.
        guard Int(count) <= reader.remaining / 12 else {
            throw ZooKeeperDecodingError(code: .badLength, message: "ACL count \(count) runs past the end")
        }
        var acl: [ZooKeeperACL] = []
        acl.reserveCapacity(Int(count))
        for _ in 0..<count {
            let permissions = ZooKeeperACL.Permissions(rawValue: try reader.int())
            let scheme = try reader.string()
            let id = try reader.string()
            acl.append(ZooKeeperACL(permissions: permissions, id: .init(scheme: scheme, id: id)))
        }
        return acl
    }

    /// getACL's reply body: the ACL, then the node's stat.
    static func aclReply(_ reader: inout JuteReader) throws(ZooKeeperDecodingError) -> ([ZooKeeperACL], ZooKeeperStat) {
        let acl = try readACL(&reader)
        return (acl, try ZooKeeperStat(&reader))
    }

    static func setACL(_ path: String, acl: [ZooKeeperACL], version: Int32) -> [UInt8] {
        var writer = JuteWriter()
        writer.string(path)
        writeACL(acl, to: &writer)
        writer.int(version)
        return writer.bytes
    }

    /// An AuthPacket (`addauth`): type 0, the scheme, the scheme's credentials.
    static func auth(scheme: String, credentials: [UInt8]) -> [UInt8] {
        var writer = JuteWriter()
        writer.int(0)
        writer.string(scheme)
        writer.buffer(credentials)
        return request(xid: ZooKeeperXid.auth, op: .auth, body: writer.bytes)
    }

    /// What the server answered an AuthPacket: accepted, or the error code it sent (it closes the
    /// connection after a refusal). The reply has no body; bytes after the header are ignored, as
    /// ZooKeeper's own client does.
    enum AuthOutcome: Equatable {
        case accepted
        case refused(Int32)
    }

    static func authOutcome(_ header: ReplyHeader) -> AuthOutcome {
        header.error == 0 ? .accepted : .refused(header.error)
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

    /// SetWatches2 (ZooKeeper 3.6+): SetWatches's three lists, then the persistent and the
    /// persistent recursive watches.
    static func setWatches2(
        relativeZxid: Int64, data: [String], exist: [String], child: [String], persistent: [String], persistentRecursive: [String]
    ) -> [UInt8] {
        var writer = JuteWriter()
        writer.long(relativeZxid)
        writer.strings(data)
        writer.strings(exist)
        writer.strings(child)
        writer.strings(persistent)
        writer.strings(persistentRecursive)
        return writer.bytes
    }

    /// AddWatchRequest: the path, then the mode.
    static func addWatch(_ path: String, mode: ZooKeeperAddWatchMode) -> [UInt8] {
        var writer = JuteWriter()
        writer.string(path)
        writer.int(mode.rawValue)
        return writer.bytes
    }

    /// RemoveWatchesRequest: the path, then the watcher type.
    static func removeWatches(_ path: String, kind: ZooKeeperWatcherKind) -> [UInt8] {
        var writer = JuteWriter()
        writer.string(path)
        writer.int(kind.rawValue)
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
        case ZooKeeperXid.auth:
            _ = ZooKeeperRecords.authOutcome(header)
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
                var acl = reader
                _ = try? ZooKeeperRecords.aclReply(&acl)
            }
        }
    }
}
