/// The async sequence of snapshots a publisher hands out; see ``InstancePublisher`` for its contract.
public struct InstanceUpdates: AsyncSequence, Sendable {
    public typealias Element = InstanceUpdate
    public typealias Failure = Never

    private let stream: AsyncStream<InstanceUpdate>

    /// Wraps a stream of updates. Publishers usually get one from ``InstanceBroadcaster/updates()``.
    public init(_ stream: AsyncStream<InstanceUpdate>) {
        self.stream = stream
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream.makeAsyncIterator())
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        public typealias Element = InstanceUpdate
        public typealias Failure = Never
        private var base: AsyncStream<InstanceUpdate>.AsyncIterator

        init(base: AsyncStream<InstanceUpdate>.AsyncIterator) {
            self.base = base
        }

        public mutating func next() async -> InstanceUpdate? {
            await base.next()
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async -> InstanceUpdate? {
            await base.next(isolation: actor)
        }
    }
}
