import Baton
import Foundation
import TestSupport
import Testing

extension IntegrationTests {
    // MARK: 7. Cancel, pause, resume

    static func report(_ name: String, documents: Int, thinkMilliseconds: Int) -> SubmitRequest {
        SubmitRequest(
            id: TestServers.uniqueName(name), agent: "report",
            input: ["documents": .int(Int64(documents)), "think_ms": .int(Int64(thinkMilliseconds)), "approval": false])
    }

    /// Waits until the task has committed at least `seq` steps.
    static func waitForSeq(_ client: BatonClient, _ id: String, atLeast seq: Int64, workers: [Harness.Worker]) async throws -> TaskView {
        var view: TaskView?
        let reached = try await eventually(timeout: .seconds(20), interval: .milliseconds(20)) {
            view = try await client.queries.task(id)
            return (view?.seq ?? 0) >= seq
        }
        let logs = workers.map { $0.log.suffix(3000) }.joined(separator: "\n")
        try #require(reached, "task \(id) stuck at \(String(describing: view?.status)) seq \(String(describing: view?.seq)):\n\(logs)")
        return try #require(view)
    }

    @Test(
        "Cancel stops a running task at its next step boundary; pause holds it and resume continues it, across a SIGKILLed worker",
        .timeLimit(.minutes(4)))
    func cancelPauseResume() async throws {
        try await Harness.withClient { client in
            var first = try await Harness.startWorker("control", client: client)
            defer { first.process.sigkill() }
            let documents = 30
            let cancelled = try await Harness.submit(client, Self.report("cancel", documents: documents, thinkMilliseconds: 300))
            let paused = try await Harness.submit(client, Self.report("pause", documents: documents, thinkMilliseconds: 300))
            let cancelledLater = try await Harness.submit(
                client, Self.report("cancel-restart", documents: documents, thinkMilliseconds: 300))

            // Cancel while running: stops at the next boundary (the step in flight may still commit).
            let running = try await Self.waitForSeq(client, cancelled, atLeast: 2, workers: [first])
            let cancel = try await client.act("cancel", task: cancelled, reason: "test", actor: "integration-test")
            #expect(cancel == .requested || cancel == .done("cancelled"), "\(cancel)")
            let stopped = try await Harness.waitForStatus(client, cancelled, ["cancelled"], timeout: .seconds(10), workers: [first])
            #expect(stopped.seq >= running.seq && stopped.seq <= running.seq + 2, "cancel at seq \(running.seq), stopped at \(stopped.seq)")
            #expect(stopped.seq < Int64(documents))
            #expect(try await client.queries.history(cancelled).filter { $0.type == "cancelled" }.count == 1)

            // Pause: held, no progress for 2 s.
            _ = try await Self.waitForSeq(client, paused, atLeast: 2, workers: [first])
            let pause = try await client.act("pause", task: paused, reason: "test", actor: "integration-test")
            #expect(pause == .requested || pause == .done("paused"), "\(pause)")
            let held = try await Harness.waitForStatus(client, paused, ["paused"], timeout: .seconds(10), workers: [first])
            try await Task.sleep(for: .seconds(2))
            let stillHeld = try #require(try await client.queries.task(paused))
            #expect(stillHeld.status == "paused")
            #expect(stillHeld.seq == held.seq)

            // Both flags survive a worker killed with SIGKILL: the third task is cancelled while no worker runs.
            first.process.sigkill()
            #expect(await first.process.waitForExit(timeout: .seconds(10)) == 128 + SIGKILL)
            let atKill = try #require(try await client.queries.task(cancelledLater))
            let lateCancel = try await client.act("cancel", task: cancelledLater, reason: "test", actor: "integration-test")
            #expect(lateCancel == .requested || lateCancel == .done("cancelled"), "\(lateCancel)")
            first = try await Harness.startWorker("control-2", client: client)
            let lateStopped = try await Harness.waitForStatus(
                client, cancelledLater, ["cancelled"], timeout: .seconds(30), workers: [first])
            #expect(lateStopped.seq <= atKill.seq + 1)
            #expect(lateStopped.seq < Int64(documents))
            let afterRestart = try #require(try await client.queries.task(paused))
            #expect(afterRestart.status == "paused")
            #expect(afterRestart.seq == held.seq)

            let resume = try await client.act("resume", task: paused, reason: "test", actor: "integration-test")
            #expect(resume == .done("queued") || resume == .done("resumed") || resume == .requested, "\(resume)")
            let done = try await Harness.waitForStatus(client, paused, ["succeeded"], timeout: .seconds(40), workers: [first])
            #expect(done.seq == Int64(documents) + 1)
            #expect(done.result?["documents"]?.intValue == Int64(documents))
            let history = try await client.queries.history(paused)
            #expect(history.filter { $0.type == "paused" }.count == 1)
            #expect(history.filter { $0.type == "resumed" }.count == 1)
            // Every seq committed once: the commit that carried the pause is recorded as the `paused` event.
            let commits = Harness.commitSeqs(history)
            #expect(Set(commits).count == commits.count, "a seq committed twice: \(commits)")
            let pausedAt = history.filter { $0.type == "paused" }.map(\.seq)
            #expect(Set(commits + pausedAt) == Set(1...Int64(documents) + 1), "commits \(commits), paused at \(pausedAt)")
            let findings = try #require(try await client.queries.checkpoint(paused)).json
            let analysed = (try JSONValue.parse(Array(findings.utf8))["findings"]?.arrayValue ?? []).compactMap(\.stringValue)
            #expect(analysed.count == documents)
            #expect(Set(analysed).count == documents)
            await first.process.stop()
        }
    }
}
