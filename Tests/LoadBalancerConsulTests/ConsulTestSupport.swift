import AsyncHTTPClient
import ConsulTestServer
import LoadBalancer
import LoadBalancerConsul
import LoadBalancerTestKit
import Synchronization
import Testing

/// The test kit's `pollUntil` (every 10 ms, the bound scaled by `TestTimeScale`), also recording
/// its timeout as an issue where it was called.
func waitUntil(
    _ timeout: Duration = .seconds(15),
    sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () async -> Bool
) async throws {
    try await pollUntil(
        "the condition", timeout: timeout, interval: .milliseconds(10),
        onTimeout: { Issue.record("\($0)", sourceLocation: sourceLocation) }, condition)
}

/// Every update of a publisher, recorded by a background reader.
final class Recorder: Sendable {
    private let updates = Mutex<[InstanceUpdate]>([])

    var all: [InstanceUpdate] { updates.withLock { $0 } }
    var latest: InstanceUpdate? { updates.withLock { $0.last } }
    var ids: [String] { latest?.instances.map(\.id) ?? [] }
    var error: DiscoveryError? { latest?.error }

    func record(_ update: InstanceUpdate) { updates.withLock { $0.append(update) } }
}

/// Runs `publisher` and a reader of its updates for the duration of `body`.
func withRunning<T>(
    _ publisher: ConsulPublisher,
    _ body: (Recorder) async throws -> T
) async throws -> T {
    let recorder = Recorder()
    let reader = Task {
        for await update in publisher.updates() { recorder.record(update) }
    }
    let run = Task { try await publisher.run() }
    defer {
        run.cancel()
        reader.cancel()
    }
    return try await body(recorder)
}

/// A client of `server` with short timeouts.
func client(
    _ server: ConsulTestServer,
    datacenter: String? = nil,
    token: String? = nil,
    requestTimeout: Duration = .seconds(2),
    httpClient: HTTPClient? = nil
) -> ConsulClient {
    ConsulClient(
        configuration: .init(
            host: "127.0.0.1",
            port: server.port,
            datacenter: datacenter,
            token: token,
            requestTimeout: requestTimeout
        ),
        httpClient: httpClient
    )
}

/// A publisher configuration for tests: a short backoff, so faults are recovered from quickly,
/// a generous rate limit, and the given wait.
func fastConfiguration(
    wait: Duration = .seconds(10),
    includeWarning: Bool = false,
    consistency: ConsulClient.Consistency = .default
) -> ConsulPublisher.Configuration {
    ConsulPublisher.Configuration(
        wait: wait,
        rateLimit: .init(requestsPerSecond: 50, burst: 10),
        backoff: Backoff(base: .milliseconds(100), cap: .milliseconds(800)),
        includeWarning: includeWarning,
        consistency: consistency
    )
}
