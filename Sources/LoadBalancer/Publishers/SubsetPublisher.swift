import Synchronization

/// A publisher of this client's subset of another publisher's instances (see ``Subsetting``).
///
/// Put it between the registry's publisher and the ``EndpointCache``, so that the cache makes
/// endpoints (and opens connections) for the subset's instances only; any balancer then picks
/// among them:
///
/// ```swift
/// let subsetting = try Subsetting.indexed(client: ordinal, of: replicas, size: .fixed(10))
/// let cache = EndpointCache(publisher: registry.subset(subsetting), factory: factory)
/// let balancer = P2CBalancer(cache)
/// ```
///
/// Each update of the base publisher becomes one update with the same error (if any) and the
/// subset of its instances, computed anew from the whole set, so it keeps the contract of
/// ``InstancePublisher``: whole sets ordered by id, the current one first, registry errors in band
/// (with the subset of the last good set, which is empty only when that set is), a slow subscriber
/// gets the newest. A set whose subset is the same as the last one sent, with no error on either,
/// is not sent again. Each subscription iterates the base publisher in a task of its own, which
/// ends when the subscription does.
public final class SubsetPublisher: InstancePublisher {
    private struct Subscriber {
        var continuation: AsyncStream<InstanceUpdate>.Continuation
        /// The base publisher's last update to this subscriber.
        var base: InstanceUpdate?
        /// The last update sent.
        var sent: InstanceUpdate?
    }

    private struct State {
        var subsetting: Subsetting
        var subscribers: [Int: Subscriber] = [:]
        var nextSubscriber = 0
    }

    private let base: any InstancePublisher
    private let state: Mutex<State>

    /// Creates a publisher of the subset `subsetting` chooses from each of `base`'s sets.
    public init(_ base: some InstancePublisher, subsetting: Subsetting) {
        self.base = base
        self.state = Mutex(State(subsetting: subsetting))
    }

    /// The configuration now.
    public var subsetting: Subsetting { state.withLock { $0.subsetting } }

    /// Replaces the configuration (a new size, say, as the client's load changes): every
    /// subscription gets the new subset of the base publisher's current set at once, with its
    /// error, if any. Subsets nest, so a size one larger adds one instance and keeps the rest.
    public func reconfigure(_ subsetting: Subsetting) {
        state.withLock { state in
            state.subsetting = subsetting
            for id in state.subscribers.keys { Self.send(to: id, in: &state) }
        }
    }

    /// A new subscription: the subset of the base publisher's current set first, then the subset
    /// of every later set, and of the current set again at each ``reconfigure(_:)``.
    public func updates() -> InstanceUpdates {
        let (stream, continuation) = AsyncStream<InstanceUpdate>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = state.withLock { state in
            let id = state.nextSubscriber
            state.nextSubscriber += 1
            state.subscribers[id] = Subscriber(continuation: continuation)
            return id
        }
        let baseUpdates = base.updates()
        // The task holds the publisher until the subscription ends (its termination cancels the task).
        let task = Task {
            for await update in baseUpdates {
                self.state.withLock { state in
                    state.subscribers[id]?.base = update
                    Self.send(to: id, in: &state)
                }
            }
            continuation.finish()
        }
        continuation.onTermination = { [weak self] _ in
            task.cancel()
            self?.state.withLock { _ = $0.subscribers.removeValue(forKey: id) }
        }
        return InstanceUpdates(stream)
    }

    /// Sends subscriber `id` the subset of its last base update, unless it is the same as the
    /// last one sent and neither has an error.
    private static func send(to id: Int, in state: inout State) {
        guard let subscriber = state.subscribers[id], let base = subscriber.base else { return }
        let update = state.subsetting.subset(of: base)
        if let sent = subscriber.sent, sent.error == nil, update.error == nil, sent.instances == update.instances { return }
        state.subscribers[id]?.sent = update
        subscriber.continuation.yield(update)
    }

    deinit {
        let continuations = state.withLock { state in state.subscribers.values.map(\.continuation) }
        for continuation in continuations { continuation.finish() }
    }
}

extension InstancePublisher {
    /// A publisher of this client's subset of this publisher's instances; see ``SubsetPublisher``.
    public func subset(_ subsetting: Subsetting) -> SubsetPublisher {
        SubsetPublisher(self, subsetting: subsetting)
    }
}
