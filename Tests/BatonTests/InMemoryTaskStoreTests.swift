import Baton
import BatonTesting
import Testing

/// ``InMemoryTaskStore`` called directly: fencing, leases, pending charges, first-writer-wins effects.
@Suite("InMemory: task store rules")
struct InMemoryTaskStoreTests {
    static let task = NewTask(
        id: "t1", agent: "a", inputJSON: "{}", stateJSON: "{\"n\":0}", firstStep: "s", queue: "default",
        limits: BudgetLimits(maxTokens: 100))

    static func claimed(_ outcome: ClaimOutcome) throws -> ClaimedTask {
        guard case .run(let claimed) = outcome else { throw ExpectedRun(outcome: "\(outcome)") }
        return claimed
    }

    struct ExpectedRun: Error { var outcome: String }

    @Test("a second claim after the lease expired fences off the first attempt and drops its pending charges")
    func fencing() async throws {
        let clock = TestClock()
        let store = InMemoryTaskStore(clock: clock)
        #expect(try await store.submit(Self.task) == .created)
        #expect(try await store.submit(Self.task) == .exists(status: "queued"))
        store.heartbeat(worker: "w1")
        store.heartbeat(worker: "w2")
        let first = try Self.claimed(try await store.claim(Self.task.firstMessage, worker: "w1", leaseMilliseconds: 1000))
        #expect(first.token == 1)
        #expect(first.step == "s")
        #expect(first.stateJSON == Array("{\"n\":0}".utf8))
        guard case .leased(by: "w1") = try await store.claim(Self.task.firstMessage, worker: "w2", leaseMilliseconds: 1000) else {
            Issue.record("a live lease must make the second delivery a duplicate")
            return
        }
        #expect(try await store.charge(task: "t1", token: first.token, Charge(tokens: 60)) == .ok)

        clock.advance(by: .seconds(2))
        store.heartbeat(worker: "w2")
        let second = try Self.claimed(try await store.claim(Self.task.firstMessage, worker: "w2", leaseMilliseconds: 1000))
        #expect(second.token == 2)
        #expect(try await store.charge(task: "t1", token: first.token, Charge(tokens: 1)) == .fenced)
        #expect(try await store.renewLease(task: "t1", token: first.token, worker: "w1", leaseMilliseconds: 1000) == .lost)
        let stale = Commit(task: "t1", token: first.token, seq: 0, kind: .next(step: "s"), stateJSON: "{\"n\":1}", next: nil)
        #expect(try await store.commit(stale) == .fenced)

        // The dead attempt's 60 pending tokens are gone: 50 fits, 50 + 60 crosses the limit of 100.
        #expect(try await store.charge(task: "t1", token: second.token, Charge(tokens: 50)) == .ok)
        #expect(try await store.charge(task: "t1", token: second.token, Charge(tokens: 60)) == .exceeded("tokens"))
        let commit = Commit(task: "t1", token: second.token, seq: 0, kind: .next(step: "s"), stateJSON: "{\"n\":1}", next: nil)
        guard case .committed("budget_exceeded", 1, nil, _) = try await store.commit(commit) else {
            Issue.record("110 tokens ≥ 100 must stop the task at its commit")
            return
        }
        let snapshot = try #require(store.snapshot(of: "t1"))
        #expect(snapshot.usage.tokens == 110)
        #expect(snapshot.stateJSON == "{\"n\":1}")
        #expect(snapshot.statusReason == "tokens limit reached")
        #expect(try await store.commit(commit) == .fenced)
    }

    @Test("a lease whose holder stopped sending heartbeats counts as expired")
    func staleHeartbeat() async throws {
        let clock = TestClock()
        let store = InMemoryTaskStore(clock: clock)
        #expect(try await store.submit(Self.task) == .created)
        store.heartbeat(worker: "w1")
        _ = try Self.claimed(try await store.claim(Self.task.firstMessage, worker: "w1", leaseMilliseconds: 60_000))
        clock.advance(by: .seconds(11))
        store.heartbeat(worker: "w2")
        let second = try Self.claimed(try await store.claim(Self.task.firstMessage, worker: "w2", leaseMilliseconds: 60_000))
        #expect(second.token == 2)
        #expect(store.snapshot(of: "t1")?.leaseOwner == "w2")
    }

    @Test("a worker's own unexpired lease holds against its own second claim even without a heartbeat; another worker takes it")
    func ownLeaseWithoutHeartbeat() async throws {
        let clock = TestClock()
        let store = InMemoryTaskStore(clock: clock)
        #expect(try await store.submit(Self.task) == .created)
        let first = try Self.claimed(try await store.claim(Self.task.firstMessage, worker: "w1", leaseMilliseconds: 60_000))
        let again = try await store.claim(Self.task.firstMessage, worker: "w1", leaseMilliseconds: 60_000)
        if case .leased(let holder) = again {
            #expect(holder == "w1")
        } else {
            Issue.record("the second claim was not refused as leased: \(again)")
        }
        // w1 never sent a heartbeat: to another worker its lease counts as a dead holder's.
        let second = try Self.claimed(try await store.claim(Self.task.firstMessage, worker: "w2", leaseMilliseconds: 60_000))
        #expect(second.token == first.token + 1)
    }

    @Test("the first recorded side effect wins and its charges apply to the attempt that reuses it")
    func effectsFirstWriterWins() async throws {
        let clock = TestClock()
        let store = InMemoryTaskStore(clock: clock)
        #expect(try await store.submit(Self.task) == .created)
        store.heartbeat(worker: "w1")
        let first = try Self.claimed(try await store.claim(Self.task.firstMessage, worker: "w1", leaseMilliseconds: 1000))
        guard case .absent = try await store.effect(task: "t1", token: first.token, key: "k") else {
            Issue.record("no effect is recorded yet")
            return
        }
        let original = EffectRecord(result: "\"one\"", charge: Charge(tokens: 30))
        guard case .recorded(let kept, nil) = try await store.recordEffect(task: "t1", token: first.token, key: "k", record: original)
        else {
            Issue.record("the first write must be recorded")
            return
        }
        #expect(kept == original)

        clock.advance(by: .seconds(2))
        let second = try Self.claimed(try await store.claim(Self.task.firstMessage, worker: "w1", leaseMilliseconds: 1000))
        let late = EffectRecord(result: "\"two\"", charge: Charge(tokens: 5))
        guard case .recorded(let winner, nil) = try await store.recordEffect(task: "t1", token: second.token, key: "k", record: late)
        else {
            Issue.record("a second write must return the recorded effect")
            return
        }
        #expect(winner.result == "\"one\"")
        let commit = Commit(task: "t1", token: second.token, seq: 0, kind: .complete(resultJSON: "1"), stateJSON: "{}", next: nil)
        guard case .committed("succeeded", 1, nil, _) = try await store.commit(commit) else {
            Issue.record("the commit must succeed")
            return
        }
        #expect(store.snapshot(of: "t1")?.usage.tokens == 30)
        #expect(store.effects(of: "t1") == ["k": "\"one\""])
    }
}
