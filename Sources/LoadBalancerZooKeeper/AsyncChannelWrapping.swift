import NIOCore

/// `channel` (connected) wrapped for async use, on its event loop; closed if that fails.
///
/// Wrapped after the connect, not in the bootstrap's channel initializer: NIO then never holds the
/// wrapper, and a wrapper added to an active channel keeps its writer until the channel closes,
/// so no path can let go of it unfinished, which NIO treats as a programming error and stops the
/// process on ("Deinited NIOAsyncWriter without calling finish()", seen once in a full test run
/// on a loaded machine). ZooKeeper's protocol and its four-letter words start with the client, so
/// nothing arrives before the wrapping.
package func wrappedForAsync(_ channel: any Channel) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
    do {
        return try await channel.eventLoop.submit {
            try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
        }.get()
    } catch {
        try? await channel.close()
        throw error
    }
}
