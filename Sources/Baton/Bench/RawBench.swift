import AMQPClient
import Foundation
import Logging
import RedisClient
import Synchronization

/// `baton bench raw`: the physical-limit hop loop of research/c-interop.md §1 on Baton's own wrappers.
///
/// N chains circulate on one quorum queue. Per hop: consume → one EVALSHA (a Lua HSET + HINCRBY on the
/// chain's key) → publish the next hop persistent with a publisher confirm → ack (late). Batched mode drains
/// the deliveries already buffered and pipelines their Redis calls; unbatched does one round trip each.
public struct RawBench: Sendable {
    public struct Options: Sendable {
        public var chains = 64
        public var hops = 20_000
        public var batched = true
        public var prefetch: UInt16?
        public var bodyBytes = 128
        /// Declare the queue with the arguments of Baton's step queues (delivery limit, at-least-once dead
        /// lettering, reject-publish overflow, max length) and publish with `mandatory`.
        public var stepQueueArguments = false
        public init() {}
    }

    public struct Result: Codable, Sendable {
        public var bench = "raw"
        public var mode: String
        public var chains: Int
        public var hops: Int
        public var wallSeconds: Double
        public var hopsPerSecond: Double
        public var p50Milliseconds: Double
        public var p99Milliseconds: Double
        public var workerCPUMicrosPerHop: Double
        public var brokerCPUMicrosPerHop: Double
        public var redisCPUMicrosPerHop: Double
        public var averageBatch: Double
        public var verified: Bool

        enum CodingKeys: String, CodingKey {
            case bench, mode, chains, hops
            case wallSeconds = "wall_s"
            case hopsPerSecond = "hops_per_s"
            case p50Milliseconds = "p50_ms"
            case p99Milliseconds = "p99_ms"
            case workerCPUMicrosPerHop = "worker_cpu_us_per_hop"
            case brokerCPUMicrosPerHop = "broker_cpu_us_per_hop"
            case redisCPUMicrosPerHop = "redis_cpu_us_per_hop"
            case averageBatch = "avg_batch"
            case verified
        }
    }

    static let script = RedisScript(
        """
        redis.call('HSET', KEYS[1], 'last', ARGV[1])
        return redis.call('HINCRBY', KEYS[1], 'hops', 1)
        """)

    public let amqpURL: String
    public let redisURL: String
    public let logger: Logger
    var brokerPort: Int? { (try? AMQPURL(amqpURL))?.port }
    var redisPort: Int? { (try? RedisURL(parsing: redisURL))?.port }

    public init(amqpURL: String, redisURL: String, logger: Logger) {
        self.amqpURL = amqpURL
        self.redisURL = redisURL
        self.logger = logger
    }

    public func run(_ options: Options) async throws -> Result {
        let redis = try await RedisConnection.connect(configuration: try RedisConfiguration(url: redisURL), logger: logger)
        let amqp = try await AMQPConnection.connect(try AMQPConfiguration(url: amqpURL, connectionName: "baton-bench-raw"), logger: logger)
        defer {
            Task {
                await amqp.close()
                await redis.close()
            }
        }
        let run = TaskID.generate()
        let queue = "baton.bench.raw.\(run)"
        let keyPrefix = "baton:bench:raw:\(run):"
        let publish = try await amqp.openChannel(confirms: true)
        let prefetch = options.prefetch ?? UInt16(clamping: max(1, options.chains * 2))
        let consume = try await amqp.openChannel(prefetch: options.chains == 1 && options.prefetch == nil ? 1 : prefetch)
        try await publish.declareQueue(
            queue,
            arguments: options.stepQueueArguments
                ? Topology.quorum(Topology.QueueSettings(), maxLength: 1_000_000) : AMQPQueueArguments(type: .quorum))
        defer { Task { _ = try? await publish.deleteQueue(queue) } }

        let hopsPerChain = max(1, options.hops / max(1, options.chains))
        let total = hopsPerChain * options.chains
        let padding = String(repeating: "p", count: max(0, options.bodyBytes - 24))
        let message: @Sendable (_ chain: Int, _ hop: Int) -> AMQPMessage = { chain, hop in
            var properties = AMQPProperties(
                contentType: "text/plain", headers: ["chain": .int64(Int64(chain)), "hop": .int64(Int64(hop))], deliveryMode: 2)
            properties.messageID = "\(chain)-\(hop)"
            properties.correlationID = "\(run)"
            return AMQPMessage(
                exchange: "", routingKey: queue, body: Array("\(chain) \(hop) \(padding)".utf8), properties: properties,
                mandatory: options.stepQueueArguments)
        }
        let consumer = try await consume.consume(queue: queue)
        let start = ContinuousClock.now
        let cpuStart = CPUSample.now(brokerPort: brokerPort, redisPort: redisPort)
        let seeds = try await publish.publish((0..<options.chains).map { message($0, 1) })
        if let failure = seeds.compactMap({ $0 }).first { throw failure }

        let stats = Stats()
        func parse(_ d: AMQPDelivery) -> (Int, Int) {
            let parts = String(decoding: d.body.prefix(24), as: UTF8.self).split(separator: " ")
            return (Int(parts.first ?? "") ?? 0, Int(parts.dropFirst().first ?? "") ?? 0)
        }
        // Publishing the next hop and acking the delivery wait for the broker's confirm off the loop, as the
        // raw C loop does in its event loop: the Redis call is the only round trip the loop itself waits for.
        // Unbatched: the loop runs on the Redis connection's thread, as the single-threaded C loop does.
        try await withTaskExecutorPreference(options.batched ? nil : redis) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                var iterator = consumer.batches.makeAsyncIterator()
                var taken = 0
                while taken < total, let batch = await iterator.next() {
                    let received = ContinuousClock.now
                    taken += batch.count
                    stats.state.withLock { $0.batches += 1 }
                    if options.batched {
                        let parsed = batch.map(parse)
                        _ = try await redis.pipeline(parsed.map { .evalSHA(Self.script, keys: [keyPrefix + String($0.0)], args: [$0.1]) })
                        let next = parsed.filter { $0.1 < hopsPerChain }.map { message($0.0, $0.1 + 1) }
                        group.addTask {
                            if !next.isEmpty, let failure = try await publish.publish(next).compactMap({ $0 }).first { throw failure }
                            try await consume.ack(batch)
                            let elapsed = (ContinuousClock.now - received).milliseconds
                            stats.state.withLock { stats in
                                stats.done += batch.count
                                stats.latencies.append(contentsOf: repeatElement(elapsed, count: batch.count))
                            }
                        }
                    } else {
                        for delivery in batch {
                            let hopStart = ContinuousClock.now
                            let (chain, hop) = parse(delivery)
                            try await redis.evalSHA(Self.script, keys: [keyPrefix + String(chain)], args: [hop])
                            // Publish the next hop; the connection thread acks this delivery on its confirm.
                            publish.publish(
                                hop < hopsPerChain ? [message(chain, hop + 1)] : [], thenAck: [delivery],
                                onSettled: { results in
                                    let elapsed = (ContinuousClock.now - hopStart).milliseconds
                                    stats.state.withLock { stats in
                                        stats.done += 1
                                        stats.failed += results.compactMap { $0 }.count
                                        stats.latencies.append(elapsed)
                                    }
                                })
                        }
                    }
                }
                while stats.state.withLock({ $0.done }) < total {
                    try await Task.sleep(for: .milliseconds(1))
                }
                try await group.waitForAll()
            }
        }
        let (done, batches, failed, latencies) = stats.state.withLock { ($0.done, $0.batches, $0.failed, $0.latencies) }
        if failed > 0 { throw BatonError(.internalError, "\(failed) publishes of the hop loop were not confirmed") }
        let wall = (ContinuousClock.now - start).milliseconds / 1000
        let cpu = CPUSample.now(brokerPort: brokerPort, redisPort: redisPort) - cpuStart
        try await consumer.cancel()
        // Verify: every chain's key counted exactly hopsPerChain hops.
        let counts = try await redis.pipeline((0..<options.chains).map { RedisCommand("HGET", keyPrefix + String($0), "hops") })
        let verified = counts.allSatisfy { Int($0.string ?? "") == hopsPerChain }
        _ = try await redis.pipeline((0..<options.chains).map { RedisCommand("DEL", keyPrefix + String($0)) })
        let summary = LatencySummary(latencies)
        return Result(
            mode: options.batched ? "batched" : "unbatched", chains: options.chains, hops: done, wallSeconds: wall,
            hopsPerSecond: Double(done) / wall, p50Milliseconds: summary.p50, p99Milliseconds: summary.p99,
            workerCPUMicrosPerHop: Double(cpu.selfMicros) / Double(done), brokerCPUMicrosPerHop: Double(cpu.brokerMicros) / Double(done),
            redisCPUMicrosPerHop: Double(cpu.redisMicros) / Double(done), averageBatch: Double(done) / Double(max(1, batches)),
            verified: verified)
    }
}

/// Counters shared by the bench loop and its confirm tasks.
final class Stats: Sendable {
    let state = Mutex<(done: Int, batches: Int, failed: Int, latencies: [Double])>((0, 0, 0, []))
}
