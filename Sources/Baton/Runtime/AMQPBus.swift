import AMQPClient
import Foundation

/// The ``MessageBus`` on RabbitMQ: persistent JSON messages on a confirm channel.
public struct AMQPBus: MessageBus {
    public let channel: AMQPChannel

    public init(channel: AMQPChannel) { self.channel = channel }

    static func amqpMessage(_ message: OutboxMessage) -> AMQPMessage {
        var properties = AMQPProperties.persistentJSON
        // Whole seconds (AMQP's unit): the consumer's queue wait and rabbitmqctl's head_message_timestamp.
        properties.timestamp = UInt64(Date().timeIntervalSince1970)
        if !message.headers.isEmpty { properties.headers = message.headers.mapValues { AMQPFieldValue.string($0) } }
        return AMQPMessage(
            exchange: message.exchange, routingKey: message.routingKey, body: Array(message.body.utf8), properties: properties,
            mandatory: message.exchange == Topology.stepsExchange)
    }

    public func publish(_ messages: [OutboxMessage]) async -> [(any Error)?] {
        let amqp = messages.map(Self.amqpMessage)
        do {
            return try await channel.publish(amqp).map { $0 }
        } catch {
            return messages.map { _ in error }
        }
    }
}

/// The late ack of a step delivery on RabbitMQ: the connection thread publishes the next step and acks the
/// delivery when the confirm arrives (the publish channel and the delivery share one connection).
struct AMQPSettlement: DeliverySettlement {
    let channel: AMQPChannel
    let delivery: AMQPDelivery

    func settle(_ hops: [SettlementHop], events: [OutboxMessage], eventsSettled: (@Sendable ([Bool]) -> Void)?) {
        var together: [AMQPChannel.HopSettlement] = []
        for hop in hops {
            guard let settlement = hop.settlement as? AMQPSettlement, settlement.channel.connection === channel.connection,
                settlement.channel.id == channel.id
            else {
                hop.settlement.settle([hop])
                continue
            }
            let confirmed = hop.confirmed
            together.append(
                AMQPChannel.HopSettlement(
                    messages: [AMQPBus.amqpMessage(hop.message)], thenAck: [settlement.delivery], beforeAck: hop.beforeAck,
                    onSettled: { results in confirmed(results.allSatisfy { $0 == nil }) }))
        }
        if !events.isEmpty {
            together.append(
                AMQPChannel.HopSettlement(
                    messages: events.map(AMQPBus.amqpMessage), thenAck: [],
                    onSettled: { results in eventsSettled?(results.map { $0 == nil }) }))
        }
        channel.publish(each: together)
    }
}

extension Topology {
    /// Settings of the declared queues (they must match on every worker: RabbitMQ refuses a re-declare with
    /// other arguments, and the worker then stops with that error).
    public struct QueueSettings: Sendable {
        /// Deliveries of one step message before the quorum queue dead-letters it as poison.
        public var deliveryLimit = 20
        /// Messages a step queue holds before publishes are refused (`x-overflow: reject-publish`).
        public var stepQueueMaxLength = 1_000_000
        public init() {}
    }

    static func quorum(_ settings: QueueSettings, maxLength: Int? = nil) -> AMQPQueueArguments {
        AMQPQueueArguments(
            type: .quorum, deliveryLimit: settings.deliveryLimit, deadLetterExchange: deadExchange, deadLetterStrategy: .atLeastOnce,
            overflow: .rejectPublish, maxLength: maxLength)
    }

    /// Declares Baton's topology (DESIGN.md §3) for `agents` and step `queues`, idempotently.
    public static func declare(on channel: AMQPChannel, agents: [String], queues: [String], settings: QueueSettings) async throws {
        try await channel.declareExchange(deadExchange, type: .fanout)
        try await channel.declareQueue(deadQueue, arguments: AMQPQueueArguments(type: .quorum))
        try await channel.bindQueue(deadQueue, exchange: deadExchange)

        try await channel.declareExchange(unroutedExchange, type: .fanout)
        try await channel.declareQueue(unroutedQueue, arguments: quorum(settings))
        try await channel.bindQueue(unroutedQueue, exchange: unroutedExchange)
        try await channel.declareExchange(submitExchange, type: .direct, arguments: ["alternate-exchange": .string(unroutedExchange)])
        for agent in agents {
            try await channel.declareQueue(submitQueue(agent: agent), arguments: quorum(settings))
            try await channel.bindQueue(submitQueue(agent: agent), exchange: submitExchange, routingKey: agent)
        }

        try await channel.declareExchange(stepsExchange, type: .direct)
        for queue in queues {
            try await channel.declareQueue(stepsQueue(queue), arguments: quorum(settings, maxLength: settings.stepQueueMaxLength))
            try await channel.bindQueue(stepsQueue(queue), exchange: stepsExchange, routingKey: queue)
        }

        try await channel.declareExchange(signalsExchange, type: .fanout)
        try await channel.declareQueue(signalsQueue, arguments: quorum(settings))
        try await channel.bindQueue(signalsQueue, exchange: signalsExchange)
        try await channel.declareExchange(eventsExchange, type: .topic)
    }
}
