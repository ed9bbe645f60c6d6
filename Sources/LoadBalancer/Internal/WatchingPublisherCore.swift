import Logging

/// What a registry publisher that watches its registry (etcd's, ZooKeeper's) keeps besides its
/// key and its client: the broadcaster its subscribers read, the backoff of its watch loop, its
/// logger, and the log metadata that names what it watches.
package struct WatchingPublisherCore: Sendable {
    /// The snapshots, to subscribers.
    package let broadcaster: InstanceBroadcaster
    /// The pause between rounds after failures.
    package let backoff: Backoff
    /// Where to log.
    package let logger: Logger
    /// What every log line says of the publisher (the watched prefix or path).
    package let metadata: Logger.Metadata

    package init(backoff: Backoff, staleness: StalenessPolicy, logger: Logger, metadata: Logger.Metadata) {
        self.broadcaster = InstanceBroadcaster(staleness: staleness)
        self.backoff = backoff
        self.logger = logger
        self.metadata = metadata
    }

    /// Runs the publisher's rounds on a ``WatchLoop`` publishing to the broadcaster, until a round
    /// stops it, the task is cancelled or the service group shuts down; then ends the subscriptions.
    package func run<State>(
        state: @escaping @Sendable () -> State,
        round: @escaping @Sendable (inout State, inout WatchRound) async -> WatchStep
    ) async {
        await WatchLoop(backoff: backoff).run(publishingTo: broadcaster, logger: logger, metadata: metadata, state: state, round: round)
    }

    /// Reports a failed round in band (the last good set stays) and in the log.
    package func report(_ error: any Error, unavailable: Bool, message: String) {
        broadcaster.report(error, unavailable: unavailable, message: message, logger: logger, metadata: metadata)
    }
}
