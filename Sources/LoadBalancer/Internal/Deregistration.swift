import Logging

/// How a registrar ends: `deregister` runs to its end even though the task that asks is cancelled
/// (as a registrar's `run()` is when it stops), and its outcome is logged (`done`, or `failed` with
/// the error). Returns whether it succeeded.
@discardableResult
package func deregisterToTheEnd(
    logger: Logger,
    metadata: Logger.Metadata,
    done: Logger.Message,
    failed: Logger.Message,
    _ deregister: @escaping @Sendable () async throws -> Void
) async -> Bool {
    // Not a child of the cancelled task: the request must still go out.
    await Task {
        do {
            try await deregister()
            logger.info(done, metadata: metadata)
            return true
        } catch {
            logger.warning(failed, metadata: metadata.merging(["loadbalancer.error": "\(error)"]) { $1 })
            return false
        }
    }.value
}
