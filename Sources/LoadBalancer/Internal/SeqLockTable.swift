import Synchronization

/// A table of words that one writer at a time rewrites and any number of readers read without
/// locks, without reference counting and without allocating: a sequence lock over grow-only storage.
///
/// Balancers keep their per-generation data here (schedules, alias tables, rings, usable positions),
/// so `pick()` reads it with plain atomic loads. A reader that overlaps a rewrite sees the sequence
/// number change and reads again. Storage only grows, and replaced buffers are kept until the table
/// is deinitialised, so a reader can never touch freed memory, even one that was preempted mid-read.
///
/// Layout: word 0 is the generation of the endpoint set the table was built for, word 1 the number
/// of payload entries, the payload starts at word 2 (``payloadOffset``).
@usableFromInline
package final class SeqLockTable: @unchecked Sendable {
    @usableFromInline
    let sequence = Atomic<UInt64>(0)
    @usableFromInline
    let buffer: Atomic<UnsafeMutablePointer<Atomic<UInt64>>?>
    /// Writers only: the capacity of the current buffer and the buffers replaced so far.
    private let writer: Mutex<(capacity: Int, retired: [(UnsafeMutablePointer<Atomic<UInt64>>, Int)])>

    @usableFromInline static let payloadOffset = 2

    package init() {
        let initial = allocateWords(8)
        self.buffer = Atomic(initial)
        self.writer = Mutex((capacity: 8, retired: []))
    }

    deinit {
        writer.withLock { state in
            if let current = buffer.load(ordering: .acquiring) {
                current.deinitialize(count: state.capacity)
                current.deallocate()
            }
            for (pointer, capacity) in state.retired {
                pointer.deinitialize(count: capacity)
                pointer.deallocate()
            }
        }
    }

    /// Replaces the table's contents. Writers are serialised; readers never block.
    package func write(generation: UInt32, payload: [UInt64]) {
        writer.withLock { state in
            let needed = payload.count + Self.payloadOffset
            let start = sequence.load(ordering: .relaxed)
            sequence.store(start &+ 1, ordering: .relaxed)  // odd: a write is in progress
            atomicMemoryFence(ordering: .releasing)
            var target = buffer.load(ordering: .relaxed)!
            if needed > state.capacity {
                let capacity = (max(needed, state.capacity * 2) + 7) & ~7
                let grown = allocateWords(capacity)
                state.retired.append((target, state.capacity))
                state.capacity = capacity
                buffer.store(grown, ordering: .releasing)
                target = grown
            }
            target[0].store(UInt64(generation), ordering: .relaxed)
            target[1].store(UInt64(payload.count), ordering: .relaxed)
            for (i, word) in payload.enumerated() {
                target[Self.payloadOffset + i].store(word, ordering: .relaxed)
            }
            sequence.store(start &+ 2, ordering: .releasing)
        }
    }

    /// Reads a consistent view. `body` gets the generation, the payload count and the words, and
    /// must only read (it may run more than once). Returns `nil` if no consistent read succeeded
    /// within a few tries (a writer storm); callers fall back to a simpler choice.
    @inlinable @inline(__always)
    package func read<Result>(
        _ body: (_ generation: UInt32, _ count: Int, _ words: UnsafeMutablePointer<Atomic<UInt64>>) -> Result
    ) -> Result? {
        for _ in 0..<16 {
            let before = sequence.load(ordering: .acquiring)
            if before & 1 == 1 { continue }
            let words = buffer.load(ordering: .acquiring).unsafelyUnwrapped
            let generation = UInt32(truncatingIfNeeded: words[0].load(ordering: .relaxed))
            let count = Int(truncatingIfNeeded: words[1].load(ordering: .relaxed))
            let result = body(generation, count, words + Self.payloadOffset)
            atomicMemoryFence(ordering: .acquiring)
            if sequence.load(ordering: .relaxed) == before { return result }
        }
        return nil
    }
}

/// Allocates `count` zeroed atomic words on whole cache lines of their own, so that readers of a
/// table never share a line with memory that other threads write (false sharing).
func allocateWords(_ count: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
    let bytes = (count * MemoryLayout<UInt64>.stride + 63) & ~63
    let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
    let words = raw.bindMemory(to: Atomic<UInt64>.self, capacity: bytes / 8)
    for i in 0..<bytes / 8 { (words + i).initialize(to: Atomic(0)) }
    return words
}
