import Baton
import Foundation
import Prometheus
import RedisClient

/// `GET /metrics`: the fleet's gauges of DESIGN.md §7, computed from Redis at scrape time, in the Prometheus text
/// format (swift-prometheus).
///
/// The counters and histograms of §7 (`baton_steps_total`, `baton_step_duration_seconds`, …) belong to the workers
/// that run the steps; this server exposes what any process can read from Redis:
///
/// | metric | labels | from |
/// |---|---|---|
/// | `baton_tasks` | `agent`, `status` | live tasks (queued, running, waiting, sleeping, retrying, paused, needs_review), read from the status indexes (at most ``FleetMetrics/maxLiveTasks``) |
/// | `baton_pending_reviews` | `agent` | tasks in `needs_review` |
/// | `baton_dead_letters` | `agent`, `bucket` | dead letters kept (bucket: the failure bucket, else the reason) |
/// | `baton_workers` | `state` | workers by heartbeat: `live` or `stale` (older than `worker.stale_after`) |
/// | `baton_worker_steps_in_flight` | `worker` | steps each live worker runs |
///
/// A fresh registry per scrape: a label set that no longer exists (an agent with no dead letters left) disappears
/// instead of keeping its last value.
struct FleetMetrics: Sendable {
    let store: RedisTaskStore
    let queries: TaskQueries

    /// Live tasks read per scrape at most: beyond it `baton_tasks` undercounts (and says so in its help).
    static let maxLiveTasks = 10_000
    static let liveIndexes = ["queued", "waiting", "sleeping", "retrying", "paused", "needs_review"]

    /// Metric names, in one place (CONVENTIONS.md §4).
    enum Name {
        static let tasks = "baton_tasks"
        static let pendingReviews = "baton_pending_reviews"
        static let deadLetters = "baton_dead_letters"
        static let workers = "baton_workers"
        static let workerStepsInFlight = "baton_worker_steps_in_flight"
    }

    func scrape() async throws -> [UInt8] {
        let registry = PrometheusCollectorRegistry()
        let keys = store.settings.keys
        let redis = store.redis

        // Live tasks: ids from the status indexes, then agent and status from each hash.
        let indexReplies = try await redis.pipeline(
            (0..<keys.bucketCount).flatMap { bucket in
                Self.liveIndexes.map { RedisCommand("ZRANGE", keys.index(bucket: bucket, status: $0), 0, Self.maxLiveTasks - 1) }
            })
        let ids = Array(Set(indexReplies.flatMap { ($0.array ?? []).compactMap(\.string) }).prefix(Self.maxLiveTasks))
        var tasks: [Pair: Int] = [:]
        for start in stride(from: 0, to: ids.count, by: 500) {
            let chunk = ids[start..<min(ids.count, start + 500)]
            let replies = try await redis.pipeline(chunk.map { RedisCommand("HMGET", keys.task($0), "agent", "status") })
            for reply in replies {
                let fields = reply.array ?? []
                guard fields.count == 2, let agent = fields[0].string, let status = fields[1].string else { continue }
                tasks[Pair(agent, status), default: 0] += 1
            }
        }
        for (pair, count) in tasks {
            Self.gauge(
                registry, Name.tasks, labels: [("agent", pair.a), ("status", pair.b)],
                help: "Live tasks by agent and status (at most \(Self.maxLiveTasks) read per scrape)"
            )
            .set(Int64(count))
        }
        var reviews: [String: Int] = [:]
        for (pair, count) in tasks where pair.b == "needs_review" { reviews[pair.a, default: 0] += count }
        for (agent, count) in reviews {
            Self.gauge(registry, Name.pendingReviews, labels: [("agent", agent)], help: "Tasks waiting for a review").set(Int64(count))
        }

        var dead: [Pair: Int] = [:]
        for letter in try await queries.deadLetters(matching: DeadLetterFilter(), withBody: false).items {
            dead[Pair(letter.agent ?? "", letter.bucket ?? letter.reason), default: 0] += 1
        }
        for (pair, count) in dead {
            Self.gauge(
                registry, Name.deadLetters, labels: [("agent", pair.a), ("bucket", pair.b)], help: "Dead letters kept, by agent and bucket"
            )
            .set(Int64(count))
        }

        let workers = try await queries.workers()
        let staleSeconds = Double(store.settings.workerStaleMilliseconds) / 1000
        let live = workers.filter { $0.heartbeatAgeSeconds <= staleSeconds }
        for (state, count) in [("live", live.count), ("stale", workers.count - live.count)] {
            Self.gauge(registry, Name.workers, labels: [("state", state)], help: "Workers by heartbeat").set(Int64(count))
        }
        for worker in live {
            Self.gauge(
                registry, Name.workerStepsInFlight, labels: [("worker", worker.id)], help: "Steps a live worker runs now"
            )
            .set(worker.inFlight)
        }
        return registry.emitToBuffer()
    }

    /// A gauge of `registry` (names carry no unit suffix: these are counts).
    static func gauge(_ registry: PrometheusCollectorRegistry, _ name: String, labels: [(String, String)], help: String) -> Gauge {
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    /// Two label values.
    struct Pair: Hashable {
        var a: String
        var b: String
        init(_ a: String, _ b: String) {
            self.a = a
            self.b = b
        }
    }
}
