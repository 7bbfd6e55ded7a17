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

    @Test(
        "fanout: 10 children finish on 3 workers, one SIGKILLed while they run; the join runs once with 10 results",
        .timeLimit(.minutes(3)))
    func fanoutSurvivesWorkerKill() async throws {
        try await Harness.withClient { client in
            let queue = TestServers.uniqueName("it-fanout")
            defer { Task { try? await Harness.deleteQueue(Topology.stepsQueue(queue)) } }
            var workers: [Harness.Worker] = []
            defer { for worker in workers { worker.process.sigkill() } }
            for n in 1...3 { workers.append(try await Harness.startWorker("fanout-\(n)", client: client, arguments: ["--queues", queue])) }
            let id = TestServers.uniqueName("fanout")
            let children = 10
            let steps = 30
            try await Self.startFanout(
                client, id: id, queue: queue, input: ["children": .int(Int64(children)), "steps": .int(Int64(steps))])

            // Kill a worker while the children run, and start a replacement.
            let running = try await eventually(timeout: .seconds(30), interval: .milliseconds(20)) {
                try await client.queries.task("\(id)/1").map { $0.seq >= 2 } ?? false
            }
            #expect(running, "child \(id)/1 did not start")
            workers[0].process.sigkill()
            #expect(try await client.queries.task(id)?.status == "waiting", "the children ended before the kill")
            workers.append(try await Harness.startWorker("fanout-4", client: client, arguments: ["--queues", queue]))

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
            }
            // Children's steps and charges count on the parent too (stepchain: 100 tokens a step).
            #expect(parent.budget.used.tokens == Int64(children * steps * 100))
        }
    }

    @Test("cancelling a fanout parent cancels its children; the join never runs", .timeLimit(.minutes(2)))
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

    @Test("children's charges count against the parent's budget: its cost limit stops them all", .timeLimit(.minutes(2)))
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
