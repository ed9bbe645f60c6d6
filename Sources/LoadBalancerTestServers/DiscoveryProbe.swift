import LoadBalancer

/// What a user of a publisher sees: every update it sends, and an `EndpointCache` fed by it (its
/// `EndpointCache/discoveryStatus` and readiness). For the tests of a registry that is down.
public final class DiscoveryProbe: Sendable {
    /// Every update of the publisher.
    public let recorder = Recorder()
    /// A cache over the publisher, with endpoints that answer their instance id.
    public let cache: EndpointCache<Int, String>
    /// Task bodies to run beside the publisher: the recorder's reader and the cache's loop.
    public let services: [@Sendable () async -> Void]

    /// A probe of `publisher` (run the publisher and ``services`` too).
    public init(_ publisher: some InstancePublisher) {
        let recorder = self.recorder
        let cache = EndpointCache<Int, String>(
            publisher: publisher,
            factory: EndpointFactory { instance in
                ManagedEndpoint(Endpoint(instance: instance) { _ in instance.id })
            }
        )
        self.cache = cache
        self.services = [recorder.recording(publisher), { try? await cache.run() }]
    }

    /// The errors the updates carried so far, in order.
    public var errors: [DiscoveryError] { recorder.all.compactMap(\.error) }
}

extension DiscoveryProbe {
    /// Runs `services` (the publisher, and whatever it needs) beside the probe's own until the
    /// first update that carries an error; returns that error and the time from this call to it.
    public func firstError(
        running services: [@Sendable () async -> Void],
        timeout: Duration = .seconds(20)
    ) async throws -> (error: DiscoveryError, elapsed: Duration) {
        let start = ContinuousClock.now
        return try await withRunning(services + self.services) {
            try await eventually("a failure reported", timeout: timeout) { !errors.isEmpty }
            guard let error = errors.first, let time = recorder.errorTimes.first else {
                throw ClusterError("no failure recorded")
            }
            return (error, time - start)
        }
    }

    /// Waits until `gaps` + 1 failures have been reported and returns the time the `gaps` pauses
    /// between them took together: how a test sees that retries back off.
    public func retrySpan(gaps: Int = 10, timeout: Duration = .seconds(60)) async throws -> Duration {
        try await eventually("\(gaps + 1) failures reported", timeout: timeout) { recorder.errorTimes.count > gaps }
        let times = recorder.errorTimes
        return times[gaps] - times[0]
    }
}
