import Baton
import BatonExamples
import Foundation
import TestSupport
import Testing

extension IntegrationTests {
    // MARK: Fan-out: parallel(children, then: join)

    /// Creates a `fanout` task whose steps (and its children's, via `child_queue`) run on `queue` only, so
    /// workers of other test runs on the shared servers never see them; publishes its first step.
    static func startFanout(_ client: BatonClient, id: String, queue: String, input: [String: JSONValue], budget: BudgetRequest? = nil)
        async throws
    {
        var input = input
        input["child_queue"] = .string(queue)
        let task = NewTask(
            id: id, agent: "fanout", inputJSON: JSONValue.object(input).jsonString, stateJSON: #"{"started":0}"#, firstStep: "fan",
            queue: queue, limits: BudgetLimits(budget, defaults: ProtocolSettings().defaultLimits))
        #expect(try await client.store.submit(task) == .created)
        let outbox = try await client.store.pendingOutbox(task: id)
        try await Harness.publish(outbox.values.map(Harness.message))
        try await client.store.outboxDone(task: id, ids: Array(outbox.keys))
    }

    /// A worker SIGKILLs itself while it runs a child's step (`in_step@2`: lease held, nothing committed; two more
    /// workers start beside it as the children run) or right after committing a child's last step
    /// (`after_commit@29`: the parent's join may then sit in the parent's outbox until the outbox sweep; two
    /// workers replace it). The crashing worker starts first, so it certainly meets that point. The join still
    /// runs exactly once, with all 10 results.
    @Test(
        "fanout: 10 children finish on 3 workers, one SIGKILLed while they run; the join runs once with 10 results",
        .timeLimit(.minutes(3)), arguments: ["in_step@2", "after_commit@29"])
    func fanoutSurvivesWorkerKill(crashPoint: String) async throws {
        try await Harness.withClient { client in
            let queue = TestServers.uniqueName("it-fanout")
            defer { Task { try? await Harness.deleteQueue(Topology.stepsQueue(queue)) } }
            var workers: [Harness.Worker] = []
            defer { for worker in workers { worker.process.sigkill() } }
            let name = "fanout-crash-\(crashPoint.prefix { $0 != "@" })"
            workers.append(try await Harness.startWorker(name, client: client, crashPoint: crashPoint, arguments: ["--queues", queue]))
            let id = TestServers.uniqueName("fanout")
            let children = 10
            let steps = 30
            try await Self.startFanout(
                client, id: id, queue: queue, input: ["children": .int(Int64(children)), "steps": .int(Int64(steps))])
            let alongside = crashPoint.hasPrefix("in_step")
            if alongside {
                for n in 2...3 {
                    workers.append(try await Harness.startWorker("fanout-\(n)", client: client, arguments: ["--queues", queue]))
                }
            }

            let status = await workers[0].process.waitForExit(timeout: .seconds(60))
            #expect(status == 128 + SIGKILL, "the worker with BATON_CRASH_POINT=\(crashPoint) did not kill itself")
            #expect(workers[0].log.contains("BATON_CRASH_POINT \(crashPoint.prefix { $0 != "@" }) reached for task \(id)/"))
            // The join has not run: the parent waits, or (the children's last commits went in one pipelined batch before
            // the crash) it was woken and its join sits unpublished in its outbox.
            let before = try await client.queries.task(id)?.status
            #expect(before == "waiting" || before == "queued", "the join ran before the crash: status \(before ?? "none")")
            for n in (alongside ? 4...4 : 2...3) {
                workers.append(try await Harness.startWorker("fanout-\(n)", client: client, arguments: ["--queues", queue]))
            }

            let parent = try await Harness.waitForStatus(client, id, ["succeeded"], timeout: .seconds(90), workers: workers)
            #expect(parent.result?["children"] == .int(Int64(children)))
            #expect(parent.result?["succeeded"] == .int(Int64(children)))
            #expect(parent.result?["records"] == .int(Int64(children * steps)))
            #expect(parent.children == TaskView.Children(total: Int64(children), done: Int64(children)))
            // The join ran exactly once: one wake-up, one commit (the final one, at seq 2).
            let history = try await client.queries.history(id)
            #expect(Harness.commitSeqs(history) == [2])
            #expect(history.filter { $0.type == "woke" }.count == 1)
            #expect(history.filter { $0.type == "waiting" }.count == 1)
            for n in 1...children {
                let child = try #require(try await client.queries.task("\(id)/\(n)"))
                #expect(child.status == "succeeded")
                #expect(child.parentID == id)
                #expect(try await Harness.records(client, child.id).count == steps)
                #expect(Harness.commitSeqs(try await client.queries.history(child.id)) == (1...Int64(steps)).map { $0 })
            }
            // Children's steps and charges count on the parent too (stepchain: 100 tokens a step).
            #expect(parent.budget.used.tokens == Int64(children * steps * 100))
            #expect(parent.budget.used.steps == Int64(children * steps + 2))
        }
    }

    @Test("cancelling a fanout parent cancels its children; the join never runs", .timeLimit(.minutes(4)))
    func fanoutCancelCascades() async throws {
        try await Harness.withClient { client in
            let queue = TestServers.uniqueName("it-fanout-cancel")
            defer { Task { try? await Harness.deleteQueue(Topology.stepsQueue(queue)) } }
            let worker = try await Harness.startWorker("fanout-cancel", client: client, arguments: ["--queues", queue])
            defer { worker.process.sigkill() }
            let id = TestServers.uniqueName("fanout-cancel")
            let children = 5
            try await Self.startFanout(client, id: id, queue: queue, input: ["children": .int(Int64(children)), "steps": 50_000])
            let started = try await eventually(timeout: .seconds(30), interval: .milliseconds(20)) {
                try await client.queries.task("\(id)/\(children)").map { $0.seq >= 1 } ?? false
            }
            #expect(started, "the children did not start")
            let waiting = try #require(try await client.queries.task(id))
            #expect(waiting.status == "waiting")
            #expect(waiting.children?.total == Int64(children))
            #expect(waiting.waitingFor?.first == ["children": .int(Int64(children) - (waiting.children?.done ?? 0))])
            #expect(waiting.statusReason == "waiting for \(children) children")

            // A child is a task of its own: `baton status` shows it with its parent; `baton cancel` stops it alone.
            let status = try await CLITests.baton(["status", "\(id)/1", "--json"])
            #expect(status.status == 0, "\(status.error)")
            let child = try JSONValue.parse(Array(status.output.utf8))
            #expect(child["parent_id"] == .string(id))
            #expect(child["agent"] == "stepchain")
            let cancelOne = try await CLITests.baton(["cancel", "\(id)/1", "--reason", "just this one"])
            #expect(cancelOne.status == 0, "\(cancelOne.error)")
            try await Harness.waitForStatus(client, "\(id)/1", ["cancelled"], timeout: .seconds(20), workers: [worker])
            #expect(try await client.queries.task(id)?.status == "waiting")
            #expect(try await client.queries.task("\(id)/2")?.isTerminal == false)

            let result = try await client.act("cancel", task: id, reason: "it-test", actor: "it")
            #expect(result == .done("cancelled"))
            for n in 1...children {
                try await Harness.waitForStatus(client, "\(id)/\(n)", ["cancelled"], timeout: .seconds(20), workers: [worker])
            }
            let parent = try #require(try await client.queries.task(id))
            #expect(parent.status == "cancelled")
            #expect(parent.children == TaskView.Children(total: Int64(children), done: Int64(children)))
            let history = try await client.queries.history(id)
            #expect(!history.contains { $0.type == "woke" || $0.type == "succeeded" })
        }
    }

    @Test("children's charges count against the parent's budget: its cost limit stops them all", .timeLimit(.minutes(4)))
    func fanoutSharedBudget() async throws {
        try await Harness.withClient { client in
            let queue = TestServers.uniqueName("it-fanout-budget")
            defer { Task { try? await Harness.deleteQueue(Topology.stepsQueue(queue)) } }
            let worker = try await Harness.startWorker("fanout-budget", client: client, arguments: ["--queues", queue])
            defer { worker.process.sigkill() }
            let id = TestServers.uniqueName("fanout-budget")
            let children = 4
            try await Self.startFanout(
                client, id: id, queue: queue,
                input: ["children": .int(Int64(children)), "agent": "spender", "child_input": ["cost_usd_per_step": 0.25]],
                budget: BudgetRequest(maxCostUSD: 2))
            let parent = try await Harness.waitForStatus(client, id, ["budget_exceeded"], timeout: .seconds(60), workers: [worker])
            #expect(parent.statusReason == "cost limit reached")
            // Each child's own limit is $5 (spender's default): the parent's $2 stopped them, each at most one
            // step (its own $0.25) past it.
            #expect(parent.costMicros >= 2_000_000)
            #expect(parent.costMicros <= 2_000_000 + Int64(children) * 250_000)
            var childrenCost: Int64 = 0
            for n in 1...children {
                let child = try await Harness.waitForStatus(client, "\(id)/\(n)", ["budget_exceeded"], timeout: .seconds(10))
                childrenCost += child.costMicros
            }
            #expect(childrenCost == parent.costMicros)
            let history = try await client.queries.history(id)
            #expect(!history.contains { $0.type == "succeeded" })
        }
    }
}

/// `it-twice-fanout`: two `parallel` steps in a row (`first`, then `second` children of `it-noop`), then completes
/// with the ids its second join saw.
struct TwiceFanoutAgent: Agent {
    struct Input: Codable, Sendable {
        var first: Int
        var second: Int
    }
    struct State: Codable, Sendable {}
    static let name = "it-twice-fanout"
    static let steps = ["first", "second", "done"]

    func initialState(for input: Input) throws -> State { State() }

    func run(step: String, context: StepContext<TwiceFanoutAgent>) async throws -> StepOutcome {
        switch step {
        case "first": return .parallel(Array(repeating: ChildTask(agent: "it-noop"), count: context.input.first), then: "second")
        case "second": return .parallel(Array(repeating: ChildTask(agent: "it-noop"), count: context.input.second), then: "done")
        default:
            return .complete(["seen": .array(context.childResults.keys.sorted().map(JSONValue.string))])
        }
    }
}

/// `it-noop`: completes at once with its own id.
struct NoopAgent: Agent {
    struct Input: Codable, Sendable {}
    struct State: Codable, Sendable {}
    static let name = "it-noop"
    static let steps = ["run"]

    func initialState(for input: Input) throws -> State { State() }

    func run(step: String, context: StepContext<NoopAgent>) async throws -> StepOutcome { .complete(["id": .string(context.taskID)]) }
}

extension IntegrationTests {
    /// Runs a task's steps in-process on the real Redis (the bus only captures messages: nothing reaches a
    /// shared queue) until no message is left.
    static func driveInProcess(_ client: BatonClient, id: String, agent: String, input: JSONValue, maxChildren: Int) async throws {
        var registry = AgentRegistry.examples
        registry.register(TwiceFanoutAgent())
        registry.register(NoopAgent())
        var settings = ProtocolSettings()
        settings.maxChildren = maxChildren
        let bus = CapturingBus()
        let driver = StepExecutor(
            registry: registry, store: client.store, bus: bus, workerID: TestServers.uniqueName("it-driver"), settings: settings,
            logger: Harness.logger)
        let task = NewTask(
            id: id, agent: agent, inputJSON: input.jsonString, stateJSON: agent == "fanout" ? #"{"started":0}"# : "{}",
            firstStep: agent == "fanout" ? "fan" : "first", queue: "it-in-process",
            limits: ProtocolSettings().defaultLimits)
        #expect(try await client.store.submit(task) == .created)
        await driver.flushOutbox(task: id)
        for _ in 0..<100 {
            let messages = bus.messages.withLock { messages in
                defer { messages = [] }
                return messages
            }
            if messages.isEmpty { return }
            for message in messages {
                _ = await driver.handleStep(body: Array(message.body.utf8), routingKey: message.routingKey)
            }
        }
    }

    @Test("children are numbered over the task's life; limits.max_children counts them all and fails the task past it")
    func fanoutChildCap() async throws {
        try await Harness.withClient { client in
            let fits = TestServers.uniqueName("fanout-twice")
            try await Self.driveInProcess(client, id: fits, agent: "it-twice-fanout", input: ["first": 2, "second": 3], maxChildren: 5)
            let done = try #require(try await client.queries.task(fits))
            #expect(done.status == "succeeded")
            #expect(done.result?["seen"] == .array((1...5).map { .string("\(fits)/\($0)") }))
            #expect(done.children == TaskView.Children(total: 5, done: 5))

            let over = TestServers.uniqueName("fanout-over")
            try await Self.driveInProcess(client, id: over, agent: "it-twice-fanout", input: ["first": 3, "second": 3], maxChildren: 5)
            let failed = try #require(try await client.queries.task(over))
            #expect(failed.status == "failed")
            #expect(failed.error?["code"] == "max_children")
            #expect(failed.error?["message"]?.stringValue?.contains("over the cap of 5 children per task (limits.max_children)") == true)
            #expect(try await client.queries.task("\(over)/4") == nil)
            #expect(failed.children == TaskView.Children(total: 3, done: 3))

            // One parallel step over the cap is refused before anything is written: a permanent error.
            let single = TestServers.uniqueName("fanout-single")
            try await Self.driveInProcess(client, id: single, agent: "it-twice-fanout", input: ["first": 6, "second": 0], maxChildren: 5)
            let dead = try #require(try await client.queries.task(single))
            #expect(dead.status == "dead_lettered")
            #expect(dead.error?["message"]?.stringValue?.contains("limits.max_children") == true)
            #expect(try await client.queries.task("\(single)/1") == nil)
        }
    }

    @Test("nested fan-out: a child that fans out itself; grandchildren count against the root's budget")
    func fanoutNested() async throws {
        try await Harness.withClient { client in
            let id = TestServers.uniqueName("fanout-nested")
            let input: JSONValue = ["children": 2, "agent": "fanout", "child_input": ["children": 3, "steps": 2]]
            try await Self.driveInProcess(client, id: id, agent: "fanout", input: input, maxChildren: 100)
            let root = try #require(try await client.queries.task(id))
            #expect(root.status == "succeeded")
            #expect(root.result?["succeeded"] == 2)
            let middle = try #require(try await client.queries.task("\(id)/2"))
            #expect(middle.status == "succeeded")
            #expect(middle.result?["records"] == 6)
            #expect(try await client.queries.task("\(id)/2/3")?.parentID == "\(id)/2")
            // 6 grandchildren × 2 stepchain steps × 100 tokens, on the middle tasks and on the root.
            #expect(middle.budget.used.tokens == 3 * 2 * 100)
            #expect(root.budget.used.tokens == 6 * 2 * 100)
            #expect(root.budget.used.steps == 6 * 2 + 2 * 2 + 2)
        }
    }
}

extension IntegrationTests {
    @Test("the parent's budget deadline firing while it waits for children stops it and cancels them (on Redis)")
    func fanoutDeadlineStopsChildren() async throws {
        try await Harness.withClient { client in
            let id = TestServers.uniqueName("fanout-deadline")
            let bus = CapturingBus()
            let driver = StepExecutor(
                registry: .examples, store: client.store, bus: bus, workerID: TestServers.uniqueName("it-driver"),
                settings: ProtocolSettings(), logger: Harness.logger)
            var limits = ProtocolSettings().defaultLimits
            limits.deadlineMilliseconds = Int64(Date().addingTimeInterval(3600).timeIntervalSince1970 * 1000)
            let task = NewTask(
                id: id, agent: "fanout", inputJSON: #"{"children": 3, "steps": 5}"#, stateJSON: #"{"started":0}"#, firstStep: "fan",
                queue: "it-in-process", limits: limits)
            #expect(try await client.store.submit(task) == .created)
            await driver.flushOutbox(task: id)
            let first = try #require(bus.last)
            _ = await driver.handleStep(body: Array(first.body.utf8), routingKey: first.routingKey)
            let waiting = try #require(try await client.queries.task(id))
            #expect(waiting.status == "waiting")
            #expect(waiting.waitingFor?.contains { $0["deadline"] != nil } == true)
            // Fire the deadline timer now (the wait-timer sweep does this when it is due).
            let timer = try #require(try await client.store.redis.send("HGET", client.store.settings.keys.task(id), "wait_timer").string)
            #expect(try await client.store.fireWaitTimer(task: id, timer: timer) == false)
            let stopped = try #require(try await client.queries.task(id))
            #expect(stopped.status == "budget_exceeded")
            for n in 1...3 {
                let child = try #require(try await client.queries.task("\(id)/\(n)"))
                #expect(child.status == "cancelled")
                #expect(child.statusReason == "the parent task was cancelled")
            }
            #expect(stopped.children == TaskView.Children(total: 3, done: 3))
            // A child's queued message now finds it ended.
            let childMessage = try #require(
                bus.messages.withLock { $0 }.first { $0.body.contains("\(id)\\/1") || $0.body.contains("\(id)/1") })
            let disposition = await driver.handleStep(body: Array(childMessage.body.utf8), routingKey: childMessage.routingKey)
            if case .ack = disposition {} else { Issue.record("a cancelled child's message was not acked: \(disposition)") }
            #expect(try await client.queries.task("\(id)/1")?.status == "cancelled")
        }
    }
}

extension HTTPAPITests {
    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(4)))
    func aChildTaskIsReachableWithItsSlashEncoded() async throws {
        try await Self.withServer { http, client in
            let id = TestServers.uniqueName("http-fanout")
            try await IntegrationTests.driveInProcess(
                client, id: id, agent: "fanout", input: ["children": 2, "steps": 1], maxChildren: 100)
            let parent = try await http.request("GET", "/v1/tasks/\(id)", token: Self.viewer)
            #expect(parent.status == 200)
            #expect((parent.json["children"] as? [String: Any])?["total"] as? Int == 2)
            let child = try await http.request("GET", "/v1/tasks/\(id)%2F2", token: Self.viewer)
            #expect(child.status == 200)
            #expect(child.json["id"] as? String == "\(id)/2")
            #expect(child.json["parent_id"] as? String == id)
            let cancelled = try await http.request("POST", "/v1/tasks/\(id)%2F1/cancel", token: Self.operatorToken)
            // Found (not 404): the child already succeeded, so a cancel is a conflict.
            #expect(cancelled.status == 409)
        }
    }
}
