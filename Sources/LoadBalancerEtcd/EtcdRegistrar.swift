import LoadBalancer
import Logging
import ServiceLifecycle
import Synchronization

#if canImport(Darwin)
    import Darwin
#elseif canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Registers one instance in etcd for as long as it runs.
///
/// ``run()`` grants a lease of ``ttl``, puts the instance under `prefix + instance.id` with that
/// lease (the value is the instance in ``format``: this library's JSON unless chosen), and renews
/// the lease every third of its TTL.
/// When the keep-alive stream breaks it renews on the next member; when the lease has expired
/// meanwhile (etcd unreachable for longer than the TTL) it registers again with a new lease.
/// On graceful shutdown or cancellation it revokes the lease, which deletes the key at once. If the
/// process dies instead, etcd deletes the key when the lease expires, within ``ttl``.
public final class EtcdRegistrar: Service {
    /// The registered instance.
    public let instance: Instance
    /// The key the instance is registered under.
    public let key: String
    /// The lease's time to live.
    public let ttl: Duration
    /// The form of the value, for the stacks that read it.
    public let format: RegistryValueFormat
    private let serviceName: String?
    private let client: EtcdClient
    private let backoff: Backoff
    private let logger: Logger
    private let lease = Mutex<Int64?>(nil)

    /// Creates a registrar; nothing is written until ``run()``.
    ///
    /// - Parameters:
    ///   - instance: What to register.
    ///   - prefix: The prefix publishers watch, for example `/services/api/`.
    ///   - client: The etcd client (run it too).
    ///   - ttl: The lease's TTL (whole seconds, at least 1). Default 10 s.
    ///   - format: The form of the value, for the stacks that read it: this library's JSON (the
    ///     default), `host:port` or a URL for go-kit, `.serverSet` (Finagle, Aurora) or `.curator`
    ///     (Apache Curator; its `name` is the prefix's last non-empty segment).
    ///   - backoff: The pause between attempts after a failure. Default 100 ms doubling to 2 s.
    ///   - logger: Where to log. Default: nowhere.
    public init(
        instance: Instance,
        prefix: String,
        client: EtcdClient,
        ttl: Duration = .seconds(10),
        format: RegistryValueFormat = .json,
        backoff: Backoff = Backoff(base: .milliseconds(100), cap: .seconds(2)),
        logger: Logger = Logger(label: "loadbalancer.etcd", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.instance = instance
        self.key = prefix + instance.id
        self.ttl = max(.seconds(1), ttl)
        self.format = format
        self.serviceName = prefix.split(separator: "/").last.map(String.init)
        self.client = client
        self.backoff = backoff
        self.logger = logger
    }

    /// The current lease, while registered.
    public var currentLease: Int64? { lease.withLock { $0 } }

    /// Registers and keeps the registration alive until cancelled or shut down; then deregisters.
    public func run() async throws {
        await WatchLoop(backoff: backoff).run { round in
            // A round got somewhere when it registered or a keep-alive was answered: a keep-alive
            // that fails at once, round after round, backs off as any failure does.
            let renewed = ProgressFlag()
            do {
                let (id, registered) = try await self.registeredLease()
                if registered { round.progressed() }
                try await self.client.keepAlive(lease: id, every: self.ttl / 3) { _ in renewed.set() }
                return .failed()
            } catch {
                if Task.isCancelled { return .stop() }
                if renewed.isSet { round.progressed() }
                // Nothing will answer again; run() deregisters and returns.
                if self.client.isShutDown { return .stop() }
                guard (error as? EtcdError)?.code == .leaseExpired else {
                    self.logger.warning(
                        "etcd registration keep-alive failed",
                        metadata: ["loadbalancer.etcd.key": "\(self.key)", "loadbalancer.error": "\(error)"]
                    )
                    return .failed()
                }
                self.logger.warning("etcd lease expired; registering again", metadata: ["loadbalancer.etcd.key": "\(self.key)"])
                self.lease.withLock { $0 = nil }
                return .failed()
            }
        }
        await deregister()
    }

    /// The lease the instance is registered with, and whether this call registered it (when there
    /// was none). A registration under way finishes even if the task is cancelled, so that
    /// ``deregister()`` revokes what it made.
    private func registeredLease() async throws -> (Int64, registered: Bool) {
        if let id = lease.withLock({ $0 }) { return (id, false) }
        let value = instance.registryValue(
            in: format, serviceName: serviceName,
            registrationTime: wallClockMilliseconds())
        let granted = try await registerToTheEnd { [client, key, ttl] in
            let granted = try await client.grantLease(ttl: ttl)
            do {
                try await client.put(key, value: value, lease: granted.id)
            } catch {
                // Half a registration: the next round grants a new lease, so this one goes now
                // rather than lingering until its TTL runs out.
                try? await client.revokeLease(granted.id)
                throw error
            }
            return granted
        }
        lease.withLock { $0 = granted.id }
        logger.info(
            "registered in etcd",
            metadata: ["loadbalancer.etcd.key": "\(key)", "loadbalancer.etcd.lease": "\(granted.id)"]
        )
        return (granted.id, true)
    }

    /// Revokes the lease (deleting the key), even when ``run()`` was cancelled.
    private func deregister() async {
        await deregisterToTheEnd(
            lease.withLock { $0.take() }, logger: logger, metadata: ["loadbalancer.etcd.key": "\(key)"],
            done: "deregistered from etcd", failed: "etcd deregistration failed; the lease will expire"
        ) { [client] id in try await client.revokeLease(id) }
    }
}

/// Set once, from any thread: whether a keep-alive was answered during a round.
private final class ProgressFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}

/// The wall clock, in milliseconds since 1970-01-01 UTC (Curator's `registrationTimeUTC`).
func wallClockMilliseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
}
