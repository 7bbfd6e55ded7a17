import AMQPClient
import Configuration
import RedisClient

extension Worker.Configuration {
    /// Reads a worker's whole configuration: the servers, the worker's own settings, the sweeps, and the
    /// settings of ``ProtocolSettings``, ``RedisTaskStore/Settings`` and ``Topology/QueueSettings``.
    ///
    /// | key | default |
    /// |---|---|
    /// | `amqp.url` | the local node of `baton services` |
    /// | `redis.url` | the local Redis of `baton services` |
    /// | `worker.queues` | [] (every registered agent's) |
    /// | `worker.concurrency` | 64 |
    /// | `worker.prefetch` | 128 (1…65535) |
    /// | `worker.drain_timeout` | 30s |
    /// | `worker.heartbeat_interval` | 2s |
    /// | `sweeps.timer_interval` | 100ms |
    /// | `sweeps.outbox_interval` | 2s |
    /// | `sweeps.outbox_age` | 5s |
    /// | `sweeps.stalled_interval` | 5s |
    /// | `sweeps.dead_letter_intake` | true |
    /// | `sweeps.retention_interval` | 1m |
    /// | `sweeps.prewarm_lead` | 60s (0: no `waking_soon` events) |
    /// | `limits.retention` | 7d (0: finished tasks are kept forever) |
    /// | `limits.dead_letter_retention` | 180d (0: dead letters are kept until an operator acts) |
    ///
    /// The URLs are checked here (scheme, host, port), so a typo fails at start, not at the first connect.
    ///
    /// - Throws: a ``BatonError`` (code `configuration`, `field` = the key) for a bad value.
    public init(reader: ConfigReader, workerID: String = Worker.defaultID()) throws {
        let amqpURL = reader.batonString(ConfigKeys.amqpURL, default: Endpoints.localAMQPURL)
        let redisURL = reader.batonString(ConfigKeys.redisURL, default: Endpoints.localRedisURL)
        do { _ = try AMQPConfiguration(url: amqpURL) } catch {
            throw BatonError(.configuration, "\(ConfigKeys.amqpURL) is not a valid RabbitMQ URL: \(error)", field: ConfigKeys.amqpURL)
        }
        do { _ = try RedisConfiguration(url: redisURL) } catch {
            throw BatonError(.configuration, "\(ConfigKeys.redisURL) is not a valid Redis URL: \(error)", field: ConfigKeys.redisURL)
        }
        self.init(amqpURL: amqpURL, redisURL: redisURL, workerID: workerID)
        queues = reader.batonList(ConfigKeys.workerQueues)
        concurrency = try reader.batonInt(ConfigKeys.workerConcurrency, default: concurrency, range: 1...10_000)
        prefetch = UInt16(try reader.batonInt(ConfigKeys.workerPrefetch, default: Int(prefetch), range: 1...65_535))
        drainTimeout = try reader.batonDuration(ConfigKeys.workerDrainTimeout, default: drainTimeout, minimum: .zero)
        heartbeatInterval = try reader.batonDuration(ConfigKeys.workerHeartbeatInterval, default: heartbeatInterval)
        timerInterval = try reader.batonDuration(ConfigKeys.sweepsTimerInterval, default: timerInterval)
        outboxSweepInterval = try reader.batonDuration(ConfigKeys.sweepsOutboxInterval, default: outboxSweepInterval)
        outboxSweepAge = try reader.batonDuration(ConfigKeys.sweepsOutboxAge, default: outboxSweepAge)
        stalledSweepInterval = try reader.batonDuration(ConfigKeys.sweepsStalledInterval, default: stalledSweepInterval)
        deadLetterIntake = try reader.batonBool(ConfigKeys.sweepsDeadLetterIntake, default: deadLetterIntake)
        retentionSweepInterval = try reader.batonDuration(ConfigKeys.sweepsRetentionInterval, default: retentionSweepInterval)
        prewarmLead = try reader.batonDuration(ConfigKeys.sweepsPrewarmLead, default: prewarmLead, minimum: .zero)
        retention = try reader.batonDuration(ConfigKeys.limitsRetention, default: retention, minimum: .zero)
        deadLetterRetention = try reader.batonDuration(ConfigKeys.limitsDeadLetterRetention, default: deadLetterRetention, minimum: .zero)
        protocolSettings = try ProtocolSettings(reader: reader)
        queueSettings = try Topology.QueueSettings(reader: reader)
        store = try RedisTaskStore.Settings(reader: reader)
        webhooks = try WebhookSettings(reader: reader)
    }
}
