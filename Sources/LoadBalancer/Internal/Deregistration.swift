import Logging

/// Runs a registration request to its end even when the calling task is cancelled part way (its
/// answer then still says what was registered, so that the registrar can deregister it, instead of
/// leaving an instance registered that nothing will remove).
package func registerToTheEnd<T: Sendable>(_ register: @escaping @Sendable () async throws -> T) async throws -> T {
    // Not a child of the calling task: a cancellation does not abandon the request in flight.
    try await Task { try await register() }.value
}

/// How a registrar ends: when it is registered (`registration` is not `nil`), `deregister` runs with
/// the registration to its end even though the task that asks is cancelled (as a registrar's
/// `run()` is when it stops), and its outcome is logged (`done`, or `failed` with the error).
/// Returns whether it succeeded.
@discardableResult
package func deregisterToTheEnd<Registration: Sendable>(
    _ registration: Registration?,
    logger: Logger,
    metadata: Logger.Metadata,
    done: Logger.Message,
    failed: Logger.Message,
    _ deregister: @escaping @Sendable (Registration) async throws -> Void
) async -> Bool {
    guard let registration else { return false }
    // Not a child of the cancelled task: the request must still go out.
    return await Task {
        do {
            try await deregister(registration)
            logger.info(done, metadata: metadata)
            return true
        } catch {
            logger.warning(failed, metadata: metadata.merging(["loadbalancer.error": "\(error)"]) { $1 })
            return false
        }
    }.value
}
