import Baton
import BatonTesting
import Foundation
import Synchronization
import Testing

/// A worker whose whole process stalled past its step's lease (CPU starvation, a long pause) must not take the step
/// from itself: a copy of the step it is running is a duplicate, even though the lease in the store has lapsed.
@Suite("In-memory: a stalled worker and copies of its running step")
struct InMemoryStallTests {
    /// One step with a keyed side effect whose first execution waits at a gate the test opens.
    struct GatedEffect: Agent {
        struct State: Codable, Sendable {}
        static let name = "gated-effect"
        static let steps = ["only"]
        let gate: Gate
        func initialState(for input: JSONValue) throws -> State { State() }
        func run(step: String, context: StepContext<GatedEffect>) async throws -> StepOutcome {
            let runs = try await context.sideEffect("charge-card") {
                let run = gate.entered()
                if run == 1 { await gate.waitUntilOpen() }
                return run
            }
            return .complete(["effect_run": .int(Int64(runs))])
        }
    }

    /// Counts executions of the effect's body and holds the first until ``open()``.
    final class Gate: Sendable {
        private let state = Mutex<(runs: Int, open: Bool, waiters: [CheckedContinuation<Void, Never>])>((0, false, []))
        var runs: Int { state.withLock { $0.runs } }
        func entered() -> Int {
            state.withLock {
                $0.runs += 1; return $0.runs
            }
        }
        func waitUntilOpen() async {
            await withCheckedContinuation { continuation in
                let resume = state.withLock { state -> Bool in
                    if state.open { return true }
                    state.waiters.append(continuation)
                    return false
                }
                if resume { continuation.resume() }
            }
        }
        func open() {
            let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
                state.open = true
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }

    @Test("copies of a step this worker runs are acked as duplicates after its lease lapsed; the effect runs once")
    func copiesOfARunningStepAreDuplicates() async throws {
        let gate = Gate()
        let clock = TestClock()
        var settings = ProtocolSettings()
        settings.lease = .seconds(3)
        let harness = BatonTestHarness(agents: [GatedEffect(gate: gate)], settings: settings, clock: clock)
        let id = try await harness.submit(agent: GatedEffect.name)
        let message = try #require(harness.pendingDeliveries.first?.message)
        let first = Task { await harness.deliverNext() }
        while gate.runs == 0 { try await Task.sleep(for: .milliseconds(5)) }
        let running = try #require(harness.task(id))
        #expect(running.status == "running")

        // The worker stalled past its lease: in the store it has lapsed, and a claim would take it over.
        clock.advance(by: .seconds(10))
        #expect(try #require(harness.task(id)).leaseUntilMilliseconds < clock.nowMilliseconds)

        // A copy in a batch (the consumer's path) and one on its own (the redelivery path).
        let batch = Mutex<[Disposition]>([])
        await harness.executor.handleSteps(
            [StepDelivery(body: try JSONCoding.encode(message), routingKey: "default", redelivered: false, settlement: nil)],
            settle: { _, disposition in batch.withLock { $0.append(disposition) } })
        let alone = await harness.deliver(message)
        #expect(batch.withLock { $0.count } == 1)
        for disposition in batch.withLock({ $0 }) + [alone] {
            guard case .ack = disposition else {
                Issue.record("a copy of the running step was not acked as a duplicate: \(disposition)")
                continue
            }
        }
        let after = try #require(harness.task(id))
        #expect(after.fence == running.fence, "a copy took the lease from the running step")
        #expect(gate.runs == 1)

        gate.open()
        _ = await first.value
        let done = try #require(harness.task(id))
        #expect(done.status == "succeeded")
        #expect(done.result?["effect_run"] == .int(1))
        #expect(gate.runs == 1)
    }
}
