#if !LB_FUZZ // scripts/fuzz.sh compiles this file with the core's Instance sources, in one module
    import LoadBalancer
#endif

// What the etcd client hands out, decoded from etcd's protobuf messages, and the publisher's table
// of instances. Needs only the generated messages (etcd.pb.swift), not gRPC: scripts/fuzz.sh etcd
// builds it with them and the core's Instance sources.

/// The result of a range read.
public struct EtcdRange: Sendable {
    /// The store's revision when it was read.
    public var revision: Int64
    /// The keys, in key order.
    public var keyValues: [EtcdKeyValue]
    /// Whether more keys are in the range than were returned (a page of a paged read).
    public var more: Bool = false
}

/// One key and its value.
public struct EtcdKeyValue: Sendable, Hashable {
    /// The key (decoded as UTF-8).
    public var key: String
    /// The value's bytes.
    public var value: [UInt8]
    /// The revision of the key's creation.
    public var createRevision: Int64
    /// The revision of the key's last change.
    public var modRevision: Int64
    /// The lease the key is attached to, 0 for none.
    public var lease: Int64

    init(_ kv: Etcdserverpb_KeyValue) {
        key = String(decoding: kv.key, as: UTF8.self)
        value = Array(kv.value)
        createRevision = kv.createRevision
        modRevision = kv.modRevision
        lease = kv.lease
    }
}

/// A change of one key.
public struct EtcdEvent: Sendable, Hashable {
    /// What happened to the key.
    public enum Kind: Sendable, Hashable {
        /// The key was created or changed.
        case put
        /// The key was deleted.
        case delete
    }
    /// What happened to the key.
    public var kind: Kind
    /// For a put, the new key-value; for a delete, the key with an empty value and the revision of
    /// the deletion.
    public var keyValue: EtcdKeyValue

    init(_ event: Etcdserverpb_Event) {
        kind = event.type == .delete ? .delete : .put
        keyValue = EtcdKeyValue(event.kv)
    }
}

/// What one watch response carried: events (possibly none, for a progress notification) and the
/// revision the member was at.
public struct EtcdWatchBatch: Sendable {
    /// The store's revision when the member sent the batch: every change up to it has been sent.
    public var revision: Int64
    /// The events, in revision order.
    public var events: [EtcdEvent]
}

/// A list being read page by page: each page's values are parsed as it arrives, so the raw pages
/// are never all held at once.
struct EtcdListing: Sendable {
    /// Instances by key.
    var instances: [String: Instance] = [:]
    /// The values that are not instances, by key.
    var invalid: [String: [UInt8]] = [:]
    /// How many pages were added.
    var pages = 0

    /// Adds one page; `parse` turns a value into an instance (nil: not one).
    mutating func add(_ page: EtcdRange, parse: (EtcdKeyValue) -> Instance?) {
        pages += 1
        instances.reserveCapacity(instances.count + page.keyValues.count)
        for kv in page.keyValues {
            if let instance = parse(kv) {
                instances[kv.key] = instance
                invalid.removeValue(forKey: kv.key)
            } else {
                instances.removeValue(forKey: kv.key)
                invalid[kv.key] = kv.value
            }
        }
    }
}

/// The instances under a prefix, as a list read them and watch batches then changed them, with the
/// revision to watch from next. The publisher's state; kept apart from it (and from gRPC) so the
/// fuzz target decodes and applies responses exactly as the publisher does.
struct EtcdInstanceTable: Sendable {
    /// The instances by key, and the set they make, kept ordered by id as events change it.
    private var table = KeyedInstanceTable()
    /// Instances by key.
    var instances: [String: Instance] { table.byKey }
    /// The values that are not instances, by key (reported in band).
    var invalid: [String: [UInt8]] = [:]
    /// The revision to watch from next (the one after the last seen); nil: list first.
    var nextRevision: Int64?

    /// Replaces the table with a list's result; `parse` turns a value into an instance (nil: skip it).
    mutating func reset(to range: EtcdRange, parse: (EtcdKeyValue) -> Instance?) {
        var listing = EtcdListing()
        listing.add(range, parse: parse)
        reset(to: listing, revision: range.revision)
    }

    /// Replaces the table with a list read page by page (at `revision`).
    mutating func reset(to listing: EtcdListing, revision: Int64) {
        table = KeyedInstanceTable(listing.instances)
        invalid = listing.invalid
        nextRevision = Self.after(revision)
    }

    /// Applies a watch batch whose puts were parsed beforehand (`parsed`, one per event, nil for a
    /// delete or a value that is not an instance). Replays after a reconnect never go backwards:
    /// events before ``nextRevision`` are skipped. Returns whether the set changed.
    mutating func apply(_ batch: EtcdWatchBatch, parsed: [Instance?]) -> Bool {
        var changed = false
        for (event, instance) in zip(batch.events, parsed) {
            if let next = nextRevision, event.keyValue.modRevision < next { continue }
            nextRevision = Self.after(event.keyValue.modRevision)
            changed = true
            if let instance {
                table.set(event.keyValue.key, to: instance)
                invalid.removeValue(forKey: event.keyValue.key)
            } else {
                table.set(event.keyValue.key, to: nil)
                if event.kind == .put {
                    invalid[event.keyValue.key] = event.keyValue.value
                } else {
                    invalid.removeValue(forKey: event.keyValue.key)
                }
            }
        }
        nextRevision = max(nextRevision ?? 0, Self.after(batch.revision))
        return changed
    }

    /// The revision after `revision`; a server that sends the largest revision (no real etcd can)
    /// gets that one again rather than a crash.
    static func after(_ revision: Int64) -> Int64 {
        revision == .max ? .max : revision + 1
    }

    /// The set: the instances ordered by id, unique by id (of two keys naming the same instance, the
    /// smaller key's wins). Kept in order as batches apply, not sorted again per batch.
    var ordered: [Instance] { table.ordered }

    /// What changed in ``ordered`` since the last call, or since the last list (which starts anew).
    mutating func takeChanges() -> (upserted: [Instance], removed: [String]) {
        table.takeChanges()
    }
}
