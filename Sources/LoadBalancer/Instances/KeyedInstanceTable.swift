/// The instances a registry holds under keys (etcd keys, ZooKeeper children), kept as the set a
/// publisher publishes, and what changed in it since it was last asked.
///
/// ``ordered`` is the set ordered by id, unique by id: of two keys that name the same id, the
/// smaller key's instance is in it (as ``InstanceBroadcaster/publish(_:)`` keeps the first of a set
/// ordered by key). A change of one key costs a binary search and an insertion into ``ordered``,
/// not a sort of the whole set; ``takeChanges()`` says which instances were added, changed or
/// removed since the last call, for ``InstanceBroadcaster/publish(_:upserted:removed:)``.
package struct KeyedInstanceTable: Sendable {
    /// The instance of each key.
    package private(set) var byKey: [String: Instance] = [:]
    /// The keys naming each id, in increasing order (almost always one).
    private var keysByID: [String: [String]] = [:]
    /// The set: for each id, the instance of its smallest key; ordered by id.
    package private(set) var ordered: [Instance] = []
    /// The ids changed since the last ``takeChanges()``, each with its instance before (nil: absent).
    private var touched: [String: Instance?] = [:]

    /// An empty table.
    package init() {}

    /// A table of `instances` by key; nothing counts as changed.
    package init(_ instances: [String: Instance]) {
        byKey = instances
        // In key order, so that each id's keys are appended in increasing order.
        for (key, instance) in instances.sorted(by: { $0.key < $1.key }) {
            keysByID[instance.id, default: []].append(key)
        }
        ordered.reserveCapacity(keysByID.count)
        for (_, keys) in keysByID {
            ordered.append(instances[keys[0]]!)
        }
        ordered.sort { $0.id < $1.id }
    }

    /// The number of keys that hold an instance.
    package var keyCount: Int { byKey.count }

    /// The instance of `key`, if any.
    package subscript(key: String) -> Instance? { byKey[key] }

    /// Sets the instance of `key`; `nil` removes it.
    package mutating func set(_ key: String, to instance: Instance?) {
        let old = byKey[key]
        if old == instance { return }
        if let old {
            var keys = keysByID[old.id] ?? []
            if let index = keys.firstIndex(of: key) { keys.remove(at: index) }
            keysByID[old.id] = keys.isEmpty ? nil : keys
        }
        byKey[key] = instance
        if let instance {
            var keys = keysByID[instance.id] ?? []
            keys.insert(key, at: Self.insertionPoint(of: key, in: keys))
            keysByID[instance.id] = keys
        }
        if let old { refresh(old.id) }
        if let instance, instance.id != old?.id { refresh(instance.id) }
    }

    /// Puts the instance of `id`'s smallest key (or none) into ``ordered``.
    private mutating func refresh(_ id: String) {
        let winner = keysByID[id].flatMap { byKey[$0[0]] }
        let position = Self.position(of: id, in: ordered)
        let present = position < ordered.count && ordered[position].id == id
        let before = present ? ordered[position] : nil
        if before == winner { return }
        if touched.index(forKey: id) == nil { touched.updateValue(before, forKey: id) }
        switch (present, winner) {
        case (true, let winner?): ordered[position] = winner
        case (true, nil): ordered.remove(at: position)
        case (false, let winner?): ordered.insert(winner, at: position)
        case (false, nil): break
        }
    }

    /// What changed in ``ordered`` since the last call (or since the table was made): the instances
    /// added or changed and the ids removed, each ordered by id. An id changed and changed back is
    /// in neither.
    package mutating func takeChanges() -> (upserted: [Instance], removed: [String]) {
        var upserted: [Instance] = []
        var removed: [String] = []
        for (id, before) in touched {
            let position = Self.position(of: id, in: ordered)
            let now = position < ordered.count && ordered[position].id == id ? ordered[position] : nil
            if now == before { continue }
            if let now { upserted.append(now) } else { removed.append(id) }
        }
        touched.removeAll(keepingCapacity: true)
        upserted.sort { $0.id < $1.id }
        removed.sort()
        return (upserted, removed)
    }

    /// The first index of `instances` (ordered by id) whose id is not below `id`.
    private static func position(of id: String, in instances: [Instance]) -> Int {
        instances.withUnsafeBufferPointer { instances in partitionPoint(count: instances.count) { instances[$0].id < id } }
    }

    /// The first index of `keys` (increasing) not below `key`.
    private static func insertionPoint(of key: String, in keys: [String]) -> Int {
        partitionPoint(count: keys.count) { keys[$0] < key }
    }
}
