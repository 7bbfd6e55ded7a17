import AMQPClient
import Foundation
import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

/// `baton bench latency`: the step transition of ONE step chain (T = 1: one task in flight at any time, so nothing
/// queues and every figure is the protocol's own latency). Chains of `steps` steps (the `stepchain` workload) run one
/// after another until `hops` steps ran; each is verified.
///
/// Two measures of the same transition:
/// - **commit → commit (Redis time)**, the definition of `baton bench stepchain`: the interval between one task's
///   consecutive `submitted`, `step_committed` and `succeeded` events, stamped by the scripts from Redis `TIME` in
///   whole milliseconds;
/// - **step → step (worker clock)**: the interval between the starts of one task's consecutive steps in the worker
///   (the agent reads a monotonic clock as it begins), microsecond-precise; the hop in between is the commit of
///   step n, the publish of step n + 1 with its confirm, its delivery and its claim.
public struct LatencyBench: Sendable {
    /// The `stepchain` example agent's step (append a record of `record_bytes`, charge `tokens_per_step` tokens and
    /// `cost_usd_per_step` dollars, hand off to itself until `steps`) under a name and queue of the bench's own, that
    /// also notes when each step begins.
    public struct ChainAgent: Agent {
        public struct Input: Codable, Sendable {
            public var steps: Int
            public var recordBytes: Int
            public var tokensPerStep: Int64
            public var costUSDPerStep: Double
            enum CodingKeys: String, CodingKey {
                case steps
                case recordBytes = "record_bytes"
                case tokensPerStep = "tokens_per_step"
                case costUSDPerStep = "cost_usd_per_step"
            }
        }
        public struct State: Codable, Sendable {
            public var records: [String] = []
        }
        public static let name = "bench-latency-stepchain"
        public static let steps = ["append"]
        public static var options: AgentOptions { AgentOptions(queue: "bench.latency") }
        let clock: StepClock
        init(clock: StepClock) { self.clock = clock }
        public func initialState(for input: Input) throws -> State { State() }
        public func run(step: String, context: StepContext<ChainAgent>) async throws -> StepOutcome {
            clock.note(task: context.taskID, seq: context.seq)
            let n = context.state.records.count + 1
            let input = context.input
            try await context.charge(costUSD: input.costUSDPerStep, tokens: input.tokensPerStep)
            let prefix = "\(n):"
            context.state.records.append(prefix + String(repeating: "x", count: max(0, input.recordBytes - prefix.utf8.count)))
            clock.noteEnd(task: context.taskID, seq: context.seq)
            if n >= input.steps { return .complete(["records": .int(Int64(context.state.records.count))]) }
            return .next("append")
        }
    }

    /// When each step began, by task and seq (the first note of a seq wins: a redelivered step does not move it).
    final class StepClock: Sendable {
        let starts = Mutex<[String: [Int64: ContinuousClock.Instant]]>([:])
        /// How long each step's own code ran (start → return), by task and seq.
        let durations = Mutex<[String: [Int64: Double]]>([:])
        func noteEnd(task: String, seq: Int64) {
            let now = ContinuousClock.now
            guard let start = starts.withLock({ $0[task]?[seq] }) else { return }
            durations.withLock { $0[task, default: [:]][seq] = (now - start).milliseconds }
        }
        func note(task: String, seq: Int64) {
            let now = ContinuousClock.now
            starts.withLock { all in
                if all[task, default: [:]][seq] == nil { all[task, default: [:]][seq] = now }
            }
        }
        func intervals(_ task: String) -> [Double] {
            let steps = starts.withLock { $0[task] ?? [:] }.sorted { $0.key < $1.key }
            return zip(steps, steps.dropFirst()).compactMap { a, b in b.key == a.key + 1 ? (b.value - a.value).milliseconds : nil }
        }
    }

    public struct Options: Sendable {
        /// Step transitions to measure (chains of `steps` run one after another until this many steps ran).
        public var hops = 2000
        /// Steps per chain (the stepchain bench's S).
        public var steps = 20
        public init() {}
    }

    public struct Percentiles: Codable, Sendable {
        public var p50: Double
        public var p90: Double
        public var p99: Double
        public var samples: Int

        init(_ values: [Double]) {
            let sorted = values.sorted()
            func at(_ p: Double) -> Double {
                guard !sorted.isEmpty else { return 0 }
                return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
            }
            (p50, p90, p99, samples) = (at(0.5), at(0.9), at(0.99), sorted.count)
        }
    }

    public struct Result: Codable, Sendable {
        public var bench = "latency"
        public var chains: Int
        public var steps: Int
        public var hops: Int
        public var wallSeconds: Double
        public var hopsPerSecond: Double
        /// commit → commit, Redis time (ms resolution): the stepchain bench's definition.
        public var commitToCommit: Percentiles
        /// step start → next step start, the worker's monotonic clock.
        public var stepToStep: Percentiles
        /// The step's own code (start → return; the rest of a hop is the protocol's), the worker's monotonic clock.
        public var stepCode: Percentiles
        public var workerCPUMillisecondsPerHop: Double
        public var brokerCPUMillisecondsPerHop: Double
        public var redisCPUMillisecondsPerHop: Double
        public var leftoverKeys: Int
        /// The Redis key prefix of the run (every key of it is deleted at the end).
        public var keyPrefix = ""
        public var verified: Bool
        public var failures: [String]

        enum CodingKeys: String, CodingKey {
            case bench, chains, steps, hops
            case wallSeconds = "wall_s"
            case hopsPerSecond = "hops_per_s"
            case commitToCommit = "commit_to_commit_ms"
            case stepToStep = "step_to_step_ms"
            case stepCode = "step_code_ms"
            case workerCPUMillisecondsPerHop = "worker_cpu_ms_per_hop"
            case brokerCPUMillisecondsPerHop = "broker_cpu_ms_per_hop"
            case redisCPUMillisecondsPerHop = "redis_cpu_ms_per_hop"
            case leftoverKeys = "leftover_keys"
            case keyPrefix = "key_prefix"
            case verified, failures
        }
    }

    public let amqpURL: String
    public let redisURL: String
    public let logger: Logger
    let clock = StepClock()
    var brokerPort: Int? { (try? AMQPURL(amqpURL))?.port }
    var redisPort: Int? { (try? RedisURL(parsing: redisURL))?.port }

    public init(amqpURL: String, redisURL: String, logger: Logger) {
        self.amqpURL = amqpURL
        self.redisURL = redisURL
        self.logger = logger
    }

    public func run(_ options: Options) async throws -> Result {
        var registry = AgentRegistry()
        registry.register(ChainAgent(clock: clock))
        let fleet = BenchWorkers(
            name: "latency", amqpURL: amqpURL, redisURL: redisURL, registry: registry, workers: 1, concurrency: nil, logger: logger)
        let (runID, store, group) = (fleet.runID, fleet.store, fleet.group)
        let client = try await BatonClient.connect(amqpURL: amqpURL, redisURL: redisURL, publishing: true, settings: store, logger: logger)
        let keys = client.store.settings.keys
        let idle = IdleBench(amqpURL: amqpURL, redisURL: redisURL, logger: logger)
        let steps = max(1, options.steps)
        let chains = max(1, (options.hops + steps - 1) / steps)
        let taskIDs = (0..<chains).map { "bench-latency-\(runID)-\($0)" }

        var result: Result
        do {
            result = try await withThrowingTaskGroup(of: Void.self) { running in
                running.addTask { try await group.run() }
                defer { running.cancelAll() }
                try await fleet.waitUntilRegistered(client)
                guard let channel = client.channel else { throw BatonError(.internalError, "no channel") }
                let input: JSONValue = [
                    "steps": .int(Int64(steps)), "record_bytes": 200, "tokens_per_step": 100, "cost_usd_per_step": 0.0001,
                ]
                // One chain at a time: submit, wait for its end (polled every 2 ms: one cheap HGET, a few per chain
                // step at most), then the next.
                let start = ContinuousClock.now
                let cpuStart = CPUSample.now(brokerPort: brokerPort, redisPort: redisPort)
                for id in taskIDs {
                    let submit = AMQPMessage(
                        exchange: Topology.submitExchange, routingKey: ChainAgent.name,
                        body: try JSONCoding.encode(SubmitRequest(id: id, agent: ChainAgent.name, input: input)),
                        properties: .persistentJSON, mandatory: true)
                    if let failure = try await channel.publish([submit]).compactMap({ $0 }).first { throw failure }
                    let deadline = ContinuousClock.now + .seconds(60)
                    while true {
                        // Wait on the worker's own clock until the last step began, then on Redis for its commit.
                        if clock.starts.withLock({ $0[id]?.count ?? 0 }) >= steps {
                            let status = try await client.store.redis.send(RedisCommand("HGET", keys.task(id), "status")).string ?? ""
                            if TaskView.terminalStatuses.contains(status) { break }
                        }
                        guard ContinuousClock.now < deadline else {
                            throw BatonError(.internalError, "chain \(id) did not end within 60 s: see the worker's log")
                        }
                        try await Task.sleep(for: .milliseconds(2))
                    }
                }
                let wall = (ContinuousClock.now - start).milliseconds / 1000
                let cpu = CPUSample.now(brokerPort: brokerPort, redisPort: redisPort) - cpuStart
                await group.triggerGracefulShutdown()

                var failures: [String] = []
                var commits: [Double] = []
                var starts: [Double] = []
                var code: [Double] = []
                for id in taskIDs {
                    guard let view = try await client.queries.task(id) else {
                        failures.append("\(id): missing")
                        continue
                    }
                    if view.status != "succeeded" { failures.append("\(id): \(view.status)") }
                    if view.seq != Int64(steps) { failures.append("\(id): seq \(view.seq)") }
                    if view.budget.used.tokens != Int64(steps) * 100 { failures.append("\(id): tokens \(view.budget.used.tokens)") }
                    let events = try await client.queries.history(id)
                    let marks = events.filter { $0.type == "step_committed" || $0.type == "succeeded" || $0.type == "submitted" }
                    let times = marks.compactMap { ISO8601DateFormatter.fractional.date(from: $0.at)?.timeIntervalSince1970 }
                    for (a, b) in zip(times, times.dropFirst()) { commits.append((b - a) * 1000) }
                    starts += clock.intervals(id)
                    code += clock.durations.withLock { Array(($0[id] ?? [:]).values) }
                }
                let hops = chains * steps
                return Result(
                    chains: chains, steps: steps, hops: hops, wallSeconds: wall, hopsPerSecond: Double(hops) / wall,
                    commitToCommit: Percentiles(commits), stepToStep: Percentiles(starts), stepCode: Percentiles(code),
                    workerCPUMillisecondsPerHop: Double(cpu.selfMicros) / Double(hops) / 1000,
                    brokerCPUMillisecondsPerHop: Double(cpu.brokerMicros) / Double(hops) / 1000,
                    redisCPUMillisecondsPerHop: Double(cpu.redisMicros) / Double(hops) / 1000, leftoverKeys: 0,
                    verified: failures.isEmpty, failures: Array(failures.prefix(20)))
            }
        } catch {
            _ = try? await idle.cleanup(taskIDs, keys: keys, redis: client.store.redis)
            await client.close()
            throw error
        }
        result.keyPrefix = keys.prefix
        result.leftoverKeys = try await idle.cleanup(taskIDs, keys: keys, redis: client.store.redis).left
        if result.leftoverKeys != 0 {
            result.failures.append("\(result.leftoverKeys) keys of the run's prefix '\(keys.prefix)' were left after the cleanup")
            result.verified = false
        }
        await client.close()
        return result
    }
}
