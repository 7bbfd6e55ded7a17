import BatonExamples
import Foundation
import RedisClient
import Synchronization
import TestSupport
import Testing

@testable import Baton

/// The worker's cache of committed states ("sticky state"): a hit needs the exact seq, branch and agent, is used
/// once, and makes the claim skip reading checkpoint and input; a miss reads Redis as before.
@Suite("State cache")
struct StateCacheTests {
    @Test func anEntryServesExactlyItsSeqBranchAndAgentOnce() {
        let cache = StateCache(capacity: 2)
        cache.put(task: "a", seq: 3, branch: 0, agent: "x", value: 7)
        #expect(cache.take(task: "a", seq: 3, branch: 1, agent: "x") == nil)
        cache.put(task: "a", seq: 3, branch: 0, agent: "x", value: 7)
        #expect(cache.take(task: "a", seq: 4, branch: 0, agent: "x") == nil)
        cache.put(task: "a", seq: 3, branch: 0, agent: "x", value: 7)
        #expect(cache.take(task: "a", seq: 3, branch: 0, agent: "y") == nil)
        cache.put(task: "a", seq: 3, branch: 0, agent: "x", value: 7)
        #expect(cache.take(task: "a", seq: 3, branch: 0, agent: "x") as? Int == 7)
        #expect(cache.take(task: "a", seq: 3, branch: 0, agent: "x") == nil)
        #expect(cache.hits == 1)
        for n in 0..<5 { cache.put(task: "t\(n)", seq: 1, branch: 0, agent: "x", value: n) }
        #expect(cache.count == 2)
        // A submit's entry is kept only with room, and is the first to make room for a commit's (with several workers a
        // first step often runs elsewhere, so a submit's entry may never be taken).
        let mixed = StateCache(capacity: 3)
        mixed.put(task: "s1", seq: 0, branch: 0, agent: "x", value: 1, evicting: false)
        mixed.put(task: "c1", seq: 4, branch: 0, agent: "x", value: 2)
        mixed.put(task: "s2", seq: 0, branch: 0, agent: "x", value: 3, evicting: false)
        mixed.put(task: "s3", seq: 0, branch: 0, agent: "x", value: 4, evicting: false)  // full: not kept
        #expect(mixed.count == 3)
        mixed.put(task: "c2", seq: 2, branch: 0, agent: "x", value: 5)  // full: s1 makes room
        #expect(mixed.take(task: "s1", seq: 0, branch: 0, agent: "x") == nil)
        #expect(mixed.take(task: "s3", seq: 0, branch: 0, agent: "x") == nil)
        mixed.put(task: "c3", seq: 1, branch: 0, agent: "x", value: 6)  // s2 makes room
        #expect(mixed.take(task: "s2", seq: 0, branch: 0, agent: "x") == nil)
        #expect(mixed.take(task: "c1", seq: 4, branch: 0, agent: "x") as? Int == 2)
        #expect(mixed.take(task: "c2", seq: 2, branch: 0, agent: "x") as? Int == 5)
        #expect(mixed.take(task: "c3", seq: 1, branch: 0, agent: "x") as? Int == 6)
        let off = StateCache(capacity: 0)
        off.put(task: "a", seq: 1, branch: 0, agent: "x", value: 1)
        #expect(off.take(task: "a", seq: 1, branch: 0, agent: "x") == nil)
    }
}

@Suite("Redis: state cache", .enabled(if: TestServers.available))
struct StateCacheRedisTests {
    static func executor(_ store: RedisTaskStore, bus: CapturingBus, worker: String) -> StepExecutor {
        var registry = AgentRegistry()
        registry.register(StepChainAgent())
        return StepExecutor(
            registry: registry, store: store, bus: bus, workerID: worker, settings: ProtocolSettings(), logger: Harness.logger)
    }

    /// Runs the task's steps from the bus's step messages, each on the executor `pick` names, until none is left.
    static func drive(_ bus: CapturingBus, _ pick: (Int) -> StepExecutor) async {
        var handled = 0
        while true {
            let next = bus.messages.withLock { messages -> OutboxMessage? in
                guard let index = messages.firstIndex(where: { $0.exchange == Topology.stepsExchange }) else { return nil }
                return messages.remove(at: index)
            }
            guard let next else { return }
            await pick(handled).handleSteps(
                [StepDelivery(body: Array(next.body.utf8), routingKey: next.routingKey, redelivered: false, settlement: nil)],
                settle: { _, _ in })
            handled += 1
        }
    }

    @Test func theSameWorkerSkipsReadingItsStateBackAndAnotherReadsRedis() async throws {
        let store = try await EventRelayTests.store(prefix: "bt-sticky")
        let redis = store.redis
        defer { Task { await redis.close() } }
        let input = #"{"steps": 6, "record_bytes": 20, "tokens_per_step": 1, "cost_usd_per_step": 0}"#

        // One worker: every step finds its state in the cache, the first one the state its submit wrote.
        let bus = CapturingBus()
        let one = Self.executor(store, bus: bus, worker: "sticky-1")
        let (id, _) = try await one.submit(body: Array(#"{"v": 1, "agent": "stepchain", "input": \#(input)}"#.utf8))
        await Self.drive(bus) { _ in one }
        #expect(one.states.hits == 6)
        // Every step ran speculatively (no claim) and none needed a late claim.
        #expect(one.speculation.snapshot.started == 6 && one.speculation.snapshot.claimedLate == 0)
        let view = try #require(try await TaskQueries(store: store).task(id))
        #expect(view.status == "succeeded")
        let checkpoint = try #require(try await TaskQueries(store: store).checkpoint(id))
        let records = try JSONValue.parse(Array(checkpoint.json.utf8))["records"]?.arrayValue ?? []
        #expect(records.compactMap { $0.stringValue?.split(separator: ":").first.map(String.init) } == ["1", "2", "3", "4", "5", "6"])

        // Two workers taking turns, the first step on the one that did not take the submit: each one's cached state is a
        // step behind, so every claim reads Redis.
        let bus2 = CapturingBus()
        let a = Self.executor(store, bus: bus2, worker: "sticky-a")
        let b = Self.executor(store, bus: bus2, worker: "sticky-b")
        let (id2, _) = try await a.submit(body: Array(#"{"v": 1, "agent": "stepchain", "input": \#(input)}"#.utf8))
        await Self.drive(bus2) { $0 % 2 == 0 ? b : a }
        #expect(a.states.hits + b.states.hits == 0)
        #expect(a.speculation.snapshot.started + b.speculation.snapshot.started == 0)
        let checkpoint2 = try #require(try await TaskQueries(store: store).checkpoint(id2))
        let records2 = try JSONValue.parse(Array(checkpoint2.json.utf8))["records"]?.arrayValue ?? []
        #expect(records2.compactMap { $0.stringValue?.split(separator: ":").first.map(String.init) } == ["1", "2", "3", "4", "5", "6"])
        #expect(try await TaskQueries(store: store).task(id2)?.status == "succeeded")
    }

    /// Takes the next step message the bus holds.
    static func nextStep(_ bus: CapturingBus) -> StepDelivery? {
        bus.messages.withLock { messages -> StepDelivery? in
            guard let index = messages.firstIndex(where: { $0.exchange == Topology.stepsExchange }) else { return nil }
            let message = messages.remove(at: index)
            return StepDelivery(body: Array(message.body.utf8), routingKey: message.routingKey, redelivered: false, settlement: nil)
        }
    }

    /// Runs one delivery on `executor` and returns how it was settled.
    static func handle(_ executor: StepExecutor, _ delivery: StepDelivery) async -> Disposition? {
        let settled = Mutex<Disposition?>(nil)
        await executor.handleSteps([delivery], settle: { _, disposition in settled.withLock { $0 = disposition } })
        return settled.withLock { $0 }
    }

    /// A store under `prefix`, an executor `worker` on a capturing bus, and a 4-step `stepchain` task whose first step
    /// that executor ran (so it holds what it needs to run the second speculatively). Close `store.redis` when done.
    static func afterFirstStep(prefix: String, worker: String, tokensPerStep: Int = 1) async throws -> (
        store: RedisTaskStore, bus: CapturingBus, executor: StepExecutor, id: String
    ) {
        let submitted = try await Self.submitted(prefix: prefix, worker: worker, steps: 4, tokensPerStep: tokensPerStep)
        _ = await Self.handle(submitted.executor, try #require(Self.nextStep(submitted.bus)))
        return submitted
    }

    /// A store under `prefix`, an executor `worker` on a capturing bus, and a `stepchain` task of `steps` steps that
    /// executor took the submit of (with `tenant`, when given). Close `store.redis` when done.
    static func submitted(prefix: String, worker: String, steps: Int, tokensPerStep: Int = 1, tenant: String? = nil) async throws -> (
        store: RedisTaskStore, bus: CapturingBus, executor: StepExecutor, id: String
    ) {
        let store = try await EventRelayTests.store(prefix: prefix)
        let bus = CapturingBus()
        let executor = Self.executor(store, bus: bus, worker: worker)
        let input = #"{"steps": \#(steps), "record_bytes": 20, "tokens_per_step": \#(tokensPerStep), "cost_usd_per_step": 0}"#
        let tenantMember = tenant.map { #", "tenant": "\#($0)""# } ?? ""
        let body = #"{"v": 1, "agent": "stepchain"\#(tenantMember), "input": \#(input)}"#
        let (id, _) = try await executor.submit(body: Array(body.utf8))
        return (store, bus, executor, id)
    }

    /// A speculative step whose task another worker claimed meanwhile (a duplicate delivery) commits nothing: its
    /// commit finds the claim, its late claim finds the other lease, and the delivery is acked as a duplicate.
    @Test func aSpeculativeStepYieldsToAnotherWorkersClaim() async throws {
        let (store, bus, a, id) = try await Self.afterFirstStep(prefix: "bt-spec-dup", worker: "spec-a")
        let redis = store.redis
        defer { Task { await redis.close() } }
        let second = try #require(Self.nextStep(bus))
        let message = try StepMessage.decode(second.body)
        // Worker b is alive (its heartbeat is fresh), so its lease holds. The beat is dated ten minutes ahead: on a loaded
        // box (CI runs the whole suite at once on two cores) more than the 10 s of `workerStaleMilliseconds` passed
        // between a beat dated now and a's late claim, which then took the lease from a "dead" b.
        _ = try await redis.send("ZADD", store.settings.keys.workers, Int64(Date().timeIntervalSince1970 * 1000) + 600_000, "spec-b")
        guard
            case .success(.run(let other))? = await store.claimAll(
                [message], worker: "spec-b", leaseMilliseconds: 30_000, stateCached: [false]
            ).first
        else {
            Issue.record("worker b did not claim")
            return
        }
        let disposition = await Self.handle(a, second)
        guard case .ack? = disposition else {
            Issue.record("not acked as a duplicate: \(String(describing: disposition))")
            return
        }
        // The first step ran speculatively too (from its submit); the second claimed late and was refused.
        #expect(a.speculation.snapshot.started == 2 && a.speculation.snapshot.claimedLate == 1 && a.speculation.snapshot.refused == 1)
        let view = try #require(try await TaskQueries(store: store).task(id))
        #expect(view.seq == 1 && view.status == "running")
        let fields = try await redis.send("HMGET", store.settings.keys.task(id), "lease_owner", "fence").array ?? []
        #expect(fields.map { $0.string ?? "" } == ["spec-b", String(other.token)])
        let checkpoint = try #require(try await TaskQueries(store: store).checkpoint(id))
        #expect((try JSONValue.parse(Array(checkpoint.json.utf8))["records"]?.arrayValue ?? []).count == 1)
    }

    /// A task cancelled after a worker committed its step: that worker's speculative next step commits nothing (the
    /// cancel is applied before the step, as a claim would have), and the task stays cancelled at the committed seq.
    @Test func aSpeculativeStepOfACancelledTaskCommitsNothing() async throws {
        let (store, bus, a, id) = try await Self.afterFirstStep(prefix: "bt-spec-cancel", worker: "spec-c", tokensPerStep: 5)
        let redis = store.redis
        defer { Task { await redis.close() } }
        _ = try await store.control(task: id, action: "cancel", reason: "test", actor: "test")
        let disposition = await Self.handle(a, try #require(Self.nextStep(bus)))
        guard case .ack? = disposition else {
            Issue.record("not acked: \(String(describing: disposition))")
            return
        }
        #expect(a.speculation.snapshot.started == 2 && a.speculation.snapshot.refused == 1)
        let view = try #require(try await TaskQueries(store: store).task(id))
        #expect(view.status == "cancelled" && view.seq == 1 && view.budget.used.tokens == 5 && view.budget.used.steps == 1)
    }

    /// A limit changed after a worker's commit (an operator's `raise`) makes that worker's speculative next step claim
    /// late before it commits; the claim's fresh limits are what its following steps run under, speculatively again.
    @Test func aLimitChangedSinceTheCommitMakesTheSpeculativeStepClaimFirst() async throws {
        let (store, bus, a, id) = try await Self.afterFirstStep(prefix: "bt-spec-raise", worker: "spec-r")
        let redis = store.redis
        defer { Task { await redis.close() } }
        _ = try await redis.send("HSET", store.settings.keys.budget(id), "max_tokens", 1000)
        _ = await Self.handle(a, try #require(Self.nextStep(bus)))
        var counts = a.speculation.snapshot
        #expect(counts.started == 2 && counts.claimedLate == 1 && counts.refused == 0, "\(counts)")
        #expect(try await TaskQueries(store: store).task(id)?.seq == 2)
        await Self.drive(bus) { _ in a }
        counts = a.speculation.snapshot
        #expect(counts.started == 4 && counts.claimedLate == 1 && counts.refused == 0, "\(counts)")
        let view = try #require(try await TaskQueries(store: store).task(id))
        #expect(view.status == "succeeded" && view.seq == 4 && view.budget.used.tokens == 4)
        let fences = try await TaskQueries(store: store).history(id).compactMap { $0.data?["fence"]?.intValue }
        // The first step speculated from its submit (fence 0); the late claim moved the fence; the steps after it
        // speculated under it.
        #expect(fences == [0, 1, 1, 1])
    }

    /// A speculative step that calls a side effect claims its lease first: the effect and the commit carry a newer
    /// fencing token than the previous commit's.
    @Test func aSideEffectClaimsASpeculativeStepFirst() async throws {
        let store = try await EventRelayTests.store(prefix: "bt-spec-effect")
        let redis = store.redis
        defer { Task { await redis.close() } }
        let bus = CapturingBus()
        let a = Self.executor(store, bus: bus, worker: "spec-e")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(TestServers.uniqueName("spec-effects")).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // The example agents' keyed effect (RunEffect): a side effect that charges nothing, so the step's counters stay
        // exact and the next step still runs speculatively, until it reaches the effect.
        let input =
            #"{"steps": 3, "record_bytes": 20, "tokens_per_step": 1, "cost_usd_per_step": 0, "run": "\#(TestServers.uniqueName("spec-run"))", "effects_dir": "\#(directory)"}"#
        let (id, _) = try await a.submit(body: Array(#"{"v": 1, "agent": "stepchain", "input": \#(input)}"#.utf8))
        await Self.drive(bus) { _ in a }
        let counts = a.speculation.snapshot
        // Every step speculated (the first from its submit) and claimed late at its effect.
        #expect(counts.started == 3 && counts.claimedLate == 3 && counts.refused == 0, "\(counts)")
        let view = try #require(try await TaskQueries(store: store).task(id))
        #expect(view.status == "succeeded" && view.seq == 3)
        let fences = try await TaskQueries(store: store).history(id).compactMap { $0.data?["fence"]?.intValue }
        #expect(fences == [1, 2, 3])
    }

    /// A step run from the cached state that is dead-lettered (here: its state is over the checkpoint cap) leaves the
    /// previous checkpoint as it was, though the worker never had that checkpoint as JSON.
    @Test func aDeadLetteredStepFromTheCachedStateKeepsThePreviousCheckpoint() async throws {
        let store = try await EventRelayTests.store(prefix: "bt-sticky-dead")
        let redis = store.redis
        defer { Task { await redis.close() } }
        var registry = AgentRegistry()
        registry.register(StepChainAgent())
        var settings = ProtocolSettings()
        settings.checkpointMaxBytes = 250  // three 60-byte records fit, the fourth does not
        let bus = CapturingBus()
        let worker = StepExecutor(
            registry: registry, store: store, bus: bus, workerID: "sticky-dead", settings: settings, logger: Harness.logger)
        let input = #"{"steps": 6, "record_bytes": 60, "tokens_per_step": 1, "cost_usd_per_step": 0}"#
        let (id, _) = try await worker.submit(body: Array(#"{"v": 1, "agent": "stepchain", "input": \#(input)}"#.utf8))
        await Self.drive(bus) { _ in worker }
        #expect(worker.states.hits == 4)
        let view = try #require(try await TaskQueries(store: store).task(id))
        #expect(view.status == "dead_lettered")
        let checkpoint = try #require(try await TaskQueries(store: store).checkpoint(id))
        #expect(checkpoint.seq == 3 && view.seq == 3)
        let records = try JSONValue.parse(Array(checkpoint.json.utf8))["records"]?.arrayValue ?? []
        #expect(records.compactMap { $0.stringValue?.split(separator: ":").first.map(String.init) } == ["1", "2", "3"])
    }

    /// The worker that takes a submit runs the task's first step without a claim, as it runs a step after its own
    /// commit: the commit writes what the claim would have (the start time, the `started` event before the step's own),
    /// under fence 0. A task with a tenant is claimed (the tenant's daily counters are the claim's to check).
    @Test func theFirstStepRunsWhereItWasSubmittedWithoutAClaim() async throws {
        let (store, bus, a, id) = try await Self.submitted(prefix: "bt-spec-first", worker: "spec-first", steps: 2, tokensPerStep: 3)
        let redis = store.redis
        defer { Task { await redis.close() } }
        _ = await Self.handle(a, try #require(Self.nextStep(bus)))
        var counts = a.speculation.snapshot
        #expect(counts.started == 1 && counts.claimedLate == 0, "\(counts)")
        let fields =
            try await redis.send("HMGET", store.settings.keys.task(id), "fence", "claims", "started_at", "seq", "status").array ?? []
        let values = fields.map { $0.string ?? "" }
        #expect(
            values[0] == "0" && values[1] == "0" && (Int64(values[2]) ?? 0) > 0 && values[3] == "1" && values[4] == "queued", "\(values)")
        let types = try await TaskQueries(store: store).history(id).map(\.type)
        #expect(types == ["submitted", "started", "step_committed"])

        // With a tenant: claimed, as before (fence 1, one claim).
        let (other, bus2, b, tenanted) = try await Self.submitted(prefix: "bt-spec-first", worker: "spec-first-b", steps: 2, tenant: "acme")
        defer { Task { await other.redis.close() } }
        _ = await Self.handle(b, try #require(Self.nextStep(bus2)))
        counts = b.speculation.snapshot
        #expect(counts.started == 0, "\(counts)")
        let claimed = try await other.redis.send("HMGET", other.settings.keys.task(tenanted), "fence", "seq").array ?? []
        #expect(claimed.map { $0.string ?? "" } == ["1", "1"])
        #expect(try await TaskQueries(store: other).history(tenanted).map(\.type) == ["submitted", "started", "step_committed"])
    }

    /// The commit that ends a task returns its last event, like a step's: the worker publishes it and moves the relay
    /// cursor past it once it is confirmed (no commit follows to carry it), so no relay round is left to do.
    @Test func theLastEventGoesOutWithTheCommitThatEndsTheTask() async throws {
        let (store, bus, a, id) = try await Self.submitted(prefix: "bt-last-event", worker: "last-event", steps: 2)
        let redis = store.redis
        defer { Task { await redis.close() } }
        func published() -> [String] {
            bus.messages.withLock { $0.filter { $0.exchange == Topology.eventsExchange }.map(\.routingKey) }
        }
        // A step's events are published on a task of their own: each step waits for the previous one's, as a chain on
        // the broker does (the confirm comes before the next delivery), so its commit carries their cursor.
        for expected in [3, 4] {
            _ = await Self.handle(a, try #require(Self.nextStep(bus)))
            for _ in 0..<100 where published().count < expected { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(try await TaskQueries(store: store).task(id)?.status == "succeeded")
        #expect(published() == ["submitted", "started", "step_committed", "succeeded"].map { "stepchain.\(id).\($0)" })
        // The cursor reaches the stream's last entry and the task leaves events_pending (the advance runs after the
        // confirm, on its own task: polled for a few seconds).
        let keys = store.settings.keys
        let last = try #require(try await redis.send("XREVRANGE", keys.events(id), "+", "-", "COUNT", 1).array?.first?.array?.first?.string)
        var cursor = ""
        var pending: RedisReply = .null
        for _ in 0..<100 {
            cursor = try await redis.send("HGET", keys.task(id), "events_cursor").string ?? ""
            pending = try await redis.send("ZSCORE", keys.eventsPending(bucket: keys.bucket(of: id)), id)
            if cursor == last, case .null = pending { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(cursor == last)
        #expect(pending == .null)
    }

    @Test func aClaimWithTheStateCachedReturnsNeitherCheckpointNorInput() async throws {
        let store = try await EventRelayTests.store(prefix: "bt-sticky-claim")
        let redis = store.redis
        defer { Task { await redis.close() } }
        let id = TestServers.uniqueName("sticky")
        _ = try await store.submit(
            NewTask(
                id: id, agent: "stepchain", inputJSON: #"{"steps":2}"#, stateJSON: #"{"records":[]}"#, firstStep: "append",
                queue: "default",
                limits: BudgetLimits()))
        let message = StepMessage(task: id, agent: "stepchain", step: "append", seq: 0, branch: 0, attempt: 1)
        let cached = await store.claimAll([message], worker: "w", leaseMilliseconds: 5_000, stateCached: [true])
        guard case .success(.run(let claimed)) = cached.first else {
            Issue.record("not claimed: \(cached)")
            return
        }
        #expect(claimed.stateJSON.isEmpty && claimed.inputJSON.isEmpty)
        _ = try await redis.send("HSET", store.settings.keys.task(id), "lease_owner", "", "lease_until", 0)
        let read = await store.claimAll([message], worker: "w", leaseMilliseconds: 5_000, stateCached: [false])
        guard case .success(.run(let again)) = read.first else {
            Issue.record("not claimed: \(read)")
            return
        }
        #expect(String(decoding: again.stateJSON, as: UTF8.self) == #"{"records":[]}"#)
        #expect(String(decoding: again.inputJSON, as: UTF8.self) == #"{"steps":2}"#)
    }
}
