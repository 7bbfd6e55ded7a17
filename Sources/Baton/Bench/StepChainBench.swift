import AMQPClient
import Foundation
import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

/// `baton bench stepchain`: the step chain of research/peers.md through Baton's full protocol (lease, Lua
/// commit, outbox, confirms, late acks), verified at the end, with the raw hop loop on the same number of
/// chains measured in the same run for the ratio.
public struct StepChainBench: Sendable {
    public struct Options: Sendable {
        public var tasks = 200
        public var steps = 20
        /// Bytes of each step's record (the state grows by this much a step).
        public var recordBytes = 200
        public var workers = 1
        public var concurrency = 256
        public var prefetch: UInt16 = 256
        public var runRaw = true
        /// `worker.speculative_steps` of the bench's workers.
        public var speculativeSteps = true
        public init() {}
    }

    public struct Result: Codable, Sendable {
        public var bench = "stepchain"
        public var tasks: Int
        public var steps: Int
        public var hops: Int
        public var workers: Int
        public var wallSeconds: Double
        public var hopsPerSecond: Double
        public var p50Milliseconds: Double
        public var p99Milliseconds: Double
        public var workerCPUMillisecondsPerHop: Double
        public var brokerCPUMillisecondsPerHop: Double
        public var redisCPUMillisecondsPerHop: Double
        public var verified: Bool
        public var failures: [String]
        public var rawHopsPerSecond: Double?
        public var ratioToRaw: Double?
        /// The raw loop's CPU per hop in the same run: the figures to set the chain's against when the host's speed
        /// moves between runs (it moves every process's CPU per hop together).
        public var rawWorkerCPUMillisecondsPerHop: Double?
        public var rawBrokerCPUMillisecondsPerHop: Double?
        public var rawRedisCPUMillisecondsPerHop: Double?
        /// The chain's CPU per hop (worker, broker and Redis together) over the raw loop's in the same run: how many
        /// times the raw loop's work a hop costs, a figure that moves less than the hop rates when the host's speed moves.
        public var cpuPerHopToRaw: Double?
        /// Steps run speculatively (without a claim), and of those the ones claimed late.
        public var speculativeSteps = 0
        public var claimedLate = 0

        enum CodingKeys: String, CodingKey {
            case bench, tasks, steps, hops, workers
            case wallSeconds = "wall_s"
            case hopsPerSecond = "hops_per_s"
            case p50Milliseconds = "p50_ms"
            case p99Milliseconds = "p99_ms"
            case workerCPUMillisecondsPerHop = "worker_cpu_ms_per_hop"
            case brokerCPUMillisecondsPerHop = "broker_cpu_ms_per_hop"
            case redisCPUMillisecondsPerHop = "redis_cpu_ms_per_hop"
            case verified, failures
            case rawHopsPerSecond = "raw_hops_per_s"
            case ratioToRaw = "ratio_to_raw"
            case rawWorkerCPUMillisecondsPerHop = "raw_worker_cpu_ms_per_hop"
            case rawBrokerCPUMillisecondsPerHop = "raw_broker_cpu_ms_per_hop"
            case rawRedisCPUMillisecondsPerHop = "raw_redis_cpu_ms_per_hop"
            case cpuPerHopToRaw = "cpu_per_hop_to_raw"
            case speculativeSteps = "speculative_steps"
            case claimedLate = "claimed_late"
        }
    }

    public let amqpURL: String
    public let redisURL: String
    public let registry: AgentRegistry
    public let logger: Logger
    var brokerPort: Int? { (try? AMQPURL(amqpURL))?.port }
    var redisPort: Int? { (try? RedisURL(parsing: redisURL))?.port }

    public init(amqpURL: String, redisURL: String, registry: AgentRegistry, logger: Logger) {
        self.amqpURL = amqpURL
        self.redisURL = redisURL
        self.registry = registry
        self.logger = logger
    }

    public func run(_ options: Options) async throws -> Result {
        var raw: RawBench.Result? = nil
        if options.runRaw {
            var rawOptions = RawBench.Options()
            rawOptions.chains = options.tasks
            rawOptions.hops = options.tasks * options.steps
            rawOptions.batched = true
            raw = try await RawBench(amqpURL: amqpURL, redisURL: redisURL, logger: logger).run(rawOptions)
        }

        let runID = TaskID.generate()
        var workers: [Worker] = []
        for index in 0..<max(1, options.workers) {
            var configuration = Worker.Configuration(amqpURL: amqpURL, redisURL: redisURL, workerID: "bench-\(runID)-\(index)")
            configuration.concurrency = options.concurrency
            configuration.prefetch = options.prefetch
            configuration.protocolSettings.speculativeSteps = options.speculativeSteps
            workers.append(Worker(configuration: configuration, registry: registry, logger: logger))
        }
        // One service group per worker, so all of them drain at once at the end (a single group would shut
        // them down one after another).
        let groups = workers.map {
            ServiceGroup(configuration: .init(services: [.init(service: $0)], gracefulShutdownSignals: [], logger: logger))
        }
        let client = try await BatonClient.connect(amqpURL: amqpURL, redisURL: redisURL, publishing: true, logger: logger)
        let keys = client.store.settings.keys

        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            // A worker that stops or fails ends the bench with its reason (instead of waiting forever).
            let stopped = StopReason()
            tasks.addTask {
                do {
                    try await withThrowingDiscardingTaskGroup { all in
                        for group in groups { all.addTask { try await group.run() } }
                    }
                    stopped.value.withLock { $0 = $0 ?? "the bench workers stopped" }
                } catch {
                    stopped.value.withLock { $0 = "a bench worker failed: \(error)" }
                }
            }
            defer { tasks.cancelAll() }
            func checkWorkers() throws {
                if let why = stopped.value.withLock({ $0 }) { throw BatonError(.internalError, why) }
            }
            // Wait until every worker announced itself (its consumers are up).
            let ids = Set(workers.map(\.configuration.workerID))
            try await BenchWorkers.waitUntilRegistered(ids, client: client, check: checkWorkers)
            let taskIDs = (0..<options.tasks).map { "bench-\(runID)-\($0)" }
            let input: JSONValue = [
                "steps": .int(Int64(options.steps)), "record_bytes": .int(Int64(options.recordBytes)), "tokens_per_step": 100,
                "cost_usd_per_step": 0.0001,
            ]
            let speculationBefore = SpeculationCounters.process.snapshot
            let start = ContinuousClock.now
            let cpuStart = CPUSample.now(brokerPort: brokerPort, redisPort: redisPort)
            let submits = try taskIDs.map { id in
                AMQPMessage(
                    exchange: Topology.submitExchange, routingKey: "stepchain",
                    body: try JSONCoding.encode(SubmitRequest(id: id, agent: "stepchain", input: input)), properties: .persistentJSON,
                    mandatory: true)
            }
            guard let channel = client.channel else { throw BatonError(.internalError, "no channel") }
            if let failure = try await channel.publish(submits).compactMap({ $0 }).first { throw failure }

            // Wait until every task ended. Each poll asks about the first few unfinished tasks only: the chains run
            // side by side and end together, and polling all 200 every few ms would add its own Redis load (and bench
            // CPU) to what is measured.
            var unfinished = taskIDs[...]
            while !unfinished.isEmpty {
                let probe = Array(unfinished.prefix(8))
                let replies = try await client.store.redis.pipeline(probe.map { RedisCommand("HGET", keys.task($0), "status") })
                let ended = zip(probe, replies).prefix { TaskView.terminalStatuses.contains($0.1.string ?? "") }.count
                unfinished = unfinished.dropFirst(ended)
                if ended > 0 { continue }
                try checkWorkers()
                try await Task.sleep(for: .milliseconds(5))
            }
            let wall = (ContinuousClock.now - start).milliseconds / 1000
            let speculation = SpeculationCounters.process.snapshot
            let cpu = CPUSample.now(brokerPort: brokerPort, redisPort: redisPort) - cpuStart
            for group in groups { await group.triggerGracefulShutdown() }

            // Verify every task: succeeded, `steps` records, exact budget.
            var failures: [String] = []
            var transitions: [Double] = []
            for id in taskIDs {
                guard let view = try await client.queries.task(id) else {
                    failures.append("\(id): missing")
                    continue
                }
                if view.status != "succeeded" { failures.append("\(id): \(view.status)") }
                if view.seq != Int64(options.steps) { failures.append("\(id): seq \(view.seq)") }
                if view.budget.used.tokens != Int64(options.steps) * 100 { failures.append("\(id): tokens \(view.budget.used.tokens)") }
                if view.costMicros != Int64(options.steps) * 100 { failures.append("\(id): cost \(view.costMicros) µ$") }
                if let checkpoint = try await client.queries.checkpoint(id),
                    let records = (try? JSONValue.parse(Array(checkpoint.json.utf8)))?["records"]?.arrayValue
                {
                    let expected = (1...options.steps).map { "\($0):" }
                    let prefixes = records.compactMap { $0.stringValue?.split(separator: ":").first.map { "\($0):" } }
                    if prefixes != expected || records.contains(where: { $0.stringValue?.utf8.count != options.recordBytes }) {
                        failures.append("\(id): records \(prefixes.count)")
                    }
                } else {
                    failures.append("\(id): no checkpoint")
                }
                let events = try await client.queries.history(id)
                let commits = events.filter { $0.type == "step_committed" || $0.type == "succeeded" || $0.type == "submitted" }
                let times = commits.compactMap { ISO8601DateFormatter.fractional.date(from: $0.at)?.timeIntervalSince1970 }
                for (a, b) in zip(times, times.dropFirst()) { transitions.append((b - a) * 1000) }
            }
            try await cleanup(taskIDs, maxSeq: options.steps, client: client)
            await client.close()
            let hops = options.tasks * options.steps
            let summary = LatencySummary(transitions)
            let hopsPerSecond = Double(hops) / wall
            return Result(
                tasks: options.tasks, steps: options.steps, hops: hops, workers: workers.count, wallSeconds: wall,
                hopsPerSecond: hopsPerSecond,
                p50Milliseconds: summary.p50, p99Milliseconds: summary.p99,
                workerCPUMillisecondsPerHop: Double(cpu.selfMicros) / Double(hops) / 1000,
                brokerCPUMillisecondsPerHop: Double(cpu.brokerMicros) / Double(hops) / 1000,
                redisCPUMillisecondsPerHop: Double(cpu.redisMicros) / Double(hops) / 1000, verified: failures.isEmpty,
                failures: Array(failures.prefix(20)), rawHopsPerSecond: raw?.hopsPerSecond,
                ratioToRaw: raw.map { hopsPerSecond / $0.hopsPerSecond },
                rawWorkerCPUMillisecondsPerHop: raw.map { $0.workerCPUMicrosPerHop / 1000 },
                rawBrokerCPUMillisecondsPerHop: raw.map { $0.brokerCPUMicrosPerHop / 1000 },
                rawRedisCPUMillisecondsPerHop: raw.map { $0.redisCPUMicrosPerHop / 1000 },
                cpuPerHopToRaw: raw.flatMap { raw in
                    let rawTotal = raw.workerCPUMicrosPerHop + raw.brokerCPUMicrosPerHop + raw.redisCPUMicrosPerHop
                    return rawTotal > 0 ? Double(cpu.selfMicros + cpu.brokerMicros + cpu.redisMicros) / Double(hops) / rawTotal : nil
                },
                speculativeSteps: speculation.started - speculationBefore.started,
                claimedLate: speculation.claimedLate - speculationBefore.claimedLate)
        }
    }

    /// Deletes the bench's tasks from Redis (keys and index entries).
    func cleanup(_ ids: [String], maxSeq: Int, client: BatonClient) async throws {
        let keys = client.store.settings.keys
        var commands: [RedisCommand] = []
        for id in ids {
            commands.append(RedisCommand("DEL", keys.task(id), keys.budget(id), keys.events(id), keys.outbox(id), keys.effects(id)))
            let bucket = keys.bucket(of: id)
            commands.append(RedisCommand("ZREM", keys.index(bucket: bucket, status: "succeeded"), id))
            commands.append(RedisCommand("ZREM", keys.outboxIndex(bucket: bucket), id))
        }
        // The checkpoints by their seqs (no `KEYS`: it scans the whole keyspace and blocks Redis meanwhile).
        for id in ids {
            commands.append(RedisCommand("DEL", arguments: (0...max(0, maxSeq)).map { keys.checkpoint(id, seq: Int64($0)) }))
        }
        _ = try await client.store.redis.pipeline(commands)
    }
}

/// Why the bench's workers stopped, if they did.
final class StopReason: Sendable {
    let value = Mutex<String?>(nil)
}

extension StepChainBench {
    /// What `baton bench stepchain --rounds N` prints last: the median and range of each figure over the rounds.
    ///
    /// One round lasts about a second on the default chain, so a busy minute of the host moves a single round's
    /// figures by ±10 %. Each round runs the raw loop and then the chain, and its ratio is of that round's own pair.
    /// The median of those ratios is steadier than any one of them.
    public struct Summary: Codable, Sendable, Equatable {
        /// The median, lowest and highest of one figure over the rounds.
        public struct Spread: Codable, Sendable, Equatable {
            public var median: Double
            public var min: Double
            public var max: Double

            public init?(_ values: [Double]) {
                guard !values.isEmpty else { return nil }
                let sorted = values.sorted()
                let middle = sorted.count / 2
                median = sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
                min = sorted[0]
                max = sorted[sorted.count - 1]
            }
        }

        public var bench = "stepchain-rounds"
        public var rounds: Int
        public var hopsPerSecond: Spread?
        public var rawHopsPerSecond: Spread?
        public var ratioToRaw: Spread?
        public var workerCPUMillisecondsPerHop: Spread?
        public var brokerCPUMillisecondsPerHop: Spread?
        public var redisCPUMillisecondsPerHop: Spread?
        /// ``Result/cpuPerHopToRaw`` of each round.
        public var cpuPerHopToRaw: Spread?
        /// Every round verified.
        public var verified: Bool

        enum CodingKeys: String, CodingKey {
            case bench, rounds, verified
            case hopsPerSecond = "hops_per_s"
            case rawHopsPerSecond = "raw_hops_per_s"
            case ratioToRaw = "ratio_to_raw"
            case workerCPUMillisecondsPerHop = "worker_cpu_ms_per_hop"
            case brokerCPUMillisecondsPerHop = "broker_cpu_ms_per_hop"
            case redisCPUMillisecondsPerHop = "redis_cpu_ms_per_hop"
            case cpuPerHopToRaw = "cpu_per_hop_to_raw"
        }

        public init(_ results: [Result]) {
            rounds = results.count
            hopsPerSecond = Spread(results.map(\.hopsPerSecond))
            rawHopsPerSecond = Spread(results.compactMap(\.rawHopsPerSecond))
            ratioToRaw = Spread(results.compactMap(\.ratioToRaw))
            workerCPUMillisecondsPerHop = Spread(results.map(\.workerCPUMillisecondsPerHop))
            brokerCPUMillisecondsPerHop = Spread(results.map(\.brokerCPUMillisecondsPerHop))
            redisCPUMillisecondsPerHop = Spread(results.map(\.redisCPUMillisecondsPerHop))
            cpuPerHopToRaw = Spread(results.compactMap(\.cpuPerHopToRaw))
            verified = !results.isEmpty && results.allSatisfy(\.verified)
        }
    }
}
