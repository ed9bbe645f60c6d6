import Synchronization

/// Per-instance atomic counters addressed by the stable slot the ``EndpointCache`` gives each
/// instance, readable and writable from any thread without locks or reference counting.
///
/// Storage grows in chunks of 64 slots and is never freed before the storage itself, so a pointer
/// to a slot's words stays valid for the storage's lifetime.
@usableFromInline
package final class SlotStorage: @unchecked Sendable {
    @usableFromInline static let chunkShift = 6
    @usableFromInline static let chunkSize = 1 << chunkShift
    /// At most 1024 chunks: 65,536 slots.
    @usableFromInline static let maxChunks = 1024

    @usableFromInline let wordsPerSlot: Int
    @usableFromInline let directory: UnsafeMutablePointer<Atomic<UnsafeMutablePointer<Atomic<UInt64>>?>>
    private let growth = Mutex(())

    package init(wordsPerSlot: Int) {
        self.wordsPerSlot = wordsPerSlot
        directory = .allocate(capacity: Self.maxChunks)
        for i in 0..<Self.maxChunks { (directory + i).initialize(to: Atomic(nil)) }
    }

    deinit {
        for i in 0..<Self.maxChunks {
            if let chunk = directory[i].load(ordering: .acquiring) {
                chunk.deinitialize(count: Self.chunkSize * wordsPerSlot)
                chunk.deallocate()
            }
        }
        directory.deinitialize(count: Self.maxChunks)
        directory.deallocate()
    }

    /// Whether `slot` can be stored at all.
    @inlinable
    package static func isStorable(_ slot: UInt32) -> Bool { Int(slot) < maxChunks * chunkSize }

    /// Makes sure `slot` has storage. Call before publishing a table that names the slot.
    package func ensure(_ slot: UInt32) {
        guard Self.isStorable(slot) else { return }
        let chunkIndex = Int(slot) >> Self.chunkShift
        if directory[chunkIndex].load(ordering: .acquiring) != nil { return }
        growth.withLock { _ in
            if directory[chunkIndex].load(ordering: .acquiring) != nil { return }
            let chunk = allocateWords(Self.chunkSize * wordsPerSlot)
            directory[chunkIndex].store(chunk, ordering: .releasing)
        }
    }

    /// The words of `slot`, or `nil` when it has no storage (yet).
    @inlinable
    package func words(_ slot: UInt32) -> UnsafeMutablePointer<Atomic<UInt64>>? {
        guard Self.isStorable(slot) else { return nil }
        guard let chunk = directory[Int(slot) >> Self.chunkShift].load(ordering: .acquiring) else { return nil }
        return chunk + (Int(slot) & (Self.chunkSize - 1)) * wordsPerSlot
    }

    /// Sets every word of `slot` to zero (when a slot is given to a new instance).
    package func reset(_ slot: UInt32) {
        ensure(slot)
        guard let words = words(slot) else { return }
        for i in 0..<wordsPerSlot { words[i].store(0, ordering: .relaxed) }
    }
}

/// Allocates `count` zeroed atomic words on whole cache lines of their own, so that the words of
/// one slot never share a line with memory other threads write (false sharing).
func allocateWords(_ count: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
    let bytes = (count * MemoryLayout<UInt64>.stride + 63) & ~63
    let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
    let words = raw.bindMemory(to: Atomic<UInt64>.self, capacity: bytes / 8)
    for i in 0..<bytes / 8 { (words + i).initialize(to: Atomic(0)) }
    return words
}
