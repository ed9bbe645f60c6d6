import LoadBalancer
import Logging
import ServiceLifecycle
import Synchronization

/// Keeps a service instance registered with the local Consul agent for as long as it runs.
///
/// ``run()`` registers the instance with its TTL check (`PUT /v1/agent/service/register`), passes
/// the check at once and then every ``Configuration/passInterval`` (a third of the TTL by default,
/// `PUT /v1/agent/check/pass/ID`), and deregisters the instance (`PUT /v1/agent/service/deregister/ID`)
/// when it is cancelled or the service group shuts down gracefully.
///
/// - A failed registration or pass is logged and tried again after a jittered backoff (never
///   longer than the pass interval, unless a 429 asks for a longer `Retry-After`). A pass the agent rejects (it restarted and forgot the
///   check, say) makes the registrar register again before the next pass.
/// - A registration Consul would reject (see ``ConsulServiceRegistration/validate()``), or one
///   the agent answers with 400, is a configuration error: ``run()`` throws it instead of
///   sending it again and again.
/// - Each registration replaces the agent's earlier one with its checks
///   (`replace-existing-checks`): a check id that changed leaves no orphan check behind.
/// - If the process dies without deregistering, the check stops being passed: the agent marks it
///   critical one TTL after the last pass (so `?passing` queries drop the instance), and removes
///   the service once it has been critical for `DeregisterCriticalServiceAfter`, when set.
///
/// ```swift
/// let consul = ConsulClient()
/// let registrar = ConsulRegistrar(
///     instance: try Instance(host: "10.0.0.7", port: 8080, id: "users-1"),
///     service: "users",
///     client: consul,
///     options: ConsulRegistrationOptions(check: .init(ttl: .seconds(10), deregisterCriticalServiceAfter: .seconds(90)))
/// )
/// let group = ServiceGroup(services: [consul, server, registrar], logger: logger)
/// ```
public final class ConsulRegistrar: Service {
    /// How the registrar keeps the check passing.
    public struct Configuration: Sendable, Hashable {
        /// The time between passes; `nil` is a third of the check's TTL. Default `nil`.
        public var passInterval: Duration?
        /// The delay after the n-th consecutive failure: a random time in
        /// `backoff.window(forRetry: n)` (full jitter), at most the pass interval. Default 200 ms,
        /// doubling, up to 10 s.
        public var backoff: Backoff

        /// Creates a configuration.
        public init(passInterval: Duration? = nil, backoff: Backoff = Backoff(base: .milliseconds(200), cap: .seconds(10))) {
            self.passInterval = passInterval
            self.backoff = backoff
        }
    }

    /// The registered instance.
    public let instance: Instance
    /// What is sent to the agent: the instance, its service's name and the options.
    public let registration: ConsulServiceRegistration
    /// How the check is kept passing.
    public let configuration: Configuration
    private let client: ConsulClient
    private let logger: Logger

    /// Creates a registrar; nothing is sent until ``run()``.
    ///
    /// - Parameters:
    ///   - instance: What to register: its address, port, tags, metadata and weight.
    ///   - service: The service's name (`Name`), the one publishers ask for.
    ///   - client: The local agent (registrations go to an agent, not to the catalog; run it too).
    ///   - options: Consul's extras: the id on the agent, more tags and metadata, the warning
    ///     weight, and the TTL check. Default: the instance's id, a 10 s TTL.
    ///   - configuration: The pass interval and the backoff.
    ///   - logger: Where to log. Default: nowhere.
    public init(
        instance: Instance,
        service: String,
        client: ConsulClient,
        options: ConsulRegistrationOptions = ConsulRegistrationOptions(),
        configuration: Configuration = Configuration(),
        logger: Logger = Logger(label: "loadbalancer.consul", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.instance = instance
        self.registration = ConsulServiceRegistration(instance: instance, service: service, options: options)
        self.client = client
        self.configuration = configuration
        self.logger = logger
    }

    /// The time between passes.
    public var passInterval: Duration {
        configuration.passInterval ?? registration.check.ttl / 3
    }

    /// Registers, keeps the check passing until cancelled or shut down gracefully, then deregisters.
    ///
    /// Deregistration runs even when the task was cancelled (it is not itself cancelled); it is
    /// bounded by the client's request timeout, and a failure is logged, not thrown.
    ///
    /// - Throws: ``ConsulError`` with code `invalidArgument` at once, when Consul would reject the
    ///   registration (see ``ConsulServiceRegistration/validate()``), or when the agent answers
    ///   the registration with 400 (then after deregistering whatever an earlier registration left).
    public func run() async throws {
        try registration.validate()
        let (registered, rejection) = await keepPassing()
        guard registered else {
            if let rejection { throw rejection }
            return
        }
        await deregisterToTheEnd(
            registration.id, logger: logger, metadata: metadata,
            done: "deregistered from Consul", failed: "Consul deregistration failed; the check will go critical after its TTL"
        ) { [client] id in try await client.deregister(serviceID: id) }
        if let rejection { throw rejection }
    }

    private var metadata: Logger.Metadata {
        ["loadbalancer.consul.service": "\(registration.name)", "loadbalancer.consul.service_id": "\(registration.id)"]
    }

    /// Registers and passes until cancelled, or until the agent rejects the registration with
    /// 400; returns whether a registration ever succeeded, and the rejection.
    private func keepPassing() async -> (Bool, ConsulError?) {
        let everRegistered = Mutex(false)
        let rejection = await WatchLoop(backoff: configuration.backoff).run(state: { false }) { registered, _ in
            do {
                if !registered {
                    // Finished even if cancelled part way: what the agent took, run() deregisters.
                    try await registerToTheEnd { [client = self.client, registration = self.registration] in
                        try await client.register(registration)
                    }
                    registered = true
                    everRegistered.withLock { $0 = true }
                    self.logger.info("registered with Consul", metadata: self.metadata)
                }
                try await self.client.passCheck(self.registration.checkID)
                return .succeeded(next: self.passInterval)
            } catch is CancellationError {
                return .stop()
            } catch let error as ConsulError where error.code == .shutDown {
                // Nothing will answer again; run() deregisters (or tries to) and returns.
                return .stop()
            } catch let error as ConsulError where error.code == .invalidArgument {
                // The agent will not take this registration, however often it is sent.
                self.logger.error(
                    "Consul rejected the registration; not sending it again",
                    metadata: self.metadata.merging(["loadbalancer.error": "\(error)"]) { $1 }
                )
                return .stop(error)
            } catch {
                if let error = error as? ConsulError, error.code == .httpStatus {
                    // The agent rejected the pass (it forgot the check, say): register again.
                    registered = false
                }
                self.logger.warning(
                    "Consul registration or check pass failed; trying again",
                    metadata: self.metadata.merging(["loadbalancer.error": "\(error)"]) { $1 }
                )
                // A 429's Retry-After is honoured, even past the pass interval: the agent asked.
                return .failed(atLeast: (error as? ConsulError)?.retryAfter ?? .zero, atMost: self.passInterval)
            }
        }
        return (everRegistered.withLock { $0 }, rejection as? ConsulError)
    }
}
