import Baton
import BatonTesting
import Foundation
import Synchronization
import Testing

/// ``StepExecutor/handleSteps(_:settle:)`` on the in-memory backend: a batch is claimed together and its
/// steps commit in groups, but a long step never holds up the commits of the short ones beside it.
@Suite("Step batches")
struct StepBatchTests {
    @Test func aLongStepDoesNotHoldUpTheShortOnesOfItsBatch() async throws {
        let probe = Probe()
        let gate = Gate()
        let harness = BatonTestHarness(agents: [HookAgent(probe: probe)])
        for id in ["batch-slow", "batch-fast-1", "batch-fast-2"] { try await harness.submit(agent: "hook", input: ["steps": 1], id: id) }
        probe.setHook { task, _ in if task == "batch-slow" { await gate.wait() } }
        let deliveries = harness.pendingDeliveries.map {
            StepDelivery(body: $0.body, routingKey: $0.routingKey, redelivered: false, settlement: nil)
        }
        #expect(deliveries.count == 3)
        let settled = Mutex<[Int: String]>([:])
        let batch = Task {
            await harness.executor.handleSteps(deliveries) { index, disposition in
                settled.withLock { $0[index] = "\(disposition)" }
            }
        }
        // The two short steps commit and are settled while the long one still runs.
        var waited = 0
        while settled.withLock({ $0.count }) < 2 && waited < 500 {
            try await Task.sleep(for: .milliseconds(10))
            waited += 1
        }
        #expect(settled.withLock { $0.count } == 2, "the short steps were not committed while the long one ran")
        for id in ["batch-fast-1", "batch-fast-2"] { #expect(harness.task(id)?.status == "succeeded") }
        #expect(harness.task("batch-slow")?.status == "running")
        await gate.open()
        await batch.value
        #expect(settled.withLock { $0.count } == 3)
        #expect(harness.task("batch-slow")?.status == "succeeded")
        #expect(probe.totalRuns == 3)
    }

    @Test func aBatchWithAMalformedAndADuplicateMessageSettlesEachOnce() async throws {
        let probe = Probe()
        let harness = BatonTestHarness(agents: [HookAgent(probe: probe)])
        _ = try await harness.submit(agent: "hook", input: ["steps": 2], id: "batch-dup")
        let first = try #require(harness.pendingDeliveries.first)
        let deliveries = [
            StepDelivery(body: first.body, routingKey: first.routingKey, redelivered: false, settlement: nil),
            StepDelivery(body: Array("not json".utf8), routingKey: first.routingKey, redelivered: false, settlement: nil),
            StepDelivery(body: first.body, routingKey: first.routingKey, redelivered: false, settlement: nil),
        ]
        let settled = Mutex<[Int: [String]]>([:])
        harness.store.heartbeat(worker: harness.workerID)  // a live worker holds the lease
        await harness.executor.handleSteps(deliveries) { index, disposition in
            let text = if case .deadLetter(let letter) = disposition { "dead:\(letter.reason)" } else { "\(disposition)" }
            settled.withLock { $0[index, default: []].append(text) }
        }
        let outcome = settled.withLock { $0 }
        #expect(outcome.keys.sorted() == [0, 1, 2])
        #expect(outcome.values.allSatisfy { $0.count == 1 })
        #expect(outcome[1] == ["dead:malformed"])
        // The same step twice in one batch runs once: the second claim finds the lease held.
        #expect(probe.runs(seq: 0) == 1)
        #expect(harness.task("batch-dup")?.seq == 1)
    }
}

/// Holds a step until the test opens it.
actor Gate {
    private var isOpen = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func wait() async {
        if isOpen { return }
        await withCheckedContinuation { waiters.append($0) }
    }

    func open() {
        isOpen = true
        for waiter in waiters { waiter.resume() }
        waiters = []
    }
}
