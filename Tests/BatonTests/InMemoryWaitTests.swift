import BatonExamples
import BatonTesting
import Foundation
import Testing

@testable import Baton

/// `waiter`: waits in one of several ways, for the in-memory wait tests.
struct WaiterAgent: Agent {
    struct Input: Codable, Sendable { var mode: String }
    struct State: Codable, Sendable { var resumedBy: [String] = [] }
    static let name = "waiter"
    static let steps = ["start", "signalled", "timedout"]

    func initialState(for input: Input) throws -> State { State() }

    func run(step: String, context: StepContext<WaiterAgent>) async throws -> StepOutcome {
        switch step {
        case "start":
            switch context.input.mode {
            case "bad_step": return .wait(for: [.signal("go")], then: "nowhere")
            case "no_triggers": return .wait(for: [], then: "signalled")
            case "past":
                return .wait(for: [.signal("go"), .at(Date(timeIntervalSince1970: 1000))], then: "signalled", onTimeout: "timedout")
            default: return .wait(for: [.signal("go"), .timeout(.seconds(60))], then: "signalled", onTimeout: "timedout")
            }
        default:
            context.state.resumedBy.append(step)
            return .complete(["step": .string(step), "payload": context.wakeup?.payload ?? .null])
        }
    }
}

/// Waits, sleeps and signals on the in-memory backend: the same rules as the Lua scripts.
@Suite("InMemory: waits, sleeps and signals")
struct InMemoryWaitTests {
    /// Delivers every queued step message without moving the test clock (so no timer fires).
    static func deliverAll(_ harness: BatonTestHarness) async {
        while await harness.deliverNext() != nil {}
    }

    static func approval(_ harness: BatonTestHarness, timeout: Double = 3600) async throws -> String {
        try await harness.submit(ApprovalAgent.self, input: ApprovalAgent.Input(timeoutSeconds: timeout))
    }

    @Test("a signal during the wait resumes the task once, with its payload, actor and reason; the wait holds no message")
    func signalDuringWait() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await Self.approval(harness)
        await Self.deliverAll(harness)
        let waiting = try #require(harness.task(id))
        #expect(waiting.status == "waiting")
        #expect(waiting.statusReason.hasPrefix("waiting for approve or reject, timeout "))
        #expect(waiting.waitingForSignals == ["approve", "reject"])
        #expect(harness.pendingDeliveries.isEmpty)
        #expect(harness.store.timerCount == 1)
        #expect(waiting.eventTypes.last == "waiting")

        let outcome = try await harness.signal(id, "approve", payload: ["by": "ana"], signalID: "s-1", actor: "ana", reason: "looks good")
        #expect(outcome == .woke)
        #expect(harness.store.timerCount == 0)
        await harness.runUntilIdle()
        let done = try #require(harness.task(id))
        #expect(done.status == "succeeded")
        #expect(done.result?["decision"] == "approve")
        #expect(done.result?["payload"] == ["by": "ana"])
        #expect(done.result?["actor"] == "ana")
        #expect(done.result?["reason"] == "looks good")
        #expect(done.result?["signal_id"] == "s-1")
        #expect(done.eventTypes.filter { $0 == "woke" }.count == 1)
        #expect(done.events(ofType: "signal_received").first?.data["actor"] == "ana")
        #expect(done.usage.steps == 2)
        #expect(done.wakeupJSON.isEmpty)
    }

    @Test("a signal sent before the wait begins is kept, visible, and consumed when the wait starts")
    func signalBeforeWait() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await Self.approval(harness)
        let early = try await harness.signal(id, "reject", payload: ["why": "too costly"], signalID: "early")
        #expect(early == .stored(status: "queued"))
        #expect(harness.task(id)?.pendingSignals == ["reject"])
        await harness.runUntilIdle()
        let done = try #require(harness.task(id))
        #expect(done.status == "succeeded")
        #expect(done.result?["decision"] == "reject")
        #expect(done.result?["payload"] == ["why": "too costly"])
        #expect(done.pendingSignals.isEmpty)
        #expect(done.eventTypes.contains("waiting"))
        #expect(done.eventTypes.filter { $0 == "woke" }.count == 1)
        #expect(harness.store.timerCount == 0)
    }

    @Test("the same signal id twice is delivered once; a signal for an ended task is refused")
    func duplicateSignal() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await Self.approval(harness)
        await Self.deliverAll(harness)
        #expect(try await harness.signal(id, "approve", payload: 1, signalID: "dup") == .woke)
        #expect(try await harness.signal(id, "approve", payload: 2, signalID: "dup") == .duplicate(status: "queued"))
        await harness.runUntilIdle()
        let done = try #require(harness.task(id))
        #expect(done.result?["payload"] == 1)
        #expect(done.pendingSignals.isEmpty)
        #expect(done.events(ofType: "signal_received").count == 1)
        #expect(try await harness.signal(id, "approve", signalID: "late") == .terminal(status: "succeeded"))
        // A resend of an id already received stays a no-op once the task has ended.
        #expect(try await harness.signal(id, "approve", payload: 2, signalID: "dup") == .duplicate(status: "succeeded"))
        #expect(try await harness.signal("no-such-task", "approve") == .notFound)
    }

    @Test("the timeout fires when no signal comes; the timer loses to a signal that won first")
    func timeoutAndRace() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let timedOut = try await Self.approval(harness, timeout: 30)
        await harness.runUntilIdle()
        let done = try #require(harness.task(timedOut))
        #expect(done.status == "succeeded")
        #expect(done.result?["decision"] == "timeout")
        #expect(done.events(ofType: "woke").first?.data["trigger"] == "timeout")

        // A signal wins: the timer, fired afterwards, changes nothing.
        let raced = try await Self.approval(harness, timeout: 30)
        await Self.deliverAll(harness)
        #expect(try await harness.signal(raced, "approve", signalID: "first") == .woke)
        harness.clock.advance(by: .seconds(60))
        await harness.sweep()
        await harness.runUntilIdle()
        let won = try #require(harness.task(raced))
        #expect(won.result?["decision"] == "approve")
        #expect(won.events(ofType: "woke").count == 1)
        #expect(won.usage.steps == 2)
    }

    @Test("onTimeout routes a timer wake-up to its own step; a time already past fires at the commit")
    func onTimeout() async throws {
        let harness = BatonTestHarness(agents: [WaiterAgent()])
        let timed = try await harness.submit(agent: "waiter", input: ["mode": "timeout"])
        let past = try await harness.submit(agent: "waiter", input: ["mode": "past"])
        await Self.deliverAll(harness)
        #expect(harness.task(timed)?.status == "waiting")
        // The past time fired inside the commit: the task never waited.
        #expect(harness.task(past)?.status == "succeeded")
        #expect(harness.task(past)?.result?["step"] == "timedout")
        await harness.runUntilIdle()
        #expect(harness.task(timed)?.result?["step"] == "timedout")
        #expect(harness.task(timed)?.events(ofType: "woke").first?.step == "timedout")
    }

    @Test("pausing a waiting task lets it keep waiting; it pauses on waking and resume runs the resumed step with its wake-up")
    func pauseWhileWaiting() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await Self.approval(harness)
        await Self.deliverAll(harness)
        #expect(await harness.pause(id) == ControlResult("requested", "waiting"))
        #expect(harness.task(id)?.status == "waiting")
        #expect(try await harness.signal(id, "approve", payload: "yes", signalID: "p") == .woke)
        await Self.deliverAll(harness)
        #expect(harness.task(id)?.status == "paused")
        await harness.resume(id)
        await harness.runUntilIdle()
        let done = try #require(harness.task(id))
        #expect(done.status == "succeeded")
        #expect(done.result?["decision"] == "approve")
        #expect(done.result?["payload"] == "yes")
    }

    @Test("the budget's deadline ends a wait: the task stops in budget_exceeded at the deadline, not at the later timeout")
    func deadlineEndsAWait() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let deadline = harness.clock.now.addingTimeInterval(120)
        let id = try await harness.submit(
            ApprovalAgent.self, input: ApprovalAgent.Input(timeoutSeconds: 3600), budget: BudgetRequest(deadline: deadline))
        await Self.deliverAll(harness)
        let waiting = try #require(harness.task(id))
        #expect(waiting.statusReason.contains(", deadline "))
        #expect(waiting.waitDueMilliseconds == Int64(deadline.timeIntervalSince1970 * 1000))
        await harness.runUntilIdle()
        let stopped = try #require(harness.task(id))
        #expect(stopped.status == "budget_exceeded")
        #expect(stopped.statusReason == "deadline limit reached")
        #expect(stopped.events(ofType: "budget_exceeded").first?.data == ["kind": "deadline"])
        #expect(stopped.events(ofType: "woke").isEmpty)
        #expect(harness.store.timerCount == 0)
    }

    @Test("cancelling a waiting task ends it at once; its timer, when it comes, changes nothing")
    func cancelWhileWaiting() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await Self.approval(harness, timeout: 60)
        await Self.deliverAll(harness)
        #expect(await harness.cancel(id) == ControlResult("cancelled", "cancelled"))
        await harness.runUntilIdle()
        let cancelled = try #require(harness.task(id))
        #expect(cancelled.status == "cancelled")
        #expect(cancelled.events(ofType: "woke").isEmpty)
        #expect(try await harness.signal(id, "approve") == .terminal(status: "cancelled"))
    }

    @Test("a wait naming an undeclared step or no trigger is a permanent error, dead-lettered")
    func invalidWaits() async throws {
        let harness = BatonTestHarness(agents: [WaiterAgent()])
        let badStep = try await harness.submit(agent: "waiter", input: ["mode": "bad_step"])
        let noTriggers = try await harness.submit(agent: "waiter", input: ["mode": "no_triggers"])
        await harness.runUntilIdle()
        #expect(harness.task(badStep)?.status == "dead_lettered")
        #expect(harness.task(badStep)?.error?["message"]?.stringValue?.contains("'nowhere'") == true)
        #expect(harness.task(noTriggers)?.status == "dead_lettered")
        #expect(harness.task(noTriggers)?.error?["bucket"] == "invalid_usage")
        #expect(harness.deadLetters.count == 2)
    }

    @Test("a full mailbox refuses a signal with mailboxFull, never dropping it silently; a signal it waits for still wakes it")
    func mailboxFull() async throws {
        var settings = InMemoryTaskStore.Settings()
        settings.signalMailboxCap = 2
        let harness = BatonTestHarness(registry: .examples, storeSettings: settings)
        let id = try await Self.approval(harness)
        #expect(try await harness.signal(id, "noise", signalID: "n1") == .stored(status: "queued"))
        #expect(try await harness.signal(id, "noise", signalID: "n2") == .stored(status: "queued"))
        #expect(try await harness.signal(id, "noise", signalID: "n3") == .mailboxFull(cap: 2))
        await Self.deliverAll(harness)
        #expect(harness.task(id)?.status == "waiting")
        #expect(try await harness.signal(id, "approve", signalID: "a") == .woke)
        await harness.runUntilIdle()
        #expect(harness.task(id)?.result?["decision"] == "approve")
        #expect(harness.task(id)?.pendingSignals == ["noise", "noise"])
    }

    @Test("sleep(for:) is measured from the store's clock (Redis TIME), not the worker's: a store clock years off still sleeps 5 s")
    func sleepForUsesStoreClock() async throws {
        // The store's clock is 20 years behind this process's: a due time taken from the worker's Date() would be
        // 20 years late and never fire within the harness's run.
        let clock = TestClock(start: Date().addingTimeInterval(-20 * 365 * 86_400))
        let harness = BatonTestHarness(registry: .examples, clock: clock)
        let id = try await harness.submit(SleeperAgent.self, input: SleeperAgent.Input(seconds: 5))
        let committedAt = clock.nowMilliseconds
        await Self.deliverAll(harness)
        let sleeping = try #require(harness.task(id))
        #expect(sleeping.status == "sleeping")
        #expect(sleeping.waitDueMilliseconds == committedAt + 5000)
        let summary = await harness.runUntilIdle()
        #expect(summary.advancedMilliseconds >= 5000 && summary.advancedMilliseconds < 60_000)
        let done = try #require(harness.task(id))
        #expect(done.status == "succeeded")
        #expect(done.result?["trigger"] == "time")
        #expect(done.events(ofType: "sleeping").first?.data["at"] != nil)
    }

    @Test("absurd sleep and timeout lengths are refused with the field named, never a crash; sleep(for:) saturates")
    func absurdDurations() async throws {
        let harness = BatonTestHarness(registry: .examples)
        for (agent, field) in [("sleeper", "seconds"), ("approval", "timeout_seconds")] {
            do {
                _ = try await harness.submit(agent: agent, input: [field: 1e300])
                Issue.record("\(agent) accepted \(field) 1e300")
            } catch let error as BatonError {
                #expect(error.field == "input.\(field)")
                #expect(error.message.contains("ten years"), "\(error.message)")
            }
        }
        // An agent that asks for an endless sleep gets the longest one the counters hold, not a trap.
        guard case .sleepFor(let milliseconds, _) = StepOutcome.sleep(for: .seconds(Int64.max), then: "wake").kind else {
            Issue.record("sleep(for:) is not a relative sleep")
            return
        }
        #expect(milliseconds == Int64.max / 2)
    }

    @Test("sleeper sleeps (no message held), wakes by its timer and reports its lateness")
    func sleeper() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(SleeperAgent.self, input: SleeperAgent.Input(seconds: 5))
        await Self.deliverAll(harness)
        let sleeping = try #require(harness.task(id))
        #expect(sleeping.status == "sleeping")
        #expect(sleeping.statusReason.hasPrefix("sleeping until "))
        #expect(harness.pendingDeliveries.isEmpty)
        #expect(sleeping.waitDueMilliseconds != nil)
        #expect(try await harness.signal(id, "anything", signalID: "x") == .stored(status: "sleeping"))
        let summary = await harness.runUntilIdle()
        #expect(summary.advancedMilliseconds >= 4000)
        let done = try #require(harness.task(id))
        #expect(done.status == "succeeded")
        #expect(done.result?["trigger"] == "time")
        #expect((done.result?["lateness_ms"]?.intValue ?? -1) >= 0)
        #expect((done.result?["fired_lateness_ms"]?.intValue ?? -1) >= 0)
        #expect((done.result?["fired_lateness_ms"]?.intValue ?? .max) <= (done.result?["lateness_ms"]?.intValue ?? -1) + 1)
        #expect(done.eventTypes.contains("sleeping"))
        #expect(done.events(ofType: "woke").first?.data["trigger"] == "time")
    }
}
