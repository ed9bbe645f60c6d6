import LoadBalancer
import Logging
import ServiceLifecycle
import Synchronization

/// When a DNS publisher asks again.
public struct DNSRefresh: Sendable, Hashable {
    enum Kind: Sendable, Hashable {
        case ttl(minimum: Duration, maximum: Duration)
        case fixed(Duration)
    }
    let kind: Kind
    /// How soon to ask again after a failed lookup, at the most. Default 1 s. Each further failure
    /// in a row doubles it, up to ``maximumRetryAfterFailure``; each pause is a random time within
    /// its window (full jitter), so many clients do not retry in step after an outage.
    public var retryAfterFailure: Duration = .seconds(1)
    /// The largest window of the pauses between failed lookups. Default 30 s.
    public var maximumRetryAfterFailure: Duration = .seconds(30)

    /// At the smallest TTL of the records used, clamped to `minimum...maximum` (default 1 s to 5 min).
    public static func ttl(minimum: Duration = .seconds(1), maximum: Duration = .seconds(300)) -> DNSRefresh {
        DNSRefresh(kind: .ttl(minimum: minimum, maximum: max(minimum, maximum)))
    }

    /// At a fixed interval, whatever the TTL (go-kit's behaviour).
    public static func every(_ interval: Duration) -> DNSRefresh {
        DNSRefresh(kind: .fixed(interval))
    }

    func delay(ttl: UInt32?) -> Duration {
        switch kind {
        case .fixed(let interval):
            return interval
        case .ttl(let minimum, let maximum):
            let seconds = Duration.seconds(Int64(ttl ?? 0))
            return min(max(seconds, minimum), maximum)
        }
    }

    /// The backoff after failed lookups: ``retryAfterFailure`` doubling to ``maximumRetryAfterFailure``.
    var failureBackoff: Backoff {
        Backoff(base: retryAfterFailure, cap: max(retryAfterFailure, maximumRetryAfterFailure))
    }

    /// The pause after `failures` failed lookups in a row (from 1), from 64 random bits.
    package func delay(afterFailures failures: Int, random: UInt64) -> Duration {
        failureBackoff.delay(forRetry: max(1, failures), random: random)
    }
}

/// Publishes the instances behind a DNS SRV name (RFC 2782): one instance per address of each
/// target, carrying the record's priority and weight.
///
/// Targets are resolved from the answer's additional section, or by A and AAAA queries of the
/// publisher's own when the additional section lacks them (large answers often do). A record with
/// the root target (".", RFC 2782's "service decidedly not available") is skipped quietly. A record
/// that cannot make an instance (port 0, an address the instance rules refuse) is left out and
/// reported in band, as the static and Consul publishers do: the update carries the good instances
/// and a `DiscoveryError` with code `invalidInstances` naming the bad
/// records. The first lookup happens when `run()` starts, then again at the records' TTL (see
/// ``DNSRefresh``).
///
/// Timeouts, SERVFAIL and REFUSED keep the last good set (the update carries the error); NXDOMAIN
/// and an empty answer are authoritative and publish the empty set. When the server is down at
/// start-up, the first update carries the error after the resolver's timeout and attempts; lookups
/// go on after a random time within ``DNSRefresh/retryAfterFailure`` (the window doubling with
/// each failure, full jitter) until the server answers. When the client is shut down, the
/// publisher publishes a last update with a `closed` error (the last good set stays), then ends
/// its subscriptions, as every registry publisher does.
public final class DNSSRVPublisher: DNSLookupPublisher {
    /// The SRV name, for example `_http._tcp.example.com`.
    public let name: String
    /// The zone every instance gets (DNS has none of its own), for zone-aware routing.
    public let zone: String?
    let core: DNSPublisherCore

    /// Creates a publisher; nothing is looked up until `run()`.
    ///
    /// - Parameters:
    ///   - name: The SRV name, for example `_http._tcp.example.com`.
    ///   - client: The resolver.
    ///   - refresh: When to look up again. Default: at the records' TTL, clamped to 1 s...5 min.
    ///   - staleness: What to do with the last good set while lookups fail. Default: keep it.
    ///   - zone: The zone every instance gets, for zone-aware routing (a name per zone, such as
    ///     `_http._tcp.eu-west-1a.example.com`, makes one publisher per zone). Default: none.
    ///   - logger: Where to log. Default: nowhere.
    public init(
        name: String,
        client: DNSClient,
        refresh: DNSRefresh = .ttl(),
        staleness: StalenessPolicy = .keepLastGood,
        zone: String? = nil,
        logger: Logger = Logger(label: "loadbalancer.dns", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.name = name
        self.zone = zone
        self.core = DNSPublisherCore(name: name, client: client, refresh: refresh, staleness: staleness, logger: logger)
    }

    /// Looks up, publishes, and sleeps until the next refresh (backing off after failures), until
    /// cancelled or shut down gracefully.
    public func run() async throws { await core.run { try await self.lookup() } }

    /// One lookup: publishes its result and returns when to look again.
    @discardableResult public func refreshOnce() async -> Duration { await core.refreshOnce { try await self.lookup() } }

    /// The instances, the smallest TTL of the records used, and the records that made no instance.
    func lookup() async throws -> DNSLookupResult {
        var response: DNSMessage?
        var queried = DNSClient.normalized(name)
        for candidate in core.client.configuration.candidates(for: name) {
            let answer = try await core.client.query(candidate, type: .srv)
            queried = DNSClient.normalized(candidate)
            response = answer.message
            if answer.message.responseCode == .noError, !answer.message.answers.isEmpty { break }
        }
        guard let response, response.responseCode == .noError else { return DNSLookupResult(instances: [], ttl: nil) }
        var ttl: UInt32?
        func use(_ value: UInt32) { ttl = min(ttl ?? value, value) }

        var instances: [Instance] = []
        var invalid: [String] = []
        if response.isTruncated {
            // Truncated even over TCP: more records than one 65,535-byte message holds. The records
            // that came are used; the set is reported in band as incomplete.
            // (Logged with the other records that make no instance.)
            let records = response.answers.count(where: { $0.name == queried })
            invalid.append(
                "the SRV answer for \(queried) is truncated even over TCP (more records than a 65,535-byte DNS message holds): only its \(records) records are used"
            )
        }
        for record in response.answers where record.name == queried {
            guard case .srv(let priority, let weight, let port, let target) = record.data else { continue }
            guard !target.isEmpty else {
                core.logger.debug(
                    "skipping an SRV record that says the service is not available", metadata: ["loadbalancer.dns.record": "\(record)"])
                continue
            }
            guard port != 0 else {
                invalid.append("SRV record \(priority) \(weight) \(port) \(target): port 0")
                continue
            }
            use(record.ttl)
            var addresses = response.additionals.compactMap { extra -> (String, UInt32)? in
                guard extra.name == target else { return nil }
                switch extra.data {
                case .ipv4(let address), .ipv6(let address): return (address, extra.ttl)
                default: return nil
                }
            }
            if addresses.isEmpty {
                addresses = try await resolveAddresses(of: target)
            }
            for (address, addressTTL) in addresses {
                use(addressTTL)
                do {
                    instances.append(
                        try Instance(
                            host: address,
                            port: Int(port),
                            weight: Int(weight),
                            priority: Int(priority),
                            metadata: ["target": target],
                            zone: zone
                        )
                    )
                } catch {
                    invalid.append("SRV record \(priority) \(weight) \(port) \(target), address \(address): \(error)")
                }
            }
        }
        return DNSLookupResult(instances: instances, ttl: ttl, invalid: invalid)
    }

    /// A and AAAA records of `target` (NXDOMAIN or no records: none).
    private func resolveAddresses(of target: String) async throws -> [(String, UInt32)] {
        var addresses: [(String, UInt32)] = []
        let (answers, failure) = try await core.addressAnswers(of: target)
        for (_, answer) in answers {
            for record in answer.message.answers where record.name == target {
                switch record.data {
                case .ipv4(let address), .ipv6(let address): addresses.append((address, record.ttl))
                default: continue
                }
            }
        }
        if addresses.isEmpty, let failure { throw failure }
        return addresses
    }
}

/// Publishes one instance per address (A and AAAA records) of a name, all on one port.
///
/// Unlike a resolver that hands one endpoint all the addresses, each address is its own instance,
/// so the balancer spreads calls over them. Refresh and error semantics are those of
/// ``DNSSRVPublisher``.
public final class DNSAddressPublisher: DNSLookupPublisher {
    /// The name whose addresses are published.
    public let name: String
    /// The port every instance gets.
    public let port: Int
    /// The zone every instance gets (DNS has none of its own), for zone-aware routing.
    public let zone: String?
    let core: DNSPublisherCore

    /// Creates a publisher; nothing is looked up until `run()`.
    ///
    /// - Parameters:
    ///   - name: The name whose A and AAAA records are published.
    ///   - port: The port every instance gets.
    ///   - client: The resolver.
    ///   - refresh: When to look up again. Default: at the records' TTL, clamped to 1 s...5 min.
    ///   - staleness: What to do with the last good set while lookups fail. Default: keep it.
    ///   - zone: The zone every instance gets, for zone-aware routing. Default: none.
    ///   - logger: Where to log. Default: nowhere.
    public init(
        name: String,
        port: Int,
        client: DNSClient,
        refresh: DNSRefresh = .ttl(),
        staleness: StalenessPolicy = .keepLastGood,
        zone: String? = nil,
        logger: Logger = Logger(label: "loadbalancer.dns", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.name = name
        self.port = port
        self.zone = zone
        self.core = DNSPublisherCore(name: name, client: client, refresh: refresh, staleness: staleness, logger: logger)
    }

    /// Looks up, publishes, and sleeps until the next refresh (backing off after failures), until
    /// cancelled or shut down gracefully.
    public func run() async throws { await core.run { try await self.lookup() } }

    /// One lookup: publishes its result and returns when to look again.
    @discardableResult public func refreshOnce() async -> Duration { await core.refreshOnce { try await self.lookup() } }

    /// The instances (one per address), the smallest TTL of the records used, and the addresses
    /// that made no instance.
    func lookup() async throws -> DNSLookupResult {
        var instances: [Instance] = []
        var invalid: [String] = []
        var ttl: UInt32?
        candidates: for candidate in core.client.configuration.candidates(for: name) {
            var exists = false
            let (answers, failure) = try await core.addressAnswers(of: candidate)
            for (type, answer) in answers {
                if answer.message.responseCode == .noError { exists = true }
                for record in answer.message.answers {
                    switch record.data {
                    case .ipv4(let address) where type == .a, .ipv6(let address) where type == .aaaa:
                        ttl = min(ttl ?? record.ttl, record.ttl)
                        do {
                            instances.append(try Instance(host: address, port: port, zone: zone))
                        } catch {
                            invalid.append("address \(address): \(error)")
                        }
                    default:
                        continue
                    }
                }
            }
            if instances.isEmpty, invalid.isEmpty, let failure { throw failure }
            if exists, !instances.isEmpty || !invalid.isEmpty { break candidates }
        }
        return DNSLookupResult(instances: instances, ttl: ttl, invalid: invalid)
    }
}

/// What both DNS publishers are: a ``DNSPublisherCore`` and a lookup of their own, from which
/// their subscriptions follow. (Each declares its `run()` and `refreshOnce()` itself: public
/// members here would be visible only as requirements of public protocols, and a `run()` found as
/// `Service`'s asks callers to import ServiceLifecycle.)
protocol DNSLookupPublisher: InstancePublisher, Service {
    /// The broadcaster, the client, the refresh and the loop.
    var core: DNSPublisherCore { get }
    /// One lookup: the instances, the smallest TTL of the records used, and what made no instance.
    func lookup() async throws -> DNSLookupResult
}

extension DNSLookupPublisher {
    /// A new subscription: the current set first (once the first lookup is done), then every change.
    public func updates() -> InstanceUpdates { core.broadcaster.updates() }

}

/// What one lookup found.
struct DNSLookupResult: Sendable {
    /// The instances, in answer order.
    var instances: [Instance]
    /// The smallest TTL of the records used.
    var ttl: UInt32?
    /// The records (or addresses) that could not make an instance, described.
    var invalid: [String] = []
}

/// What both DNS publishers share: the broadcaster, the refresh loop, and what a lookup's result
/// or failure means for the published set.
final class DNSPublisherCore: Sendable {
    let name: String
    let client: DNSClient
    let refresh: DNSRefresh
    let logger: Logger
    let broadcaster: InstanceBroadcaster
    private let loop: WatchLoop<ContinuousClock>
    /// Failed lookups in a row, for ``refreshOnce(_:)`` called by hand.
    private let failures = Mutex(0)

    init(name: String, client: DNSClient, refresh: DNSRefresh, staleness: StalenessPolicy, logger: Logger) {
        self.name = name
        self.client = client
        self.refresh = refresh
        self.logger = logger
        self.broadcaster = InstanceBroadcaster(staleness: staleness)
        self.loop = WatchLoop(backoff: refresh.failureBackoff)
    }

    /// Looks up and sleeps until the next refresh (backing off after failures), until cancelled or
    /// shut down; then ends the subscriptions.
    func run(_ lookup: @escaping @Sendable () async throws -> DNSLookupResult) async {
        await loop.run(publishingTo: broadcaster, logger: logger, metadata: ["loadbalancer.dns.name": "\(name)"]) { _ in
            await self.round(lookup)
        }
    }

    /// Publishes a lookup's instances (an empty set is authoritative) or reports its failure
    /// (the last good set stays); returns when to look again.
    func refreshOnce(_ lookup: () async throws -> DNSLookupResult) async -> Duration {
        let step = await round(lookup)
        if let closed = step.stopError as? DiscoveryError {
            // The loop would stop here; by hand, the error is published and the caller decides.
            broadcaster.fail(closed)
            return .zero
        }
        return failures.withLock { loop.pause(after: step, failures: &$0) } ?? .zero
    }

    /// The A and AAAA answers for `name`, each with its type, and the failure of a family that
    /// failed. A server may answer one family and refuse the other: what it answers is used.
    func addressAnswers(of name: String) async throws -> (answers: [(DNSRecordType, DNSAnswer)], failure: (any Error)?) {
        var answers: [(DNSRecordType, DNSAnswer)] = []
        var failure: (any Error)?
        for type in [DNSRecordType.a, .aaaa] {
            do {
                answers.append((type, try await client.query(name, type: type)))
            } catch let error as CancellationError {
                throw error
            } catch {
                failure = error
            }
        }
        return (answers, failure)
    }

    /// One lookup, published or reported.
    private func round(_ lookup: () async throws -> DNSLookupResult) async -> WatchStep {
        do {
            let result = try await lookup()
            if result.instances.isEmpty {
                logger.info("DNS lookup found no instances", metadata: ["loadbalancer.dns.name": "\(name)"])
            }
            if !result.invalid.isEmpty {
                logger.warning(
                    "DNS records that make no instance were left out",
                    metadata: ["loadbalancer.dns.name": "\(name)", "loadbalancer.error": "\(result.invalid.joined(separator: "; "))"]
                )
            }
            broadcaster.publish(result.instances, invalid: result.invalid)
            return .succeeded(next: refresh.delay(ttl: result.ttl))
        } catch {
            if Task.isCancelled { return .stop() }
            if let error = error as? DNSLookupError, error.code == .closed {
                // Nothing will answer again: the last good set stays, with the reason in band.
                return .clientShutDown("DNS", watching: name, cause: error)
            }
            let metadata: Logger.Metadata = ["loadbalancer.dns.name": "\(name)"]
            broadcaster.report(error, unavailable: true, message: "lookup of \(name) failed", logger: logger, metadata: metadata)
            return .failed()
        }
    }
}
