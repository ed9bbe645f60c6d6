// A runnable tour of the core API, needing no registry and no network:
// three in-process "instances" (one of them failing now and then) behind a static publisher,
// balanced by round robin and by random, called through Retry.
import LoadBalancer
import Synchronization

struct Flaky: Error, CustomStringConvertible {
    var instance: String
    var description: String { "\(instance) failed" }
}

let counts = Mutex<[String: Int]>([:])
let calls = Atomic<Int>(0)

// Each endpoint answers with its instance id; 127.0.0.1:8082 fails every third call it gets.
let factory = EndpointFactory<String, String>.calling { instance, request in
    counts.withLock { $0[instance.id, default: 0] += 1 }
    if instance.port == 8082, calls.wrappingAdd(1, ordering: .relaxed).newValue % 3 == 0 {
        throw Flaky(instance: instance.id)
    }
    return "\(request) from \(instance.id)"
}

let publisher = StaticPublisher(["127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082", "not-an-instance"])
print("static publisher: \(publisher.instances.count) instances, rejected: \(publisher.errors.map(\.description))")

for name in ["round-robin", "random"] {
    counts.withLock { $0 = [:] }
    let failures = try await withLoadBalancer(
        publisher: publisher,
        factory: factory,
        balancer: { cache -> AnyBalancer<String, String> in
            name == "random" ? AnyBalancer(RandomBalancer(cache, seed: 42)) : AnyBalancer(RoundRobinBalancer(cache))
        }
    ) { balancer in
        var failures = 0
        let retry = Retry(balancer, maxAttempts: 3, timeout: .seconds(1))
        for i in 0..<3_000 {
            do {
                _ = try await retry("request \(i)")
            } catch {
                failures += 1
            }
        }
        return failures
    }
    let table = counts.withLock { $0 }.sorted { $0.key < $1.key }
    print("\(name): 3000 calls, \(failures) failed after retries; attempts per instance:")
    for (id, count) in table {
        print("  \(id)  \(count)")
    }
}
