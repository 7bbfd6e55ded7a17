import Configuration

extension RedisTaskStore.Settings {
    /// Reads the Redis store settings.
    ///
    /// | key | default |
    /// |---|---|
    /// | `redis.key_prefix` | `baton:` |
    /// | `redis.buckets` | 16 (1…1024) |
    /// | `limits.events_max_length` | 1000 |
    /// | `limits.checkpoints_kept` | 5 |
    /// | `limits.signal_mailbox` | 100 (1…100000) |
    /// | `worker.stale_after` | 10s |
    ///
    /// - Throws: a ``BatonError`` (code `configuration`, `field` = the key) for a value out of range.
    public init(reader: ConfigReader) throws {
        self.init()
        let prefix = reader.batonString(ConfigKeys.redisKeyPrefix, default: keys.prefix)
        guard !prefix.contains(where: { $0 == "{" || $0 == "}" || $0.isWhitespace }) else {
            throw ConfigReader.invalid(ConfigKeys.redisKeyPrefix, prefix, "a key prefix without spaces or braces")
        }
        let buckets = try reader.batonInt(ConfigKeys.redisBuckets, default: keys.bucketCount, range: 1...1024)
        keys = RedisKeys(prefix: prefix, bucketCount: buckets)
        eventsMaxLength = try reader.batonInt(ConfigKeys.limitsEventsMaxLength, default: eventsMaxLength, range: 10...10_000_000)
        checkpointsKept = try reader.batonInt(ConfigKeys.limitsCheckpointsKept, default: checkpointsKept, range: 1...1000)
        signalMailboxCap = try reader.batonInt(ConfigKeys.limitsSignalMailbox, default: signalMailboxCap, range: 1...100_000)
        let stale = try reader.batonDuration(
            ConfigKeys.workerStaleAfter, default: .milliseconds(workerStaleMilliseconds), minimum: .seconds(1))
        workerStaleMilliseconds = stale.wholeMilliseconds
    }
}
