import AMQPClient
import Foundation
import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

/// `baton worker`: consumes submits and steps, runs them by the step protocol, and runs the leaderless
/// sweeps (timers, outbox, stalled tasks, dead-letter intake). Stateless: run any number.
///
/// An operator's drain request (`baton workers --drain ID`) drains it as SIGTERM does, then ``run()`` returns by
/// itself: in a `ServiceGroup`, give it `successTerminationBehavior: .gracefullyShutdownGroup` (as `baton worker` does).
public final class Worker: Service, Sendable {
    public struct Configuration: Sendable {
        public var amqpURL: String
        public var redisURL: String
        public var workerID: String
        /// Step queues to consume; nil = the queues of every registered agent.
        public var queues: [String]?
        /// Steps run at once.
        public var concurrency = 64
        /// Unacknowledged deliveries per consumer.
        public var prefetch: UInt16 = 128
        /// How long running steps get to finish or yield at SIGTERM before the rest are requeued.
        public var drainTimeout: Duration = .seconds(30)
        public var protocolSettings = ProtocolSettings()
        public var queueSettings = Topology.QueueSettings()
        public var store = RedisTaskStore.Settings()
        public var timerInterval: Duration = .milliseconds(100)
        public var outboxSweepInterval: Duration = .seconds(2)
        /// Outbox entries older than this are re-published by the sweep.
        public var outboxSweepAge: Duration = .seconds(5)
        public var stalledSweepInterval: Duration = .seconds(5)
        /// How long a finished task (succeeded, failed, cancelled, budget_exceeded) is kept before the retention sweep
        /// deletes its keys (`limits.retention`); zero keeps every task forever.
        public var retention: Duration = .seconds(7 * 86_400)
        /// How long a dead letter nobody redrove or discarded is kept before the retention sweep discards it
        /// (`limits.dead_letter_retention`; Sidekiq keeps dead jobs six months); zero keeps them until an operator acts.
        public var deadLetterRetention: Duration = .seconds(180 * 86_400)
        /// How long before a waiting or sleeping task's timer its `waking_soon` event comes (`sweeps.prewarm_lead`), for
        /// whoever pre-warms the task's workspace; only waits longer than this get one. Zero: none.
        public var prewarmLead: Duration = .seconds(60)
        /// How often finished tasks past their retention are looked for (`sweeps.retention_interval`).
        public var retentionSweepInterval: Duration = .seconds(60)
        public var heartbeatInterval: Duration = .seconds(2)
        /// Whether this worker consumes `baton.dead` into Redis.
        public var deadLetterIntake = true
        /// Webhook delivery (signing secret, retry schedule, allowed private hosts).
        public var webhooks = WebhookSettings()

        public init(amqpURL: String, redisURL: String, workerID: String = Worker.defaultID()) {
            self.amqpURL = amqpURL
            self.redisURL = redisURL
            self.workerID = workerID
        }
    }

    public let configuration: Configuration
    public let registry: AgentRegistry
    let logger: Logger
    let inFlightCount = Atomic<Int>(0)
    let consuming = Atomic<Bool>(false)
    /// Set once the drain began (SIGTERM or a drain request), so it begins once.
    let drainBegan = Atomic<Bool>(false)

    /// Whether the worker consumes (its consumers started and it does not drain): `/readyz` of `baton worker --http`.
    public var isReady: Bool { consuming.load(ordering: .relaxed) }

    public init(configuration: Configuration, registry: AgentRegistry, logger: Logger) {
        self.configuration = configuration
        self.registry = registry
        var logger = logger
        logger[metadataKey: "worker.id"] = "\(configuration.workerID)"
        self.logger = logger
    }

    /// `host-pid-random`.
    public static func defaultID() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        return "\(host)-\(getpid())-\(TaskID.hex(UInt64.random(in: 0..<(1 << 24)), width: 6))"
    }

    var stepQueues: [String] { configuration.queues ?? registry.queues }

    public func run() async throws {
        let redis = try await RedisConnection.connect(configuration: try RedisConfiguration(url: configuration.redisURL), logger: logger)
        var consumeConfig = try AMQPConfiguration(url: configuration.amqpURL, connectionName: "baton-worker \(configuration.workerID)")
        consumeConfig.heartbeat = .seconds(30)
        let consumeConnection = try await AMQPConnection.connect(consumeConfig, logger: logger)
        // One connection for consuming and publishing: a step's next message is published and its delivery
        // acked on the same connection thread when the confirm arrives (the late ack, with no task waiting).
        let publishConnection = consumeConnection
        defer {
            let redis = redis
            Task {
                await consumeConnection.close()
                await redis.close()
            }
        }
        let declareChannel = try await publishConnection.openChannel()
        try await Topology.declare(on: declareChannel, agents: registry.names, queues: stepQueues, settings: configuration.queueSettings)
        try await declareChannel.close()

        let publishChannel = try await publishConnection.openChannel(confirms: true)
        let store = RedisTaskStore(redis: redis, settings: configuration.store)
        let bus = AMQPBus(channel: publishChannel)
        let executor = StepExecutor(
            registry: registry, store: store, bus: bus, workerID: configuration.workerID, settings: configuration.protocolSettings,
            logger: logger)
        let limiter = AsyncLimiter(limit: configuration.concurrency)
        // Events go on a confirm channel of their own: a relay batch never queues ahead of a step's publish.
        let eventsChannel = try await publishConnection.openChannel(confirms: true)
        let sweeps = Sweeps(
            store: store, executor: executor, configuration: configuration, logger: logger, eventsBus: AMQPBus(channel: eventsChannel))
        try await sweeps.heartbeat(inFlight: 0)
        BatonMetrics.prime(agents: registry.names, queues: stepQueues.map(Topology.stepsQueue), worker: configuration.workerID)
        logger.info(
            "worker started",
            metadata: [
                "agents": "\(registry.names.joined(separator: ","))", "queues": "\(stepQueues.joined(separator: ","))",
                "concurrency": "\(configuration.concurrency)", "allocator": "\(Self.allocator)",
            ])

        var consumers: [AMQPConsumer] = []
        let consumeChannel = try await consumeConnection.openChannel(prefetch: configuration.prefetch)
        for queue in stepQueues {
            consumers.append(try await consumeChannel.consume(queue: Topology.stepsQueue(queue)))
        }
        let submitChannel = try await consumeConnection.openChannel(prefetch: 32)
        var submitConsumers: [AMQPConsumer] = []
        for agent in registry.names {
            submitConsumers.append(try await submitChannel.consume(queue: Topology.submitQueue(agent: agent)))
        }
        submitConsumers.append(try await submitChannel.consume(queue: Topology.unroutedQueue))
        var deadConsumer: AMQPConsumer? = nil
        if configuration.deadLetterIntake {
            let deadChannel = try await consumeConnection.openChannel(prefetch: 32)
            deadConsumer = try await deadChannel.consume(queue: Topology.deadQueue)
        }
        let signalChannel = try await consumeConnection.openChannel(prefetch: 32)
        let signalConsumer = try await signalChannel.consume(queue: Topology.signalsQueue)
        let allConsumers = consumers + submitConsumers + [signalConsumer] + (deadConsumer.map { [$0] } ?? [])

        consuming.store(true, ordering: .relaxed)
        // SIGTERM (graceful shutdown) and an operator's drain request (`baton workers --drain ID`, seen by the
        // heartbeat) drain the same way: no new deliveries, running steps finish or yield, then the worker exits.
        let beginDrain: @Sendable (String) -> Void = { cause in
            guard !self.drainBegan.exchange(true, ordering: .relaxed) else { return }
            self.consuming.store(false, ordering: .relaxed)
            self.logger.info(
                "draining: no new deliveries; running steps may finish or yield",
                metadata: ["drain.timeout": "\(self.configuration.drainTimeout)", "drain.cause": "\(cause)"])
            executor.beginDrain()
            sweeps.stop()
            Task {
                for consumer in allConsumers { try? await consumer.cancel() }
            }
        }
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for consumer in consumers {
                    group.addTask { await self.consumeSteps(consumer, executor: executor, limiter: limiter, publish: publishChannel) }
                }
                for consumer in submitConsumers {
                    group.addTask { await self.consumeSubmits(consumer, executor: executor, publish: publishChannel) }
                }
                group.addTask { await self.consumeSignals(signalConsumer, executor: executor, store: store, publish: publishChannel) }
                if let deadConsumer {
                    group.addTask { await DeadLetterIntake(store: store, logger: self.logger).consume(deadConsumer) }
                }
                group.addTask {
                    await sweeps.run(inFlight: { limiter.inFlight }, onDrainRequest: { beginDrain("drain request \($0)") })
                }
            }
        } onGracefulShutdown: {
            beginDrain("graceful shutdown")
        }
        // Consumers ended: wait for running steps up to the drain timeout.
        let deadline = ContinuousClock.now + configuration.drainTimeout
        while limiter.inFlight > 0 && ContinuousClock.now < deadline && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
        }
        if limiter.inFlight > 0 {
            logger.warning("drain timeout: \(limiter.inFlight) steps still running are left to redelivery (their leases are released)")
        }
        try? await sweeps.deregister()
        logger.info("worker stopped")
    }

    /// Consumes one step queue a batch at a time (the deliveries the consumer had buffered): each batch is
    /// claimed and committed in few round trips (``StepExecutor/handleSteps(_:settle:)``), its steps run
    /// concurrently (bounded by the limiter), and each delivery is settled once its effect is committed and
    /// its outbox confirmed.
    func consumeSteps(_ consumer: AMQPConsumer, executor: StepExecutor, limiter: AsyncLimiter, publish: AMQPChannel) async {
        let claiming = AsyncLimiter(limit: Self.claimsInFlight)
        await withDiscardingTaskGroup { group in
            for await batch in consumer.batches {
                var taken: [AMQPDelivery] = []
                func start(_ deliveries: [AMQPDelivery], claimed: @escaping @Sendable () -> Void = {}) {
                    group.addTask {
                        await executor.handleSteps(
                            deliveries.map {
                                StepDelivery(
                                    body: $0.body, routingKey: $0.routingKey, redelivered: $0.redelivered,
                                    settlement: AMQPSettlement(channel: publish, delivery: $0),
                                    publishedAtSeconds: $0.properties.timestamp)
                            },
                            claimed: claimed,
                            settle: { index, disposition in
                                await self.settle(deliveries[index], disposition, channel: consumer.channel, publish: publish)
                                limiter.release()
                            })
                    }
                }
                for delivery in batch {
                    if !limiter.tryAcquire() {
                        // Full: start what is taken, then wait for a slot (never hold slots while waiting).
                        if !taken.isEmpty { start(taken) }
                        taken = []
                        await limiter.acquire()
                    }
                    taken.append(delivery)
                }
                // At most `claimsInFlight` batches wait for their claims at once: what arrives meanwhile is
                // batched, so batches (and their round trips) stay big.
                if !taken.isEmpty {
                    await claiming.acquire()
                    start(taken, claimed: { claiming.release() })
                }
            }
        }
    }

    /// Batches of one consumer whose claims may be in flight at once.
    static let claimsInFlight = 2

    func settle(_ delivery: AMQPDelivery, _ disposition: Disposition, channel: AMQPChannel, publish: AMQPChannel) async {
        switch disposition {
        case .settled:
            return
        case .ack:
            try? await channel.ack(delivery)
        case .requeue(let why):
            logger.warning("requeueing a delivery: \(why)")
            try? await Task.sleep(for: .seconds(1))
            try? await channel.nack(delivery, requeue: true)
        case .deadLetter(let letter):
            let results = await AMQPBus(channel: publish).publish([letter.message])
            if results.first.map({ $0 == nil }) ?? false {
                BatonMetrics.deadLettered(letter.agent ?? "", letter.reason).increment()
                logger.warning("dead-lettered a message", metadata: ["reason": "\(letter.reason)", "error": "\(letter.error)"])
                try? await channel.ack(delivery)
            } else {
                try? await channel.nack(delivery, requeue: true)
            }
        }
    }

    /// Consumes `baton.signals`: each valid signal goes to its task's mailbox (waking the task when it waits
    /// for it); an invalid one, or one no task can take, is dead-lettered with a reason naming the field.
    func consumeSignals(_ consumer: AMQPConsumer, executor: StepExecutor, store: RedisTaskStore, publish: AMQPChannel) async {
        for await delivery in consumer.deliveries {
            var letter: (reason: String, error: String, field: String?)?
            do {
                try JSONCoding.checkContentType(delivery.properties.contentType, what: "the signal")
                let request = try SignalRequest.decode(delivery.body)
                let outcome = try await store.signal(request.taskSignal(fallbackActor: "amqp:\(Topology.signalsExchange)"))
                switch outcome {
                case .woke: await executor.flushOutbox(task: request.taskID)
                case .stored, .duplicate: break
                case .notFound:
                    letter = ("permanent_error", "the signal names task '\(request.taskID)', which does not exist", "task_id")
                case .terminal(let status):
                    letter = (
                        "permanent_error", "the signal's task '\(request.taskID)' already ended (\(status)): no signal can change it",
                        "task_id"
                    )
                case .mailboxFull(let cap):
                    letter = (
                        "oversized",
                        "the signal mailbox of task '\(request.taskID)' holds \(cap) signals it does not wait for (the cap): the signal was refused",
                        "task_id"
                    )
                }
            } catch let error as BatonError {
                letter = (error.code == .oversized ? "oversized" : "malformed", error.message, error.field)
            } catch {
                logger.warning("signal not taken (will be redelivered)", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
                try? await consumer.channel.nack(delivery, requeue: true)
                continue
            }
            if let letter {
                let dead = DeadLetter(
                    reason: letter.reason, error: letter.error, field: letter.field, task: nil, worker: configuration.workerID,
                    body: String(decoding: delivery.body.prefix(1 << 20), as: UTF8.self), routingKey: "signal")
                let results = await AMQPBus(channel: publish).publish([dead.message])
                if results.first.map({ $0 != nil }) ?? true {
                    try? await consumer.channel.nack(delivery, requeue: true)
                    continue
                }
                BatonMetrics.deadLettered("", letter.reason).increment()
                logger.warning("dead-lettered a signal", metadata: ["reason": "\(letter.reason)", "error": "\(letter.error)"])
            }
            try? await consumer.channel.ack(delivery)
        }
    }

    /// Consumes submits (and the unrouted ones): create the task, reply, ack; invalid ones are dead-lettered
    /// with their reason and replied to.
    func consumeSubmits(_ consumer: AMQPConsumer, executor: StepExecutor, publish: AMQPChannel) async {
        // The submits buffered together are taken in concurrently: their Redis calls and publishes coalesce.
        for await batch in consumer.batches {
            await withDiscardingTaskGroup { group in
                for delivery in batch {
                    group.addTask { await self.takeSubmit(delivery, consumer: consumer, executor: executor, publish: publish) }
                }
            }
        }
    }

    /// Takes in one submit: creates the task (or finds it), replies, acks; an invalid one is dead-lettered
    /// with its reason and replied to.
    func takeSubmit(_ delivery: AMQPDelivery, consumer: AMQPConsumer, executor: StepExecutor, publish: AMQPChannel) async {
        var reply: JSONValue
        var letter: DeadLetter? = nil
        do {
            try JSONCoding.checkContentType(delivery.properties.contentType, what: "the submit")
            let taken = try await executor.take(body: delivery.body)
            var fields: [String: JSONValue] = ["v": 1, "task_id": .string(taken.id), "status": .string(taken.status)]
            if let warning = taken.warning { fields["warning"] = .string(warning) }
            reply = .object(fields)
        } catch let error as BatonError {
            let reason =
                switch error.code {
                case .unknownAgent: "unknown_agent"
                case .oversized: "oversized"
                default: "malformed"
                }
            reply = [
                "v": 1,
                "error": [
                    "code": .string(reason), "message": .string(error.message), "field": error.field.map(JSONValue.string) ?? .null,
                ],
            ]
            letter = DeadLetter(
                reason: reason, error: error.message, field: error.field, worker: configuration.workerID,
                body: String(decoding: delivery.body.prefix(1 << 20), as: UTF8.self), routingKey: "submit." + delivery.routingKey)
        } catch {
            logger.warning("submit not taken (will be redelivered)", metadata: ["error": "\(error)"])
            try? await Task.sleep(for: .seconds(1))
            try? await consumer.channel.nack(delivery, requeue: true)
            return
        }
        var out: [OutboxMessage] = []
        if let letter { out.append(letter.message) }
        if let replyTo = delivery.properties.replyTo, !replyTo.isEmpty {
            var message = OutboxMessage(exchange: "", routingKey: replyTo, body: reply.jsonString)
            if let correlation = delivery.properties.correlationID { message.headers["x-correlation-id"] = correlation }
            out.append(message)
        }
        if !out.isEmpty {
            let messages = out.map { message -> AMQPMessage in
                var properties = AMQPProperties.persistentJSON
                if message.exchange == "" {
                    properties.correlationID = delivery.properties.correlationID
                } else {
                    properties.headers = message.headers.mapValues { AMQPFieldValue.string($0) }
                }
                return AMQPMessage(
                    exchange: message.exchange, routingKey: message.routingKey, body: Array(message.body.utf8), properties: properties)
            }
            let results = (try? await publish.publish(messages)) ?? messages.map { _ in nil }
            if letter != nil, results.first.map({ $0 != nil }) ?? true {
                try? await consumer.channel.nack(delivery, requeue: true)
                return
            }
            if let letter { BatonMetrics.deadLettered("", letter.reason).increment() }
        }
        try? await consumer.channel.ack(delivery)
    }

    /// The allocator this process runs on, for the start-up log line: "jemalloc" when `libjemalloc` is mapped (the
    /// `baton` executable preloads it, see its `Allocator`), else "system".
    static var allocator: String {
        // Read to the end: procfs files report a size of 0, so a read of "the whole file" by its size gets nothing.
        guard let file = FileHandle(forReadingAtPath: "/proc/self/maps"), let data = try? file.readToEnd() else { return "system" }
        try? file.close()
        return String(decoding: data, as: UTF8.self).contains("libjemalloc") ? "jemalloc" : "system"
    }
}
