import Baton
import BatonExamples
import Foundation
import RedisClient
import TestSupport
import Testing

extension IntegrationTests {
    // MARK: 3. Duplicate, old and future step messages

    /// The task's first three steps run in-process with a bus that keeps the next step message instead of
    /// publishing it, so the test holds the task's current message (seq 3) while no copy is in flight.
    @Test("The same step message twice commits once; an old seq is acked without effect; a future seq is dead-lettered")
    func duplicateOldAndFutureMessages() async throws {
        try await Harness.withClient { client in
            // A step queue of its own: the future-seq message must reach this test's worker, not another test's.
            let queue = TestServers.uniqueName("q-dedupe")
            let worker = try await Harness.startWorker("dedupe", client: client, arguments: ["--queues", queue])
            defer { worker.process.sigkill() }
            let bus = CapturingBus()
            var settings = ProtocolSettings()
            settings.lease = .seconds(3)
            let driver = StepExecutor(
                registry: .examples, store: client.store, bus: bus, workerID: TestServers.uniqueName("it-driver"), settings: settings,
                logger: Harness.logger)
            let id = TestServers.uniqueName("dedupe")
            let steps = 7
            let effectLog = try TestFiles.path("effects") + ".log"
            let (_, first) = try await Harness.create(
                client, Harness.stepchain(id: id, steps: steps, tokensPerStep: 5, costUSDPerStep: 0.5, effectLog: effectLog), queue: queue)
            #expect(first.count == 1)
            var messages: [OutboxMessage] = []
            for index in 0..<3 {
                let message = try #require(index == 0 ? first.first : bus.last)
                messages.append(message)
                guard case .ack = await driver.handleStep(body: Array(message.body.utf8), routingKey: message.routingKey) else {
                    Issue.record("the in-process step was not acked")
                    return
                }
            }
            let current = try #require(bus.last)
            let currentStep = try StepMessage.decode(Array(current.body.utf8))
            #expect(currentStep.seq == 3)
            let before = try #require(try await client.queries.task(id))
            #expect(before.seq == 3)
            #expect(before.status == "queued")
            let eventsBefore = try await client.queries.history(id)

            // An old seq (1), twice, and a future one (5).
            var future = currentStep
            future.seq = 5
            try await Harness.publish([
                Harness.message(messages[1]), Harness.message(messages[1]), Harness.message(.step(future, queue: queue)),
            ])
            let letter = try await Harness.waitForDeadLetter(client) { $0.taskID == id }
            let dead = try #require(letter, "the future-seq message was not dead-lettered:\n\(worker.log.suffix(3000))")
            #expect(dead.reason == "stale_seq")
            #expect(dead.seq == 5)
            #expect(dead.error.contains("seq 3") && dead.error.contains("seq 5"), "\(dead.error)")
            #expect(dead.worker == worker.id)
            // The old copies, published before the future one, changed nothing (the final checks below count
            // every record and commit once more).
            let after = try #require(try await client.queries.task(id))
            #expect(after.seq == 3)
            #expect(after.status == "queued")
            #expect(after.budget.used == before.budget.used)
            #expect(try await client.queries.history(id) == eventsBefore)
            #expect(try await Harness.records(client, id).count == 3)

            // The current message twice at once: one commit per step.
            try await Harness.publish([Harness.message(current), Harness.message(current)])
            let view = try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker])
            #expect(view.seq == Int64(steps))
            #expect(view.budget.used.steps == Int64(steps))
            #expect(view.budget.used.tokens == Int64(steps) * 5)
            #expect(view.costMicros == Int64(steps) * 500_000)
            let records = try await Harness.records(client, id)
            #expect(records.map { String($0.prefix { $0 != ":" }) } == (1...steps).map(String.init))
            #expect(Harness.commitSeqs(try await client.queries.history(id)) == (1...Int64(steps)).map { $0 })
            let effects = try await client.store.redis.send("HLEN", client.store.settings.keys.effects(id)).int
            #expect(effects == steps)
            let executed = try String(contentsOfFile: effectLog, encoding: .utf8).split(separator: "\n").map { $0.split(separator: " ")[2] }
            #expect(executed.map(String.init) == (1...steps).map { "record-\($0)" })
            await worker.process.stop()
        }
    }
}
