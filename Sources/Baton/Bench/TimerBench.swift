import AMQPClient
import Foundation
import Logging
import RedisClient
import ServiceLifecycle

/// `baton bench timers`: many sleeping tasks due within the same second, woken by the timer sweep of
/// in-process workers; reports the lateness of their wake-ups (the resumed step's claim minus the due time,
/// both Redis time), verified at the end. While every task sleeps it also measures what they cost the workers:
/// the steps in flight (heartbeats), the bench queue's ready and unacked messages (unacked from `rabbitmqctl` when
/// the broker is the local one of `baton services`), and the process's CPU per second compared with the same
/// workers idle before the submit.
///
/// The run is isolated from anything else on the servers: its tasks live under a Redis key prefix of their
/// own (so only the bench's workers sweep their timers), its agent (``TimerBench/SleeperAgent``) runs on a
/// step queue of its own, and its workers serve that agent only and take in no dead letters.
public struct TimerBench: Sendable {
    /// Sleeps until `until_ms`, then completes with the lateness of its wake-up (`lateness_ms`).
    public struct SleeperAgent: Agent {
        public struct Input: Codable, Sendable {
            public var untilMilliseconds: Int64
            enum CodingKeys: String, CodingKey { case untilMilliseconds = "until_ms" }
        }
        public struct State: Codable, Sendable {}
        public static let name = "bench-timers-sleeper"
        public static let steps = ["sleep", "wake"]
        public static var options: AgentOptions { AgentOptions(queue: "bench.timers") }
        public init() {}
        public func initialState(for input: Input) throws -> State { State() }
        public func run(step: String, context: StepContext<SleeperAgent>) async throws -> StepOutcome {
            if step == "sleep" {
                return .sleep(until: Date(timeIntervalSince1970: Double(context.input.untilMilliseconds) / 1000), then: "wake")
            }
            let lateness = context.wakeup?.lateness ?? .zero
            var trigger = "none"
            if let wakeup = context.wakeup { trigger = wakeup.trigger == .time ? "time" : "other" }
            return .complete(["lateness_ms": .int(Int64(lateness.milliseconds)), "trigger": .string(trigger)])
        }
    }

    public struct Options: Sendable {
        /// Sleeping tasks, all due at the same instant.
        public var tasks = 1000
        /// How far ahead of the submit the common due time lies (every task must be asleep by then).
        public var lead: Duration = .seconds(15)
        public var workers = 1
        public var concurrency = 256
        public init() {}
    }

    public struct Result: Codable, Sendable {
        public var bench = "timers"
        public var tasks: Int
        public var workers: Int
        public var wallSeconds: Double
        /// Lateness of the wake-ups as the resumed step sees it (claimed − due time).
        public var p50Milliseconds: Double
        public var p99Milliseconds: Double
        public var maxMilliseconds: Double
        /// Lateness of the timer alone (the wake committed by the timer sweep − due time).
        public var wakeP50Milliseconds: Double
        public var wakeP99Milliseconds: Double
        /// Tasks not yet asleep when their time came (their lateness is not a timer's).
        public var lateSleepers: Int
        /// While every task slept (measured before the due time): tasks asleep, steps in flight on the workers, the
        /// bench queue's ready and unacked messages (nil when unknown), and the workers' CPU (ms per second) then
        /// and when idle before the submit.
        public var asleepTasks: Int
        public var asleepInFlight: Int
        public var asleepReady: Int?
        public var asleepUnacked: Int?
        public var asleepCPUMillisecondsPerSecond: Double
        public var idleCPUMillisecondsPerSecond: Double
        public var verified: Bool
        public var failures: [String]

        enum CodingKeys: String, CodingKey {
            case bench, tasks, workers
            case wallSeconds = "wall_s"
            case p50Milliseconds = "p50_ms"
            case p99Milliseconds = "p99_ms"
            case maxMilliseconds = "max_ms"
            case wakeP50Milliseconds = "wake_p50_ms"
            case wakeP99Milliseconds = "wake_p99_ms"
            case lateSleepers = "late_sleepers"
            case asleepTasks = "asleep_tasks"
            case asleepInFlight = "asleep_in_flight"
            case asleepReady = "asleep_ready"
            case asleepUnacked = "asleep_unacked"
            case asleepCPUMillisecondsPerSecond = "asleep_cpu_ms_per_s"
            case idleCPUMillisecondsPerSecond = "idle_cpu_ms_per_s"
            case verified, failures
        }
    }

    public let amqpURL: String
    public let redisURL: String
    public let registry: AgentRegistry
    public let logger: Logger

    public init(amqpURL: String, redisURL: String, logger: Logger) {
        self.amqpURL = amqpURL
        self.redisURL = redisURL
        var registry = AgentRegistry()
        registry.register(SleeperAgent())
        self.registry = registry
        self.logger = logger
    }

    public func run(_ options: Options) async throws -> Result {
        let fleet = BenchWorkers(
            name: "timers", amqpURL: amqpURL, redisURL: redisURL, registry: registry, workers: options.workers,
            concurrency: options.concurrency, logger: logger)
        let (runID, store, group, workers) = (fleet.runID, fleet.store, fleet.group, fleet.workers)
        let client = try await BatonClient.connect(amqpURL: amqpURL, redisURL: redisURL, publishing: true, settings: store, logger: logger)
        let keys = client.store.settings.keys

        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            defer { tasks.cancelAll() }
            let ids = Set(workers.map(\.configuration.workerID))
            try await fleet.waitUntilRegistered(client)
            let taskIDs = (0..<options.tasks).map { "bench-timers-\(runID)-\($0)" }
            let idleCPU = try await Self.cpuPerSecond(over: .seconds(2))
            let leadMilliseconds = Int64(options.lead.milliseconds)
            let dueMilliseconds = Int64(Date().timeIntervalSince1970 * 1000) + leadMilliseconds
            let submits = try taskIDs.map { id in
                AMQPMessage(
                    exchange: Topology.submitExchange, routingKey: SleeperAgent.name,
                    body: try JSONCoding.encode(
                        SubmitRequest(id: id, agent: SleeperAgent.name, input: ["until_ms": .int(dueMilliseconds)])),
                    properties: .persistentJSON, mandatory: true)
            }
            guard let channel = client.channel else { throw BatonError(.internalError, "no channel") }
            let start = ContinuousClock.now
            if let failure = try await channel.publish(submits).compactMap({ $0 }).first { throw failure }

            // Every task asleep: what do they cost? (Measured only if there is time left before the due time.)
            var statuses: [String] = []
            var asleep = 0
            var asleepCPU = 0.0
            var inFlight = 0
            var queue: LocalServices.QueueStats?
            var readyCount: Int?
            let measureBy = start + options.lead - .milliseconds(6500)
            while ContinuousClock.now < measureBy {
                let replies = try await client.store.redis.pipeline(taskIDs.map { RedisCommand("HGET", keys.task($0), "status") })
                asleep = replies.filter { $0.string == "sleeping" }.count
                if asleep == taskIDs.count { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            if asleep == taskIDs.count {
                // Their events (submitted, started, sleeping) are still being relayed to baton.events right after
                // they fell asleep: measure once the relay has caught up (at most 3 s), so the figure is the
                // sleepers' own cost, not the tail of their submit.
                let caughtUp = ContinuousClock.now + .seconds(3)
                while ContinuousClock.now < caughtUp {
                    let pending = try await client.store.redis.pipeline(
                        (0..<keys.bucketCount).map { RedisCommand("ZCARD", keys.eventsPending(bucket: $0)) })
                    if pending.allSatisfy({ ($0.int ?? 0) == 0 }) { break }
                    try await Task.sleep(for: .milliseconds(50))
                }
                asleepCPU = try await Self.cpuPerSecond(over: .seconds(2))
                inFlight = try await client.queries.workers().filter { ids.contains($0.id) }.reduce(0) { $0 + Int($1.inFlight) }
                let queueName = Topology.stepsQueue(SleeperAgent.options.queue)
                if let url = try? AMQPConfiguration(url: amqpURL, connectionName: "baton-bench").url,
                    ["127.0.0.1", "localhost", "::1"].contains(url.host)
                {
                    queue = await LocalServices().queueStats(amqpPort: url.port, vhost: url.vhost)?.first { $0.name == queueName }
                }
                readyCount = try? await Int(channel.inspectQueue(queueName).messageCount)
            }

            let deadline = ContinuousClock.now + options.lead + .seconds(120)
            while ContinuousClock.now < deadline {
                let replies = try await client.store.redis.pipeline(taskIDs.map { RedisCommand("HGET", keys.task($0), "status") })
                statuses = replies.map { $0.string ?? "" }
                if statuses.allSatisfy({ TaskView.terminalStatuses.contains($0) }) { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            let wall = (ContinuousClock.now - start).milliseconds / 1000
            await group.triggerGracefulShutdown()

            var failures: [String] = []
            var lateness: [Double] = []
            var wakeLateness: [Double] = []
            var lateSleepers = 0
            for id in taskIDs {
                guard let view = try await client.queries.task(id) else {
                    failures.append("\(id): missing")
                    continue
                }
                guard view.status == "succeeded", let ms = view.result?["lateness_ms"]?.intValue else {
                    failures.append("\(id): \(view.status)")
                    continue
                }
                if view.result?["trigger"]?.stringValue != "time" { failures.append("\(id): woke by \(view.result?.jsonString ?? "?")") }
                let history = try await client.queries.history(id)
                // A task whose sleep was committed after its due time woke inside its commit: not a timer's lateness.
                if let sleeping = history.first(where: { $0.type == "sleeping" }),
                    let at = ISO8601DateFormatter.fractional.date(from: sleeping.at),
                    Int64(at.timeIntervalSince1970 * 1000) > dueMilliseconds
                {
                    lateSleepers += 1
                }
                let woke = history.filter { $0.type == "woke" }
                if woke.count != 1 { failures.append("\(id): woke \(woke.count) times") }
                if let at = woke.first.flatMap({ ISO8601DateFormatter.fractional.date(from: $0.at) }) {
                    wakeLateness.append(Double(Int64(at.timeIntervalSince1970 * 1000) - dueMilliseconds))
                }
                lateness.append(Double(ms))
            }
            try await StepChainBench(amqpURL: amqpURL, redisURL: redisURL, registry: registry, logger: logger).cleanup(
                taskIDs, maxSeq: 2, client: client)
            _ = try await client.store.redis.pipeline(
                [RedisCommand("DEL", keys.workers)] + workers.map { RedisCommand("DEL", keys.worker($0.configuration.workerID)) })
            await client.close()
            let summary = LatencySummary(lateness)
            let wakeSummary = LatencySummary(wakeLateness)
            return Result(
                tasks: options.tasks, workers: workers.count, wallSeconds: wall, p50Milliseconds: summary.p50,
                p99Milliseconds: summary.p99, maxMilliseconds: lateness.max() ?? 0, wakeP50Milliseconds: wakeSummary.p50,
                wakeP99Milliseconds: wakeSummary.p99,
                lateSleepers: lateSleepers, asleepTasks: asleep, asleepInFlight: inFlight, asleepReady: queue?.ready ?? readyCount,
                asleepUnacked: queue?.unacked, asleepCPUMillisecondsPerSecond: asleepCPU, idleCPUMillisecondsPerSecond: idleCPU,
                verified: failures.isEmpty && lateSleepers == 0, failures: Array(failures.prefix(20)))
        }
    }

    /// This process's CPU time (user + system) over `window`, in milliseconds per second.
    static func cpuPerSecond(over window: Duration) async throws -> Double {
        func cpu() -> Double { Double(CPUSample.ownMicros()) / 1000 }
        let before = cpu()
        let start = ContinuousClock.now
        try await Task.sleep(for: window)
        return (cpu() - before) / max(0.001, (ContinuousClock.now - start).milliseconds / 1000)
    }
}
