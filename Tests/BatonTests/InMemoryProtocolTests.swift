import Baton
import BatonExamples
import BatonTesting
import Foundation
import Synchronization
import Testing

/// The step protocol's recovery rules on the in-memory backend: crashes, duplicates, stale and future
/// messages, oversized checkpoints, cancel, pause and resume, handoffs.
@Suite("InMemory: step protocol")
struct InMemoryProtocolTests {
    static func temporaryFile() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("baton-effects-\(UUID().uuidString).log").path
    }

    @Test("a worker dying mid-step: the step runs again, its side effect is reused and charged once", arguments: [true, false])
    func crashMidStep(afterSideEffects: Bool) async throws {
        let log = Self.temporaryFile()
        defer { try? FileManager.default.removeItem(atPath: log) }
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(
            agent: "stepchain",
            input: ["steps": 3, "record_bytes": 8, "tokens_per_step": 40, "cost_usd_per_step": 0.0005, "effect_log": .string(log)])
        #expect(await harness.deliverNext() != nil)
        harness.crashNextStep(afterSideEffects: afterSideEffects, task: id)
        let summary = await harness.runUntilIdle()

        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(task.usage.steps == 3)
        #expect(task.usage.tokens == 3 * 40)
        #expect(task.usage.costMicros == 3 * 500)
        // Four claims ran the step code: three commits and the attempt that died.
        #expect(task.fence == 4)
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        #expect(lines.map { $0.split(separator: " ")[2] } == ["record-1", "record-2", "record-3"])
        // The redelivered copy was acked as a duplicate while the dead worker's lease lasted; the stalled
        // sweep republished the step once the lease expired.
        #expect(harness.dispositions == ["ack", "crash", "ack", "ack", "ack"])
        #expect(summary.advancedMilliseconds == 15_000)
        let stalled = try #require(task.events(ofType: "retrying").first)
        #expect(stalled.seq == 1)
        #expect(stalled.data["reason"]?.stringValue?.hasPrefix("stalled") == true)
        #expect(harness.workerID == "worker-2")
        #expect(try harness.state(of: id, as: StepChainAgent.State.self).records == ["1:xxxxxx", "2:xxxxxx", "3:xxxxxx"])
    }

    @Test("a crash counts the side effect's body once and the step's runs twice")
    func crashRunsTheStepTwice() async throws {
        let probe = Probe()
        let harness = BatonTestHarness(agents: [HookAgent(probe: probe)])
        let id = try await harness.submit(agent: "hook", input: ["steps": 2])
        harness.crashNextStep(afterSideEffects: true)
        await harness.runUntilIdle()
        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(probe.runs(seq: 0) == 2)
        #expect(probe.runs(seq: 1) == 1)
        #expect(probe.effects == 2)
        #expect(task.usage.tokens == 20)
    }

    @Test("a duplicate step message commits once")
    func duplicateCommitsOnce() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "stepchain", input: ["steps": 3, "tokens_per_step": 5])
        let first = try #require(harness.pendingDeliveries.first?.message)
        harness.enqueue(first)
        #expect(harness.pendingDeliveries.count == 2)
        await harness.runUntilIdle()
        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(task.usage.steps == 3)
        #expect(task.usage.tokens == 15)
        #expect(task.fence == 3)
        #expect(task.events(ofType: "step_committed").count == 2)
        #expect(harness.dispositions == ["ack", "ack", "ack", "ack"])
    }

    @Test("a duplicate delivered while the step runs finds the lease held and is acked without running")
    func duplicateWhileRunning() async throws {
        let probe = Probe()
        let harness = BatonTestHarness(agents: [HookAgent(probe: probe)])
        let id = try await harness.submit(agent: "hook", input: ["steps": 2])
        let message = try #require(harness.pendingDeliveries.first?.message)
        let seen = Probe()
        probe.setHook { _, seq in
            guard seq == 0 else { return }
            let disposition = await harness.deliver(message)
            if case .ack = disposition, harness.task(id)?.fence == 1, harness.task(id)?.status == "running" { seen.recordRun(seq: 0) }
        }
        await harness.runUntilIdle()
        #expect(seen.runs(seq: 0) == 1)
        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(probe.runs(seq: 0) == 1)
        #expect(task.usage.steps == 2)
        #expect(task.usage.tokens == 20)
    }

    @Test("a stale message (seq behind the task) is acked without effect")
    func staleMessageIsAcked() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "stepchain", input: ["steps": 4])
        await harness.deliverNext()
        await harness.deliverNext()
        let before = try #require(harness.task(id))
        #expect(before.seq == 2)
        let disposition = await harness.deliver(StepMessage(task: id, agent: "stepchain", step: "append", seq: 0, branch: 0, attempt: 1))
        guard case .ack = disposition else {
            Issue.record("expected ack, got \(disposition)")
            return
        }
        #expect(harness.task(id) == before)
        #expect(harness.deadLetters.isEmpty)
        await harness.runUntilIdle()
        #expect(harness.task(id)?.usage.steps == 4)
        #expect(harness.task(id)?.status == "succeeded")
    }

    @Test("a future message (seq or branch ahead, or unknown task) is dead-lettered as stale_seq")
    func futureMessageIsDeadLettered() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "stepchain", input: ["steps": 2])
        let before = try #require(harness.task(id))
        await harness.deliver(StepMessage(task: id, agent: "stepchain", step: "append", seq: 7, branch: 0, attempt: 1))
        await harness.deliver(StepMessage(task: id, agent: "stepchain", step: "append", seq: 0, branch: 1, attempt: 1))
        await harness.deliver(StepMessage(task: "nobody", agent: "stepchain", step: "append", seq: 0, branch: 0, attempt: 1))
        let letters = harness.deadLetters
        #expect(letters.map(\.reason) == ["stale_seq", "stale_seq", "stale_seq"])
        #expect(letters[0].seq == 7)
        #expect(letters[0].error == "the task is at seq 0, the message names seq 7")
        #expect(letters[1].error == "the task is on branch 0, the message names branch 1")
        #expect(letters[2].task == "nobody")
        #expect(harness.task(id) == before)
        await harness.runUntilIdle()
        #expect(harness.task(id)?.status == "succeeded")
    }

    @Test("an oversized checkpoint dead-letters the step and keeps the previous checkpoint")
    func oversizedCheckpoint() async throws {
        var settings = ProtocolSettings()
        settings.checkpointMaxBytes = 500
        let harness = BatonTestHarness(registry: .examples, settings: settings)
        let id = try await harness.submit(agent: "stepchain", input: ["steps": 5, "record_bytes": 200, "tokens_per_step": 100])
        await harness.runUntilIdle()
        let task = try #require(harness.task(id))
        #expect(task.status == "dead_lettered")
        #expect(task.statusReason == "oversized")
        #expect(task.seq == 2)
        #expect(task.usage.steps == 2)
        // The dropped step's charge is committed with the dead letter: its model call did happen.
        #expect(task.usage.tokens == 300)
        #expect(task.error?["bucket"] == "oversized_state")
        #expect(try harness.state(of: id, as: StepChainAgent.State.self).records.count == 2)
        let letter = try #require(harness.deadLetters.first)
        #expect(letter.reason == "oversized")
        #expect(letter.bucket == "oversized_state")
        #expect(letter.seq == 2)
    }

    @Test("cancel of a queued task stops it before any step runs")
    func cancelQueued() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "stepchain", input: ["steps": 3])
        #expect(await harness.cancel(id, reason: "not needed", actor: "alice") == ControlResult("cancelled", "cancelled"))
        let summary = await harness.runUntilIdle()
        #expect(summary.deliveries == 1)
        let task = try #require(harness.task(id))
        #expect(task.status == "cancelled")
        #expect(task.usage.steps == 0)
        #expect(task.fence == 0)
        #expect(task.eventTypes == ["submitted", "cancelled"])
        #expect(task.events[1].data == ["reason": "not needed", "actor": "alice"])
        #expect(await harness.cancel(id) == ControlResult("terminal", "cancelled"))
    }

    @Test("cancel of a running step is a request: the step commits, then the task stops")
    func cancelRunning() async throws {
        let probe = Probe()
        let harness = BatonTestHarness(agents: [HookAgent(probe: probe)])
        let id = try await harness.submit(agent: "hook", input: ["steps": 5])
        let answers = Answers()
        probe.setHook { task, seq in
            if seq == 1 { answers.append(await harness.cancel(task)) }
        }
        await harness.runUntilIdle()
        #expect(answers.all == [ControlResult("requested", "running")])
        let task = try #require(harness.task(id))
        #expect(task.status == "cancelled")
        #expect(task.seq == 2)
        #expect(task.usage.steps == 2)
        #expect(task.usage.tokens == 20)
        #expect(probe.totalRuns == 2)
        #expect(task.eventTypes.suffix(2) == ["step_committed", "cancelled"])
        #expect(harness.pendingDeliveries.isEmpty)
    }

    @Test("pause of a queued task parks it; its message is acked; resume queues the step again")
    func pauseQueuedThenResume() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "stepchain", input: ["steps": 3])
        #expect(await harness.pause(id) == ControlResult("paused", "paused"))
        #expect(await harness.pause(id) == ControlResult("already", "paused"))
        await harness.runUntilIdle()
        let paused = try #require(harness.task(id))
        #expect(paused.status == "paused")
        #expect(paused.fence == 0)
        #expect(harness.pendingDeliveries.isEmpty)
        #expect(await harness.resume(id) == ControlResult("resumed", "queued"))
        await harness.runUntilIdle()
        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(task.usage.steps == 3)
        #expect(task.eventTypes.prefix(3) == ["submitted", "paused", "resumed"])
        #expect(await harness.resume(id) == ControlResult("conflict", "succeeded"))
    }

    @Test("pause of a running step takes effect at its commit; resume continues from the next step")
    func pauseRunningThenResume() async throws {
        let probe = Probe()
        let harness = BatonTestHarness(agents: [HookAgent(probe: probe)])
        let id = try await harness.submit(agent: "hook", input: ["steps": 3])
        let answers = Answers()
        probe.setHook { task, seq in
            if seq == 0 { answers.append(await harness.pause(task)) }
        }
        await harness.runUntilIdle()
        #expect(answers.all == [ControlResult("requested", "running")])
        let paused = try #require(harness.task(id))
        #expect(paused.status == "paused")
        #expect(paused.seq == 1)
        #expect(!paused.pauseRequested)
        #expect(harness.pendingDeliveries.isEmpty)
        #expect(await harness.resume(id) == ControlResult("resumed", "queued"))
        await harness.runUntilIdle()
        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(task.usage.steps == 3)
        #expect(probe.totalRuns == 3)
    }

    @Test("a handoff (.continue) runs the same step again and counts against max_handoffs")
    func handoffs() async throws {
        let harness = BatonTestHarness(agents: [RelayAgent()])
        let id = try await harness.submit(agent: "relay", input: ["rounds": 3])
        await harness.runUntilIdle()
        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(task.usage.handoffs == 2)
        #expect(task.usage.steps == 4)
        #expect(task.result == ["rounds": 3])
        #expect(task.events(ofType: "handoff").map(\.step) == ["loop", "loop"])

        let limited = try await harness.submit(agent: "relay", input: ["rounds": 5], budget: BudgetRequest(maxHandoffs: 1))
        await harness.runUntilIdle()
        let stopped = try #require(harness.task(limited))
        #expect(stopped.status == "budget_exceeded")
        #expect(stopped.statusReason == "handoffs limit reached")
        // The script's rule is `handoffs > max_handoffs`: the handoff that crosses the limit is counted.
        #expect(stopped.usage.handoffs == 2)
        #expect(stopped.usage.steps == 2)
    }

    @Test("a side effect reused by a retry is charged once")
    func effectChargedOnceAcrossRetry() async throws {
        let probe = Probe()
        let harness = BatonTestHarness(agents: [EffectThenFailAgent(probe: probe)])
        let id = try await harness.submit(agent: "effect-then-fail")
        await harness.runUntilIdle()
        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(task.attempt == 2)
        #expect(probe.effects == 1)
        // The retry's commit counted the effect's charges; reusing the effect on attempt 2 does not count them again.
        #expect(task.usage.tokens == 100)
    }
}

/// Control answers collected from inside a step.
final class Answers: Sendable {
    private let results = Mutex<[ControlResult]>([])
    func append(_ result: ControlResult) { results.withLock { $0.append(result) } }
    var all: [ControlResult] { results.withLock { $0 } }
}
