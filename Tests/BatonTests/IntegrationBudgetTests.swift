import Baton
import Foundation
import TestSupport
import Testing

extension IntegrationTests {
    // MARK: 6. Budgets and the checkpoint cap

    @Test("spender stops in budget_exceeded at its $5 limit (never more than one step over) with its partial state")
    func spenderStopsAtTheBudget() async throws {
        try await Harness.withClient { client in
            let worker = try await Harness.startWorker("spender", client: client)
            defer { worker.process.sigkill() }
            let id = try await Harness.submit(
                client, SubmitRequest(id: TestServers.uniqueName("spender"), agent: "spender", input: ["cost_usd_per_step": 1.0]))
            let view = try await Harness.waitForStatus(client, id, ["budget_exceeded"], workers: [worker])
            #expect(view.budget.limits.maxCostUSD == 5)
            #expect((5_000_000...6_000_000).contains(view.costMicros), "cost \(view.costMicros) µ$")
            #expect(view.error?["code"]?.stringValue == "budget_exceeded")
            #expect(view.error?["message"]?.stringValue?.contains("cost") == true, "\(String(describing: view.error))")
            let checkpoint = try #require(try await client.queries.checkpoint(id))
            let state = try JSONValue.parse(Array(checkpoint.json.utf8))
            let steps = try #require(state["steps"]?.intValue)
            #expect(steps >= 5 && steps <= 6, "state steps \(steps)")
            #expect(state["spent_micros"]?.intValue ?? state["spentMicros"]?.intValue == steps * 1_000_000)
            let history = try await client.queries.history(id)
            #expect(history.filter { $0.type == "budget_exceeded" }.count == 1)
            // It stays stopped.
            #expect(try await client.queries.task(id)?.status == "budget_exceeded")
            await worker.process.stop()
        }
    }

    @Test("A checkpoint over the 1 MiB cap is dead-lettered as oversized naming size and cap; the last good checkpoint is intact")
    func oversizedCheckpoint() async throws {
        try await Harness.withClient { client in
            let worker = try await Harness.startWorker("oversized", client: client)
            defer { worker.process.sigkill() }
            let id = try await Harness.submit(
                client, Harness.stepchain(id: TestServers.uniqueName("oversized"), steps: 40, recordBytes: 65536, costUSDPerStep: 0.001))
            let view = try await Harness.waitForStatus(client, id, ["dead_lettered"], workers: [worker])
            // 15 records of 64 KiB fit in 1 MiB, 16 do not.
            #expect(view.seq == 15)
            let message = view.error?["message"]?.stringValue ?? ""
            let size = message.firstMatch(of: /is (\d+) bytes, over the 1048576-byte cap/).flatMap { Int($0.1) }
            #expect(size.map { $0 > 1 << 20 } == true, "size and cap named: \(message)")
            let found = try await Harness.waitForDeadLetter(client) { $0.taskID == id }
            let letter = try #require(found, "no dead letter for \(id)")
            #expect(letter.reason == "oversized")
            #expect(letter.seq == 15)
            #expect(letter.error.contains("1048576"))

            let checkpoint = try #require(try await client.queries.checkpoint(id))
            #expect(checkpoint.seq == 15)
            #expect(checkpoint.json.utf8.count <= 1 << 20)
            let records = try await Harness.records(client, id)
            #expect(records.count == 15)
            #expect(records.map { String($0.prefix { $0 != ":" }) } == (1...15).map(String.init))
            #expect(records.allSatisfy { $0.utf8.count == 65536 })
            #expect(view.budget.used.steps == 15)
            await worker.process.stop()
        }
    }
}
