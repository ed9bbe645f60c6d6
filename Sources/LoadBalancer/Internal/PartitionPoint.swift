/// The first index in `0..<count` for which `isBelow` is false, found by binary search: `isBelow`
/// must be true for a prefix of the indices and false for the rest (as "the element at this index
/// orders before the one sought" is in a sorted collection).
///
/// Takes indices, not elements, so that a caller reading a buffer of instances borrows each
/// element in place rather than copying it.
@inline(__always)
package func partitionPoint(count: Int, _ isBelow: (Int) -> Bool) -> Int {
    var low = 0
    var high = count
    while low < high {
        let middle = low + (high - low) / 2
        if isBelow(middle) { low = middle + 1 } else { high = middle }
    }
    return low
}
