import Foundation
import Logging

/// A connection to RabbitMQ over rabbitmq-c, run on a thread of its own.
///
/// Every C call of the connection runs on that one thread (rabbitmq-c is not thread-safe, and its calls
/// block: they must never run on Swift's cooperative pool). The thread also services heartbeats, so a
/// handler that is busy for minutes cannot make the broker drop the connection. A lost connection is
/// re-established with backoff, and its channels, confirm mode, prefetch and consumers are restored; an
/// operation that was in flight at that moment fails with `.connectionLost` (its outcome is unknown).
///
/// ```swift
/// let connection = try await AMQPConnection.connect(AMQPConfiguration(url: "amqp://guest:guest@127.0.0.1:5672/"))
/// let channel = try await connection.openChannel(confirms: true)
/// try await channel.publish(AMQPMessage(exchange: "", routingKey: "jobs", body: Array("hi".utf8)))
/// await connection.close()
/// ```
public final class AMQPConnection: Sendable {
    public let configuration: AMQPConfiguration
    let queue: CommandQueue

    private init(configuration: AMQPConfiguration, queue: CommandQueue) {
        self.configuration = configuration
        self.queue = queue
    }

    /// Connects, or throws an ``AMQPError`` that names the (redacted) URL and what to fix, within
    /// `configuration.connectTimeout`.
    public static func connect(_ configuration: AMQPConfiguration, logger: Logger = Logger(label: "baton.amqp")) async throws
        -> AMQPConnection
    {
        let queue = try CommandQueue()
        try await withCheckedThrowingContinuation { (startup: CheckedContinuation<Void, any Error>) in
            let thread = Thread {
                let engine = ConnectionEngine(configuration: configuration, logger: logger, queue: queue)
                engine.run(startup: startup)
            }
            thread.name = "amqp \(configuration.connectionName)"
            thread.stackSize = 1 << 22
            thread.start()
        }
        return AMQPConnection(configuration: configuration, queue: queue)
    }

    /// Connects, runs `body`, and closes the connection whatever `body` does.
    public static func withConnection<T: Sendable>(
        _ configuration: AMQPConfiguration, logger: Logger = Logger(label: "baton.amqp"), _ body: (AMQPConnection) async throws -> T
    ) async throws -> T {
        let connection = try await connect(configuration, logger: logger)
        do {
            let result = try await body(connection)
            await connection.close()
            return result
        } catch {
            await connection.close()
            throw error
        }
    }

    deinit {
        queue.submit(.close(nil))
    }

    /// Whether the connection is up right now (false while it reconnects and after ``close()``).
    public var isConnected: Bool { queue.state.withLock { $0.connected } }

    /// How many times the connection was re-established after a loss.
    public var reconnectCount: Int { queue.state.withLock { $0.reconnects } }

    /// Opens a channel. With `confirms`, every publish on it waits for the broker's confirm; `prefetch`
    /// bounds the unacknowledged deliveries of its consumers. Both are restored after a recovery.
    public func openChannel(confirms: Bool = false, prefetch: UInt16? = nil) async throws -> AMQPChannel {
        let id = try await withCheckedThrowingContinuation { continuation in
            queue.submit(.openChannel(confirms: confirms, prefetch: prefetch, continuation))
        }
        return AMQPChannel(connection: self, id: id)
    }

    /// Closes the connection: fails whatever is still queued with `.closed`, ends consumer streams, and
    /// stops the thread. Calling it twice is fine.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.submit(.close(continuation))
        }
    }
}
