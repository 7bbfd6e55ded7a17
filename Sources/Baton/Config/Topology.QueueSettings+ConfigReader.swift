import Configuration

extension Topology.QueueSettings {
    /// Reads the RabbitMQ queue settings.
    ///
    /// | key | default |
    /// |---|---|
    /// | `queues.delivery_limit` | 20 |
    /// | `queues.step_max_length` | 1000000 |
    ///
    /// - Throws: a ``BatonError`` (code `configuration`, `field` = the key) for a value out of range.
    public init(reader: ConfigReader) throws {
        self.init()
        deliveryLimit = try reader.batonInt(ConfigKeys.queuesDeliveryLimit, default: deliveryLimit, range: 1...1000)
        stepQueueMaxLength = try reader.batonInt(ConfigKeys.queuesStepMaxLength, default: stepQueueMaxLength, range: 1...Int(Int32.max))
    }
}
