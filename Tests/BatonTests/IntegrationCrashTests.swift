import Baton
import BatonExamples
import Foundation
import TestSupport
import Testing

extension IntegrationTests {
    // MARK: 2. Crash tests

    /// A worker SIGKILLs itself at a protocol point of step seq 2 (BATON_CRASH_POINT); a new worker finishes
    /// the task. Each step's record, charge and side effect counts exactly once.
    @Test(
        "A worker killed with SIGKILL mid-step, after the commit, or after publishing: the task completes exactly once",
        .timeLimit(.minutes(4)), arguments: ["in_step@2", "after_commit@2", "after_publish@2"])
    func crash(at point: String) async throws {
        try await Harness.withClient { client in
            // The task runs on a step queue of its own (a chain stays on the queue its message came from), so
            // the crashing worker crashes on this task and no other task on the shared servers.
            let queue = TestServers.uniqueName("it-crash")
            let crashing = try await Harness.startWorker(
                "crash-\(point.prefix { $0 != "@" })", client: client, crashPoint: point, arguments: ["--queues", queue])
            defer { crashing.process.sigkill() }
            defer { Task { try? await Harness.deleteQueue(Topology.stepsQueue(queue)) } }
            let id = TestServers.uniqueName("crash-\(point.prefix { $0 != "@" })")
            let effectLog = try TestFiles.path("effects") + ".log"
            let steps = 5
            let tokensPerStep: Int64 = 13
            let cost = 0.375
            let bus = CapturingBus()
            let driver = StepExecutor(
                registry: .examples, store: client.store, bus: bus, workerID: TestServers.uniqueName("it-driver"),
                settings: ProtocolSettings(), logger: Harness.logger)
            _ = try await driver.submit(
                Harness.stepchain(id: id, steps: steps, tokensPerStep: tokensPerStep, costUSDPerStep: cost, effectLog: effectLog))
            var first = try #require(bus.last)
            first.routingKey = queue
            try await Harness.publish([Harness.message(first)])

            let status = await crashing.process.waitForExit(timeout: .seconds(30))
            #expect(
                status == 128 + SIGKILL, "the worker with BATON_CRASH_POINT=\(point) did not kill itself:\n\(crashing.log.suffix(3000))")
            #expect(crashing.log.contains("BATON_CRASH_POINT \(point.prefix { $0 != "@" }) reached for task \(id) at seq 2"))
            let atCrash = try #require(try await client.queries.task(id))
            #expect(atCrash.status != "succeeded")

            // The stalled-task sweep republishes to the task's own queue (`default`). The rescuer holds its steps with
            // the default lease (15 s): copies of the step it runs are about (the crash left them), and a 3 s lease
            // would let one take a step over from a rescuer that a loaded CI box stalls for 3 s, running the step's
            // side effect again — what `sideEffect`'s doc says a holder frozen past its lease allows (seen three times
            // in 22 sessions of full-suite runs). The crashed worker's 3 s lease keeps the rescue quick.
            let rescuer = try await Harness.startWorker(
                "rescue", client: client, arguments: ["--queues", "\(queue),default"], lease: 15)
            defer { rescuer.process.sigkill() }
            let view = try await Harness.waitForStatus(client, id, ["succeeded"], timeout: .seconds(45), workers: [crashing, rescuer])

            #expect(view.seq == Int64(steps))
            #expect(view.budget.used.steps == Int64(steps))
            #expect(view.budget.used.tokens == Int64(steps) * tokensPerStep)
            #expect(view.costMicros == Int64(steps) * Charge.micros(fromUSD: cost))
            let records = try await Harness.records(client, id)
            #expect(records.map { String($0.prefix { $0 != ":" }) } == (1...steps).map(String.init))
            #expect(records.allSatisfy { $0.utf8.count == 64 })

            let lines = try String(contentsOfFile: effectLog, encoding: .utf8).split(separator: "\n").map { $0.split(separator: " ") }
            let keys = lines.filter { $0.first.map(String.init) == id }.map { String($0[2]) }
            #expect(
                keys == (1...steps).map { "record-\($0)" },
                """
                side effects executed: \(keys)
                effect log (task step key attempt): \(lines.map { $0.joined(separator: " ") })
                rescuing worker's log: \(rescuer.log.suffix(6000))
                crashing worker's log: \(crashing.log.suffix(3000))
                """)

            let history = try await client.queries.history(id)
            #expect(Harness.commitSeqs(history) == (1...Int64(steps)).map { $0 })
            await rescuer.process.stop()
        }
    }
}
