import Synchronization
import Tracing

// Observation: pick counting and explanations (on a path of their own, taken only while an observer
// is attached), and the state a ``BalancerObserver`` reads.
extension BalancerCore {
    // MARK: The observed pick path

    /// A pick while an observer is attached: the strategy's choice, counted in the shard's own
    /// counters (explained when this pick is sampled). Kept out of the plain path (never inlined
    /// there), but inlinable, so that a caller's concrete balancer specialises it: unspecialised,
    /// generic code would cost the counted pick several times the pick.
    @inlinable @inline(never)
    func observedChoice(
        _ state: inout ShardState,
        _ snapshot: Snapshot,
        keyed: (hash: UInt64, lookup: (Strategy.Table, UInt64) -> Int?)?
    ) -> Int? {
        if state.explainEvery > 0 {
            state.explainCountdown &-= 1
            if state.explainCountdown <= 0 {
                state.explainCountdown = state.explainEvery
                return explainedChoice(&state, snapshot, keyed: keyed)
            }
        }
        guard let index = plainChoice(snapshot, &state.pick, keyed: keyed) else { return nil }
        countPick(&state, slot: snapshot.set.slots[index])
        return index
    }

    /// A sampled pick: chosen as ``observedChoice(_:_:keyed:)`` chooses (the same draws), counted,
    /// and explained.
    @usableFromInline
    func explainedChoice(
        _ state: inout ShardState,
        _ snapshot: Snapshot,
        keyed: (hash: UInt64, lookup: (Strategy.Table, UInt64) -> Int?)?
    ) -> Int? {
        var explanation = PickExplanation(balancer: balancerName, instanceID: "")
        var index: Int
        if let keyed {
            guard let found = keyed.lookup(snapshot.table, keyed.hash) else { return nil }
            index = found
            strategy.explainKey(snapshot.table, hash: keyed.hash, snapshot.set.view, &explanation)
            if snapshot.ramps != nil { index = keyedRampedChoice(index, hash: keyed.hash, in: snapshot, keyed.lookup) }
        } else {
            guard let chosen = explainedChoose(snapshot, &state.pick, &explanation) else { return nil }
            index = chosen
            if snapshot.ramps != nil { index = rampedChoice(index, in: snapshot, &state.pick) }
            if index != chosen { explanation.slowStartMovedOn = true }
        }
        countPick(&state, slot: snapshot.set.slots[index])
        explanation.instanceID = snapshot.set.instances[index].id
        if let ring = explanation.ring, ring.ownerID != explanation.instanceID { explanation.ring!.movedOn = true }
        record(explanation)
        return index
    }

    /// Counts a pick of `slot` in the shard's counters (the shard is locked: plain adds).
    @inlinable @inline(__always)
    func countPick(_ state: inout ShardState, slot: UInt32) {
        let slot = Int(slot)
        if _slowPath(slot >= state.picksBySlot.count) { growCounters(&state.picksBySlot, to: slot + 1) }
        state.picksBySlot[slot] &+= 1
    }

    /// Grows a shard's counters to hold `count` slots (at least 16 words, so that two shards'
    /// counters rarely share a cache line).
    @usableFromInline
    func growCounters(_ counters: inout [UInt64], to count: Int) {
        counters.append(contentsOf: repeatElement(0, count: max(16, count) - counters.count))
    }

    /// ``choose(_:_:)``, explained: the zone drawn (with zone-aware routing) and the strategy's reason.
    func explainedChoose(_ snapshot: Snapshot, _ state: inout PickState, _ explanation: inout PickExplanation) -> Int? {
        let view = snapshot.set.view
        guard let zones = snapshot.zones else { return strategy.explainedChoice(snapshot.table, &state, view, &explanation) }
        if zones.tables.count == 1 {
            explanation.zone = PickExplanation.ZoneChoice(name: zones.names[0], share: zones.shares[0])
            return strategy.explainedChoice(zones.tables[0], &state, view, &explanation)
        }
        guard let zone = zones.choice.pick(state.next()) else { return nil }
        explanation.zone = PickExplanation.ZoneChoice(name: zones.names[zone], share: zones.shares[zone])
        return strategy.explainedChoice(zones.tables[zone], &state, view, &explanation)
    }

    /// Keeps `explanation` for observers and, when the cache has a tracer, emits it as the event
    /// `loadbalancer.pick` of a span `loadbalancer.pick`, a child of the caller's current span.
    func record(_ explanation: PickExplanation) {
        explanations.withLock { kept in
            kept.append(explanation)
            if kept.count > 2 * Self.explanationLimit { kept.removeFirst(kept.count - Self.explanationLimit) }
        }
        if let tracer = instruments?.tracer { Self.emit(explanation, tracer, service: instruments?.service ?? "") }
    }

    static func emit<T: Tracer>(_ explanation: PickExplanation, _ tracer: T, service: String) {
        let span = tracer.startSpan("loadbalancer.pick", ofKind: .internal)
        var attributes = SpanAttributes()
        attributes["loadbalancer.service"] = service
        attributes["loadbalancer.balancer"] = explanation.balancer
        attributes["loadbalancer.instance"] = explanation.instanceID
        if !explanation.candidates.isEmpty {
            attributes["loadbalancer.candidates"] = explanation.candidates.map(\.instanceID)
            attributes["loadbalancer.candidate_costs"] = explanation.candidates.map(\.cost)
        }
        if let level = explanation.level {
            attributes["loadbalancer.priority"] = level.priority
            attributes["loadbalancer.priority_share"] = level.share
            attributes["loadbalancer.priority_panic"] = level.panic
        }
        if let zone = explanation.zone {
            attributes["loadbalancer.zone"] = zone.name
            attributes["loadbalancer.zone_share"] = zone.share
        }
        if let ring = explanation.ring {
            attributes["loadbalancer.hash"] = String(ring.hash, radix: 16)
            attributes["loadbalancer.ring_entry"] = ring.entry
            attributes["loadbalancer.ring_size"] = ring.tableSize
        }
        attributes["loadbalancer.reason"] = explanation.description
        span.attributes["loadbalancer.instance"] = explanation.instanceID
        span.addEvent(SpanEvent(name: "loadbalancer.pick", attributes: attributes))
        span.end()
    }

    // MARK: Observers

    /// Attaches an observer: picks are counted from now on, and one in `explainEvery` explained
    /// (0: none) while it wants that.
    package func attachObserver(_ id: ObjectIdentifier, explainEvery: Int) {
        let every = observers.withLock { observers -> Int in
            observers[id] = max(0, explainEvery)
            return observers.values.filter { $0 > 0 }.min() ?? 0
        }
        setObserving(true, explainEvery: every)
    }

    /// Detaches an observer: counting stops with the last one.
    package func detachObserver(_ id: ObjectIdentifier) {
        let (any, every) = observers.withLock { observers -> (Bool, Int) in
            observers[id] = nil
            return (!observers.isEmpty, observers.values.filter { $0 > 0 }.min() ?? 0)
        }
        setObserving(any, explainEvery: every)
    }

    private func setObserving(_ observing: Bool, explainEvery: Int) {
        for shard in shards {
            shard.withState { state in
                state.observing = observing
                if state.explainEvery != explainEvery {
                    state.explainEvery = explainEvery
                    state.explainCountdown = explainEvery
                }
            }
        }
    }

    /// The explanations recorded since the last call (oldest first), taken away.
    package func takeExplanations() -> [PickExplanation] {
        explanations.withLock { kept in
            defer { kept = [] }
            return kept.count > Self.explanationLimit ? Array(kept.suffix(Self.explanationLimit)) : kept
        }
    }

    /// Picks counted so far, by slot: every shard's counters summed (each shard locked in turn).
    package func pickTotals() -> [UInt64] {
        var totals: [UInt64] = []
        for shard in shards {
            shard.withState { state in
                if totals.count < state.picksBySlot.count {
                    totals.append(contentsOf: repeatElement(0, count: state.picksBySlot.count - totals.count))
                }
                for (slot, count) in state.picksBySlot.enumerated() { totals[slot] &+= count }
            }
        }
        return totals
    }

    // MARK: The state

    /// The state of the current snapshot's instances; `picks` by slot (the picks of the interval)
    /// and `interval` come from the observer.
    package func state(picks: [UInt64], interval: Duration) -> BalancerState {
        let snapshot = currentSnapshot()
        let view = snapshot.set.view
        let total = picks.reduce(0, &+)
        let detector = ejection?.slotStates(view.slots)
        let levels = strategy.levels(snapshot.table)
        var usable = Set(ejection?.usablePositions(in: view) ?? Array(view.instances.indices))
        if !levels.isEmpty {
            // Priority levels apply their own panic rule: an instance takes calls when its level
            // does and it is healthy, or its level is in panic.
            let open = Dictionary(levels.map { ($0.priority, $0) }, uniquingKeysWith: { first, _ in first })
            usable = Set(
                view.instances.indices.filter { position in
                    guard let level = open[view.instances[position].priority], level.share > 0 else { return false }
                    let state = detector?.states[position]
                    return level.panic || (state?.ejection == nil && state?.failingCheck != true)
                })
        }
        let now = slowStart != nil ? slowStartNow() : .zero
        var instances: [InstanceState] = []
        instances.reserveCapacity(view.count)
        var healthy = 0
        for (position, instance) in view.instances.enumerated() {
            let slot = Int(view.slots[position])
            let count = slot < picks.count ? picks[slot] : 0
            let detected = detector?.states[position]
            var state = InstanceState(
                instance: instance,
                picks: count,
                share: total == 0 ? 0 : Double(count) / Double(total),
                usable: usable.contains(position),
                inFlight: nil,
                latencyEstimate: nil,
                successRate: nil,
                ejection: nil,
                probation: detected?.probation ?? false,
                health: detector?.healthChecked == true ? (detected?.failingCheck == true ? .failing : .passing) : .notChecked,
                slowStartFactor: 1
            )
            if let ejected = detected?.ejection, let time = detector?.now {
                state.ejection = InstanceState.Ejection(
                    reason: ejected.reason, until: ejected.until, remaining: max(.zero, ejected.until - time), count: ejected.count)
            }
            if detected?.ejection == nil, detected?.failingCheck != true { healthy += 1 }
            strategy.describe(snapshot.table, at: position, &state)
            if state.successRate == nil, let detected, detected.requests > 0 {
                state.successRate = 1 - Double(detected.failures) / Double(detected.requests)
            }
            if let slowStart, let ramps = snapshot.ramps, let start = ramps[position] {
                state.slowStartFactor = slowStart.share(after: now - start)
            }
            instances.append(state)
        }
        var zoneShares: [String: Double] = [:]
        if let zones = snapshot.zones {
            for (name, share) in zip(zones.names, zones.shares) { zoneShares[name] = share }
        }
        // The detector's panic (every instance usable though some are not healthy); priority
        // levels report theirs per level.
        let panic = levels.isEmpty && ejection != nil && view.count > 0 && healthy < view.count && usable.count == view.count
        return BalancerState(
            balancer: balancerName,
            generation: view.generation,
            interval: interval,
            instances: instances,
            panic: panic,
            levels: levels,
            zoneShares: zoneShares,
            healthChecked: detector?.healthChecked ?? false
        )
    }
}
