/// A channel of an ``AMQPConnection``. Cheap to copy; all copies are the same channel.
///
/// When the broker closes the channel (a failed declare, an unknown delivery tag, `consumer_timeout`), this
/// client answers with close-ok, fails what was in flight on it with the server's words, and re-opens it
/// with the same settings and consumers, so the handle stays usable.
public struct AMQPChannel: Sendable {
    public let connection: AMQPConnection
    /// The channel number.
    public let id: UInt16

    private func rpc(_ request: RPC) async throws -> RPCResult {
        try await withCheckedThrowingContinuation { continuation in
            connection.queue.submit(.rpc(channel: id, request, continuation))
        }
    }

    /// Declares an exchange (idempotent when the arguments match).
    public func declareExchange(
        _ name: String, type: AMQPExchangeType, durable: Bool = true, autoDelete: Bool = false, isInternal: Bool = false,
        arguments: AMQPTable = [:]
    ) async throws {
        _ = try await rpc(
            .declareExchange(
                name: name, type: type.name, durable: durable, autoDelete: autoDelete, internal: isInternal, passive: false,
                arguments: arguments))
    }

    /// Checks that an exchange exists (throws a channel error 404 otherwise).
    public func checkExchange(_ name: String) async throws {
        _ = try await rpc(
            .declareExchange(name: name, type: "direct", durable: false, autoDelete: false, internal: false, passive: true, arguments: [:]))
    }

    public func deleteExchange(_ name: String, ifUnused: Bool = false) async throws {
        _ = try await rpc(.deleteExchange(name: name, ifUnused: ifUnused))
    }

    /// Declares a queue (idempotent when the arguments match; different arguments give a channel error 406).
    @discardableResult
    public func declareQueue(
        _ name: String, durable: Bool = true, exclusive: Bool = false, autoDelete: Bool = false,
        arguments: AMQPQueueArguments = AMQPQueueArguments()
    ) async throws -> AMQPQueueInfo {
        let result = try await rpc(
            .declareQueue(
                name: name, passive: false, durable: durable, exclusive: exclusive, autoDelete: autoDelete, arguments: arguments.table))
        guard case .queue(let info) = result else { return AMQPQueueInfo(name: name, messageCount: 0, consumerCount: 0) }
        return info
    }

    /// The queue's current message and consumer counts (a passive declare; a channel error 404 if it does not exist).
    public func inspectQueue(_ name: String) async throws -> AMQPQueueInfo {
        let result = try await rpc(
            .declareQueue(name: name, passive: true, durable: false, exclusive: false, autoDelete: false, arguments: [:]))
        guard case .queue(let info) = result else { return AMQPQueueInfo(name: name, messageCount: 0, consumerCount: 0) }
        return info
    }

    /// Deletes a queue; returns how many messages it held.
    @discardableResult
    public func deleteQueue(_ name: String, ifUnused: Bool = false, ifEmpty: Bool = false) async throws -> UInt32 {
        guard case .count(let count) = try await rpc(.deleteQueue(name: name, ifUnused: ifUnused, ifEmpty: ifEmpty)) else { return 0 }
        return count
    }

    /// Removes every ready message of a queue; returns how many.
    @discardableResult
    public func purgeQueue(_ name: String) async throws -> UInt32 {
        guard case .count(let count) = try await rpc(.purgeQueue(name: name)) else { return 0 }
        return count
    }

    public func bindQueue(_ queue: String, exchange: String, routingKey: String = "", arguments: AMQPTable = [:]) async throws {
        _ = try await rpc(.bindQueue(queue: queue, exchange: exchange, routingKey: routingKey, arguments: arguments))
    }

    public func unbindQueue(_ queue: String, exchange: String, routingKey: String = "", arguments: AMQPTable = [:]) async throws {
        _ = try await rpc(.unbindQueue(queue: queue, exchange: exchange, routingKey: routingKey, arguments: arguments))
    }

    /// Sets the channel's prefetch (kept for recovery).
    public func setPrefetch(_ count: UInt16) async throws {
        _ = try await rpc(.qos(prefetch: count))
    }

    /// Publishes one message. On a confirm channel this returns once the broker confirmed it, and throws
    /// `.nacked` or (for `mandatory`) `.unroutable` when it did not take it.
    public func publish(_ message: AMQPMessage) async throws {
        if let error = try await publish([message]).first ?? nil { throw error }
    }

    /// Publishes several messages in one hand-off to the connection thread; they are in flight together.
    /// Returns one entry per message: `nil` when confirmed, else why not. Throws only for cancellation.
    public func publish(_ messages: [AMQPMessage]) async throws -> [AMQPError?] {
        await withCheckedContinuation { continuation in
            connection.queue.submit(.publish(channel: id, messages, PublishBatch(count: messages.count, continuation: continuation)))
        }
    }

    /// Publishes `messages` and, once the broker confirmed all of them, acks `deliveries` (or nacks them
    /// with requeue when a publish failed) — on the connection thread, without waiting here. `deliveries`
    /// must come from a channel of the same connection. `onSettled` runs on the connection thread with the
    /// publish results: keep it short. This is the late ack of a consume → publish hop.
    public func publish(
        _ messages: [AMQPMessage], thenAck deliveries: [AMQPDelivery], beforeAck: (@Sendable () -> Void)? = nil,
        onSettled: (@Sendable ([AMQPError?]) -> Void)? = nil
    ) {
        let first = deliveries.first
        let ack = AckAfter(
            channel: first?.channelID ?? id, epoch: first?.epoch ?? 0, tags: deliveries.map(\.deliveryTag), beforeAck: beforeAck,
            onSettled: onSettled)
        connection.queue.submit(.publish(channel: id, messages, PublishBatch(count: messages.count, ackAfter: ack)))
    }

    /// One hop of ``publish(each:)``: messages to publish, and the deliveries to ack once they are confirmed.
    public struct HopSettlement: Sendable {
        public var messages: [AMQPMessage]
        public var thenAck: [AMQPDelivery]
        public var beforeAck: (@Sendable () -> Void)?
        public var onSettled: (@Sendable ([AMQPError?]) -> Void)?

        public init(
            messages: [AMQPMessage], thenAck: [AMQPDelivery], beforeAck: (@Sendable () -> Void)? = nil,
            onSettled: (@Sendable ([AMQPError?]) -> Void)? = nil
        ) {
            self.messages = messages
            self.thenAck = thenAck
            self.beforeAck = beforeAck
            self.onSettled = onSettled
        }
    }

    /// ``publish(_:thenAck:beforeAck:onSettled:)`` for several hops in one hand-off to the connection
    /// thread, so their frames go out together; each hop is confirmed and acked on its own.
    public func publish(each hops: [HopSettlement]) {
        connection.queue.submit(
            contentsOf: hops.map { hop in
                let first = hop.thenAck.first
                let ack = AckAfter(
                    channel: first?.channelID ?? id, epoch: first?.epoch ?? 0, tags: hop.thenAck.map(\.deliveryTag),
                    beforeAck: hop.beforeAck, onSettled: hop.onSettled)
                return .publish(channel: id, hop.messages, PublishBatch(count: hop.messages.count, ackAfter: ack))
            })
    }

    /// Acknowledges a delivery (`multiple`: and every earlier one on this channel).
    public func ack(_ delivery: AMQPDelivery, multiple: Bool = false) async throws {
        try await settle(delivery, .ack(multiple: multiple))
    }

    /// Negatively acknowledges a delivery; `requeue: false` dead-letters it when the queue has a DLX.
    public func nack(_ delivery: AMQPDelivery, multiple: Bool = false, requeue: Bool = true) async throws {
        try await settle(delivery, .nack(multiple: multiple, requeue: requeue))
    }

    /// Rejects one delivery; `requeue: false` dead-letters it when the queue has a DLX.
    public func reject(_ delivery: AMQPDelivery, requeue: Bool = false) async throws {
        try await settle(delivery, .reject(requeue: requeue))
    }

    /// Acknowledges several deliveries of this channel in one hand-off to the connection thread.
    public func ack(_ deliveries: [AMQPDelivery]) async throws {
        guard let first = deliveries.first else { return }
        let current = deliveries.filter { $0.epoch == first.epoch }
        try await settle(current, .ack(multiple: false))
        if current.count != deliveries.count {
            try await ack(deliveries.filter { $0.epoch != first.epoch })
        }
    }

    private func settle(_ delivery: AMQPDelivery, _ settlement: Settlement) async throws {
        try await settle([delivery], settlement)
    }

    private func settle(_ deliveries: [AMQPDelivery], _ settlement: Settlement) async throws {
        guard let first = deliveries.first else { return }
        guard deliveries.allSatisfy({ $0.channelID == id }) else {
            throw AMQPError(
                .invalidArgument, operation: "settle delivery \(first.deliveryTag)",
                fix: "acknowledge a delivery on the channel it arrived on (channel \(first.channelID), not \(id))")
        }
        try await withCheckedThrowingContinuation { continuation in
            connection.queue.submit(.settle(channel: id, epoch: first.epoch, tags: deliveries.map(\.deliveryTag), settlement, continuation))
        }
    }

    /// Starts a consumer on `queue`. Deliveries arrive in batches: everything that was read in one cycle.
    public func consume(queue: String, tag: String = "", exclusive: Bool = false, arguments: AMQPTable = [:]) async throws -> AMQPConsumer {
        let buffer = DeliveryBuffer()
        let spec = ConsumerSpec(queue: queue, tag: tag, exclusive: exclusive, arguments: arguments, buffer: buffer)
        let actualTag = try await withCheckedThrowingContinuation { continuation in
            connection.queue.submit(.consume(channel: id, spec, continuation))
        }
        return AMQPConsumer(channel: self, tag: actualTag, batches: AMQPDeliveryBatches(buffer: buffer))
    }

    /// Cancels a consumer; its stream ends.
    public func cancel(consumerTag: String) async throws {
        try await withCheckedThrowingContinuation { continuation in
            connection.queue.submit(.cancel(channel: id, tag: consumerTag, continuation))
        }
    }

    /// Closes the channel; unconfirmed publishes fail with `.closed` and its consumers' streams end.
    public func close() async throws {
        try await withCheckedThrowingContinuation { continuation in
            connection.queue.submit(.closeChannel(channel: id, continuation))
        }
    }
}

/// A consumer: its deliveries as batches (one per read cycle of the connection) or one by one.
public struct AMQPConsumer: Sendable {
    public let channel: AMQPChannel
    public let tag: String
    /// The deliveries in batches: each batch is everything buffered when it was asked for. The sequence
    /// ends when the consumer is cancelled or the connection closed.
    public let batches: AMQPDeliveryBatches

    /// The deliveries one by one.
    public var deliveries: Deliveries { Deliveries(batches: batches) }

    public func cancel() async throws {
        try await channel.cancel(consumerTag: tag)
    }
}

extension AMQPConsumer {
    /// A consumer's deliveries one at a time.
    public struct Deliveries: AsyncSequence, Sendable {
        public typealias Element = AMQPDelivery
        let batches: AMQPDeliveryBatches

        public struct AsyncIterator: AsyncIteratorProtocol {
            var upstream: AMQPDeliveryBatches.AsyncIterator
            var buffer: [AMQPDelivery] = []
            var position = 0

            public mutating func next() async -> AMQPDelivery? {
                while position >= buffer.count {
                    guard let batch = await upstream.next() else { return nil }
                    buffer = batch
                    position = 0
                }
                defer { position += 1 }
                return buffer[position]
            }
        }

        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(upstream: batches.makeAsyncIterator()) }
    }
}
