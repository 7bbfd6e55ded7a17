import AMQPClient
import Baton
import Foundation
import TestSupport
import Testing

/// DESIGN.md §7 metrics on real servers: a `baton worker --http` child and a `baton serve` child run a small
/// demo-like workload; both `/metrics` are scraped and every family is checked for its TYPE and label names.
///
/// On a RabbitMQ and a Redis of the test's own (a sandbox, like `IntegrationWaitRestartTests`): a worker's counters
/// are its own, and on the shared servers other engineers' workers would run some of the workload's steps.
@Suite("Integration: metrics", .serialized)
struct IntegrationMetricsTests {
    /// Family → (TYPE, label names) of the worker's `/metrics`.
    static let workerFamilies: [String: (type: String, labels: Set<String>)] = [
        "baton_steps_total": ("counter", ["agent", "step", "outcome"]),
        "baton_step_duration_seconds": ("histogram", ["agent", "step"]),
        "baton_step_queue_wait_seconds": ("histogram", ["queue"]),
        "baton_step_failures_total": ("counter", ["agent", "step", "bucket"]),
        "baton_step_retries_total": ("counter", ["agent", "step", "bucket"]),
        "baton_retries_resolved_total": ("counter", ["agent", "bucket"]),
        "baton_handoffs_total": ("counter", ["agent"]),
        "baton_cost_microdollars_total": ("counter", ["agent"]),
        "baton_tokens_total": ("counter", ["agent", "direction"]),
        "baton_budget_exceeded_total": ("counter", ["agent", "kind"]),
        "baton_dead_lettered_total": ("counter", ["agent", "reason"]),
        "baton_tasks_submitted_total": ("counter", ["agent"]),
        "baton_tasks_finished_total": ("counter", ["agent", "status"]),
        "baton_task_duration_seconds": ("histogram", ["agent", "status"]),
        "baton_resumed_total": ("counter", ["agent", "trigger"]),
        "baton_worker_steps_in_flight": ("gauge", ["worker"]),
        "baton_duplicate_deliveries_total": ("counter", ["queue"]),
        "baton_stalled_republished_total": ("counter", ["agent"]),
        "baton_lease_lost_total": ("counter", ["agent"]),
        "baton_timer_lag_seconds": ("histogram", []),
        "baton_webhook_deliveries_total": ("counter", ["result"]),
        "baton_redrives_total": ("counter", ["agent"]),
        "baton_tasks_purged_total": ("counter", []),
    ]

    /// Family → (TYPE, label names) of `baton serve`'s `/metrics` (computed from Redis and the broker).
    static let serveFamilies: [String: (type: String, labels: Set<String>)] = [
        "baton_tasks": ("gauge", ["agent", "status"]),
        "baton_waiting_tasks": ("gauge", ["agent", "kind"]),
        "baton_pending_reviews": ("gauge", ["agent"]),
        "baton_dead_letters": ("gauge", ["agent", "bucket"]),
        "baton_queue_messages": ("gauge", ["queue", "state"]),
        "baton_queue_consumers": ("gauge", ["queue"]),
        "baton_workers": ("gauge", ["state"]),
        "baton_worker_steps_in_flight": ("gauge", ["worker"]),
        "baton_outbox_pending": ("gauge", []),
        "baton_time_in_state_seconds": ("gauge", ["agent", "status"]),
        "baton_queue_oldest_message_age_seconds": ("gauge", ["queue"]),
    ]

    @Test(
        "worker --http and serve export every DESIGN §7 family with its type and label names, and plausible values",
        .enabled(if: TestServers.required || IntegrationWaitRestartTests.installed), .timeLimit(.minutes(4)))
    func everyFamilyIsExported() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        try await sandbox.withServices { _ in
            try await Self.run(
                amqpURL: sandbox.configuration.amqpURL, redisURL: sandbox.configuration.redisURL, servicesDirectory: sandbox.directory)
        }
    }

    /// - Parameter servicesDirectory: the sandbox's `BATON_SERVICES_DIR`, so `baton serve` reads its queues with
    ///   rabbitmqctl (the oldest message's age comes only from there).
    static func run(amqpURL: String, redisURL: String, servicesDirectory: String) async throws {
        let environment = Harness.environment(
            ["BATON_AMQP_URL": amqpURL, "BATON_REDIS_URL": redisURL, "BATON_SERVICES_DIR": servicesDirectory])
        let client = try await BatonClient.connect(amqpURL: amqpURL, redisURL: redisURL, publishing: true, logger: Harness.logger)
        do {
            // The worker, with its metrics endpoint on a free port.
            let id = TestServers.uniqueName("it-metrics")
            let process = try WorkerProcess.start(
                executable: try Harness.baton(),
                arguments: ["worker", "--id", id, "--lease", "3", "--drain-timeout", "3", "--http", "127.0.0.1:0"],
                environment: environment, outputFile: try TestFiles.path("worker-metrics") + ".log")
            defer { process.sigkill() }
            let worker = try await Harness.registered(process, id: id, client: client, timeout: .seconds(30))
            let workerPort = try await Self.port(in: worker.process, marker: "metrics on http://127.0.0.1:")
            let workerHTTP = HTTPTestClient(port: workerPort)
            #expect(try await workerHTTP.request("GET", "/healthz").status == 200)
            // Ready once its consumers started (its heartbeat, which `registered` waits for, comes a little before).
            var ready = false
            for _ in 0..<100 where !ready {
                ready = try await workerHTTP.request("GET", "/readyz").status == 200
                if !ready { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(ready, "/readyz never answered 200")

            // The workload: a step chain, a flaky task that retries then succeeds, a spender over its budget, an
            // approval resumed by a signal, a permanent failure dead-lettered.
            let chain = try await Harness.submit(client, Harness.stepchain(id: TestServers.uniqueName("m-chain"), steps: 5))
            let flaky = try await Harness.submit(
                client, SubmitRequest(id: TestServers.uniqueName("m-flaky"), agent: "flaky", input: ["fail_times": 1]))
            let spender = try await Harness.submit(
                client, SubmitRequest(id: TestServers.uniqueName("m-spender"), agent: "spender", input: ["cost_usd_per_step": 1.0]))
            let approval = try await Harness.submit(
                client, SubmitRequest(id: TestServers.uniqueName("m-approval"), agent: "approval", input: ["timeout_seconds": 3600]))
            let dead = try await Harness.submit(
                client,
                SubmitRequest(id: TestServers.uniqueName("m-dead"), agent: "flaky", input: ["fail_times": 5, "permanent": true]))
            // One more approval stays waiting: the fleet's waiting and time-in-state gauges have a task to show.
            let waiting = try await Harness.submit(
                client, SubmitRequest(id: TestServers.uniqueName("m-waiting"), agent: "approval", input: ["timeout_seconds": 3600]))
            try await Harness.waitForStatus(client, approval, ["waiting"], workers: [worker])
            try await Harness.waitForStatus(client, waiting, ["waiting"], workers: [worker])
            _ = try await client.signal(TaskSignal(task: approval, name: "approve", id: "m", actor: "metrics-test"))
            for (task, status) in [(chain, "succeeded"), (flaky, "succeeded"), (spender, "budget_exceeded"), (dead, "dead_lettered")] {
                try await Harness.waitForStatus(client, task, [status], workers: [worker])
            }
            try await Harness.waitForStatus(client, approval, ["succeeded", "failed"], workers: [worker])

            // The worker's counters: every family, with its type and labels.
            // (A limit reached in a Lua script is counted after a read of the task's reason, just after the commit.)
            var scraped = try await Self.scrape(workerHTTP)
            for _ in 0..<50 where scraped.sum("baton_budget_exceeded_total", where: ["agent": "spender"]) < 1 {
                try await Task.sleep(for: .milliseconds(100))
                scraped = try await Self.scrape(workerHTTP)
            }
            Self.check(scraped, Self.workerFamilies, who: "worker")
            // Plausible values: at least the steps run here (other workers on the shared servers may run some too).
            let chainSteps = scraped.sum("baton_steps_total", where: ["agent": "stepchain"])
            #expect(chainSteps >= 1, "steps_total{agent=stepchain} = \(chainSteps)")
            #expect(scraped.sum("baton_tasks_submitted_total") >= 1)
            #expect(scraped.sum("baton_cost_microdollars_total", where: ["agent": "spender"]) >= 1_000_000)
            #expect(scraped.sum("baton_budget_exceeded_total", where: ["agent": "spender"]) >= 1)
            #expect(scraped.sum("baton_step_retries_total", where: ["agent": "flaky"]) >= 1)
            #expect(scraped.sum("baton_dead_lettered_total", where: ["agent": "flaky", "reason": "permanent_error"]) >= 1)
            #expect(scraped.sum("baton_resumed_total", where: ["agent": "approval", "trigger": "signal"]) >= 1)
            #expect(scraped.sum("baton_step_duration_seconds_count", where: ["agent": "stepchain"]) >= 1)
            #expect(scraped.samples.allSatisfy { $0.labels["task"] == nil && $0.labels["task_id"] == nil }, "a task id as a label")

            // A queue with a message and no consumer, so a head message has an age (its AMQP timestamp, 2 min ago).
            let probe = "baton.steps." + TestServers.uniqueName("m-probe")
            var probeConfiguration = try AMQPConfiguration(url: amqpURL, connectionName: "baton-metrics-test")
            probeConfiguration.connectTimeout = .seconds(5)
            let probeConnection = try await AMQPConnection.connect(probeConfiguration, logger: Harness.logger)
            let probeChannel = try await probeConnection.openChannel(confirms: true)
            try await probeChannel.declareQueue(probe, durable: false, autoDelete: false)
            var properties = AMQPProperties.persistentJSON
            properties.timestamp = UInt64(Date().timeIntervalSince1970) - 120
            try await probeChannel.publish(AMQPMessage(exchange: "", routingKey: probe, body: Array("{}".utf8), properties: properties))

            // `baton serve`: the fleet's gauges.
            let serve = try WorkerProcess.start(
                executable: try Harness.baton(), arguments: ["serve", "--bind", "127.0.0.1:0"], environment: environment,
                outputFile: try TestFiles.path("serve-metrics") + ".log")
            defer { serve.sigkill() }
            let servePort = try await Self.port(in: serve, marker: "listening on http://127.0.0.1:")
            // Its queue numbers come from `rabbitmqctl` (an Erlang VM per call): slow on a loaded machine.
            let serveHTTP = HTTPTestClient(port: servePort, receiveTimeoutSeconds: 120)
            let fleet = try await Self.scrape(serveHTTP)
            Self.check(fleet, Self.serveFamilies, who: "serve")
            #expect(fleet.sum("baton_workers", where: ["state": "live"]) >= 1)
            #expect(fleet.sum("baton_dead_letters", where: ["agent": "flaky"]) >= 1)
            #expect(fleet.sum("baton_waiting_tasks", where: ["agent": "approval", "kind": "signal"]) >= 1)
            let probeAge = fleet.sum("baton_queue_oldest_message_age_seconds", where: ["queue": probe])
            #expect(probeAge >= 119 && probeAge < 3600, "oldest message age of \(probe): \(probeAge)")
            #expect(fleet.sum("baton_queue_messages", where: ["queue": probe, "state": "ready"]) == 1)
            _ = try? await probeChannel.deleteQueue(probe)
            await probeConnection.close()

            // GET /v1/queues: the rows of `baton queues -o json`.
            let queues = try await serveHTTP.request("GET", "/v1/queues")
            #expect(queues.status == 200, "\(queues.body)")
            let names = queues.items.compactMap { $0["queue"] as? String }
            #expect(names.contains(Topology.stepsQueue("default")) || names.contains { $0.hasPrefix("baton.steps.") }, "\(names)")
            #expect(names.contains(Topology.deadQueue), "\(names)")

            // POST /v1/bulk: a tracked bulk redrive of the dead letter, its progress read back by id; the redrive is
            // counted by the server that made it.
            let invalid = try await serveHTTP.request("POST", "/v1/bulk", body: #"{"action": "explode", "all": true, "reason": "x"}"#)
            #expect(invalid.status == 422 && invalid.body.contains("invalid-action"), "\(invalid.body)")
            let started = try await serveHTTP.request(
                "POST", "/v1/bulk", body: #"{"action": "redrive", "filter": {"agent": "flaky"}, "reason": "metrics test"}"#)
            #expect(started.status == 202, "\(started.body)")
            let bulkID = try #require(started.json["id"] as? String, "\(started.body)")
            #expect(started.json["total"] as? Int == 1, "\(started.body)")
            var operation: [String: Any] = [:]
            for _ in 0..<100 {
                operation = try await serveHTTP.request("GET", "/v1/bulk/\(bulkID)").json
                if operation["status"] as? String == "done" { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(operation["status"] as? String == "done" && operation["done"] as? Int == 1, "\(operation)")
            #expect(try await serveHTTP.request("GET", "/v1/bulk/bulk-nope").status == 404)
            let afterRedrive = try await Self.scrape(serveHTTP)
            #expect(afterRedrive.sum("baton_redrives_total", where: ["agent": "flaky"]) >= 1)
            #expect(afterRedrive.types["baton_redrives_total"] == "counter")

            _ = try await client.act("cancel", task: waiting, reason: "metrics test done", actor: "metrics-test")
            _ = await serve.stop()
            _ = await worker.process.stop()
        } catch {
            await client.close()
            throw error
        }
        await client.close()
    }

    // MARK: - Helpers

    /// The port a child printed after `marker`.
    static func port(in process: WorkerProcess, marker: String) async throws -> Int {
        var found: Int?
        _ = await eventually(timeout: .seconds(20)) {
            guard let range = process.output.range(of: marker) else { return !process.isRunning }
            found = Int(process.output[range.upperBound...].prefix { $0.isNumber })
            return true
        }
        return try #require(found, "no '\(marker)<port>' in the log: \(process.output.suffix(2000))")
    }

    struct Sample {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    struct Scrape {
        var types: [String: String] = [:]
        var samples: [Sample] = []

        func sum(_ name: String, where match: [String: String] = [:]) -> Double {
            samples.filter { sample in sample.name == name && match.allSatisfy { sample.labels[$0.key] == $0.value } }
                .reduce(0) { $0 + $1.value }
        }
    }

    static func scrape(_ http: HTTPTestClient) async throws -> Scrape {
        let reply = try await http.request("GET", "/metrics")
        try #require(reply.status == 200, "\(reply.body)")
        return parse(reply.body)
    }

    /// The Prometheus text format: `# TYPE name type` lines and `name{k="v",…} value` samples.
    static func parse(_ text: String) -> Scrape {
        var scrape = Scrape()
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                if parts.count == 4 { scrape.types[String(parts[2])] = String(parts[3]) }
                continue
            }
            if line.hasPrefix("#") { continue }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let series = line[..<space]
            var labels: [String: String] = [:]
            var name = String(series)
            if let open = series.firstIndex(of: "{") {
                name = String(series[..<open])
                let body = series[series.index(after: open)..<(series.lastIndex(of: "}") ?? series.endIndex)]
                for pair in body.split(separator: ",") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    if kv.count == 2 { labels[String(kv[0])] = String(kv[1]).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
                }
            }
            scrape.samples.append(Sample(name: name, labels: labels, value: value))
        }
        return scrape
    }

    /// Every family present with its TYPE, and each of its samples with exactly its label names (`le` too for a
    /// histogram's buckets).
    static func check(_ scrape: Scrape, _ families: [String: (type: String, labels: Set<String>)], who: String) {
        for (family, expected) in families.sorted(by: { $0.key < $1.key }) {
            #expect(scrape.types[family] == expected.type, "\(who): \(family) TYPE \(scrape.types[family] ?? "missing")")
            let names: Set<String> =
                expected.type == "histogram" ? [family + "_bucket", family + "_sum", family + "_count"] : [family]
            let samples = scrape.samples.filter { names.contains($0.name) }
            #expect(!samples.isEmpty, "\(who): no sample of \(family)")
            for sample in samples {
                var labels = Set(sample.labels.keys)
                if sample.name.hasSuffix("_bucket") { labels.remove("le") }
                #expect(labels == expected.labels, "\(who): \(sample.name) labels \(labels.sorted())")
            }
        }
    }
}
