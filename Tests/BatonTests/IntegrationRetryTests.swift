import Baton
import Foundation
import TestSupport
import Testing

extension IntegrationTests {
    // MARK: 5. Retries, dead letters and redrive

    @Test("flaky: fail_times < max_attempts succeeds on attempt 3; more is dead-lettered; a redrive runs branch 1 to success")
    func flakyRetriesDeadLetterAndRedrive() async throws {
        try await Harness.withClient { client in
            let worker = try await Harness.startWorker("flaky", client: client)
            defer { worker.process.sigkill() }

            let recovers = try await Harness.submit(
                client,
                SubmitRequest(
                    id: TestServers.uniqueName("flaky-ok"), agent: "flaky", input: ["fail_times": 2],
                    budget: BudgetRequest(maxAttempts: 5)))
            let fails = try await Harness.submit(
                client,
                SubmitRequest(
                    id: TestServers.uniqueName("flaky-dead"), agent: "flaky", input: ["fail_times": 9],
                    budget: BudgetRequest(maxAttempts: 3)))

            let ok = try await Harness.waitForStatus(client, recovers, ["succeeded"], workers: [worker])
            #expect(ok.result == ["attempt": 3, "branch": 0])
            #expect(ok.attempt == 3)
            #expect(ok.branch == 0)
            let okHistory = try await client.queries.history(recovers)
            #expect(okHistory.filter { $0.type == "retrying" }.count == 2)
            #expect(okHistory.filter { $0.type == "succeeded" }.count == 1)

            let dead = try await Harness.waitForStatus(client, fails, ["dead_lettered"], workers: [worker])
            #expect(dead.attempt == 3)
            #expect(dead.error?["bucket"]?.stringValue == "provider_5xx")
            #expect(try await client.queries.history(fails).filter { $0.type == "retrying" }.count == 2)
            let found = try await Harness.waitForDeadLetter(client) { $0.taskID == fails }
            let letter = try #require(found, "no dead letter for \(fails)")
            #expect(letter.reason == "retries_exhausted")
            #expect(letter.bucket == "provider_5xx")
            #expect(letter.attempts == 3)
            #expect(letter.agent == "flaky")
            #expect(letter.step == "call")
            #expect(letter.branch == 0)
            #expect(letter.error.contains("503"))

            let redriven = try await client.redrive(deadLetter: letter.id, reason: "provider recovered", actor: "integration-test")
            guard case .done = redriven else {
                Issue.record("redrive answered \(redriven)")
                return
            }
            let again = try await Harness.waitForStatus(client, fails, ["succeeded"], workers: [worker])
            #expect(again.branch == 1)
            #expect(again.result == ["attempt": 1, "branch": 1])
            #expect(try await client.queries.deadLetter(letter.id) == nil)
            let history = try await client.queries.history(fails)
            #expect(history.contains { $0.branch == 0 && $0.type == "dead_lettered" })
            #expect(history.contains { $0.type == "redriven" })
            #expect(history.contains { $0.branch == 1 && $0.type == "succeeded" })
            #expect(Set(history.map(\.branch)) == [0, 1])
            #expect(try await client.queries.history(fails, branch: 1).allSatisfy { $0.branch == 1 })
            await worker.process.stop()
        }
    }
}
