import AMQPClient
import Foundation

/// A live tail of the fleet's events: an exclusive, auto-delete, non-durable queue bound to `baton.events` (the
/// topic exchange the event relay publishes every task's events to), consumed on a channel of its own. One per
/// `GET /v1/events` client.
///
/// Why the broker rather than Redis: each task's events live in a stream of their own, so a fleet-wide tail
/// from Redis would mean polling every task's stream; the relay already publishes every event once to
/// `baton.events`, and a queue per client costs the broker one binding. Memory is bounded at both ends: the
/// queue holds at most ``maxQueued`` events and drops the oldest beyond (`x-overflow: drop-head`), so a slow
/// client loses the oldest events instead of growing the broker, and the channel's prefetch bounds what this
/// process buffers. The tail is live only (no replay): a client that needs every event of a task reads its
/// history (`GET /v1/tasks/{id}/events`).
public final class EventSubscription: Sendable {
    /// Events kept in the broker for a client that reads slower than they come.
    public static let maxQueued = 10_000
    /// Deliveries buffered in this process per client (the channel's prefetch).
    public static let prefetch: UInt16 = 256
    /// The tail queues' names begin with this (`baton queues` and the queue metrics leave them out).
    public static let queuePrefix = "baton.tail."

    let channel: AMQPChannel
    let consumer: AMQPConsumer
    /// A connection of its own when the client had none (a read-only server): closed with the subscription.
    let ownConnection: AMQPConnection?
    public let queue: String

    init(channel: AMQPChannel, consumer: AMQPConsumer, ownConnection: AMQPConnection?, queue: String) {
        self.channel = channel
        self.consumer = consumer
        self.ownConnection = ownConnection
        self.queue = queue
    }

    /// One event as the relay published it: the routing key `<agent>.<task>.<type>` and the event JSON (DESIGN.md §6).
    public struct Event: Sendable {
        public var routingKey: String
        public var body: [UInt8]
    }

    /// The events in batches (everything buffered, at least one), each acknowledged as it is handed out; the
    /// sequence ends when the subscription is closed or the connection dropped.
    public var batches: Batches { Batches(upstream: consumer.batches, channel: channel) }

    public struct Batches: AsyncSequence, Sendable {
        public typealias Element = [Event]
        let upstream: AMQPDeliveryBatches
        let channel: AMQPChannel

        public struct AsyncIterator: AsyncIteratorProtocol {
            var upstream: AMQPDeliveryBatches.AsyncIterator
            let channel: AMQPChannel

            public mutating func next() async -> [Event]? {
                guard let batch = await upstream.next() else { return nil }
                if let last = batch.last { try? await channel.ack(last, multiple: true) }
                return batch.map { Event(routingKey: $0.routingKey, body: $0.body) }
            }
        }

        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(upstream: upstream.makeAsyncIterator(), channel: channel) }
    }

    /// Ends the subscription: the queue goes with its channel (exclusive, auto-delete).
    public func close() async {
        try? await channel.close()
        await ownConnection?.close()
    }
}

extension BatonClient {
    /// Subscribes to the fleet's events (every task's, or one agent's with `agent`); on this client's RabbitMQ
    /// connection, else on a new one to `amqpURL`. Close it when done.
    public func subscribeEvents(agent: String? = nil, amqpURL: String) async throws -> EventSubscription {
        var own: AMQPConnection?
        let connection: AMQPConnection
        if let amqp {
            connection = amqp
        } else {
            var configuration = try AMQPConfiguration(url: amqpURL, connectionName: "baton-serve events")
            configuration.connectTimeout = .seconds(5)
            connection = try await AMQPConnection.connect(configuration, logger: logger)
            own = connection
        }
        do {
            let channel = try await connection.openChannel(prefetch: EventSubscription.prefetch)
            let queue = EventSubscription.queuePrefix + TaskID.generate()
            try await channel.declareQueue(
                queue, durable: false, exclusive: true, autoDelete: true,
                arguments: AMQPQueueArguments(overflow: .dropHead, maxLength: EventSubscription.maxQueued))
            try await channel.bindQueue(queue, exchange: Topology.eventsExchange, routingKey: agent.map { "\($0).#" } ?? "#")
            let consumer = try await channel.consume(queue: queue, exclusive: true)
            return EventSubscription(channel: channel, consumer: consumer, ownConnection: own, queue: queue)
        } catch {
            await own?.close()
            throw error
        }
    }
}
