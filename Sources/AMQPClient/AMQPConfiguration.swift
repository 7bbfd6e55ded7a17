/// How an ``AMQPConnection`` connects, stays alive and recovers.
public struct AMQPConfiguration: Sendable {
    /// Where to connect.
    public var url: AMQPURL
    /// The `connection_name` client property: shown by `rabbitmqctl list_connections` and the management UI.
    public var connectionName: String
    /// The heartbeat interval proposed to the broker (the broker may lower it). `.zero` disables heartbeats.
    /// The connection thread services heartbeats on its own; handlers never run on it.
    public var heartbeat: Duration = .seconds(30)
    /// How long a TCP connect plus the AMQP handshake may take.
    public var connectTimeout: Duration = .seconds(10)
    /// How long a synchronous broker call (declare, bind, qos, consume, channel.open) may wait for its reply.
    public var rpcTimeout: Duration = .seconds(30)
    /// How a lost connection is re-established.
    public var reconnect: ReconnectPolicy = .exponential()
    /// The largest frame the client proposes (the broker may lower it).
    public var frameMax: Int32 = 131_072

    public init(url: AMQPURL, connectionName: String = "baton") {
        self.url = url
        self.connectionName = connectionName
    }

    /// Parses `url` (see ``AMQPURL``).
    public init(url: String, connectionName: String = "baton") throws {
        self.init(url: try AMQPURL(url), connectionName: connectionName)
    }

    /// Backoff between reconnect attempts after a connection was lost.
    public struct ReconnectPolicy: Sendable {
        /// The delay before the first attempt.
        public var initialDelay: Duration
        /// The largest delay between two attempts.
        public var maxDelay: Duration
        /// Whether to reconnect at all.
        public var enabled: Bool

        /// Doubling delays from `initial` up to `max`, with ±20 % jitter; retried until the connection is closed.
        public static func exponential(initial: Duration = .milliseconds(100), max: Duration = .seconds(5)) -> ReconnectPolicy {
            ReconnectPolicy(initialDelay: initial, maxDelay: max, enabled: true)
        }

        /// Never reconnect: a lost connection stays down and every operation fails with `.notConnected`.
        public static var never: ReconnectPolicy { ReconnectPolicy(initialDelay: .zero, maxDelay: .zero, enabled: false) }
    }
}

/// The kind of an exchange.
public struct AMQPExchangeType: Sendable, Hashable {
    public let name: String
    public init(_ name: String) { self.name = name }
    public static let direct = AMQPExchangeType("direct")
    public static let fanout = AMQPExchangeType("fanout")
    public static let topic = AMQPExchangeType("topic")
    public static let headers = AMQPExchangeType("headers")
}

/// Typed queue arguments (`x-queue-type`, `x-delivery-limit`, dead lettering, overflow, length limits).
public struct AMQPQueueArguments: Sendable, Hashable {
    public enum QueueType: String, Sendable { case classic, quorum, stream }
    public enum DeadLetterStrategy: String, Sendable {
        case atMostOnce = "at-most-once"
        case atLeastOnce = "at-least-once"
    }
    public enum Overflow: String, Sendable {
        case dropHead = "drop-head"
        case rejectPublish = "reject-publish"
        case rejectPublishDLX = "reject-publish-dlx"
    }

    public var type: QueueType?
    /// Quorum queues: deliveries after which a message is dead-lettered (`x-delivery-limit`).
    public var deliveryLimit: Int?
    public var deadLetterExchange: String?
    public var deadLetterRoutingKey: String?
    public var deadLetterStrategy: DeadLetterStrategy?
    public var overflow: Overflow?
    public var maxLength: Int?
    public var maxLengthBytes: Int?
    /// Per-message TTL in milliseconds (`x-message-ttl`).
    public var messageTTLMilliseconds: Int?
    /// Anything else, passed through as is.
    public var extra: AMQPTable

    public init(
        type: QueueType? = nil, deliveryLimit: Int? = nil, deadLetterExchange: String? = nil, deadLetterRoutingKey: String? = nil,
        deadLetterStrategy: DeadLetterStrategy? = nil, overflow: Overflow? = nil, maxLength: Int? = nil, maxLengthBytes: Int? = nil,
        messageTTLMilliseconds: Int? = nil, extra: AMQPTable = [:]
    ) {
        self.type = type
        self.deliveryLimit = deliveryLimit
        self.deadLetterExchange = deadLetterExchange
        self.deadLetterRoutingKey = deadLetterRoutingKey
        self.deadLetterStrategy = deadLetterStrategy
        self.overflow = overflow
        self.maxLength = maxLength
        self.maxLengthBytes = maxLengthBytes
        self.messageTTLMilliseconds = messageTTLMilliseconds
        self.extra = extra
    }

    /// The wire table.
    public var table: AMQPTable {
        var t = extra
        if let type { t["x-queue-type"] = .string(type.rawValue) }
        if let deliveryLimit { t["x-delivery-limit"] = .int64(Int64(deliveryLimit)) }
        if let deadLetterExchange { t["x-dead-letter-exchange"] = .string(deadLetterExchange) }
        if let deadLetterRoutingKey { t["x-dead-letter-routing-key"] = .string(deadLetterRoutingKey) }
        if let deadLetterStrategy { t["x-dead-letter-strategy"] = .string(deadLetterStrategy.rawValue) }
        if let overflow { t["x-overflow"] = .string(overflow.rawValue) }
        if let maxLength { t["x-max-length"] = .int64(Int64(maxLength)) }
        if let maxLengthBytes { t["x-max-length-bytes"] = .int64(Int64(maxLengthBytes)) }
        if let messageTTLMilliseconds { t["x-message-ttl"] = .int64(Int64(messageTTLMilliseconds)) }
        return t
    }
}

/// What the broker said about a declared queue.
public struct AMQPQueueInfo: Sendable, Hashable {
    public var name: String
    public var messageCount: UInt32
    public var consumerCount: UInt32
}
