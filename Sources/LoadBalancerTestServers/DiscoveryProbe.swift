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
