/// The async sequence of snapshots a publisher hands out; see ``InstancePublisher`` for its contract.
public struct InstanceUpdates: AsyncSequence, Sendable {
    /// Each element is a whole snapshot.
    public typealias Element = InstanceUpdate
    /// Iteration never throws: registry errors arrive in band.
    public typealias Failure = Never

    private let stream: AsyncStream<InstanceUpdate>

    /// Wraps a stream of updates. Publishers usually get one from ``InstanceBroadcaster/updates()``.
    public init(_ stream: AsyncStream<InstanceUpdate>) {
        self.stream = stream
    }

    /// Makes the iterator of this subscription.
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream.makeAsyncIterator())
    }

    /// The iterator of a subscription.
    public struct AsyncIterator: AsyncIteratorProtocol {
        /// Each element is a whole snapshot.
        public typealias Element = InstanceUpdate
        /// Iteration never throws: registry errors arrive in band.
        public typealias Failure = Never
        private var base: AsyncStream<InstanceUpdate>.AsyncIterator

        init(base: AsyncStream<InstanceUpdate>.AsyncIterator) {
            self.base = base
        }

        /// The next snapshot, or `nil` when the subscription has ended.
        public mutating func next() async -> InstanceUpdate? {
            await base.next()
        }

        /// The next snapshot, or `nil` when the subscription has ended, without leaving `actor`.
        public mutating func next(isolation actor: isolated (any Actor)?) async -> InstanceUpdate? {
            await base.next(isolation: actor)
        }
    }
}
