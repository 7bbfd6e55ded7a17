import Baton
import BatonExamples
import BatonTesting
import Foundation
import Testing

/// `fork`: a new branch from a kept checkpoint, on the in-memory backend (the same rule as the control script).
@Suite("InMemory: fork")
struct InMemoryForkTests {
    @Test("a succeeded stepchain forked from seq 2 runs again on branch 1 from the 2 records to success")
    func forkSucceededTask() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "stepchain", input: ["steps": 4, "record_bytes": 16])
        await harness.runUntilIdle()
        let first = try #require(harness.task(id))
        #expect(first.status == "succeeded")
        #expect(first.usage.steps == 4)

        #expect(await harness.fork(id, fromSeq: 2, reason: "redo the tail", actor: "ops") == ControlResult("forked", "1"))
        let forked = try #require(harness.task(id))
        #expect(forked.status == "queued")
        #expect(forked.branch == 1 && forked.seq == 2 && forked.attempt == 1 && forked.step == "append")
        #expect(forked.result == JSONValue?.none)
        #expect(harness.store.checkpoint(of: id, seq: 3) == nil)
        #expect(harness.store.checkpoint(of: id, seq: 2) != nil)

        await harness.runUntilIdle()
        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(task.branch == 1 && task.seq == 4)
        let state = try harness.state(of: id, as: StepChainAgent.State.self)
        #expect(state.records.map { $0.prefix(2) } == ["1:", "2:", "3:", "4:"])
        // Spend already made stays counted: 4 steps on branch 0, 2 more on branch 1.
        #expect(task.usage.steps == 6)
        let branches = Dictionary(grouping: task.events, by: \.branch).mapValues { $0.map(\.type) }
        #expect(branches[0] == ["submitted", "started", "step_committed", "step_committed", "step_committed", "succeeded"])
        #expect(branches[1] == ["forked", "step_committed", "succeeded"])
        let event = try #require(task.events(ofType: "forked").first)
        #expect(event.seq == 2 && event.step == "append")
        #expect(
            event.data == ["reason": "redo the tail", "actor": "ops", "from_seq": 2, "from_branch": 0, "seq_before": 4])
    }

    @Test("fork refuses a seq with no kept checkpoint (naming the kept ones), a running step, and an unknown task")
    func forkRefusals() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "stepchain", input: ["steps": 7, "record_bytes": 16])
        await harness.runUntilIdle()
        // Five checkpoints are kept by default: seqs 3…7.
        #expect(await harness.fork(id, fromSeq: 1) == ControlResult("no_checkpoint", "3,4,5,6,7"))
        #expect(await harness.fork(id, fromSeq: 9) == ControlResult("no_checkpoint", "3,4,5,6,7"))
        // The final checkpoint: the history names no step after it (the task ended there).
        #expect(await harness.fork(id, fromSeq: 7) == ControlResult("no_step", "succeeded"))
        #expect(await harness.fork("nope", fromSeq: 0) == ControlResult("missing"))
        #expect(harness.task(id)?.branch == 0)

        let running = try await harness.submit(agent: "stepchain", input: ["steps": 3, "record_bytes": 16])
        harness.crashNextStep(task: running)
        _ = await harness.deliverNext()
        #expect(harness.task(running)?.status == "running")
        #expect(await harness.fork(running, fromSeq: 0) == ControlResult("conflict", "running"))
    }

    @Test("fork from the final checkpoint with an explicit step runs that step on the new branch")
    func forkWithStep() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "stepchain", input: ["steps": 2, "record_bytes": 16])
        await harness.runUntilIdle()
        #expect(await harness.fork(id, fromSeq: 2, step: "append") == ControlResult("forked", "1"))
        await harness.runUntilIdle()
        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(try harness.state(of: id, as: StepChainAgent.State.self).records.count == 3)
    }

    @Test("a waiting task forked from seq 0 waits again; the old branch's timer is ignored")
    func forkWaitingTask() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(ApprovalAgent.self, input: ApprovalAgent.Input(timeoutSeconds: 60))
        while await harness.deliverNext() != nil {}
        #expect(harness.task(id)?.status == "waiting")
        #expect(harness.store.timerCount == 1)

        #expect(await harness.fork(id, fromSeq: 0, reason: "ask again") == ControlResult("forked", "1"))
        #expect(harness.task(id)?.waitingForSignals == [])
        while await harness.deliverNext() != nil {}
        let waiting = try #require(harness.task(id))
        #expect(waiting.status == "waiting" && waiting.branch == 1 && waiting.seq == 1)
        // Both timers are pending; the one of branch 0 no longer matches the task's wait.
        #expect(harness.store.timerCount == 2)
        await harness.runUntilIdle()
        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(task.events(ofType: "woke").count == 1)
        #expect(task.events(ofType: "woke").first?.branch == 1)
        #expect(task.events(ofType: "woke").first?.data["trigger"] == "timeout")
    }
}
