import Foundation
import LoadBalancerTestKit
import Synchronization
import Testing

/// A task executor with a thread of its own. A task that prefers it runs there, not on the shared
/// cooperative pool: a test that times how soon a cancelled call returns measures the call, not
/// the queue of other suites' work on a busy machine.
final class DedicatedThreadExecutor: TaskExecutor, Sendable {
    private let condition = NSCondition()
    private let state = Mutex<(jobs: [UnownedJob], stopped: Bool)>(([], false))

    init() {
        Thread { [self] in self.serve() }.start()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        state.withLock { $0.jobs.append(job) }
        condition.signal()
        condition.unlock()
    }

    /// Lets the thread end once its jobs are done.
    func stop() {
        condition.lock()
        state.withLock { $0.stopped = true }
        condition.signal()
        condition.unlock()
    }

    private func serve() {
        while true {
            condition.lock()
            var next = state.withLock { $0.jobs.isEmpty ? nil : $0.jobs.removeFirst() }
            while next == nil {
                if state.withLock({ $0.stopped }) {
                    condition.unlock()
                    return
                }
                condition.wait()
                next = state.withLock { $0.jobs.isEmpty ? nil : $0.jobs.removeFirst() }
            }
            condition.unlock()
            next?.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}

/// Runs `call` in a task on a thread of its own, cancels it once `isWaiting` holds, and returns the
/// time from `cancel()` to the moment `call` returned (taken in the task, as it returns), with
/// what `call` returned.
func timeToReturn<T: Sendable>(
    afterCancelling call: @escaping @Sendable () async -> T,
    once isWaiting: @escaping () -> Bool
) async throws -> (T, Duration) {
    let executor = DedicatedThreadExecutor()
    defer { executor.stop() }
    let task = Task(executorPreference: executor) { () -> (T, ContinuousClock.Instant) in
        let value = await call()
        return (value, ContinuousClock.now)
    }
    // Bounded polling, here: the file serves two test targets (LoadBalancerZooKeeperTests links it).
    let deadline = ContinuousClock.now + TestTimeScale.scaled(.seconds(60))
    while !isWaiting() {
        guard ContinuousClock.now < deadline else {
            Issue.record("the call did not start waiting within 60 s")
            throw CancellationError()
        }
        try await Task.sleep(for: .milliseconds(1))
    }
    let cancelled = ContinuousClock.now
    task.cancel()
    let (value, returned) = await task.value
    return (value, returned - cancelled)
}

/// A time limit a test holds a call to: `limit`, stretched by `LB_TEST_TIME_SCALE` in a sanitizer
/// run (`scripts/sanitizers.sh` sets it), where instrumented code runs several times slower. What
/// the test asserts (that the call returns at all, and soon) stays the same.
func callTimeLimit(_ limit: Duration) -> Duration {
    TestTimeScale.scaled(limit)
}

/// Runs `body` in a task on a thread of its own: long computation (a simulation) then leaves the
/// shared pool's few threads (two on a two-core machine) to the suites running beside it.
func onDedicatedThread<T: Sendable>(_ body: @escaping @Sendable () async -> T) async -> T {
    let executor = DedicatedThreadExecutor()
    defer { executor.stop() }
    return await Task(executorPreference: executor) { await body() }.value
}
