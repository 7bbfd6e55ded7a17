/// The basic properties of a message (AMQP 0-9-1 content header). `nil` means "not set".
public struct AMQPProperties: Sendable, Hashable {
    public var contentType: String?
    public var contentEncoding: String?
    public var headers: AMQPTable?
    /// 1 = transient, 2 = persistent.
    public var deliveryMode: UInt8?
    public var priority: UInt8?
    public var correlationID: String?
    public var replyTo: String?
    public var expiration: String?
    public var messageID: String?
    /// Seconds since the epoch.
    public var timestamp: UInt64?
    public var type: String?
    public var userID: String?
    public var appID: String?

    public init(
        contentType: String? = nil, contentEncoding: String? = nil, headers: AMQPTable? = nil, deliveryMode: UInt8? = nil,
        priority: UInt8? = nil, correlationID: String? = nil, replyTo: String? = nil, expiration: String? = nil,
        messageID: String? = nil, timestamp: UInt64? = nil, type: String? = nil, userID: String? = nil, appID: String? = nil
    ) {
        self.contentType = contentType
        self.contentEncoding = contentEncoding
        self.headers = headers
        self.deliveryMode = deliveryMode
        self.priority = priority
        self.correlationID = correlationID
        self.replyTo = replyTo
        self.expiration = expiration
        self.messageID = messageID
        self.timestamp = timestamp
        self.type = type
        self.userID = userID
        self.appID = appID
    }

    /// Persistent (`delivery_mode = 2`) JSON: what Baton publishes.
    public static var persistentJSON: AMQPProperties { AMQPProperties(contentType: "application/json", deliveryMode: 2) }
}

/// A message to publish.
public struct AMQPMessage: Sendable {
    public var exchange: String
    public var routingKey: String
    public var body: [UInt8]
    public var properties: AMQPProperties
    /// Ask the broker to return the message (surfaced as an ``AMQPError/Code/unroutable`` error) when no queue takes it.
    public var mandatory: Bool

    public init(exchange: String, routingKey: String, body: [UInt8], properties: AMQPProperties = AMQPProperties(), mandatory: Bool = false)
    {
        self.exchange = exchange
        self.routingKey = routingKey
        self.body = body
        self.properties = properties
        self.mandatory = mandatory
    }
}

/// A message delivered to a consumer. Acknowledge it through the channel it came from.
public struct AMQPDelivery: Sendable {
    public var body: [UInt8]
    public var properties: AMQPProperties
    public var deliveryTag: UInt64
    public var redelivered: Bool
    public var exchange: String
    public var routingKey: String
    public var consumerTag: String
    /// The channel incarnation this delivery belongs to: acks for an older incarnation are refused as stale.
    let channelID: UInt16
    let epoch: UInt64

    public init(
        body: [UInt8], properties: AMQPProperties, deliveryTag: UInt64, redelivered: Bool, exchange: String, routingKey: String,
        consumerTag: String, channelID: UInt16, epoch: UInt64
    ) {
        self.body = body
        self.properties = properties
        self.deliveryTag = deliveryTag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routingKey = routingKey
        self.consumerTag = consumerTag
        self.channelID = channelID
        self.epoch = epoch
    }

    /// The `x-delivery-count` header quorum queues add on redelivery (0 on a first delivery).
    public var deliveryCount: Int64 { properties.headers?["x-delivery-count"]?.intValue ?? 0 }
}
