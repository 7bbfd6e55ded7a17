import Logging
import ServiceLifecycle

/// The in-process workers of one bench run (`idle`, `latency`, `timers`), under a Redis key prefix of the run's own
/// (`bench-<name>-<10 random hex digits>:`), so that only they sweep its timers and the run's cleanup finds every key it
/// made. The prefix is kept short: every key of a task carries it, and `bench idle` measures memory per task.
struct BenchWorkers {
    let runID: String
    let store: RedisTaskStore.Settings
    let workers: [Worker]
    let group: ServiceGroup

    /// `concurrency` nil: the worker's default concurrency and prefetch.
    init(
        name: String, amqpURL: String, redisURL: String, registry: AgentRegistry, workers: Int, concurrency: Int?, logger: Logger
    ) {
        let runID = TaskID.generate()
        var store = RedisTaskStore.Settings()
        store.keys = RedisKeys(prefix: "bench-\(name)-\(runID.suffix(10)):")
        var services: [Worker] = []
        for index in 0..<max(1, workers) {
            let id = workers > 1 ? "bench-\(name)-\(runID)-\(index)" : "bench-\(name)-\(runID)"
            var configuration = Worker.Configuration(amqpURL: amqpURL, redisURL: redisURL, workerID: id)
            if let concurrency {
                configuration.concurrency = concurrency
                configuration.prefetch = UInt16(clamping: concurrency)
            }
            configuration.store = store
            configuration.deadLetterIntake = false
            services.append(Worker(configuration: configuration, registry: registry, logger: logger))
        }
        self.runID = runID
        self.store = store
        self.workers = services
        self.group = ServiceGroup(
            configuration: .init(services: services.map { .init(service: $0) }, gracefulShutdownSignals: [], logger: logger))
    }

    /// Waits until every one of `ids` announced itself in the workers registry (its consumers are up), at most 30 s;
    /// `check` runs between polls (to stop early on a worker that failed).
    static func waitUntilRegistered(_ ids: Set<String>, client: BatonClient, check: () throws -> Void = {}) async throws {
        let ready = ContinuousClock.now + .seconds(30)
        while Set(try await client.queries.workers().map(\.id)).intersection(ids).count < ids.count {
            guard ContinuousClock.now < ready else { throw BatonError(.connection, "the bench workers did not start within 30 s") }
            try check()
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    func waitUntilRegistered(_ client: BatonClient) async throws {
        try await Self.waitUntilRegistered(Set(workers.map(\.configuration.workerID)), client: client)
    }
}
