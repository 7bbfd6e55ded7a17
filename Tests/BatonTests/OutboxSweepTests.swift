import AMQPClient
import Foundation
import Logging
import RedisClient
import Synchronization
import TestSupport
import Testing

@testable import Baton

/// The outbox sweep's claim script on a real Redis, under a private key prefix.
@Suite("Outbox sweep", .enabled(if: TestServers.available))
struct OutboxSweepTests {
    @Test func anEmptyOutboxLeavesTheIndexAndAPendingOneIsClaimed() async throws {
        let redis = try await RedisConnection.connect(
            configuration: try RedisConfiguration(url: TestServers.redisURL), logger: Logger(label: "baton.outbox-tests"))
        let keys = RedisKeys(prefix: TestServers.uniqueName("outbox-test") + ":")
        let ids = ["gone", "live", "root/1"]
        do {
            for id in ids { try await redis.send("ZADD", keys.outboxIndex(bucket: keys.bucket(of: id)), 1, id) }
            try await redis.send("HSET", keys.outbox("live"), "entry-1", "{}")
            try await redis.send("HSET", keys.outbox("root/1"), "entry-1", "{}")
            var claimed: [String] = []
            for bucket in Set(ids.map(keys.bucket(of:))) {
                let reply = try await redis.evalSHA(
                    RedisTaskStore.claimOutboxScript, keys: [keys.outboxIndex(bucket: bucket)], args: [5000, 200, keys.prefix])
                claimed += (reply.array ?? []).compactMap(\.string)
            }
            #expect(Set(claimed) == ["live", "root/1"])
            let goneScore = try await redis.send("ZSCORE", keys.outboxIndex(bucket: keys.bucket(of: "gone")), "gone")
            #expect(goneScore.isNull, "a task with an empty outbox is dropped from the index")
            let liveScore = try await redis.send("ZSCORE", keys.outboxIndex(bucket: keys.bucket(of: "live")), "live")
            #expect((Int64(liveScore.string ?? "") ?? 0) > 1, "a claimed entry is re-scored to now")
        } catch {
            await redis.close()
            throw error
        }
        await redis.close()
    }

    /// A bus that counts what it is asked to publish, then publishes it.
    final class CountingBus: MessageBus {
        let inner: any MessageBus
        let published = Mutex(0)
        init(_ inner: any MessageBus) { self.inner = inner }
        func publish(_ messages: [OutboxMessage]) async -> [(any Error)?] {
            published.withLock { $0 += messages.count }
            return await inner.publish(messages)
        }
    }

    /// The sweeps of a worker under key prefix `prefix` that publishes through `bus` and logs into a recorder.
    static func sweeps(
        redis: RedisConnection, prefix: String, bus: any MessageBus, configure: (inout Worker.Configuration) -> Void = { _ in }
    ) -> (
        sweeps: Sweeps, store: RedisTaskStore, log: StepLogHandlerTests.Recorder
    ) {
        var settings = RedisTaskStore.Settings()
        settings.keys = RedisKeys(prefix: prefix)
        let store = RedisTaskStore(redis: redis, settings: settings)
        let executor = StepExecutor(
            registry: .examples, store: store, bus: bus, workerID: TestServers.uniqueName("it-sweeper"), settings: ProtocolSettings(),
            logger: Harness.logger)
        var configuration = Worker.Configuration(amqpURL: TestServers.amqpURL, redisURL: TestServers.redisURL)
        configuration.store = settings
        configure(&configuration)
        let recorder = StepLogHandlerTests.Recorder()
        let sweeps = Sweeps(
            store: store, executor: executor, configuration: configuration, logger: StepLogHandlerTests.workerLogger(recorder))
        return (sweeps, store, recorder)
    }

    /// Submits a two-step `stepchain` task with id `id` on step queue `queue` straight to the store (no worker, no
    /// broker).
    static func submitChain(_ store: RedisTaskStore, id: String, queue: String = "default") async throws {
        let runner = try #require(AgentRegistry.examples["stepchain"])
        let input = Array(#"{"steps":2}"#.utf8)
        let task = NewTask(
            id: id, agent: "stepchain", inputJSON: String(decoding: input, as: UTF8.self), stateJSON: try runner.initialState(input),
            firstStep: runner.steps[0], queue: queue, limits: BudgetLimits(nil, defaults: ProtocolSettings().defaultLimits), tenant: "")
        #expect(try await store.submit(task) == .created)
    }

    /// Connects to both servers, runs `body`, then deletes step queue `queue` and every key under `prefix`.
    static func withServers(
        prefix: String, deleting queue: String, _ body: (RedisConnection, AMQPConnection) async throws -> Void
    ) async throws {
        let redis = try await RedisConnection.connect(
            configuration: try RedisConfiguration(url: TestServers.redisURL), logger: Logger(label: "baton.outbox-tests"))
        let connection = try await AMQPConnection.connect(
            try AMQPConfiguration(url: TestServers.amqpURL, connectionName: "baton-outbox-test"),
            logger: Logger(label: "baton.outbox-tests"))
        func cleanUp() async {
            _ = try? await Harness.deleteQueue(queue)
            if let left = try? await Harness.scanKeys(redis, matching: prefix + "*"), !left.isEmpty {
                _ = try? await redis.send(RedisCommand("DEL", arguments: left.map { $0 as any RedisArgumentConvertible }))
            }
            await connection.close()
            await redis.close()
        }
        do {
            try await body(redis, connection)
        } catch {
            await cleanUp()
            throw error
        }
        await cleanUp()
    }

    /// Connects to Redis, runs `body` with sweeps under a key prefix of their own (``sweeps(redis:prefix:bus:configure:)``),
    /// then deletes every key under that prefix.
    static func withSweeps(
        _ name: String, bus: any MessageBus,
        _ body: (RedisConnection, RedisKeys, Sweeps, RedisTaskStore, StepLogHandlerTests.Recorder) async throws -> Void
    ) async throws {
        let redis = try await RedisConnection.connect(
            configuration: try RedisConfiguration(url: TestServers.redisURL), logger: Logger(label: "baton.outbox-tests"))
        let prefix = TestServers.uniqueName(name) + ":"
        let (sweeps, store, recorder) = Self.sweeps(redis: redis, prefix: prefix, bus: bus)
        func cleanUp() async {
            for key in (try? await Harness.scanKeys(redis, matching: prefix + "*")) ?? [] { _ = try? await redis.send("DEL", key) }
            await redis.close()
        }
        do {
            try await body(redis, RedisKeys(prefix: prefix), sweeps, store, recorder)
        } catch {
            await cleanUp()
            throw error
        }
        await cleanUp()
    }

    /// A task whose first step names a queue no worker has declared: the broker returns it (`mandatory`), it stays in
    /// the outbox, and the sweep puts the next try off with a backoff instead of re-publishing it every sweep, with
    /// one warning that names the queue; once the queue exists the next try publishes it. `baton doctor` reports the
    /// task. A finished task's unroutable step message is dropped.
    @Test func anUnroutableStepMessageIsPutOffWarnedOnceAndPublishedOnceItsQueueExists() async throws {
        let prefix = TestServers.uniqueName("outbox-unroutable") + ":"
        let queue = TestServers.uniqueName("it-noqueue")
        let keys = RedisKeys(prefix: prefix)
        try await Self.withServers(prefix: prefix, deleting: Topology.stepsQueue(queue)) { redis, connection in
            let bus = CountingBus(AMQPBus(channel: try await connection.openChannel(confirms: true)))
            let (sweeps, store, recorder) = Self.sweeps(redis: redis, prefix: prefix, bus: bus)

            func create(_ id: String) async throws { try await Self.submitChain(store, id: id, queue: queue) }
            let id = TestServers.uniqueName("unroutable")
            try await create(id)
            let index = keys.outboxIndex(bucket: keys.bucket(of: id))
            // As if the submit's own publish had failed long enough ago for the sweep to take it.
            func age() async throws { try await redis.send("ZADD", index, "XX", 1, id) }
            func score() async throws -> Int64 { try #require(Int64(try await redis.send("ZSCORE", index, id).string ?? "")) }
            // A sweep, and Redis's clock before and after it: its claim re-scored the task in between.
            func sweep() async throws -> ClosedRange<Int64> {
                let before = try await redis.serverTimeMilliseconds()
                try await sweeps.sweepOutbox()
                return before...(try await redis.serverTimeMilliseconds())
            }
            func warnings() -> [String] { recorder.lines.withLock { $0.filter { $0.hasPrefix("warning") } } }

            try await age()
            let firstSweep = try await sweep()
            #expect(bus.published.withLock { $0 } == 1)
            #expect(try await store.pendingOutbox(task: id).count == 1, "the returned message stays in the outbox")
            // Claimed again once its score is the sweep age (5 s) old: the first backoff (10 s) puts it 5 s ahead.
            let first = try await score()
            #expect((firstSweep.lowerBound + 5_000)...(firstSweep.upperBound + 5_000) ~= first, "\(first) after \(firstSweep)")
            #expect(warnings().count == 1, "\(recorder.lines.withLock { $0 })")
            let warning = try #require(warnings().first)
            #expect(warning.contains("no queue bound") && warning.contains(queue) && warning.contains("--queues \(queue)"), "\(warning)")

            let view = try await TaskQueries(store: store).task(id)
            #expect(
                view?.status == "queued" && view?.statusReason?.contains("no queue bound for '\(queue)'") == true,
                "\(String(describing: view))")

            let again = try await sweep()
            if again.upperBound < firstSweep.lowerBound + 10_000 {  // (a box so loaded that 10 s passed proves nothing)
                #expect(bus.published.withLock { $0 } == 1, "a put-off message is not tried again before its time")
            }

            // The wait grows with how long the task has been stuck (since its last update, by Redis's clock), whichever
            // worker tries it: stuck 30 s, the next try comes 30 s after this one; stuck 10 min, a minute after.
            for (stuckFor, wait) in [(30_000, 30_000), (600_000, 60_000)] as [(Int64, Int64)] {
                let setAt = try await redis.serverTimeMilliseconds()
                try await redis.send("HSET", keys.task(id), "updated_at", setAt - stuckFor)
                try await age()
                let sweepTime = try await sweep()
                let ahead = wait - 5_000
                let extra = wait == 60_000 ? 0 : 1  // (the stuck time grows while the test runs, up to the cap)
                let low = sweepTime.lowerBound + ahead + Int64(extra) * (sweepTime.lowerBound - setAt)
                let high = sweepTime.upperBound + ahead + Int64(extra) * (sweepTime.upperBound - setAt)
                let next = try await score()
                #expect((low...high) ~= next, "stuck \(stuckFor) ms: \(next) not in \(low)...\(high)")
            }
            #expect(bus.published.withLock { $0 } >= 3)
            #expect(warnings().count == 1, "one warning per queue (and process) in five minutes")

            // Doctor names the task and its queue once the message has waited over a minute.
            try await redis.send("HSET", keys.task(id), "updated_at", try await redis.serverTimeMilliseconds() - 120_000)
            let stuck = try await TaskQueries(store: store).stuckOutboxes(olderThan: .seconds(60))
            #expect(stuck.map(\.task) == [id] && stuck.first?.routingKeys == [queue], "\(stuck)")
            // (RabbitMQ pointed at a closed port: its checks end at once, without `rabbitmqctl`, which costs seconds of
            // CPU on a box running the suite.)
            let doctor = try await CLIOperatorTests.baton(
                ["doctor", "-o", "json"],
                environment: ["BATON_REDIS_KEY_PREFIX": prefix, "BATON_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"])
            let items = try #require(try CLIOperatorTests.json(doctor.output)["items"] as? [[String: Any]], "\(doctor.error)")
            let outbox = try #require(items.first { $0["check"] as? String == "outbox" }, "\(items)")
            #expect(outbox["status"] as? String == "warning")
            #expect((outbox["detail"] as? String)?.contains("\(queue) (1)") == true, "\(outbox)")
            #expect((outbox["fix"] as? String)?.contains("--queues \(queue)") == true, "\(outbox)")

            // The queue appears (a worker for it starts): the next try publishes the message and empties the outbox.
            let declare = try await connection.openChannel()
            try await Topology.declare(on: declare, agents: [], queues: [queue], settings: Topology.QueueSettings())
            try await age()
            try await sweeps.sweepOutbox()
            #expect(bus.published.withLock { $0 } >= 3)
            #expect(try await store.pendingOutbox(task: id).isEmpty)
            #expect(try await declare.inspectQueue(Topology.stepsQueue(queue)).messageCount == 1)
            #expect(try await TaskQueries(store: store).stuckOutboxes(olderThan: .seconds(60)).isEmpty)

            // A finished task's own step message that no queue takes is dropped, not retried forever.
            _ = try await declare.deleteQueue(Topology.stepsQueue(queue))
            let finished = TestServers.uniqueName("unroutable-done")
            try await create(finished)
            try await redis.send("HSET", keys.task(finished), "status", "cancelled")
            try await redis.send("ZADD", keys.outboxIndex(bucket: keys.bucket(of: finished)), "XX", 1, finished)
            try await sweeps.sweepOutbox()
            #expect(try await store.pendingOutbox(task: finished).isEmpty)
            #expect(recorder.lines.withLock { $0.contains { $0.contains("dropped the unroutable step message of a finished task") } })

            // A parent's outbox holds its children's first steps: each message is judged by its own task. A cancelled
            // child's is dropped, a queued child's stays and that child says why; the waiting parent keeps its own.
            let parent = TestServers.uniqueName("unroutable-parent")
            try await create(parent)
            try await redis.send("HSET", keys.task(parent), "status", "waiting")
            for (child, status) in [("\(parent)/1", "queued"), ("\(parent)/2", "cancelled")] {
                try await redis.send("HSET", keys.task(child), "status", status, "updated_at", try await redis.serverTimeMilliseconds())
                let message = OutboxMessage.step(
                    StepMessage(task: child, agent: "stepchain", step: "work", seq: 0, branch: 0, attempt: 1), queue: queue)
                try await redis.send("HSET", keys.outbox(parent), "child-\(child)", message.jsonText)
            }
            try await redis.send("ZADD", keys.outboxIndex(bucket: keys.bucket(of: parent)), "XX", 1, parent)
            try await sweeps.sweepOutbox()
            #expect(Set(try await store.pendingOutbox(task: parent).keys).count == 2)
            #expect(try await store.pendingOutbox(task: parent)["child-\(parent)/2"] == nil, "the cancelled child's step is dropped")
            let child = try await redis.send("HGET", keys.task("\(parent)/1"), "status_reason").string
            #expect(child?.contains("no queue bound for '\(queue)'") == true, "\(String(describing: child))")
            #expect((try await redis.send("HGET", keys.task(parent), "status_reason").string ?? "").isEmpty)
        }
    }

    /// A bus whose broker refuses everything (as while RabbitMQ is down).
    struct RefusingBus: MessageBus {
        struct Down: Error {}
        func publish(_ messages: [OutboxMessage]) async -> [(any Error)?] { messages.map { _ in Down() } }
    }

    /// Any other failure (the broker down) keeps the sweep's plain retry, without a backoff, and is said once per task.
    @Test func aTaskLeftByAnOutageIsRetriedEverySweepAndAnnouncedOnce() async throws {
        try await Self.withSweeps("outbox-outage", bus: RefusingBus()) { redis, keys, sweeps, store, recorder in
            let id = TestServers.uniqueName("outage")
            let index = keys.outboxIndex(bucket: keys.bucket(of: id))
            try await redis.send(
                "HSET", keys.outbox(id), "entry-1",
                OutboxMessage.step(.init(task: id, agent: "stepchain", step: "work", seq: 0, branch: 0, attempt: 1), queue: "default")
                    .jsonText)
            for round in 1...3 {
                try await redis.send("ZADD", index, 1, id)
                let before = try await redis.serverTimeMilliseconds()
                try await sweeps.sweepOutbox()
                let score = try #require(Int64(try await redis.send("ZSCORE", index, id).string ?? ""))
                let after = try await redis.serverTimeMilliseconds()
                #expect(score >= before && score <= after, "round \(round): re-scored to the claim, not put off")
            }
            #expect(try await store.pendingOutbox(task: id).count == 1)
            let announced = recorder.lines.withLock { $0.filter { $0.contains("re-publishing what a crash or an outage left behind") } }
            #expect(announced.count == 1, "\(recorder.lines.withLock { $0 })")
            #expect(!recorder.lines.withLock { $0.contains { $0.hasPrefix("warning") } })
        }
    }

    /// An agent whose step queue no worker of the test servers declares (the test deletes it first).
    struct NoQueueAgent: Agent {
        struct Input: Codable, Sendable {}
        struct State: Codable, Sendable {}
        static let name = "it-no-queue-agent"
        static let steps = ["start"]
        static let queue = "it-no-such-queue"
        static var options: AgentOptions { AgentOptions(queue: queue) }
        init() {}
        func initialState(for input: Input) throws -> State { State() }
        func run(step: String, context: StepContext<NoQueueAgent>) async throws -> StepOutcome { .complete(["ok": .bool(true)]) }
    }

    /// The worker that takes a submit tells its submitter (the reply's `warning`: `baton submit`, `POST /v1/tasks`)
    /// when the new task's first step found no queue; the task is created and waits in its outbox.
    @Test func aSubmitWhoseFirstStepFindsNoQueueTellsItsSubmitter() async throws {
        let prefix = TestServers.uniqueName("outbox-submit") + ":"
        let queue = Topology.stepsQueue(NoQueueAgent.queue)
        try await Self.withServers(prefix: prefix, deleting: queue) { redis, connection in
            try await Harness.deleteQueue(queue)
            var settings = RedisTaskStore.Settings()
            settings.keys = RedisKeys(prefix: prefix)
            let store = RedisTaskStore(redis: redis, settings: settings)
            var registry = AgentRegistry()
            registry.register(NoQueueAgent())
            let executor = StepExecutor(
                registry: registry, store: store, bus: AMQPBus(channel: try await connection.openChannel(confirms: true)),
                workerID: TestServers.uniqueName("it-submitter"), settings: ProtocolSettings(), logger: Harness.logger)

            let taken = try await executor.take(SubmitRequest(agent: NoQueueAgent.name, input: [:]))
            #expect(taken.status == "queued")
            #expect(taken.warning?.contains("no step queue '\(NoQueueAgent.queue)'") == true, "\(String(describing: taken.warning))")
            #expect(taken.warning?.contains("--queues \(NoQueueAgent.queue)") == true)
            #expect(try await store.pendingOutbox(task: taken.id).count == 1, "the first step waits in the outbox")
            // The same id submitted again: the task exists, and the submitter is told again.
            let again = try await executor.take(SubmitRequest(id: taken.id, agent: NoQueueAgent.name, input: [:]))
            #expect(again.id == taken.id && again.warning != nil)

            // Once a worker has declared the queue: no warning, and the resubmit's flush queues the waiting step.
            let declare = try await connection.openChannel()
            try await Topology.declare(on: declare, agents: [], queues: [NoQueueAgent.queue], settings: Topology.QueueSettings())
            let third = try await executor.take(SubmitRequest(id: taken.id, agent: NoQueueAgent.name, input: [:]))
            #expect(third.warning == nil)
            #expect(try await store.pendingOutbox(task: taken.id).isEmpty)
            #expect(try await executor.take(SubmitRequest(agent: NoQueueAgent.name, input: [:])).warning == nil)
            #expect(try await declare.inspectQueue(queue).messageCount == 2)
        }
    }

    /// The stalled sweep republishes a running task whose lease expired with no live holder, and leaves the queued
    /// tasks that share its index alone (it reads their status instead of running the script for each).
    @Test func theStalledSweepTakesRunningTasksOnly() async throws {
        try await Self.withSweeps("stalled-sweep", bus: CapturingBus()) { redis, keys, sweeps, store, _ in
            var ids: [String] = []
            for name in ["stalled-running", "stalled-queued"] {
                let id = TestServers.uniqueName(name)
                try await Self.submitChain(store, id: id)
                try await redis.send("ZADD", keys.index(bucket: keys.bucket(of: id), status: "queued"), 1, id)
                ids.append(id)
            }
            let (running, queued) = (ids[0], ids[1])
            try await redis.send("HSET", keys.task(running), "status", "running", "lease_owner", "a-worker-long-gone", "lease_until", 1)
            let queuedEvents = try await TaskQueries(store: store).history(queued).count
            try await sweeps.sweepStalled()
            #expect(try await TaskQueries(store: store).task(running)?.status == "queued")
            #expect(try await TaskQueries(store: store).history(running).contains { $0.type == "retrying" })
            #expect(try await TaskQueries(store: store).task(queued)?.status == "queued")
            #expect(try await TaskQueries(store: store).history(queued).count == queuedEvents)
        }
    }

    /// More older queued tasks in a bucket than one page (a queue nobody consumes) do not hide a stalled running task:
    /// the sweep pages on past the oldest entries.
    @Test func theStalledSweepPagesPastABacklogOfQueuedTasks() async throws {
        try await Self.withSweeps("stalled-paging", bus: CapturingBus()) { redis, keys, sweeps, store, _ in
            let id = TestServers.uniqueName("stalled-behind-backlog")
            try await Self.submitChain(store, id: id)
            let index = keys.index(bucket: keys.bucket(of: id), status: "queued")
            // Two and a half pages of older entries, a millisecond apart (task ids whose hashes are gone read as not
            // running), and the stalled task behind them.
            let backlog = Sweeps.stalledPage * 5 / 2
            try await redis.send(RedisCommand("ZADD", arguments: [index] + (0..<backlog).flatMap { [String($0), "\(id)-debris-\($0)"] }))
            try await redis.send("ZADD", index, 10_000, id)
            try await redis.send("HSET", keys.task(id), "status", "running", "lease_owner", "a-worker-long-gone", "lease_until", 1)
            // The first round reads the oldest page only; each later one a page further on.
            try await sweeps.sweepStalled()
            #expect(try await TaskQueries(store: store).task(id)?.status == "running")
            var rounds = 1
            while try await TaskQueries(store: store).task(id)?.status == "running", rounds < 6 {
                try await sweeps.sweepStalled()
                rounds += 1
            }
            #expect(rounds == 3, "found after \(rounds) rounds")
            #expect(try await TaskQueries(store: store).task(id)?.status == "queued")
            #expect(try await TaskQueries(store: store).history(id).contains { $0.type == "retrying" })

            // A group of entries that share one score, larger than two pages (a parent's children, indexed by one
            // commit), with a stalled task sorted last among them: walked a page a round, not skipped.
            let child = id + "/zz"
            try await Self.submitChain(store, id: child)
            try await redis.send("ZREM", index, id)
            try await redis.send(RedisCommand("ZADD", arguments: [index] + (0..<backlog).flatMap { ["20000", "\(id)/g\($0)"] }))
            try await redis.send("ZADD", index, 20_000, child)
            try await redis.send("HSET", keys.task(child), "status", "running", "lease_owner", "a-worker-long-gone", "lease_until", 1)
            rounds = 0
            while try await TaskQueries(store: store).task(child)?.status == "running", rounds < 12 {
                try await sweeps.sweepStalled()
                rounds += 1
            }
            #expect(try await TaskQueries(store: store).task(child)?.status == "queued", "not found in \(rounds) rounds")
            try await redis.send(RedisCommand("ZREM", arguments: [index] + (0..<backlog).map { "\(id)/g\($0)" }))
            try await redis.send(RedisCommand("ZREM", arguments: [index] + (0..<backlog).map { "\(id)-debris-\($0)" }))
        }
    }

    /// `waking_soon` (`sweeps.prewarm_lead`, 60 s by default): told once to a task whose wait longer than the lead ends
    /// within it, never for a short wait or the budget's deadline, nor again when a round finds the same timer.
    @Test func aLongWaitEndingWithinTheLeadIsToldItWakesSoonOnce() async throws {
        try await Self.withSweeps("prewarm", bus: CapturingBus()) { redis, keys, sweeps, store, _ in
            let time = try await redis.send("TIME").array?.compactMap { $0.string.flatMap { Int64($0) } } ?? []
            let now = try #require(time.first) * 1000 + (time.count > 1 ? time[1] / 1000 : 0)
            let due = now + 30_000
            // (name, when the wait began, due kind, due): a 130 s timeout ending in 30 s, a 40 s one (shorter than the lead),
            // a deadline, a timeout ending in 2 minutes (beyond the lead: not yet), a long wait with a pause requested.
            let cases: [(String, Int64, String, Int64)] = [
                ("long", now - 100_000, "timeout", due), ("short", now - 10_000, "timeout", due),
                ("deadline", now - 100_000, "deadline", due),
                ("far", now - 100_000, "timeout", now + 120_000), ("paused", now - 100_000, "timeout", due),
            ]
            var ids: [String: String] = [:]
            for (name, since, kind, due) in cases {
                let id = TestServers.uniqueName("prewarm-\(name)")
                try await Self.submitChain(store, id: id)
                let timer = #"{"branch":0,"seq":0,"wake":"\#(id)"}"#
                let wait =
                    #"{"k":"wait","signals":["go"],"next":"step","on_timeout":"late","due":\#(due),"due_kind":"\#(kind)","since":\#(since)}"#
                try await redis.send("HSET", keys.task(id), "status", "waiting", "wait", wait, "wait_timer", timer, "next_timer", due)
                // A pause requested while it waits: it pauses on waking, so nothing is warmed for it.
                if name == "paused" { try await redis.send("HSET", keys.task(id), "pause", #"{"reason":"hold"}"#) }
                try await redis.send("ZADD", keys.timers(bucket: keys.bucket(of: id)), due, timer)
                ids[name] = id
            }
            try await sweeps.prewarm()
            try await sweeps.prewarm()
            // A lost mark (a Redis failover, say): the task's last event still dedupes.
            for bucket in 0..<keys.bucketCount { try await redis.send("DEL", keys.prewarm(bucket: bucket)) }
            try await sweeps.prewarm()
            let queries = TaskQueries(store: store)
            let told = try await queries.history(try #require(ids["long"])).filter { $0.type == "waking_soon" }
            #expect(told.count == 1)
            #expect(told.first?.step == "late")
            #expect(told.first?.data?["trigger"]?.stringValue == "timeout")
            #expect(told.first?.data?["wake_at"]?.stringValue == WaitSpec.iso(due))
            #expect((told.first?.data?["in_ms"]?.intValue ?? 0) > 0)
            for name in ["short", "deadline", "far", "paused"] {
                #expect(try await queries.history(try #require(ids[name])).contains { $0.type == "waking_soon" } == false, "\(name)")
            }
        }
    }

    /// The claim of timers due within the lead returns each once across rounds, also when a full page ends inside a
    /// group of timers due at the same millisecond, or is all one such group; a round that finds nothing writes nothing.
    @Test func thePrewarmClaimTakesEveryTimerOnceAcrossPagesAndTies() async throws {
        try await Self.withSweeps("prewarm-claim", bus: CapturingBus()) { redis, keys, _, store, _ in
            let lead = Duration.seconds(60)
            #expect(try await store.claimPrewarm(lead: lead, limit: 200).isEmpty)
            let marks = try await redis.pipeline((0..<keys.bucketCount).map { RedisCommand("EXISTS", keys.prewarm(bucket: $0)) })
            #expect(marks.allSatisfy { $0.int == 0 }, "an idle round wrote its mark")
            let time = try await redis.send("TIME").array?.compactMap { $0.string.flatMap { Int64($0) } } ?? []
            let now = try #require(time.first) * 1000
            let timers = keys.timers(bucket: 0)
            func member(_ n: Int) -> String { #"{"branch":0,"seq":0,"wake":"tie-\#(n)"}"# }
            // 150 due at one millisecond, 100 at the next (a page of 200 ends inside the second group), 250 at a third
            // (a page all one score), and a step-message timer (not a wait: never returned).
            var args: [String] = []
            for n in 0..<500 { args += [String(now + 10_000 + (n < 150 ? 0 : n < 250 ? 1 : 2)), member(n)] }
            args += [String(now + 10_000), #"{"x":"step","q":"default"}"#]
            try await redis.send(RedisCommand("ZADD", arguments: [timers] + args))
            var claimed: [String] = []
            for _ in 0..<6 { claimed += try await store.claimPrewarm(lead: lead, limit: 200).map(\.timer) }
            #expect(claimed.count == 500)
            let missed = Set((0..<500).map(member)).subtracting(claimed)
            #expect(missed.isEmpty, "\(missed.count) timers never claimed, e.g. \(missed.sorted().prefix(3))")
        }
    }
}
