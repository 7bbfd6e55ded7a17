import AMQPClient
import Foundation
import Logging
import RedisClient
import ServiceLifecycle

/// `baton bench idle`: what waiting tasks cost. N tasks are submitted that each wait for a signal with a long timeout
/// (the example `approval` agent's wait), and once all of them wait the bench measures Redis's memory per waiting
/// task (`INFO memory` before and after, and `MEMORY USAGE` of one task's keys plus its share of the run's index and
/// timer keys as a cross-check), the step queue's messages (a waiting task holds none) and the CPU of the workers,
/// Redis and the broker over a quiet window. Then it deletes every key of the run.
///
/// The run is isolated like ``TimerBench``: its tasks live under a Redis key prefix of their own (so only the bench's
/// workers sweep their timers, and the cleanup is a delete of the prefix's keys, never a flush), its agent
/// (``IdleBench/ApprovalAgent``) runs on a step queue of its own, and its workers run in the bench's process.
public struct IdleBench: Sendable {
    /// The example `approval` agent's first step under a name and queue of the bench's own: it waits for `approve` or
    /// `reject` or a timeout (a signal wait with a timer), then completes with which one fired.
    public struct ApprovalAgent: Agent {
        public struct Input: Codable, Sendable {
            public var timeoutSeconds: Double
            enum CodingKeys: String, CodingKey { case timeoutSeconds = "timeout_seconds" }
        }
        public struct State: Codable, Sendable {
            public var requested = false
        }
        public static let name = "bench-idle-approval"
        public static let steps = ["request", "decide"]
        public static var options: AgentOptions { AgentOptions(queue: "bench.idle") }
        public init() {}
        public func initialState(for input: Input) throws -> State { State() }
        public func run(step: String, context: StepContext<ApprovalAgent>) async throws -> StepOutcome {
            if step == "request" {
                context.state.requested = true
                let timeout = Duration.milliseconds(Int64(context.input.timeoutSeconds * 1000))
                return .wait(for: [.signal("approve"), .signal("reject"), .timeout(timeout)], then: "decide")
            }
            var decision = "timeout"
            if case .signal(let name, _, _) = context.wakeup?.trigger { decision = name }
            return .complete(["decision": .string(decision)])
        }
    }

    public struct Options: Sendable {
        /// Waiting tasks.
        public var tasks = 100_000
        /// The quiet window over which CPU is measured while every task waits.
        public var window: Duration = .seconds(30)
        public var workers = 1
        public var concurrency = 256
        /// The waits' timeout (far beyond the run: no timer fires while it is measured).
        public var timeout: Duration = .seconds(86_400)
        public init() {}
    }

    /// One Redis key: its name relative to the task's (or the run's) key base, its type and encoding, `MEMORY USAGE`.
    public struct KeyUsage: Codable, Sendable, Hashable {
        public var key: String
        public var type: String
        public var encoding: String
        public var bytes: Int
    }

    public struct Result: Codable, Sendable {
        public var bench = "idle"
        public var tasks: Int
        public var workers: Int
        /// Tasks in the run's `waiting` index when measured.
        public var waiting: Int
        /// Submit → every task waiting.
        public var settleSeconds: Double
        public var usedMemoryBefore: Int
        public var usedMemoryAfter: Int
        /// (after − before) / tasks.
        public var bytesPerTask: Double
        /// The keys of one waiting task (`MEMORY USAGE … SAMPLES 0`), named after the task's key base.
        public var taskKeys: [KeyUsage]
        /// The run's keys shared by its tasks (indexes, timers, …), named after the run's prefix.
        public var sharedKeys: [KeyUsage]
        /// One task's keys plus its share of the shared keys: the cross-check of `bytesPerTask`.
        public var accountedBytesPerTask: Double
        /// The step queue's messages and the workers' steps in flight while every task waits (nil: unknown).
        public var queueReady: Int?
        public var queueUnacked: Int?
        public var inFlight: Int
        public var windowSeconds: Double
        /// CPU in ms per second over the window while every task waited, and over a window of the same workers idle
        /// before the submit.
        public var workerCPUMillisecondsPerSecond: Double
        public var redisCPUMillisecondsPerSecond: Double
        public var brokerCPUMillisecondsPerSecond: Double
        public var idleWorkerCPUMillisecondsPerSecond: Double
        public var idleRedisCPUMillisecondsPerSecond: Double
        public var idleBrokerCPUMillisecondsPerSecond: Double
        /// `bytesPerTask` × 10 million.
        public var bytesFor10Million: Double
        /// Keys deleted at the end, and keys of the run's prefix left afterwards (0 when clean).
        public var deletedKeys: Int
        public var leftoverKeys: Int
        /// The Redis key prefix of the run (every key of it is deleted at the end).
        public var keyPrefix = ""
        public var verified: Bool
        public var failures: [String]

        enum CodingKeys: String, CodingKey {
            case bench, tasks, workers, waiting
            case settleSeconds = "settle_s"
            case usedMemoryBefore = "used_memory_before"
            case usedMemoryAfter = "used_memory_after"
            case bytesPerTask = "bytes_per_task"
            case taskKeys = "task_keys"
            case sharedKeys = "shared_keys"
            case accountedBytesPerTask = "accounted_bytes_per_task"
            case queueReady = "queue_ready"
            case queueUnacked = "queue_unacked"
            case inFlight = "in_flight"
            case windowSeconds = "window_s"
            case workerCPUMillisecondsPerSecond = "worker_cpu_ms_per_s"
            case redisCPUMillisecondsPerSecond = "redis_cpu_ms_per_s"
            case brokerCPUMillisecondsPerSecond = "broker_cpu_ms_per_s"
            case idleWorkerCPUMillisecondsPerSecond = "idle_worker_cpu_ms_per_s"
            case idleRedisCPUMillisecondsPerSecond = "idle_redis_cpu_ms_per_s"
            case idleBrokerCPUMillisecondsPerSecond = "idle_broker_cpu_ms_per_s"
            case bytesFor10Million = "bytes_for_10m"
            case deletedKeys = "deleted_keys"
            case leftoverKeys = "leftover_keys"
            case keyPrefix = "key_prefix"
            case verified, failures
        }
    }

    public let amqpURL: String
    public let redisURL: String
    public let registry: AgentRegistry
    public let logger: Logger
    var brokerPort: Int? { (try? AMQPURL(amqpURL))?.port }
    var redisPort: Int? { (try? RedisURL(parsing: redisURL))?.port }

    public init(amqpURL: String, redisURL: String, logger: Logger) {
        self.amqpURL = amqpURL
        self.redisURL = redisURL
        var registry = AgentRegistry()
        registry.register(ApprovalAgent())
        self.registry = registry
        self.logger = logger
    }

    public func run(_ options: Options) async throws -> Result {
        let fleet = BenchWorkers(
            name: "idle", amqpURL: amqpURL, redisURL: redisURL, registry: registry, workers: options.workers,
            concurrency: options.concurrency, logger: logger)
        let (runID, store, group, workers) = (fleet.runID, fleet.store, fleet.group, fleet.workers)
        let client = try await BatonClient.connect(amqpURL: amqpURL, redisURL: redisURL, publishing: true, settings: store, logger: logger)
        let keys = client.store.settings.keys
        let redis = client.store.redis
        // Ids of the shape Baton generates for a submit without one (TaskID.generate: 22 hex digits), unique in the run:
        // the run's milliseconds, then a counter. Every key of a task and several of its values carry its id, so the
        // memory per task is that of production tasks (a 36-character client id costs about 100 bytes more per task).
        let taskIDs = (0..<options.tasks).map { String(runID.prefix(12)) + TaskID.hex(UInt64($0), width: 10) }

        let measured: Result
        do {
            measured = try await withThrowingTaskGroup(of: Void.self) { running in
                running.addTask { try await group.run() }
                defer { running.cancelAll() }
                let ids = Set(workers.map(\.configuration.workerID))
                try await fleet.waitUntilRegistered(client)
                let baseline = try await cpuPerSecond(over: min(options.window, .seconds(10)))
                let before = try await usedMemory(redis)

                // Submit in chunks (one confirmed publish of 100,000 messages would hold them all in memory at once).
                let start = ContinuousClock.now
                guard let channel = client.channel else { throw BatonError(.internalError, "no channel") }
                let input: JSONValue = ["timeout_seconds": .int(Int64(options.timeout.milliseconds / 1000))]
                for chunk in stride(from: 0, to: taskIDs.count, by: 2000) {
                    let submits = try taskIDs[chunk..<min(taskIDs.count, chunk + 2000)].map { id in
                        AMQPMessage(
                            exchange: Topology.submitExchange, routingKey: ApprovalAgent.name,
                            body: try JSONCoding.encode(SubmitRequest(id: id, agent: ApprovalAgent.name, input: input)),
                            properties: .persistentJSON, mandatory: true)
                    }
                    if let failure = try await channel.publish(submits).compactMap({ $0 }).first { throw failure }
                }

                // Every task waiting (the run's status index), and nothing left to relay or publish.
                var waiting = 0
                var progressAt = ContinuousClock.now
                while true {
                    let count = try await indexCount(redis, keys: keys, status: "waiting")
                    if count > waiting { progressAt = ContinuousClock.now }
                    waiting = count
                    if waiting >= taskIDs.count { break }
                    if ContinuousClock.now - progressAt > .seconds(60) {
                        throw BatonError(
                            .internalError,
                            "only \(waiting) of \(taskIDs.count) tasks were waiting, none more for 60 s: see the workers' log")
                    }
                    try await Task.sleep(for: .milliseconds(200))
                }
                let settle = (ContinuousClock.now - start).milliseconds / 1000
                let drained = ContinuousClock.now + .seconds(60)
                while ContinuousClock.now < drained {
                    let pending = try await redis.pipeline(
                        (0..<keys.bucketCount).flatMap {
                            [RedisCommand("ZCARD", keys.eventsPending(bucket: $0)), RedisCommand("ZCARD", keys.outboxIndex(bucket: $0))]
                        })
                    if pending.allSatisfy({ ($0.int ?? 0) == 0 }) { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                try await Task.sleep(for: .seconds(1))
                let after = try await usedMemory(redis)

                // The quiet window, then what the waiting tasks hold (after the window: rabbitmqctl costs broker CPU).
                let cpu = try await cpuPerSecond(over: options.window)
                let inFlight = try await client.queries.workers().filter { ids.contains($0.id) }.reduce(0) { $0 + Int($1.inFlight) }
                let queueName = Topology.stepsQueue(ApprovalAgent.options.queue)
                var ready = try? await Int(channel.inspectQueue(queueName).messageCount)
                var unacked: Int?
                if let url = try? AMQPConfiguration(url: amqpURL, connectionName: "baton-bench").url,
                    ["127.0.0.1", "localhost", "::1"].contains(url.host),
                    let stats = await LocalServices().queueStats(amqpPort: url.port, vhost: url.vhost)?.first(where: {
                        $0.name == queueName
                    })
                {
                    ready = stats.ready
                    unacked = stats.unacked
                }
                let taskKeys = try await usage(
                    of: try await scan(redis, match: Self.globEscaped(keys.of(taskIDs[0]).base) + "*"),
                    relativeTo: keys.of(taskIDs[0]).base,
                    redis: redis)
                let sharedKeys = try await usage(
                    of: try await scan(redis, match: Self.globEscaped(keys.prefix) + "[^{]*"), relativeTo: keys.prefix, redis: redis)
                await group.triggerGracefulShutdown()

                var failures: [String] = []
                if waiting != taskIDs.count { failures.append("\(waiting) of \(taskIDs.count) tasks waiting") }
                if (ready ?? 0) != 0 || (unacked ?? 0) != 0 {
                    failures.append("the step queue held messages while every task waited: ready \(ready ?? 0), unacked \(unacked ?? 0)")
                }
                if inFlight != 0 { failures.append("\(inFlight) steps in flight while every task waited") }
                let perTask = Double(after - before) / Double(max(1, taskIDs.count))
                let accounted =
                    Double(taskKeys.reduce(0) { $0 + $1.bytes })
                    + Double(sharedKeys.filter { !$0.key.hasPrefix("worker") }.reduce(0) { $0 + $1.bytes }) / Double(max(1, taskIDs.count))
                return Result(
                    tasks: taskIDs.count, workers: workers.count, waiting: waiting, settleSeconds: settle, usedMemoryBefore: before,
                    usedMemoryAfter: after, bytesPerTask: perTask, taskKeys: taskKeys, sharedKeys: sharedKeys,
                    accountedBytesPerTask: accounted, queueReady: ready, queueUnacked: unacked, inFlight: inFlight,
                    windowSeconds: options.window.milliseconds / 1000, workerCPUMillisecondsPerSecond: cpu.worker,
                    redisCPUMillisecondsPerSecond: cpu.redis, brokerCPUMillisecondsPerSecond: cpu.broker,
                    idleWorkerCPUMillisecondsPerSecond: baseline.worker, idleRedisCPUMillisecondsPerSecond: baseline.redis,
                    idleBrokerCPUMillisecondsPerSecond: baseline.broker, bytesFor10Million: perTask * 10_000_000, deletedKeys: 0,
                    leftoverKeys: 0, verified: failures.isEmpty, failures: failures)
            }
        } catch {
            _ = try? await cleanup(taskIDs, keys: keys, redis: redis)
            await client.close()
            throw error
        }
        var result = measured
        result.keyPrefix = keys.prefix
        (result.deletedKeys, result.leftoverKeys) = try await cleanup(taskIDs, keys: keys, redis: redis)
        if result.leftoverKeys != 0 {
            result.failures.append("\(result.leftoverKeys) keys of the run's prefix '\(keys.prefix)' were left after the cleanup")
            result.verified = false
        }
        await client.close()
        return result
    }

    /// Deletes every key of the run: each task's keys by name, then whatever else carries the run's prefix (its indexes,
    /// timers and workers). Returns the keys deleted and the keys of the prefix left afterwards.
    func cleanup(_ ids: [String], keys: RedisKeys, redis: RedisConnection) async throws -> (deleted: Int, left: Int) {
        var deleted = 0
        for chunk in stride(from: 0, to: ids.count, by: 1000) {
            let commands = ids[chunk..<min(ids.count, chunk + 1000)].map { id in
                let k = keys.of(id)
                return RedisCommand(
                    "DEL", k.task, k.budget, k.events, k.outbox, k.effects, k.chargedEffects, k.signals, k.signalsSeen, k.children,
                    k.checkpointPrefix + "0", k.checkpointPrefix + "1", k.checkpointPrefix + "2")
            }
            deleted += try await redis.pipeline(commands).reduce(0) { $0 + ($1.int ?? 0) }
        }
        let pattern = Self.globEscaped(keys.prefix) + "*"
        let rest = try await scan(redis, match: pattern)
        for chunk in stride(from: 0, to: rest.count, by: 500) {
            deleted += try await redis.send(RedisCommand("DEL", arguments: Array(rest[chunk..<min(rest.count, chunk + 500)]))).int ?? 0
        }
        return (deleted, try await scan(redis, match: pattern).count)
    }

    /// `SCAN` of the whole keyspace for the keys matching `pattern` (never `KEYS`: it blocks Redis meanwhile).
    func scan(_ redis: RedisConnection, match pattern: String) async throws -> [String] {
        var cursor = "0"
        var found: [String] = []
        repeat {
            let reply = try await redis.send(RedisCommand("SCAN", cursor, "MATCH", pattern, "COUNT", 5000))
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string else {
                throw BatonError(.internalError, "unexpected SCAN reply: \(reply)")
            }
            cursor = next
            found += (parts[1].array ?? []).compactMap(\.string)
        } while cursor != "0"
        return found
    }

    /// Type, encoding and `MEMORY USAGE` of each key, named relative to `base`, largest first.
    func usage(of names: [String], relativeTo base: String, redis: RedisConnection) async throws -> [KeyUsage] {
        let replies = try await redis.pipeline(
            names.flatMap {
                [RedisCommand("TYPE", $0), RedisCommand("OBJECT", "ENCODING", $0), RedisCommand("MEMORY", "USAGE", $0, "SAMPLES", 0)]
            })
        return names.enumerated().map { index, name in
            KeyUsage(
                key: name.hasPrefix(base) ? String(name.dropFirst(base.count)) : name, type: replies[3 * index].string ?? "?",
                encoding: replies[3 * index + 1].string ?? "?", bytes: replies[3 * index + 2].int ?? 0)
        }.sorted { $0.bytes > $1.bytes }
    }

    func indexCount(_ redis: RedisConnection, keys: RedisKeys, status: String) async throws -> Int {
        try await redis.pipeline((0..<keys.bucketCount).map { RedisCommand("ZCARD", keys.index(bucket: $0, status: status)) })
            .reduce(0) { $0 + ($1.int ?? 0) }
    }

    func usedMemory(_ redis: RedisConnection) async throws -> Int {
        let info = try await redis.send(RedisCommand("INFO", "memory")).string ?? ""
        for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("used_memory:") {
            if let value = Int(line.dropFirst("used_memory:".count)) { return value }
        }
        throw BatonError(.internalError, "INFO memory has no used_memory")
    }

    /// CPU of this process (the bench's workers; the bench itself only sleeps meanwhile), Redis and the broker over
    /// `window`, in ms per second.
    func cpuPerSecond(over window: Duration) async throws -> (worker: Double, redis: Double, broker: Double) {
        let before = CPUSample.now(brokerPort: brokerPort, redisPort: redisPort)
        let start = ContinuousClock.now
        try await Task.sleep(for: window)
        let cpu = CPUSample.now(brokerPort: brokerPort, redisPort: redisPort) - before
        let seconds = max(0.001, (ContinuousClock.now - start).milliseconds / 1000)
        return (
            Double(cpu.selfMicros) / 1000 / seconds, Double(cpu.redisMicros) / 1000 / seconds, Double(cpu.brokerMicros) / 1000 / seconds
        )
    }

    /// `text` with Redis glob's special characters escaped.
    static func globEscaped(_ text: String) -> String {
        var out = ""
        for character in text {
            if "*?[]\\^".contains(character) { out.append("\\") }
            out.append(character)
        }
        return out
    }
}
