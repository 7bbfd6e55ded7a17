import AMQPClient
import Baton
import BatonExamples
import Foundation
import RedisClient
import Synchronization
import TestSupport
import Testing

/// Servers of one wait test, isolated from every other test on the shared servers: a RabbitMQ vhost of its
/// own (its own submit, step, signal and dead-letter queues) and a Redis key prefix of its own (its own
/// timers, indexes and tasks). Waiting tasks depend on their timers, which any worker's timer sweep on the
/// same prefix would fire; here only this test's workers see them.
struct WaitServers {
    let vhost = TestServers.uniqueName("baton-it-waits")
    let prefix = TestServers.uniqueName("bt-waits") + ":"

    var amqpURL: String {
        var components = URLComponents(string: TestServers.amqpURL)
        components?.path = "/" + vhost
        return components?.string ?? TestServers.amqpURL
    }

    var settings: RedisTaskStore.Settings {
        var settings = RedisTaskStore.Settings()
        settings.keys = RedisKeys(prefix: prefix)
        return settings
    }

    func environment() -> [String: String] {
        Harness.environment(["BATON_AMQP_URL": amqpURL, "BATON_REDIS_KEY_PREFIX": prefix])
    }

    /// Creates the vhost, runs `body` with a client of these servers, then deletes the vhost.
    static func with<T>(_ body: (WaitServers, BatonClient) async throws -> T) async throws -> T {
        let servers = WaitServers()
        let added = try await RabbitControl.run(["add_vhost", servers.vhost])
        try #require(added.status == 0, "rabbitmqctl add_vhost \(servers.vhost) failed")
        try await RabbitControl.run(["set_permissions", "-p", servers.vhost, "guest", ".*", ".*", ".*"])
        do {
            let client = try await BatonClient.connect(
                amqpURL: servers.amqpURL, redisURL: TestServers.redisURL, publishing: true, settings: servers.settings,
                logger: Harness.logger)
            do {
                let result = try await body(servers, client)
                await client.close()
                _ = try? await RabbitControl.run(["delete_vhost", servers.vhost])
                return result
            } catch {
                await client.close()
                throw error
            }
        } catch {
            _ = try? await RabbitControl.run(["delete_vhost", servers.vhost])
            throw error
        }
    }

    /// Starts `baton worker` (3 s lease) on these servers and waits for its heartbeat.
    func startWorker(_ name: String, client: BatonClient, environment extra: [String: String] = [:]) async throws -> Harness.Worker {
        let id = TestServers.uniqueName("it-\(name)")
        let process = try WorkerProcess.start(
            executable: try Harness.baton(), arguments: ["worker", "--id", id, "--lease", "3", "--drain-timeout", "3"],
            environment: environment().merging(extra) { $1 }, outputFile: try TestFiles.path("worker-\(name)") + ".log")
        return try await Harness.registered(process, id: id, client: client, timeout: .seconds(20))
    }

    /// Runs the `baton` CLI on these servers.
    func cli(_ arguments: [String]) async throws -> (status: Int32, output: String, error: String) {
        try await WorkerProcess.run(executable: try Harness.baton(), arguments: arguments, environment: environment())
    }

    /// Publishes raw messages on this vhost.
    func publish(_ messages: [AMQPMessage]) async throws {
        var configuration = try AMQPConfiguration(url: amqpURL, connectionName: "baton-integration-test")
        configuration.connectTimeout = .seconds(5)
        let connection = try await AMQPConnection.connect(configuration, logger: Harness.logger)
        do {
            let channel = try await connection.openChannel(confirms: true)
            let results = try await channel.publish(messages)
            for result in results { if let result { throw result } }
            await connection.close()
        } catch {
            await connection.close()
            throw error
        }
    }

    /// `[queue: (ready, unacknowledged)]` of this vhost, from `rabbitmqctl list_queues`.
    func queueDepths() async throws -> [String: (ready: Int, unacked: Int)] {
        let (_, output) = try await RabbitControl.run([
            "list_queues", "-p", vhost, "--no-table-headers", "--silent", "name", "messages_ready", "messages_unacknowledged",
        ])
        var out: [String: (ready: Int, unacked: Int)] = [:]
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: "\t").map(String.init)
            if parts.count == 3, let ready = Int(parts[1]), let unacked = Int(parts[2]) { out[parts[0]] = (ready, unacked) }
        }
        return out
    }
}

/// Waits, sleeps and signals end to end: real `baton worker` child processes on the real servers.
@Suite("Integration: waits, sleeps and signals", .serialized, .enabled(if: TestServers.available))
struct IntegrationWaitTests {
    static func approval(_ name: String, timeout: Double) -> SubmitRequest {
        SubmitRequest(id: TestServers.uniqueName(name), agent: "approval", input: ["timeout_seconds": .double(timeout)])
    }

    static func signalMessage(_ body: JSONValue) -> AMQPMessage {
        Harness.message(exchange: Topology.signalsExchange, routingKey: "", body: Array(body.jsonString.utf8))
    }

    static func woke(_ client: BatonClient, _ id: String) async throws -> [TaskEvent] {
        try await client.queries.history(id).filter { $0.type == "woke" }
    }

    @Test(
        "A signal sent before the wait, one during it (via baton.signals), and one sent twice with the same id: each task resumes exactly once with its payload",
        .timeLimit(.minutes(4)))
    func signalsBeforeDuringAndTwice() async throws {
        try await WaitServers.with { servers, client in
            // Before: the task exists (queued) and its first step is held back until the signal is in.
            let bus = CapturingBus()
            let driver = StepExecutor(
                registry: .examples, store: client.store, bus: bus, workerID: TestServers.uniqueName("it-driver"),
                settings: ProtocolSettings(), logger: Harness.logger)
            let early = try await driver.submit(Self.approval("early", timeout: 3600)).id
            let first = try #require(bus.last)
            let sent = try await servers.cli(["signal", early, "approve", "--payload", #"{"n": 1}"#, "--id", "e-1", "--json"])
            #expect(sent.status == 0, "baton signal failed: \(sent.error)")
            #expect(try JSONValue.parse(Array(sent.output.utf8))["result"] == "stored")
            let pendingView = try #require(try await client.queries.task(early))
            #expect(pendingView.signalsPending?.map(\.name) == ["approve"])
            #expect(pendingView.signalsPending?.first?.payload == ["n": 1])

            let worker = try await servers.startWorker("waits", client: client)
            defer { worker.process.sigkill() }
            // The topology exists now (the worker declared it): release the held first step.
            try await servers.publish([Harness.message(first)])

            let during = try await Harness.submit(client, Self.approval("during", timeout: 3600))
            let twice = try await Harness.submit(client, Self.approval("twice", timeout: 3600))
            for id in [during, twice] {
                let waiting = try await Harness.waitForStatus(client, id, ["waiting"], workers: [worker])
                #expect(waiting.statusReason?.hasPrefix("waiting for approve or reject, timeout ") == true)
                #expect(waiting.waitingFor?.count == 3)
                #expect(waiting.waitingFor?.first == ["signal": "approve"])
                #expect(waiting.lease == nil)
            }
            let status = try await servers.cli(["status", during, "--json"])
            let statusJSON = try JSONValue.parse(Array(status.output.utf8))
            #expect(statusJSON["status"] == "waiting")
            #expect(statusJSON["waiting_for"]?.arrayValue?.last?["timeout_at"] != nil)

            // During: through the baton.signals exchange, as any service would.
            try await servers.publish([
                Self.signalMessage([
                    "v": 1, "task_id": .string(during), "name": "reject", "payload": ["n": 2], "id": "d-1", "actor": "billing-service",
                ])
            ])
            // Twice: the same id twice through the CLI.
            var results: [String] = []
            for _ in 0..<2 {
                let approve = try await servers.cli([
                    "approve", twice, "--payload", #"{"n": 3}"#, "--id", "t-1", "--reason", "ok", "--json",
                ])
                #expect(approve.status == 0, "baton approve failed: \(approve.error)")
                results.append((try? JSONValue.parse(Array(approve.output.utf8)))?["result"]?.stringValue ?? approve.output)
            }
            #expect(results == ["woke", "duplicate"])

            let expected: [(String, String, Int64, String)] = [
                (early, "approve", 1, "e-1"), (during, "reject", 2, "d-1"), (twice, "approve", 3, "t-1"),
            ]
            for (id, decision, n, signalID) in expected {
                let done = try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker])
                #expect(done.result?["decision"]?.stringValue == decision)
                #expect(done.result?["payload"] == ["n": .int(n)])
                #expect(done.result?["signal_id"]?.stringValue == signalID)
                #expect(done.signalsPending == nil)
                #expect(try await Self.woke(client, id).count == 1)
                let history = try await client.queries.history(id)
                #expect(history.filter { $0.type == "signal_received" }.count == 1)
                #expect(history.filter { $0.type == "succeeded" }.count == 1)
                #expect(done.budget.used.steps == 2)
            }
            let duringHistory = try await client.queries.history(during)
            #expect(duringHistory.first { $0.type == "signal_received" }?.data?["actor"] == "billing-service")
            let twiceHistory = try await client.queries.history(twice)
            #expect(twiceHistory.first { $0.type == "signal_received" }?.data?["reason"] == "ok")
            await worker.process.stop()
        }
    }

    @Test(
        "approve racing the timeout: exactly one trigger wins; a losing signal is refused or stays in the mailbox", .timeLimit(.minutes(4)))
    func approveRacesTimeout() async throws {
        try await WaitServers.with { servers, client in
            let worker = try await servers.startWorker("race", client: client)
            defer { worker.process.sigkill() }
            var ids: [String] = []
            for index in 0..<6 { ids.append(try await Harness.submit(client, Self.approval("race-\(index)", timeout: 1))) }
            for id in ids { try await Harness.waitForStatus(client, id, ["waiting", "queued", "running", "succeeded"], workers: [worker]) }
            // Approve around the time the timeouts fall due, spread out so that both sides win some.
            var outcomes: [String: SignalOutcome] = [:]
            for (index, id) in ids.enumerated() {
                if index > 0 { try await Task.sleep(for: .milliseconds(150)) }
                outcomes[id] = try await client.signal(TaskSignal(task: id, name: "approve", id: "race", actor: "racer"))
            }
            for id in ids {
                let done = try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker])
                let decision = done.result?["decision"]?.stringValue
                let woke = try await Self.woke(client, id)
                #expect(woke.count == 1, "task \(id) woke \(woke.count) times")
                switch outcomes[id] {
                case .woke:
                    #expect(decision == "approve")
                    #expect(woke.first?.data?["trigger"] == "signal")
                case .stored:
                    // The timeout won; the late approval is kept, not consumed and not lost.
                    #expect(decision == "timeout")
                    #expect(done.signalsPending?.map(\.id) == ["race"])
                case .terminal:
                    #expect(decision == "timeout")
                default:
                    Issue.record("unexpected signal outcome \(String(describing: outcomes[id])) for \(id)")
                }
            }

            // Head to head: the timer fires and the signal arrives at the same moment, with no worker's sweep
            // around. Whichever script runs first wins; the other changes nothing.
            var waiting: [String] = []
            for index in 0..<5 { waiting.append(try await Harness.submit(client, Self.approval("head-\(index)", timeout: 3600))) }
            for id in waiting { try await Harness.waitForStatus(client, id, ["waiting"], workers: [worker]) }
            await worker.process.stop()
            var winners: [String: String] = [:]
            for id in waiting {
                let timer = try #require(try await client.store.redis.send("HGET", servers.settings.keys.task(id), "wait_timer").string)
                #expect(!timer.isEmpty)
                async let fired = client.store.fireWaitTimer(task: id, timer: timer)
                async let signalled = client.store.signal(TaskSignal(task: id, name: "approve", id: "head", actor: "racer"))
                let (timerWon, outcome) = try await (fired, signalled)
                #expect(timerWon != (outcome == .woke), "task \(id): timer \(timerWon), signal \(outcome)")
                winners[id] = timerWon ? "timeout" : "approve"
            }
            let second = try await servers.startWorker("race-2", client: client)
            defer { second.process.sigkill() }
            for id in waiting {
                let done = try await Harness.waitForStatus(client, id, ["succeeded"], workers: [second])
                #expect(done.result?["decision"]?.stringValue == winners[id])
                #expect(try await Self.woke(client, id).count == 1)
                if winners[id] == "timeout" { #expect(done.signalsPending?.map(\.id) == ["head"]) }
            }
            await second.process.stop()
        }
    }

    @Test(
        "sleeper sleeps holding no message (no unacked delivery, empty step queue), then wakes by its timer and completes",
        .timeLimit(.minutes(4)))
    func sleeperWakes() async throws {
        try await WaitServers.with { servers, client in
            let worker = try await servers.startWorker("sleeper", client: client)
            defer { worker.process.sigkill() }
            let id = try await Harness.submit(
                client, SubmitRequest(id: TestServers.uniqueName("sleeper"), agent: "sleeper", input: ["seconds": 4]))
            let sleeping = try await Harness.waitForStatus(client, id, ["sleeping"], workers: [worker])
            #expect(sleeping.statusReason?.hasPrefix("sleeping until ") == true)
            #expect(sleeping.nextTimerAt != nil)
            #expect(sleeping.lease == nil)
            // Held: nothing in flight for it, nothing ready. (The outbox may still be confirming the last ack.)
            let quiet = try await eventually(timeout: .seconds(3), interval: .milliseconds(200)) {
                let depths = try await servers.queueDepths()
                let steps = depths[Topology.stepsQueue("default")]
                return steps.map { $0.ready == 0 && $0.unacked == 0 } ?? false
            }
            let state = try #require(try await client.queries.task(id))
            if state.status == "sleeping" {
                let depths = try await servers.queueDepths()
                #expect(quiet, "a sleeping task's step queue is not empty: \(depths)")
            }
            let done = try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker])
            #expect(done.result?["trigger"] == "time")
            #expect((done.result?["lateness_ms"]?.intValue ?? -1) >= 0)
            #expect((done.result?["fired_lateness_ms"]?.intValue ?? -1) >= 0)
            #expect((done.result?["fired_lateness_ms"]?.intValue ?? .max) <= (done.result?["lateness_ms"]?.intValue ?? -1) + 1)
            let history = try await client.queries.history(id)
            #expect(history.map(\.type).filter { ["sleeping", "woke", "succeeded"].contains($0) } == ["sleeping", "woke", "succeeded"])
            await worker.process.stop()
        }
    }

    @Test(
        "a sleep longer than sweeps.prewarm_lead is told waking_soon once before it wakes (history and baton.events); a shorter one is not",
        .timeLimit(.minutes(4)))
    func sleeperIsToldItWakesSoon() async throws {
        try await WaitServers.with { servers, client in
            let worker = try await servers.startWorker("prewarm", client: client, environment: ["BATON_SWEEPS_PREWARM_LEAD": "2s"])
            defer { worker.process.sigkill() }
            // Whatever warms workspaces up listens on baton.events for this type.
            let listener = try await EventsListener.start(servers, routingKey: "sleeper.#.waking_soon")
            defer { listener.cancel() }
            // Its heartbeat says its lead (`baton doctor` compares the live workers').
            let registered = try await client.queries.workers().first { $0.id == worker.id }
            #expect(registered?.prewarmLeadMilliseconds == 2000)
            let long = try await Harness.submit(
                client, SubmitRequest(id: TestServers.uniqueName("prewarm-long"), agent: "sleeper", input: ["seconds": 5]))
            let short = try await Harness.submit(
                client, SubmitRequest(id: TestServers.uniqueName("prewarm-short"), agent: "sleeper", input: ["seconds": 1]))
            for id in [long, short] { _ = try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker]) }
            let history = try await client.queries.history(long)
            let kinds = ["sleeping", "waking_soon", "woke", "succeeded"]
            #expect(history.map(\.type).filter { kinds.contains($0) } == kinds)
            let soon = try #require(history.first { $0.type == "waking_soon" })
            let sleeping = try #require(history.first { $0.type == "sleeping" })
            #expect(soon.data?["wake_at"]?.stringValue == sleeping.data?["at"]?.stringValue)
            #expect(soon.data?["trigger"]?.stringValue == "time")
            #expect(soon.step == "wake")
            #expect(try await client.queries.history(short).contains { $0.type == "waking_soon" } == false)
            let published = await eventually(timeout: .seconds(10)) { !listener.bodies.isEmpty }
            #expect(published, "no waking_soon on baton.events")
            let event = listener.bodies.first
            #expect(event?["task_id"]?.stringValue == long)
            #expect(event?["status"]?.stringValue == "sleeping")
            #expect(listener.bodies.count == 1)
            await listener.stop()
            await worker.process.stop()
        }
    }

    @Test(
        "Waiting and sleeping tasks survive the SIGKILL of every worker and still wake (timer, timeout and signal)", .timeLimit(.minutes(4))
    )
    func survivesWorkerRestart() async throws {
        try await WaitServers.with { servers, client in
            let first = try await servers.startWorker("restart-1", client: client)
            defer { first.process.sigkill() }
            let sleeper = try await Harness.submit(
                client, SubmitRequest(id: TestServers.uniqueName("restart-sleeper"), agent: "sleeper", input: ["seconds": 6]))
            let timesOut = try await Harness.submit(client, Self.approval("restart-timeout", timeout: 6))
            let approved = try await Harness.submit(client, Self.approval("restart-approve", timeout: 3600))
            try await Harness.waitForStatus(client, sleeper, ["sleeping"], workers: [first])
            try await Harness.waitForStatus(client, timesOut, ["waiting"], workers: [first])
            try await Harness.waitForStatus(client, approved, ["waiting"], workers: [first])

            first.process.sigkill()
            #expect(await first.process.waitForExit(timeout: .seconds(10)) == 128 + SIGKILL)
            // No worker runs: the signal is taken by Redis alone; its step message waits in the queue.
            let outcome = try await client.signal(
                TaskSignal(task: approved, name: "approve", payloadJSON: #"{"ok":true}"#, id: "r-1", actor: "ana", reason: "fine"))
            #expect(outcome == .woke)

            let second = try await servers.startWorker("restart-2", client: client)
            defer { second.process.sigkill() }
            let slept = try await Harness.waitForStatus(client, sleeper, ["succeeded"], workers: [first, second])
            #expect(slept.result?["trigger"] == "time")
            let timedOut = try await Harness.waitForStatus(client, timesOut, ["succeeded"], workers: [first, second])
            #expect(timedOut.result?["decision"] == "timeout")
            let decided = try await Harness.waitForStatus(client, approved, ["succeeded"], workers: [first, second])
            #expect(decided.result?["decision"] == "approve")
            #expect(decided.result?["payload"] == ["ok": true])
            #expect(decided.result?["actor"] == "ana")
            for id in [sleeper, timesOut, approved] { #expect(try await Self.woke(client, id).count == 1) }
            await second.process.stop()
        }
    }

    @Test(
        "On Redis: pausing a waiting task pauses it when it wakes; the budget's deadline ends a wait; a full mailbox refuses a signal",
        .timeLimit(.minutes(4)))
    func pauseDeadlineAndFullMailbox() async throws {
        try await WaitServers.with { servers, client in
            let worker = try await servers.startWorker("pause-deadline", client: client)
            defer { worker.process.sigkill() }
            let paused = try await Harness.submit(client, Self.approval("pause", timeout: 3600))
            var deadlined = Self.approval("deadline", timeout: 3600)
            deadlined.budget = BudgetRequest(deadline: Date().addingTimeInterval(8))
            let deadline = try await Harness.submit(client, deadlined)
            let full = try await Harness.submit(client, Self.approval("full", timeout: 3600))
            for id in [paused, deadline, full] { try await Harness.waitForStatus(client, id, ["waiting"], workers: [worker]) }
            let waitingView = try #require(try await client.queries.task(deadline))
            #expect(waitingView.statusReason?.contains(", deadline ") == true)
            #expect(waitingView.waitingFor?.last?["deadline"] != nil)

            // Pause while waiting: a request; the wait goes on, the task pauses once it wakes.
            #expect(try await client.act("pause", task: paused, reason: "hold", actor: "ops") == .requested)
            #expect(try await client.queries.task(paused)?.status == "waiting")
            #expect(try await client.signal(TaskSignal(task: paused, name: "approve", payloadJSON: "7", actor: "ana")) == .woke)
            try await Harness.waitForStatus(client, paused, ["paused"], workers: [worker])
            _ = try await client.act("resume", task: paused, reason: "go", actor: "ops")
            let resumed = try await Harness.waitForStatus(client, paused, ["succeeded"], workers: [worker])
            #expect(resumed.result?["decision"] == "approve")
            #expect(resumed.result?["payload"] == 7)

            // The deadline comes before the timeout: the task stops there.
            let stopped = try await Harness.waitForStatus(client, deadline, ["budget_exceeded"], workers: [worker])
            #expect(stopped.statusReason == "deadline limit reached")
            #expect(try await Self.woke(client, deadline).isEmpty)

            // A full mailbox refuses what the task does not wait for, and still takes what it does.
            for index in 0..<SignalLimits.mailboxCap {
                let outcome = try await client.store.signal(TaskSignal(task: full, name: "noise", id: "n-\(index)", actor: "test"))
                #expect(outcome == .stored(status: "waiting"))
            }
            let refused = try await client.store.signal(TaskSignal(task: full, name: "noise", id: "n-over", actor: "test"))
            #expect(refused == .mailboxFull(cap: SignalLimits.mailboxCap))
            #expect(try await client.signal(TaskSignal(task: full, name: "reject", id: "r", actor: "test")) == .woke)
            let rejected = try await Harness.waitForStatus(client, full, ["succeeded"], workers: [worker])
            #expect(rejected.result?["decision"] == "reject")
            #expect(rejected.signalsPending?.count == SignalLimits.mailboxCap)
            await worker.process.stop()
        }
    }

    @Test("Invalid signals on baton.signals are dead-lettered with a reason naming the field", .timeLimit(.minutes(4)))
    func invalidSignalsAreDeadLettered() async throws {
        try await WaitServers.with { servers, client in
            let worker = try await servers.startWorker("bad-signals", client: client)
            defer { worker.process.sigkill() }
            let missing = TestServers.uniqueName("no-such-task")
            let cases: [(body: String, reason: String, field: String)] = [
                (#"{"v": 1, "task_id": "abc"}"#, "malformed", "name"),
                (#"{"v": 1, "task_id": 42, "name": "approve"}"#, "malformed", "task_id"),
                (#"{"v": 2, "task_id": "abc", "name": "approve"}"#, "malformed", "v"),
                (#"not json"#, "malformed", ""),
                (#"{"v": 1, "task_id": "\#(missing)", "name": "approve"}"#, "permanent_error", "task_id"),
            ]
            try await servers.publish(
                cases.map { Harness.message(exchange: Topology.signalsExchange, routingKey: "", body: Array($0.body.utf8)) })
            for entry in cases {
                let letter = try await Harness.waitForDeadLetter(client) { $0.body == entry.body }
                let found = try #require(letter, "no dead letter for the signal \(entry.body):\n\(worker.log.suffix(3000))")
                #expect(found.reason == entry.reason, "\(entry.body): \(found.reason) \(found.error)")
                #expect((found.field ?? "") == entry.field, "\(entry.body): field \(String(describing: found.field))")
                #expect(!found.error.isEmpty)
            }
            await worker.process.stop()
        }
    }
}

/// The wait scripts on Redis driven in-process (no worker, no broker): the `waiter` test agent's routes.
@Suite("Redis: wait scripts", .enabled(if: TestServers.available))
struct RedisWaitScriptTests {
    /// Runs `body` with a store under a key prefix of its own and a driver that keeps what it publishes.
    static func withDriver(
        url: String = TestServers.redisURL, buckets: Int = 16, _ body: (RedisTaskStore, StepExecutor, CapturingBus) async throws -> Void
    ) async throws {
        let redis = try await RedisConnection.connect(configuration: try RedisConfiguration(url: url), logger: Harness.logger)
        var settings = RedisTaskStore.Settings()
        settings.keys = RedisKeys(prefix: TestServers.uniqueName("bt-wait-scripts") + ":", bucketCount: buckets)
        let store = RedisTaskStore(redis: redis, settings: settings)
        let bus = CapturingBus()
        var registry = AgentRegistry()
        registry.register(WaiterAgent())
        let driver = StepExecutor(
            registry: registry, store: store, bus: bus, workerID: TestServers.uniqueName("it-driver"), settings: ProtocolSettings(),
            logger: Harness.logger)
        do {
            try await body(store, driver, bus)
            await redis.close()
        } catch {
            await redis.close()
            throw error
        }
    }

    /// Delivers the last captured step message to the driver.
    static func deliverLast(_ driver: StepExecutor, _ bus: CapturingBus) async throws -> Disposition {
        let message = try #require(bus.last)
        return await driver.handleStep(body: Array(message.body.utf8), routingKey: message.routingKey)
    }

    @Test("a time already past wakes the task inside the wait's commit and routes it to onTimeout")
    func pastTimeWakesInTheCommit() async throws {
        try await Self.withDriver { store, driver, bus in
            let id = try await driver.submit(SubmitRequest(agent: "waiter", input: ["mode": "past"])).id
            _ = try await Self.deliverLast(driver, bus)
            // The commit woke it: the resumed step (onTimeout) is what it published.
            let resumed = try StepMessage.decode(Array(try #require(bus.last).body.utf8))
            #expect(resumed.step == "timedout")
            #expect(resumed.seq == 1)
            _ = try await Self.deliverLast(driver, bus)
            let view = try #require(try await TaskQueries(store: store).task(id))
            #expect(view.status == "succeeded")
            #expect(view.result?["step"] == "timedout")
            let events = try await TaskQueries(store: store).history(id).map(\.type)
            #expect(events == ["submitted", "started", "waiting", "woke", "succeeded"])
        }
    }

    @Test("a task at rest keeps its history at its exact size: the same entries, ids and counters in fewer bytes")
    func historyAtRestIsCompact() async throws {
        try await Self.withDriver { store, driver, bus in
            let id = try await driver.submit(SubmitRequest(agent: "waiter", input: ["mode": "timeout"])).id
            _ = try await Self.deliverLast(driver, bus)
            #expect(try await TaskQueries(store: store).task(id)?.status == "waiting")
            let redis = store.redis
            let key = store.settings.keys.events(id)
            // The same entries appended to a new stream, as XADD leaves them (its node allocated ahead).
            let copy = key + ":appended"
            let entries = try await redis.send("XRANGE", key, "-", "+").array ?? []
            #expect(entries.count == 3)
            for entry in entries {
                let parts = entry.array ?? []
                let entryID = try #require(parts.first?.string)
                let fields = (parts.dropFirst().first?.array ?? []).compactMap(\.string)
                let arguments: [any RedisArgumentConvertible] = [copy, entryID] + (fields as [any RedisArgumentConvertible])
                _ = try await redis.send(RedisCommand("XADD", arguments: arguments))
            }
            let atRest = try #require(try await redis.send("MEMORY", "USAGE", key, "SAMPLES", "0").int)
            let appended = try #require(try await redis.send("MEMORY", "USAGE", copy, "SAMPLES", "0").int)
            _ = try await redis.send("DEL", copy)
            #expect(atRest < appended, "the waiting task's history (\(atRest) B) is no smaller than its entries appended (\(appended) B)")
            // What the relay counts by is kept: entries added, the last id.
            let info = try await redis.send("XINFO", "STREAM", key).array ?? []
            var fields: [String: RedisReply] = [:]
            for index in stride(from: 0, to: info.count - 1, by: 2) {
                if let name = info[index].string { fields[name] = info[index + 1] }
            }
            #expect(fields["entries-added"]?.int == 3)
            #expect(fields["last-generated-id"]?.string == entries.last?.array?.first?.string)
            // Later events go on after it.
            let timer = try #require(try await redis.send("HGET", store.settings.keys.task(id), "wait_timer").string)
            #expect(try await store.fireWaitTimer(task: id, timer: timer))
            let outbox = try await store.pendingOutbox(task: id)
            _ = await driver.handleStep(body: Array(try #require(outbox.values.first).body.utf8), routingKey: "default")
            let events = try await TaskQueries(store: store).history(id).map(\.type)
            #expect(events == ["submitted", "started", "waiting", "woke", "succeeded"])
        }
    }

    @Test("an ACL user without @dangerous (no RESTORE) runs the same scripts: the history stays as appended, nothing fails")
    func historyRewriteIsBestEffort() async throws {
        let admin = try await RedisConnection.connect(
            configuration: try RedisConfiguration(url: TestServers.redisURL), logger: Harness.logger)
        let user = TestServers.uniqueName("bt-acl")
        _ = try await admin.send("ACL", "SETUSER", user, "on", ">secret", "~*", "&*", "+@all", "-@dangerous")
        do {
            let url = TestServers.redisURL.replacingOccurrences(of: "redis://", with: "redis://\(user):secret@")
            try await Self.withDriver(url: url) { store, driver, bus in
                let denied = try await store.redis.pipeline([RedisCommand("RESTORE", arguments: ["bt-acl-probe", "0", "x"])])
                #expect(denied.first?.errorMessage?.contains("NOPERM") == true, "RESTORE answered \(denied)")
                let id = try await driver.submit(SubmitRequest(agent: "waiter", input: ["mode": "timeout"])).id
                _ = try await Self.deliverLast(driver, bus)
                #expect(try await TaskQueries(store: store).task(id)?.status == "waiting")
                let timer = try #require(try await store.redis.send("HGET", store.settings.keys.task(id), "wait_timer").string)
                #expect(try await store.fireWaitTimer(task: id, timer: timer))
                let outbox = try await store.pendingOutbox(task: id)
                _ = await driver.handleStep(body: Array(try #require(outbox.values.first).body.utf8), routingKey: "default")
                let events = try await TaskQueries(store: store).history(id).map(\.type)
                #expect(events == ["submitted", "started", "waiting", "woke", "succeeded"])
            }
        } catch {
            _ = try? await admin.send("ACL", "DELUSER", user)
            await admin.close()
            throw error
        }
        _ = try await admin.send("ACL", "DELUSER", user)
        await admin.close()
    }

    @Test("a timeout routes to onTimeout; the timer, fired twice, wakes once; a signal after it stays in the mailbox")
    func timeoutRoutesToOnTimeout() async throws {
        try await Self.withDriver { store, driver, bus in
            let id = try await driver.submit(SubmitRequest(agent: "waiter", input: ["mode": "timeout"])).id
            _ = try await Self.deliverLast(driver, bus)
            let count = bus.messages.withLock { $0.count }
            let timer = try #require(try await store.redis.send("HGET", store.settings.keys.task(id), "wait_timer").string)
            #expect(try await store.fireWaitTimer(task: id, timer: timer))
            #expect(try await store.fireWaitTimer(task: id, timer: timer) == false)
            #expect(try await store.signal(TaskSignal(task: id, name: "go", id: "late", actor: "test")) == .stored(status: "queued"))
            let outbox = try await store.pendingOutbox(task: id)
            #expect(outbox.count == 1)
            let message = try StepMessage.decode(Array(try #require(outbox.values.first).body.utf8))
            #expect(message.step == "timedout")
            #expect(bus.messages.withLock { $0.count } == count)
            _ = await driver.handleStep(body: Array(try #require(outbox.values.first).body.utf8), routingKey: "default")
            let view = try #require(try await TaskQueries(store: store).task(id))
            #expect(view.result?["step"] == "timedout")
            #expect(view.signalsPending?.map(\.id) == ["late"])
        }
    }
}
