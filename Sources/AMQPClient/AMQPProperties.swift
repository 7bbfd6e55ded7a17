/// The basic properties of a message (AMQP 0-9-1 content header). `nil` means "not set".
///
/// A value type with copy-on-write storage: a message's properties are copied with it through every queue, batch and
/// closure of a publish and a delivery, and as thirteen stored fields each copy retained and released every string
/// and the headers table (~6 % of a worker's retains on the step chain, perf uprobes, twentieth session); now a copy
/// retains one reference, and a write copies the fields only when the storage is shared.
public struct AMQPProperties: Sendable, Hashable {
    /// Written only through a uniquely referenced reference (``AMQPProperties/mutableStorage``), as the standard
    /// library's collections do: a shared storage is copied first, so no two values ever see one change.
    private final class Storage: @unchecked Sendable {
        var contentType: String?
        var contentEncoding: String?
        var headers: AMQPTable?
        var deliveryMode: UInt8?
        var priority: UInt8?
        var correlationID: String?
        var replyTo: String?
        var expiration: String?
        var messageID: String?
        var timestamp: UInt64?
        var type: String?
        var userID: String?
        var appID: String?

        init() {}

        init(copying other: Storage) {
            contentType = other.contentType
            contentEncoding = other.contentEncoding
            headers = other.headers
            deliveryMode = other.deliveryMode
            priority = other.priority
            correlationID = other.correlationID
            replyTo = other.replyTo
            expiration = other.expiration
            messageID = other.messageID
            timestamp = other.timestamp
            type = other.type
            userID = other.userID
            appID = other.appID
        }
    }

    /// The storage of properties with nothing set, shared (never uniquely referenced, so a write copies it): a
    /// message without properties allocates nothing for them.
    private static let empty = Storage()

    private var storage: Storage

    private var mutableStorage: Storage {
        mutating get {
            if !isKnownUniquelyReferenced(&storage) { storage = Storage(copying: storage) }
            return storage
        }
    }

    public var contentType: String? {
        get { storage.contentType }
        set { mutableStorage.contentType = newValue }
    }
    public var contentEncoding: String? {
        get { storage.contentEncoding }
        set { mutableStorage.contentEncoding = newValue }
    }
    public var headers: AMQPTable? {
        get { storage.headers }
        set { mutableStorage.headers = newValue }
    }
    /// 1 = transient, 2 = persistent.
    public var deliveryMode: UInt8? {
        get { storage.deliveryMode }
        set { mutableStorage.deliveryMode = newValue }
    }
    public var priority: UInt8? {
        get { storage.priority }
        set { mutableStorage.priority = newValue }
    }
    public var correlationID: String? {
        get { storage.correlationID }
        set { mutableStorage.correlationID = newValue }
    }
    public var replyTo: String? {
        get { storage.replyTo }
        set { mutableStorage.replyTo = newValue }
    }
    public var expiration: String? {
        get { storage.expiration }
        set { mutableStorage.expiration = newValue }
    }
    public var messageID: String? {
        get { storage.messageID }
        set { mutableStorage.messageID = newValue }
    }
    /// Seconds since the epoch.
    public var timestamp: UInt64? {
        get { storage.timestamp }
        set { mutableStorage.timestamp = newValue }
    }
    public var type: String? {
        get { storage.type }
        set { mutableStorage.type = newValue }
    }
    public var userID: String? {
        get { storage.userID }
        set { mutableStorage.userID = newValue }
    }
    public var appID: String? {
        get { storage.appID }
        set { mutableStorage.appID = newValue }
    }

    public init(
        contentType: String? = nil, contentEncoding: String? = nil, headers: AMQPTable? = nil, deliveryMode: UInt8? = nil,
        priority: UInt8? = nil, correlationID: String? = nil, replyTo: String? = nil, expiration: String? = nil,
        messageID: String? = nil, timestamp: UInt64? = nil, type: String? = nil, userID: String? = nil, appID: String? = nil
    ) {
        if contentType == nil, contentEncoding == nil, headers == nil, deliveryMode == nil, priority == nil, correlationID == nil,
            replyTo == nil, expiration == nil, messageID == nil, timestamp == nil, type == nil, userID == nil, appID == nil
        {
            self.storage = Self.empty
            return
        }
        let storage = Storage()
        storage.contentType = contentType
        storage.contentEncoding = contentEncoding
        storage.headers = headers
        storage.deliveryMode = deliveryMode
        storage.priority = priority
        storage.correlationID = correlationID
        storage.replyTo = replyTo
        storage.expiration = expiration
        storage.messageID = messageID
        storage.timestamp = timestamp
        storage.type = type
        storage.userID = userID
        storage.appID = appID
        self.storage = storage
    }

    public static func == (a: AMQPProperties, b: AMQPProperties) -> Bool {
        if a.storage === b.storage { return true }
        return a.contentType == b.contentType
            && a.contentEncoding == b.contentEncoding
            && a.headers == b.headers
            && a.deliveryMode == b.deliveryMode
            && a.priority == b.priority
            && a.correlationID == b.correlationID
            && a.replyTo == b.replyTo
            && a.expiration == b.expiration
            && a.messageID == b.messageID
            && a.timestamp == b.timestamp
            && a.type == b.type
            && a.userID == b.userID
            && a.appID == b.appID
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(contentType)
        hasher.combine(contentEncoding)
        hasher.combine(headers)
        hasher.combine(deliveryMode)
        hasher.combine(priority)
        hasher.combine(correlationID)
        hasher.combine(replyTo)
        hasher.combine(expiration)
        hasher.combine(messageID)
        hasher.combine(timestamp)
        hasher.combine(type)
        hasher.combine(userID)
        hasher.combine(appID)
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
