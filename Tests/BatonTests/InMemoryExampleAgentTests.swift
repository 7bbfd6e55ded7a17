import Baton
import BatonExamples
import BatonTesting
import Testing

/// The example agents on the in-memory backend: budgets, retries, dead letters and redrives through the
/// same `StepExecutor` a worker runs.
@Suite("InMemory: example agents")
struct InMemoryExampleAgentTests {
    @Test("stepchain completes with one record per step and exact budget counters")
    func stepchainCompletes() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(
            agent: "stepchain", input: ["steps": 5, "record_bytes": 16, "tokens_per_step": 70, "cost_usd_per_step": 0.000123])
        let summary = await harness.runUntilIdle()
        #expect(summary.idle)
        #expect(summary.deliveries == 5)

        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(task.seq == 5)
        #expect(task.branch == 0)
        #expect(task.usage.steps == 5)
        #expect(task.usage.tokens == 5 * 70)
        #expect(task.usage.costMicros == 5 * 123)
        #expect(task.result == ["records": 5])
        let state = try harness.state(of: id, as: StepChainAgent.State.self)
        #expect(state.records.count == 5)
        #expect(state.records.first == "1:xxxxxxxxxxxxxx")
        #expect(state.records.allSatisfy { $0.utf8.count == 16 })
        #expect(
            task.eventTypes == [
                "submitted", "started", "step_committed", "step_committed", "step_committed", "step_committed", "succeeded",
            ])
        #expect(task.events.map(\.seq) == [0, 0, 1, 2, 3, 4, 5])
        #expect(harness.deadLetters.isEmpty)
    }

    @Test("stepchain with sleep_ms waits in each step and completes the same; sleep_ms out of range is refused naming it")
    func stepchainSleeps() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "stepchain", input: ["steps": 2, "sleep_ms": 20])
        let summary = await harness.runUntilIdle()
        #expect(summary.idle)
        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(task.result == ["records": 2])
        #expect(task.usage.steps == 2)
        for bad: JSONValue in [700_000, -1] {
            let error = await #expect(throws: (any Error).self) {
                try await harness.submit(agent: "stepchain", input: ["steps": 2, "sleep_ms": bad])
            }
            #expect("\(error.map { "\($0)" } ?? "")".contains("sleep_ms"))
        }
    }

    @Test("resubmitting the same id is a no-op")
    func submitIsIdempotent() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let first = try await harness.submit(agent: "stepchain", input: ["steps": 2], id: "same-id")
        let second = try await harness.submit(agent: "stepchain", input: ["steps": 9], id: "same-id")
        #expect(first == "same-id" && second == "same-id")
        #expect(harness.pendingDeliveries.count == 1)
        await harness.runUntilIdle()
        let task = try #require(harness.task("same-id"))
        #expect(task.status == "succeeded")
        #expect(task.usage.steps == 2)
    }

    @Test("flaky with fail_times below max_attempts succeeds after retries, attempts visible in the history")
    func flakySucceedsAfterRetries() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(FlakyAgent.self, input: FlakyAgent.Input(failTimes: 2))
        let summary = await harness.runUntilIdle()

        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(task.attempt == 3)
        #expect(task.result == ["attempt": 3, "branch": 0])
        #expect(try harness.state(of: id, as: FlakyAgent.State.self).succeededOnAttempt == 3)
        let retries = task.events(ofType: "retrying")
        #expect(retries.count == 2)
        #expect(retries.allSatisfy { $0.seq == 0 && $0.data["error"]?["bucket"] == "provider_5xx" })
        // Backoff 200 ms then 400 ms, ±20 % jitter: the test clock jumped over both.
        let delays = retries.compactMap { $0.data["delay_ms"]?.intValue }
        #expect(delays.count == 2)
        #expect((160...240).contains(delays[0]))
        #expect((320...480).contains(delays[1]))
        #expect(summary.advancedMilliseconds == delays[0] + delays[1])
        #expect(summary.deliveries == 3)
        #expect(task.usage.steps == 1)
        #expect(harness.deadLetters.isEmpty)
    }

    @Test("flaky with fail_times at max_attempts is dead-lettered; a redrive runs branch 1 and succeeds")
    func flakyDeadLetteredThenRedriven() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(FlakyAgent.self, input: FlakyAgent.Input(failTimes: 5), budget: BudgetRequest(maxAttempts: 5))
        await harness.runUntilIdle()

        let dead = try #require(harness.task(id))
        #expect(dead.status == "dead_lettered")
        #expect(dead.statusReason == "retries_exhausted")
        #expect(dead.attempt == 5)
        #expect(dead.seq == 0)
        #expect(dead.events(ofType: "retrying").count == 4)
        #expect(dead.error?["bucket"] == "provider_5xx")
        let letter = try #require(harness.deadLetters.first)
        #expect(harness.deadLetters.count == 1)
        #expect(letter.reason == "retries_exhausted")
        #expect(letter.task == id)
        #expect(letter.attempts == 5)
        #expect(letter.bucket == "provider_5xx")
        #expect(letter.seq == 0 && letter.branch == 0)

        #expect(await harness.redrive(id, reason: "provider recovered", actor: "ops") == ControlResult("redriven", "1"))
        await harness.runUntilIdle()
        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(task.branch == 1)
        #expect(task.attempt == 1)
        #expect(task.result == ["attempt": 1, "branch": 1])
        #expect(task.error == JSONValue?.none)
        let branches = Dictionary(grouping: task.events, by: \.branch).mapValues { $0.map(\.type) }
        #expect(
            branches[0] == ["submitted", "started", "retrying", "retrying", "retrying", "retrying", "dead_lettered"])
        #expect(branches[1] == ["redriven", "succeeded"])
        let redriven = try #require(task.events(ofType: "redriven").first)
        #expect(redriven.data == ["reason": "provider recovered", "actor": "ops", "from_seq": 0, "from_branch": 0])
        #expect(await harness.redrive(id) == ControlResult("conflict", "succeeded"))
    }

    @Test("spender stops in budget_exceeded with the counters at the limit")
    func spenderStopsAtTheLimit() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "spender", input: ["cost_usd_per_step": 1.0])
        await harness.runUntilIdle()
        let task = try #require(harness.task(id))
        #expect(task.status == "budget_exceeded")
        #expect(task.statusReason == "cost limit reached")
        #expect(task.limits.maxCostMicros == 5_000_000)
        #expect(task.usage.costMicros == 5_000_000)
        #expect(task.usage.steps == 5)
        #expect(task.usage.tokens == 5_000)
        #expect(try harness.state(of: id, as: SpenderAgent.State.self).steps == 5)
        #expect(task.error?["code"] == "budget_exceeded")
        #expect(harness.pendingDeliveries.isEmpty)
    }

    @Test("spender whose step crosses the limit stops at most one step over, with that step's state")
    func spenderOneStepOver() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "spender", input: ["cost_usd_per_step": 2.0])
        await harness.runUntilIdle()
        let task = try #require(harness.task(id))
        #expect(task.status == "budget_exceeded")
        #expect(task.statusReason == "cost limit reached")
        // $2, $4, then the third charge crosses $5: the step stops there and its charge is committed.
        #expect(task.usage.costMicros == 6_000_000)
        #expect(task.usage.costMicros - task.limits.maxCostMicros! < 2_000_000)
        #expect(task.usage.steps == 3)
        #expect(try harness.state(of: id, as: SpenderAgent.State.self).steps == 3)
        #expect(task.events.last?.type == "budget_exceeded")
    }

    @Test("report analyses every document once and charges exactly what the scripted model reported")
    func reportCompletes() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "report", input: ["documents": 3, "topic": "outages", "think_ms": 0, "approval": false])
        await harness.runUntilIdle()

        var tokens: Int64 = 0
        var micros: Int64 = 0
        for prompt in (1...3).map({ "Analyse document \($0) about outages" }) + ["Write a report on outages from 3 findings"] {
            let answer = try await ScriptedModel.complete(prompt: prompt, thinkMilliseconds: 0)
            tokens += answer.tokens
            micros += Charge.micros(fromUSD: answer.costUSD)
        }
        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(task.usage.steps == 4)
        #expect(task.usage.tokens == tokens)
        #expect(task.usage.costMicros == micros)
        #expect(task.result?["documents"] == 3)
        #expect(task.progressFraction == 1.0)
        #expect(task.progressMessage == "3/3 documents")
        #expect(task.events(ofType: "progress").count == 3)
        #expect(harness.store.effects(of: id).keys.sorted() == ["doc-1", "doc-2", "doc-3"])
        let state = try harness.state(of: id, as: ReportAgent.State.self)
        #expect(state.findings.count == 3)
        #expect(state.report?.hasPrefix("Report on outages: 3 documents analysed.") == true)
    }

    @Test("report waits for the outline's approval: approve writes the report with the reviewer's note")
    func reportApproved() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "report", input: ["documents": 2, "topic": "outages", "think_ms": 0])
        await harness.runUntilIdle(maxDeliveries: 3)
        var task = try #require(harness.task(id))
        #expect(task.status == "waiting")
        #expect(task.step == "write")
        #expect(try harness.state(of: id, as: ReportAgent.State.self).outline?.hasPrefix("Outline of the report on outages") == true)

        try await harness.signal(id, "approve", payload: ["comment": "ship it"], actor: "ana")
        await harness.runUntilIdle()
        task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        let state = try harness.state(of: id, as: ReportAgent.State.self)
        #expect(state.approvedBy == "ana")
        #expect(state.report?.hasSuffix("Outline approved by ana. Reviewer's note: ship it") == true)
    }

    @Test("report: a rejected outline fails the task naming who rejected it; no answer in time fails it as approval_timeout")
    func reportRejectedOrExpired() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let rejected = try await harness.submit(agent: "report", input: ["documents": 1, "think_ms": 0])
        let expired = try await harness.submit(agent: "report", input: ["documents": 1, "think_ms": 0, "approval_timeout_s": 60])
        await harness.runUntilIdle(maxDeliveries: 4)
        #expect(harness.task(rejected)?.status == "waiting")
        try await harness.signal(rejected, "reject", actor: "bo", reason: "wrong scope")
        await harness.runUntilIdle()

        let rejectedTask = try #require(harness.task(rejected))
        #expect(rejectedTask.status == "failed")
        #expect(rejectedTask.error?["bucket"] == "rejected")
        #expect(rejectedTask.error?["message"]?.stringValue?.contains("bo rejected the outline: wrong scope") == true)
        let expiredTask = try #require(harness.task(expired))
        #expect(expiredTask.status == "failed")
        #expect(expiredTask.error?["bucket"] == "approval_timeout")
    }
}
