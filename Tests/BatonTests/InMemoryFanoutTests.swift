import Baton
import BatonExamples
import BatonTesting
import Foundation
import Testing

/// Fan-out (`parallel(children, then: join)`) on the in-memory backend: the same rules as the Lua scripts.
@Suite("InMemory: fan-out")
struct InMemoryFanoutTests {
    static func deliverAll(_ harness: BatonTestHarness) async {
        while await harness.deliverNext() != nil {}
    }

    @Test("fanout: 10 stepchain children run as tasks of their own; the join runs once with all 10 results")
    func fanoutCompletes() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "fanout", input: ["children": 10, "steps": 3])
        await harness.deliverNext()
        let waiting = try #require(harness.task(id))
        #expect(waiting.status == "waiting")
        #expect(waiting.statusReason == "waiting for 10 children")
        let child = try #require(harness.task("\(id)/1"))
        #expect(child.status == "queued")
        #expect(child.agent == "stepchain")
        #expect(child.parentID == id)
        #expect(waiting.childrenTotal == 10)
        await harness.runUntilIdle()
        let done = try #require(harness.task(id))
        #expect(done.status == "succeeded")
        #expect(done.result?["children"] == 10)
        #expect(done.result?["succeeded"] == 10)
        #expect(done.result?["records"] == 30)
        #expect(done.eventTypes.filter { $0 == "succeeded" }.count == 1)
        #expect(done.eventTypes.filter { $0 == "woke" }.count == 1)
        #expect(done.childrenDone == 10)
        for n in 1...10 { #expect(harness.task("\(id)/\(n)")?.status == "succeeded") }
        // The children's steps and charges count on the parent too (stepchain charges 100 tokens a step).
        #expect(done.usage.tokens == 10 * 3 * 100)
        #expect(done.usage.steps == 10 * 3 + 2)
    }

    @Test("cancelling the parent cancels its live children; the join never runs")
    func cancelCascades() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "fanout", input: ["children": 3, "steps": 50])
        await harness.deliverNext()
        await harness.deliverNext()
        #expect(await harness.cancel(id).status == "cancelled")
        await harness.runUntilIdle()
        #expect(harness.task(id)?.status == "cancelled")
        for n in 1...3 { #expect(harness.task("\(id)/\(n)")?.status == "cancelled") }
        #expect(harness.task(id)?.eventTypes.contains("woke") == false)
        let results = try await harness.store.childResults(task: id)
        #expect(results.count == 3)
    }

    @Test("children's charges count against the parent's budget: the parent's cost limit stops them")
    func sharedBudget() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(
            agent: "fanout", input: ["children": 4, "agent": "spender", "child_input": ["cost_usd_per_step": 0.25]],
            budget: BudgetRequest(maxCostUSD: 2))
        await harness.runUntilIdle()
        let parent = try #require(harness.task(id))
        #expect(parent.status == "budget_exceeded")
        #expect(parent.usage.costMicros >= 2_000_000)
        #expect(parent.usage.costMicros <= 3_000_000)
        for n in 1...4 { #expect(harness.task("\(id)/\(n)")?.status == "budget_exceeded") }
    }

    @Test("more children than limits.max_children is a permanent error naming the cap")
    func cap() async throws {
        var settings = ProtocolSettings()
        settings.maxChildren = 5
        let harness = BatonTestHarness(registry: .examples, settings: settings)
        let id = try await harness.submit(agent: "fanout", input: ["children": 6])
        await harness.runUntilIdle()
        let task = try #require(harness.task(id))
        #expect(task.status == "dead_lettered")
        #expect(task.error?["message"]?.stringValue?.contains("limits.max_children") == true)
        #expect(harness.task("\(id)/1") == nil)
    }
}

extension InMemoryFanoutTests {
    @Test("a child cancelled alone counts as ended: the join runs once with its status and the others' results")
    func oneChildCancelled() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "fanout", input: ["children": 3, "steps": 2])
        await harness.deliverNext()
        #expect(await harness.cancel("\(id)/2").status == "cancelled")
        #expect(harness.task(id)?.status == "waiting")
        await harness.runUntilIdle()
        let done = try #require(harness.task(id))
        #expect(done.status == "succeeded")
        #expect(done.result?["children"] == 3)
        #expect(done.result?["succeeded"] == 2)
        #expect(done.result?["statuses"]?["cancelled"] == 1)
        #expect(done.eventTypes.filter { $0 == "woke" }.count == 1)
    }

    @Test("with no children the join runs at once")
    func noChildren() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "fanout", input: ["children": 0])
        await harness.runUntilIdle()
        #expect(harness.task(id)?.status == "succeeded")
        #expect(harness.task(id)?.result?["children"] == 0)
    }

    @Test("nested fan-out: grandchildren count against every ancestor's budget; cancelling the root cancels them all")
    func nested() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let input: JSONValue = ["children": 2, "agent": "fanout", "child_input": ["children": 3, "steps": 2]]
        let id = try await harness.submit(agent: "fanout", input: input)
        await harness.runUntilIdle()
        let root = try #require(harness.task(id))
        #expect(root.status == "succeeded")
        #expect(harness.task("\(id)/2/3")?.parentID == "\(id)/2")
        #expect(root.usage.tokens == 6 * 2 * 100)
        let middle = try #require(harness.task("\(id)/1"))
        #expect(middle.usage.tokens == 3 * 2 * 100)
        #expect(middle.usage.steps == 3 * 2 + 2)

        let cancelled = try await harness.submit(
            agent: "fanout", input: ["children": 2, "agent": "fanout", "child_input": ["children": 2, "steps": 50]])
        for _ in 0..<5 { await harness.deliverNext() }
        #expect(await harness.cancel(cancelled).status == "cancelled")
        await harness.runUntilIdle()
        for child in ["1", "2", "1/1", "1/2", "2/1", "2/2"] {
            #expect(harness.task("\(cancelled)/\(child)")?.status == "cancelled", "child \(child)")
        }
    }

    @Test("the parent's budget deadline ends its wait for children: it stops in budget_exceeded and cancels them")
    func deadlineStopsParentAndChildren() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let deadline = harness.clock.now.addingTimeInterval(120)
        let id = try await harness.submit(agent: "fanout", input: ["children": 3, "steps": 5], budget: BudgetRequest(deadline: deadline))
        await harness.deliverNext()
        let waiting = try #require(harness.task(id))
        #expect(waiting.statusReason.hasPrefix("waiting for 3 children, deadline "))
        harness.clock.advance(by: .seconds(121))
        await harness.sweep()
        #expect(harness.task(id)?.status == "budget_exceeded")
        for n in 1...3 { #expect(harness.task("\(id)/\(n)")?.status == "cancelled") }
        await harness.runUntilIdle()
        #expect(harness.task(id)?.eventTypes.contains("woke") == false)
    }
}
