/// A Maglev table kept with what made it, so that the table of the set with one instance more or
/// less is found by simulating only the claims that differ, not by filling again.
///
/// The fill is a sequence of slots, `round × n + position`: in each round every instance, in
/// order, claims the first free entry of its walk from its cursor when its weight lets it claim in
/// that round (``ConsistentHashBalancer/maglevTable(_:_:size:walks:directBelow:)``'s rule: its
/// claims stay within `round × weight / largest weight`), until every entry is taken (so the fill
/// has exactly `size` slots). Which rounds an instance claims in depends only on its weight and the
/// largest weight, not on the table. For the set after one change a claim can differ from the last
/// fill's only when (a) its instance's cursor differs (one of its claims differed before), (b) the
/// entry it claimed last time was taken earlier this time, or (c) an entry its last walk passed
/// over is free this time. Those slots are simulated in time order (a min-heap): (b) is queued when
/// an entry is taken earlier, (c) through the probe index, entry -> the instances whose walks pass
/// it, queued from the time the entry was freed; the fill's last `window` slots, whose walks the
/// index leaves out, are simulated on every change. A displaced instance is simulated at each of
/// its slots until its claim is the last fill's again. The result is exactly the full fill's (the
/// tests compare the table and the whole state with a full fill after each change of random
/// sequences); when more than `budget` slots would be simulated (small sets, where a change moves
/// much of the table), the largest weight changes (every instance's rounds change), or the result
/// fails its check, the table is filled again.
///
/// Instances are kept by handle (an index that stays while the instance is in the set), so that a
/// change touches only the state of the instances whose claims changed: at n = 10,000 and 65,537
/// entries, tens to hundreds of slots and a few thousand walk steps per change (BENCHMARKS.md).
///
/// Not thread-safe: the owner (``ConsistentHashBalancer``'s strategy) serializes changes.
package final class MaglevIncremental {
    /// Whether a balancer keeps the table of `count` instances over `size` entries incrementally:
    /// at least 1,000 instances and at most 16 whole entries per instance (3,856 or more at the
    /// default 65,537). A change's cascade grows with the claims per instance: at 65,537 entries
    /// a change simulated this way costs about 5 ms at n = 1,000, 2 ms at 3,000, 1.3 ms at 4,000
    /// and 0.5 ms at 10,000, against a full fill's 2-2.5 ms at any n.
    package static func isWorthKeeping(count: Int, size: Int) -> Bool {
        count >= 1_000 && size / count <= 16
    }

    /// The slots simulated at most for one change before filling again.
    package static let defaultBudget = 8_192
    /// The last `window` slots of the fill are simulated on every change, claiming directly from
    /// the entries free or claimed that late rather than by walking (few are left; walking to them
    /// is the fill's cost), and their walks are left out of the probe index: about half of a full
    /// index's pairs come from the last few hundred claims, whose long walks change with every
    /// change.
    private static let window = 128

    /// The table's size (a prime).
    package let size: Int
    /// The largest weight, which every instance's share of the rounds is relative to.
    private var largest: UInt64 = 1

    // Per handle.
    private var walks: [MaglevWalk] = []
    private var inverses: [UInt64] = []
    private var weights: [UInt64] = []
    /// The index of the instance's weight's schedule in `schedules`.
    private var scheduleOf: [Int32] = []
    /// The walk index `k` of the instance's claims, in order.
    private var claims: [[Int32]] = []
    /// Handles not in use.
    private var spare: [Int32] = []

    /// The rounds an instance of each weight claims in (for the current largest weight).
    private var schedules: [Schedule] = []
    private var scheduleByWeight: [UInt64: Int32] = [:]

    /// The fill order: position -> handle, and handle -> position (-1 when not in use).
    private var order: [Int32] = []
    private var positions: [Int32] = []
    /// The fill's last slot: its round and its instance's handle.
    private var end: (round: Int, handle: Int32) = (0, 0)

    // Per entry.
    /// The handle of the instance that owns the entry.
    private var owners: [Int32] = []
    /// The round the entry was claimed in; -1 while free during a change.
    private var rounds: [Int32] = []
    /// The handles of the instances whose walks (`k` below their `indexed` length) pass the entry.
    private var probes: [[Int32]] = []
    /// Per handle: how much of its walk the probe index holds, up to its last claim before the
    /// fill's last `window` slots.
    private var indexed: [Int32] = []
    /// ⌊(2⁶⁴ − 1) / size⌋, for products mod the size without a division.
    private var reciprocal: UInt64 = 0

    /// How the last change was made, for tests and benchmarks.
    package private(set) var lastChange = ChangeReport()

    package struct ChangeReport: Sendable, Equatable {
        /// Whether the table was simulated (`false`: filled again).
        package var incremental = false
        /// Slots simulated.
        package var slots = 0

        package init(incremental: Bool = false, slots: Int = 0) {
            self.incremental = incremental
            self.slots = slots
        }
    }

    /// The rounds in which an instance of one weight claims: `Double(claims + 1) <= Double(round)
    /// × share` (rounds from 1 there, from 0 here), the full fill's rule to the bit.
    ///
    /// The claims made in rounds 1...R by that rule are `F(R) = ⌊Double(R) × share⌋` as long as F
    /// never rises by two from one round to the next (the rule claims at most once a round). For
    /// a share at most 1 − 2⁻²⁰ and R below 2³¹ it cannot: the products' rounding errors add up to
    /// less than R × 2⁻⁵² ≤ 2⁻²¹, so F(R) − F(R − 1) ≤ ⌈share + 2⁻²¹⌉ = 1. Such schedules are
    /// computed, whatever the weights' ratio (a weight a million times below the largest claims a
    /// million rounds apart: nothing is kept per round). Shares above that (the largest weight and
    /// those within a millionth of it, which claim in nearly every round) are kept per round as the
    /// rule makes them, which stays as short as the fill.
    private struct Schedule {
        let share: Double
        let isComputed: Bool
        /// Per claim, its round (kept schedules).
        var roundOfClaim: [Int32] = []
        /// Per round, the claim made in it, or -1 (kept schedules).
        var claimInRound: [Int32] = []

        /// Rounds from here on are past any fill (a fill has at most `size` < 2³¹ rounds: the
        /// largest weight claims in every round).
        static let never = Int(Int32.max)

        init(share: Double) {
            self.share = share
            self.isComputed = share <= 1 - 0x1p-20
        }

        /// F(R): the claims made in rounds 1...R (computed schedules).
        @inline(__always)
        private func claims(through round: Int) -> Int { Int((Double(round) * share).rounded(.down)) }

        /// The claim made in `round` (from 0), or -1.
        @inline(__always)
        mutating func claim(inRound round: Int) -> Int {
            if isComputed {
                let before = claims(through: round)
                return claims(through: round + 1) > before ? before : -1
            }
            if claimInRound.count <= round { extend(toRound: round) }
            return Int(claimInRound[round])
        }

        /// The round (from 0) of claim `claim`, or `never` when it is past any fill.
        mutating func round(ofClaim claim: Int) -> Int {
            if isComputed {
                // The least R with F(R) ≥ claim + 1, from an estimate and the rule itself.
                let estimate = (Double(claim + 1) / share).rounded(.up)
                guard estimate < Double(Self.never) else { return Self.never }
                var r = Int(estimate)
                while r > 1, claims(through: r - 1) > claim { r -= 1 }
                while claims(through: r) <= claim { r += 1 }
                return min(r - 1, Self.never)
            }
            while roundOfClaim.count <= claim { extend(toRound: claimInRound.count) }
            return Int(roundOfClaim[claim])
        }

        private mutating func extend(toRound round: Int) {
            while claimInRound.count <= round {
                let r = claimInRound.count
                if Double(roundOfClaim.count + 1) <= Double(r + 1) * share {
                    claimInRound.append(Int32(roundOfClaim.count))
                    roundOfClaim.append(Int32(r))
                } else {
                    claimInRound.append(-1)
                }
            }
        }
    }

    /// The full fill of `walks` (in fill order, with `weights`, each above 0) over a table of
    /// `size` entries (a prime).
    package init(walks: [MaglevWalk], weights: [UInt64], size: Int) {
        precondition(size >= 2 && size < 1 << 31 && !walks.isEmpty && walks.count == weights.count && !weights.contains(0))
        self.size = size
        self.reciprocal = UInt64.max / UInt64(size)
        fillAgain(walks, weights)
    }

    /// Fills the table again for `walks` (in fill order, with `weights`, each above 0), reusing
    /// the kept state's storage; handles are renumbered.
    package func refill(walks: [MaglevWalk], weights: [UInt64]) {
        precondition(!walks.isEmpty && walks.count == weights.count && !weights.contains(0))
        fillAgain(walks, weights)
        lastChange = ChangeReport()
    }

    /// The full fill of `walks` with equal weights.
    package convenience init(walks: [MaglevWalk], size: Int) {
        self.init(walks: walks, weights: walks.map { _ in 1 }, size: size)
    }

    /// The number of instances.
    package var count: Int { order.count }

    /// The table: per entry, the fill position of its owner.
    package var table: [Int32] { owners.map { positions[Int($0)] } }

    /// The table with each fill position mapped through `usable` (the caller's index of the
    /// instance at that position).
    package func table(through usable: [Int]) -> [Int32] {
        precondition(usable.count == order.count)
        var byHandle = [Int32](repeating: -1, count: walks.count)
        for (position, handle) in order.enumerated() { byHandle[Int(handle)] = Int32(truncatingIfNeeded: usable[position]) }
        return byHandle.withUnsafeBufferPointer { byHandle in owners.map { byHandle[Int($0)] } }
    }

    /// The claim `handle` makes in `round`, or -1.
    @inline(__always)
    private func claim(of handle: Int, inRound round: Int) -> Int {
        schedules[Int(scheduleOf[handle])].claim(inRound: round)
    }

    /// The round of `handle`'s claim `claim` (`Schedule.never` when past any fill).
    @inline(__always)
    private func round(of handle: Int, claim: Int) -> Int {
        schedules[Int(scheduleOf[handle])].round(ofClaim: claim)
    }

    private func schedule(for weight: UInt64) -> Int32 {
        if let index = scheduleByWeight[weight] { return index }
        let index = Int32(schedules.count)
        schedules.append(Schedule(share: Double(weight) / Double(largest)))
        scheduleByWeight[weight] = index
        return index
    }

    /// Fills the table from scratch for `walks` with `weights` (in fill order); handles are
    /// renumbered.
    private func fillAgain(_ walks: [MaglevWalk], _ weights: [UInt64]) {
        let n = walks.count
        let m = UInt64(size)
        self.walks = walks
        self.weights = weights
        self.inverses = walks.map { MaglevFill.inverse($0.skip, modulo: m) }
        self.largest = weights.max() ?? 1
        self.schedules = []
        self.scheduleByWeight = [:]
        self.scheduleOf = weights.map { schedule(for: $0) }
        var owners = [Int32](repeating: -1, count: size)
        var rounds = [Int32](repeating: -1, count: size)
        // The per-instance and per-entry lists reuse the last fill's storage (a fill again after
        // a fallback, or a balancer's set that changed by more than one instance): allocating and
        // freeing some 75,000 small arrays cost ten times the fill itself at n = 10,000.
        var claims = self.claims
        self.claims = []
        claims.removeLast(max(0, claims.count - n))
        for i in claims.indices { claims[i].removeAll(keepingCapacity: true) }
        claims.append(contentsOf: repeatElement([], count: n - claims.count))
        var cursors = walks.map(\.start)
        var ks = [Int32](repeating: 0, count: n)
        // The walks up to each instance's last claim before the fill's last `window` slots.
        var indexed = [Int32](repeating: 0, count: n)
        var filled = 0
        var round = 0
        var end = (round: 0, handle: Int32(0))
        outer: while true {
            for i in 0..<n where claim(of: i, inRound: round) >= 0 {
                var entry = cursors[i]
                var k = ks[i]
                let skip = walks[i].skip
                while owners[Int(entry)] >= 0 {
                    entry = MaglevFill.step(entry, skip: skip, size: m)
                    k += 1
                }
                owners[Int(entry)] = Int32(i)
                rounds[Int(entry)] = Int32(round)
                claims[i].append(k)
                cursors[i] = MaglevFill.step(entry, skip: skip, size: m)
                ks[i] = k + 1
                if filled < size - Self.window { indexed[i] = k + 1 }
                filled += 1
                if filled == size {
                    end = (round, Int32(i))
                    break outer
                }
            }
            round += 1
        }
        // The probe index, by a counting sort of the (entry, instance) pairs (instances ascending
        // in each entry's list): each entry's list is written with one append, not one per pair
        // (each append checks the outer and the inner array's uniqueness).
        var starts = [Int32](repeating: 0, count: size + 1)
        for i in 0..<n where indexed[i] > 0 {
            var entry = walks[i].start
            for _ in 0..<Int(indexed[i]) {
                starts[Int(entry) + 1] += 1
                entry = MaglevFill.step(entry, skip: walks[i].skip, size: m)
            }
        }
        for e in 0..<size { starts[e + 1] += starts[e] }
        var pairs = [Int32](repeating: 0, count: Int(starts[size]))
        var next = starts
        for i in 0..<n where indexed[i] > 0 {
            var entry = walks[i].start
            for _ in 0..<Int(indexed[i]) {
                pairs[Int(next[Int(entry)])] = Int32(i)
                next[Int(entry)] += 1
                entry = MaglevFill.step(entry, skip: walks[i].skip, size: m)
            }
        }
        var probes = self.probes
        self.probes = []
        if probes.count != size { probes = [[Int32]](repeating: [], count: size) }
        probes.withUnsafeMutableBufferPointer { probes in
            for e in 0..<size {
                probes[e].removeAll(keepingCapacity: true)
                probes[e].append(contentsOf: pairs[Int(starts[e])..<Int(starts[e + 1])])
            }
        }
        self.claims = claims
        self.spare = []
        self.order = (0..<n).map { Int32($0) }
        self.positions = order
        self.end = end
        self.owners = owners
        self.rounds = rounds
        self.probes = probes
        self.indexed = indexed
    }

    /// `a × b mod size`, for `a` and `b` below the size (below 2³¹), without a division: the
    /// quotient from the reciprocal is at most one short.
    @inline(__always)
    private func multiply(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let m = UInt64(size)
        let product = a &* b
        let remainder = product &- product.multipliedFullWidth(by: reciprocal).high &* m
        return remainder >= m ? remainder &- m : remainder
    }

    /// Entry `k` of `walk`.
    @inline(__always)
    private func entry(_ k: Int, of walk: MaglevWalk) -> Int {
        let sum = walk.start &+ multiply(UInt64(k), walk.skip)
        return Int(truncatingIfNeeded: sum >= UInt64(size) ? sum &- UInt64(size) : sum)
    }

    /// How many steps the walk of `handle` takes to reach `entry`.
    @inline(__always)
    private func steps(to entry: Int, of handle: Int) -> Int {
        let start = walks[handle].start
        let e = UInt64(entry)
        let distance = e >= start ? e &- start : e &+ UInt64(size) &- start
        return Int(truncatingIfNeeded: multiply(distance, inverses[handle]))
    }

    /// Moves the probe index's part of `handle`'s walk from its `indexed` length to `length`.
    private func reindex(_ handle: Int32, to length: Int) {
        let h = Int(handle)
        let from = Int(indexed[h])
        guard from != length else { return }
        let walk = walks[h]
        let m = UInt64(size)
        var e = entry(min(from, length), of: walk)
        // The index in a local while it changes (no exclusivity check per step), put back after.
        var probes = self.probes
        self.probes = []
        for _ in min(from, length)..<max(from, length) {
            if length > from {
                probes[e].append(handle)
            } else if let at = probes[e].firstIndex(of: handle) {
                probes[e].swapAt(at, probes[e].count - 1)
                probes[e].removeLast()
            }
            e = Int(truncatingIfNeeded: MaglevFill.step(UInt64(e), skip: walk.skip, size: m))
        }
        self.probes = probes
        indexed[h] = Int32(length)
    }

    /// Removes the instance at fill position `position`. Returns `false` when the table was filled
    /// again instead.
    @discardableResult
    package func remove(at position: Int, budget: Int = defaultBudget) -> Bool {
        precondition(order.count > 1 && order.indices.contains(position))
        let handle = Int(order[position])
        if weights[handle] == largest, !order.contains(where: { Int($0) != handle && weights[Int($0)] == largest }) {
            return fallBack(removing: position, slots: 0)
        }
        return change(at: position, added: nil, budget: budget)
    }

    /// Inserts `walk` (with `weight`, above 0) at fill position `position`. Returns `false` when
    /// the table was filled again instead.
    @discardableResult
    package func insert(_ walk: MaglevWalk, weight: UInt64 = 1, at position: Int, budget: Int = defaultBudget) -> Bool {
        precondition((0...order.count).contains(position) && weight > 0)
        if weight > largest {
            insertInOrder(newHandle(walk, weight: weight), at: position)
            return fallBack(removing: nil, slots: 0)
        }
        return change(at: position, added: (walk, weight), budget: budget)
    }

    /// Inserts `handle` at fill position `position` of `order` and renumbers the positions after it.
    private func insertInOrder(_ handle: Int32, at position: Int) {
        order.insert(handle, at: position)
        for p in position..<order.count { positions[Int(order[p])] = Int32(p) }
    }

    private func removeFromOrder(at position: Int) {
        let handle = order.remove(at: position)
        positions[Int(handle)] = -1
        for p in position..<order.count { positions[Int(order[p])] = Int32(p) }
    }

    /// A handle for a new instance.
    private func newHandle(_ walk: MaglevWalk, weight: UInt64) -> Int32 {
        let inverse = MaglevFill.inverse(walk.skip, modulo: UInt64(size))
        let schedule = schedule(for: weight)
        if let handle = spare.popLast() {
            walks[Int(handle)] = walk
            inverses[Int(handle)] = inverse
            weights[Int(handle)] = weight
            scheduleOf[Int(handle)] = schedule
            claims[Int(handle)] = []
            indexed[Int(handle)] = 0
            return handle
        }
        walks.append(walk)
        inverses.append(inverse)
        weights.append(weight)
        scheduleOf.append(schedule)
        claims.append([])
        indexed.append(0)
        positions.append(-1)
        return Int32(walks.count - 1)
    }

    /// The state is changed in place while the slots are simulated; a change that falls back
    /// fills everything again, so nothing needs undoing.
    private func change(at y: Int, added: (walk: MaglevWalk, weight: UInt64)?, budget: Int) -> Bool {
        let isAddition = added != nil
        let m = UInt64(size)
        let changed: Int32
        if let added {
            changed = newHandle(added.walk, weight: added.weight)
            insertInOrder(changed, at: y)
        } else {
            changed = order[y]
        }
        // `order` and `positions` are now the union's: every instance of the old or the new set.
        let nU = order.count
        let infinity = Int.max
        let window = min(Self.window, size)
        // The time (union slot) of an entry's claim, `infinity` while free.
        @inline(__always) func time(_ e: Int) -> Int {
            let round = rounds[e]
            return round < 0 ? infinity : Int(round) * nU + Int(positions[Int(owners[e])])
        }
        // Whether the union time `t` is a slot (its instance claims in its round); of the old
        // set; of the new set (not counting where the new fill ends).
        @inline(__always) func isSlot(_ t: Int) -> Bool { claim(of: Int(order[t % nU]), inRound: t / nU) >= 0 }
        @inline(__always) func isOld(_ t: Int) -> Bool { !isAddition || t % nU != y }
        @inline(__always) func isNew(_ t: Int) -> Bool { (isAddition || t % nU != y) && isSlot(t) }
        // The union time of `handle`'s claim `c`.
        @inline(__always) func slot(of handle: Int, claim c: Int) -> Int {
            round(of: handle, claim: c) * nU + Int(positions[handle])
        }
        @inline(__always) func entryOfSlot(_ t: Int) -> Int {
            let handle = Int(order[t % nU])
            return entry(Int(claims[handle][claim(of: handle, inRound: t / nU)]), of: walks[handle])
        }
        let endOld = end.round * nU + Int(positions[Int(end.handle)])

        // The tail: the entries of the old fill's last `window` slots, and entries freed or
        // claimed that late; slots from its start claim directly among its entries.
        var tail: [Int] = []
        var tailStart = endOld
        var t = endOld
        while tail.count < window {
            if isOld(t) && isSlot(t) {
                tail.append(entryOfSlot(t))
                tailStart = t
            }
            t -= 1
        }
        // Per handle, the displaced cursor of an instance whose claims differ (-1: none); the
        // claims that differ, in the order made (a later one for the same claim wins); the
        // handles whose claims or slots changed.
        var cursors = [Int](repeating: -1, count: walks.count)
        var newClaims: [(handle: Int32, claim: Int32, k: Int32)] = []
        var isTouched = [Bool](repeating: false, count: walks.count)
        var touched: [Int32] = []
        @inline(__always) func touch(_ handle: Int32) {
            if !isTouched[Int(handle)] {
                isTouched[Int(handle)] = true
                touched.append(handle)
            }
        }
        var heap = SlotHeap()
        var freeCount = 0
        var stale = 0
        var dropped: [(handle: Int32, claim: Int)] = []
        // The new fill's last slot.
        var endNew = endOld

        func free(_ e: Int, at t: Int) {
            rounds[e] = -1
            freeCount += 1
            tail.append(e)
            for j in probes[e] {
                if !isAddition && j == changed { continue }
                let k = steps(to: e, of: Int(j))
                let ks = claims[Int(j)]
                var lo = 0
                var hi = ks.count - 1
                while lo < hi {
                    let mid = (lo + hi) / 2
                    if Int(ks[mid]) < k { lo = mid + 1 } else { hi = mid }
                }
                if Int(ks[lo]) == k { continue }
                let tj = slot(of: Int(j), claim: lo)
                if tj > t { heap.push(tj) }
            }
        }

        if isAddition {
            // The new instance's slots within the old fill push as many slots out at the end:
            // the latest slots of the union, the new instance's or old ones (whose entries the new
            // fill takes earlier: checked at the end).
            var gained = 0
            while slot(of: Int(changed), claim: gained) <= endOld { gained += 1 }
            t = endOld
            var remaining = gained
            while remaining > 0 {
                if isSlot(t) {
                    if isOld(t) {
                        let handle = order[t % nU]
                        dropped.append((handle, claim(of: Int(handle), inRound: t / nU)))
                    }
                    remaining -= 1
                }
                t -= 1
            }
            while !isSlot(t) { t -= 1 }
            endNew = t
            stale = dropped.count
        } else {
            let ks = claims[Int(changed)]
            for c in ks.indices { free(entry(Int(ks[c]), of: walks[Int(changed)]), at: slot(of: Int(changed), claim: c)) }
            // As many slots of the others after the old fill's end.
            t = endOld
            var remaining = ks.count
            while remaining > 0 {
                t += 1
                if isNew(t) {
                    endNew = t
                    remaining -= 1
                }
            }
        }
        @inline(__always) func isNewSlot(_ t: Int) -> Bool { t <= endNew && isNew(t) }
        // The new fill's last `window` slots, and from the earlier of the two windows' starts
        // every slot of the new fill, are simulated.
        var newWindowStart = endNew
        var counted = 0
        t = endNew
        while counted < window {
            if isNew(t) {
                counted += 1
                newWindowStart = t
            }
            t -= 1
        }
        let windowStart = min(newWindowStart, tailStart)
        for t in windowStart...endNew where isNew(t) { heap.push(t) }
        if isAddition { heap.push(slot(of: Int(changed), claim: 0)) }

        var simulated = 0
        var last = -1
        while let t = heap.pop() {
            if t == last { continue }
            last = t
            guard isNewSlot(t) else { continue }
            simulated += 1
            if simulated > budget { return fallBack(removing: isAddition ? nil : y, slots: simulated) }
            let position = t % nU
            let handle = order[position]
            let h = Int(handle)
            let c = claim(of: h, inRound: t / nU)
            let walk = walks[h]
            let ks = claims[h]
            let cursor = cursors[h] >= 0 ? cursors[h] : (c == 0 ? 0 : Int(ks[c - 1]) + 1)
            var k = cursor
            var e = -1
            if t >= tailStart {
                // Entries taken before `t` stay taken (an entry freed later is added again):
                // the tail keeps only the others.
                var best = Int.max
                var kept = 0
                for index in tail.indices {
                    let candidate = tail[index]
                    guard time(candidate) >= t else { continue }
                    tail[kept] = candidate
                    kept += 1
                    let steps = steps(to: candidate, of: h)
                    if steps >= cursor && steps < best {
                        best = steps
                        e = candidate
                    }
                }
                tail.removeLast(tail.count - kept)
                if e >= 0 { k = best }
            }
            if e < 0 {
                e = entry(k, of: walk)
                while time(e) < t {
                    k += 1
                    e = Int(truncatingIfNeeded: MaglevFill.step(UInt64(e), skip: walk.skip, size: m))
                }
            }
            let oldK = c < ks.count ? Int(ks[c]) : -1
            if k == oldK {
                cursors[h] = -1
                continue
            }
            if oldK >= 0 {
                let oldEntry = entry(oldK, of: walk)
                if owners[oldEntry] == handle && time(oldEntry) == t { free(oldEntry, at: t) }
            }
            let displaced = time(e)
            if displaced == infinity {
                freeCount -= 1
            } else {
                if !isNewSlot(displaced) { stale -= 1 }
                heap.push(displaced)
            }
            owners[e] = handle
            rounds[e] = Int32(t / nU)
            if t >= tailStart { tail.append(e) }
            cursors[h] = k + 1
            newClaims.append((handle, Int32(c), Int32(k)))
            touch(handle)
            heap.push(slot(of: h, claim: c + 1))
        }
        // Every entry must belong to a slot of the new fill; anything else is a bug: fill again.
        guard freeCount == 0, stale == 0 else { return fallBack(removing: isAddition ? nil : y, slots: simulated) }

        // The claims.
        for (handle, c) in dropped where claims[Int(handle)].count > c {
            claims[Int(handle)].removeSubrange(c...)
        }
        for (handle, c, k) in newClaims {
            let h = Int(handle)
            let c = Int(c)
            if claims[h].count <= c { claims[h].append(contentsOf: repeatElement(-1, count: c + 1 - claims[h].count)) }
            claims[h][c] = k
        }
        for handle in touched where claims[Int(handle)].contains(-1) {
            return fallBack(removing: isAddition ? nil : y, slots: simulated)
        }
        // The probe index: for every instance whose claims changed or that has a slot in either
        // window, its walk up to its last claim before the new window.
        for (handle, _) in dropped { touch(handle) }
        for t in min(windowStart, tailStart)...max(endOld, endNew) where isSlot(t) { touch(order[t % nU]) }
        // Each walk up to its last claim before the new window.
        func reindexBeforeWindow(_ handle: Int32) {
            let h = Int(handle)
            var c = claims[h].count - 1
            while c >= 0, slot(of: h, claim: c) >= newWindowStart { c -= 1 }
            reindex(handle, to: c >= 0 ? Int(claims[h][c]) + 1 : 0)
        }
        for handle in touched where handle != changed { reindexBeforeWindow(handle) }
        if isAddition { reindexBeforeWindow(changed) }
        end = (endNew / nU, order[endNew % nU])
        if !isAddition {
            reindex(changed, to: 0)
            claims[Int(changed)] = []
            removeFromOrder(at: y)
            spare.append(changed)
        }
        lastChange = ChangeReport(incremental: true, slots: simulated)
        return true
    }

    private func fallBack(removing: Int?, slots: Int) -> Bool {
        if let removing { removeFromOrder(at: removing) }
        fillAgain(order.map { walks[Int($0)] }, order.map { weights[Int($0)] })
        lastChange = ChangeReport(incremental: false, slots: slots)
        return false
    }

    /// Whether the kept state equals a full fill's of the current walks: the table, every claim,
    /// the fill's end and the probe index (tests).
    package func stateMatchesFullFill() -> Bool {
        let fresh = MaglevIncremental(walks: order.map { walks[Int($0)] }, weights: order.map { weights[Int($0)] }, size: size)
        guard table == fresh.table, positions[Int(end.handle)] == fresh.end.handle, end.round == fresh.end.round else { return false }
        for e in 0..<size where rounds[e] != fresh.rounds[e] { return false }
        for (position, handle) in order.enumerated() where claims[Int(handle)] != fresh.claims[position] { return false }
        for (position, handle) in order.enumerated() where indexed[Int(handle)] != fresh.indexed[position] { return false }
        for e in 0..<size where probes[e].map({ positions[Int($0)] }).sorted() != fresh.probes[e].sorted() { return false }
        return true
    }
}

/// A min-heap of slot times.
private struct SlotHeap {
    private var items: [Int] = []

    mutating func push(_ value: Int) {
        items.append(value)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if items[parent] <= items[child] { break }
            items.swapAt(parent, child)
            child = parent
        }
    }

    mutating func pop() -> Int? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1
                let right = left + 1
                var smallest = parent
                if left < items.count, items[left] < items[smallest] { smallest = left }
                if right < items.count, items[right] < items[smallest] { smallest = right }
                if smallest == parent { break }
                items.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return top
    }
}
