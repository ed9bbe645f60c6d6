import Synchronization

/// An alias table (Vose's method) for weighted random choice in O(1).
@usableFromInline
package struct AliasTable: Sendable {
    /// Per column: the column's own position, its alias, and the 64-bit threshold below which the
    /// column's own position wins.
    @usableFromInline package var own: [Int32] = []
    @usableFromInline package var alias: [Int32] = []
    @usableFromInline package var threshold: [UInt64] = []

    @usableFromInline init() {}

    @inlinable package var isEmpty: Bool { own.isEmpty }

    /// Picks with 64 random bits: the high half of `random × columns` is the column, the low half a
    /// fresh uniform number for the column's coin.
    @inlinable @inline(__always)
    package func pick(_ random: UInt64) -> Int? {
        guard !own.isEmpty else { return nil }
        let (column, coin) = random.multipliedFullWidth(by: UInt64(own.count))
        let c = Int(truncatingIfNeeded: column)
        return Int(coin < threshold[c] ? own[c] : alias[c])
    }
}

/// Builders of the tables balancers pick from.
enum TableBuilders {
    /// The weights to use for `positions`: an instance's ``Instance/weight``, except that weight-0
    /// instances get traffic only when every candidate has weight 0 (then all count equally), as in
    /// DNS SRV.
    static func effectiveWeights(_ view: EndpointSetView, _ positions: [Int]) -> [UInt64] {
        let weights = positions.map { UInt64(max(0, view.instances[$0].weight)) }
        if weights.allSatisfy({ $0 == 0 }) { return weights.map { _ in 1 } }
        return weights
    }

    /// An alias table over `positions`, in proportion to their weights.
    static func aliasTable(_ view: EndpointSetView, _ positions: [Int]) -> AliasTable {
        aliasTable(values: positions, weights: effectiveWeights(view, positions))
    }

    /// An alias table that picks each of `values` in proportion to its weight (weight-0 values never).
    static func aliasTable(values: [Int], weights: [UInt64]) -> AliasTable {
        // Drop zero-weight candidates (never chosen while others have weight).
        let candidates = zip(values, weights).filter { $0.1 > 0 }
        let n = candidates.count
        guard n > 0 else { return AliasTable() }
        let total = candidates.reduce(0.0) { $0 + Double($1.1) }
        var scaled = candidates.map { Double($0.1) * Double(n) / total }
        var alias = [Int](repeating: 0, count: n)
        var probability = [Double](repeating: 1, count: n)
        var small: [Int] = []
        var large: [Int] = []
        for i in 0..<n {
            if scaled[i] < 1 { small.append(i) } else { large.append(i) }
        }
        while let s = small.popLast(), let l = large.popLast() {
            probability[s] = scaled[s]
            alias[s] = l
            scaled[l] = scaled[l] + scaled[s] - 1
            if scaled[l] < 1 { small.append(l) } else { large.append(l) }
        }
        // What remains has probability 1 (up to rounding).
        for i in large + small {
            probability[i] = 1
            alias[i] = i
        }
        var table = AliasTable()
        table.own.reserveCapacity(n)
        table.alias.reserveCapacity(n)
        table.threshold.reserveCapacity(n)
        for i in 0..<n {
            table.own.append(Int32(candidates[i].0))
            table.alias.append(Int32(candidates[alias[i]].0))
            table.threshold.append(probability[i] >= 1 ? .max : UInt64(probability[i] * 18_446_744_073_709_551_615.0))
        }
        return table
    }

    /// A smooth weighted round-robin schedule: each instance appears `weight` times (after dividing
    /// the weights by their greatest common divisor), spread evenly through the cycle rather than in
    /// bursts: occurrence k of an instance of weight w sits at (k + φ) / w of the cycle, where φ is
    /// the instance's own phase in [0, 1).
    ///
    /// Cycles longer than `maxLength` are scaled down proportionally (each weight at least 1).
    static func smoothSchedule(_ view: EndpointSetView, _ positions: [Int], maxLength: Int = 65_536) -> [Int] {
        var weights = effectiveWeights(view, positions)
        let divisor = weights.filter { $0 > 0 }.reduce(0) { gcd($0, $1) }
        if divisor > 1 { weights = weights.map { $0 / divisor } }
        var total = weights.reduce(0, +)
        if total > UInt64(maxLength) {
            let scale = Double(maxLength) / Double(total)
            weights = weights.map { $0 == 0 ? 0 : max(1, UInt64((Double($0) * scale).rounded())) }
            total = weights.reduce(0, +)
        }
        var slots: [(time: Double, order: Int, position: Int)] = []
        slots.reserveCapacity(Int(total))
        for (order, (position, weight)) in zip(positions, weights).enumerated() where weight > 0 {
            // Each instance's occurrences are offset by its own phase (golden-ratio spaced), so
            // instances of equal weight do not all land on the same instants.
            // The fractional part, as `truncatingRemainder(dividingBy: 1)` gives it (exactly: the
            // difference of a positive number and its integer part is representable), without fmod.
            let spaced = Double(order + 1) * 0.618_033_988_749_895
            let phase = spaced - spaced.rounded(.towardZero)
            for k in 0..<Int(weight) {
                slots.append(((Double(k) + phase) / Double(weight), order, position))
            }
        }
        // In order of time (ties by order): a counting sort into as many buckets as slots (the
        // times lie in [0, 1)), then each bucket, a few slots at most, sorted by insertion. The
        // same order as a comparison sort, in linear time for the 65,536 slots of a large set.
        let count = slots.count
        guard count > 1 else { return slots.map(\.position) }
        let scale = Double(count)
        @inline(__always) func bucket(_ time: Double) -> Int { min(count - 1, max(0, Int(time * scale))) }
        var starts = [Int](repeating: 0, count: count + 1)
        for slot in slots { starts[bucket(slot.time) + 1] += 1 }
        for index in 0..<count { starts[index + 1] += starts[index] }
        var fill = starts
        var sorted = slots
        for slot in slots {
            let b = bucket(slot.time)
            sorted[fill[b]] = slot
            fill[b] += 1
        }
        func before(_ a: (time: Double, order: Int, position: Int), _ b: (time: Double, order: Int, position: Int)) -> Bool {
            a.time != b.time ? a.time < b.time : a.order < b.order
        }
        for b in 0..<count where starts[b + 1] - starts[b] > 1 {
            var i = starts[b] + 1
            while i < starts[b + 1] {
                let slot = sorted[i]
                var j = i
                while j > starts[b], before(slot, sorted[j - 1]) {
                    sorted[j] = sorted[j - 1]
                    j -= 1
                }
                sorted[j] = slot
                i += 1
            }
        }
        return sorted.map(\.position)
    }

    static func gcd(_ a: UInt64, _ b: UInt64) -> UInt64 {
        var (a, b) = (a, b)
        while b != 0 { (a, b) = (b, a % b) }
        return a
    }

}

/// e^(−x) for x ≥ 0, without Foundation: e^(−x) = 2^(−n) · e^(−r) with n = ⌊x / ln 2⌋ and
/// r = x − n·ln 2 in [0, ln 2), e^(−r) by an 8-term Taylor polynomial. Relative error below 3e-6;
/// 0 beyond x = 700.
@inlinable @inline(__always)
func expNegative(_ x: Double) -> Double {
    if !(x > 0) { return 1 }
    if x > 700 { return 0 }
    let ln2 = 0.693_147_180_559_945_3
    let n = (x / ln2).rounded(.down)
    let r = x - n * ln2
    // Horner form of 1 − r + r²/2 − r³/6 + … − r⁷/5040.
    var p = -1.0 / 5040
    p = p * r + 1.0 / 720
    p = p * r - 1.0 / 120
    p = p * r + 1.0 / 24
    p = p * r - 1.0 / 6
    p = p * r + 0.5
    p = p * r - 1
    p = p * r + 1
    return p * Double(sign: .plus, exponent: -Int(n), significand: 1)
}
