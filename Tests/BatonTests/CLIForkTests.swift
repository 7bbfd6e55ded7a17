import Baton
import Foundation
import TestSupport
import Testing

/// `baton fork` end to end (issue 5): a worker child process runs a stepchain to success, the built `baton` forks
/// it from a kept checkpoint, and the worker runs the new branch to success on real servers.
@Suite("CLI fork", .enabled(if: TestServers.available))
struct CLIForkTests {
    @Test("a succeeded stepchain forked from seq 2 runs branch 1 from its 2 records to success; history --json shows both branches")
    func forkSucceededStepchain() async throws {
        try await Harness.withClient { (client: BatonClient) async throws in
            let worker = try await Harness.startWorker("cli-fork", client: client)
            defer { worker.process.sigkill() }
            let id = try await Harness.submit(client, Harness.stepchain(id: TestServers.uniqueName("cli-fork"), steps: 4, recordBytes: 16))
            let done = try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker])
            #expect(done.branch == 0 && done.seq == 4)
            let before = try await Harness.records(client, id, seq: 2)
            #expect(before.count == 2)

            // A seq with no kept checkpoint: exit 4, naming the kept seqs; nothing changes.
            let missing = try await CLITests.baton(["fork", id, "--from-seq", "9", "--reason", "typo"])
            #expect(missing.status == 4)
            #expect(missing.output.contains("the kept seqs are 0, 1, 2, 3, 4"), "\(missing.output)")
            // The final checkpoint: the history names no step after it, so --step is required (64).
            let noStep = try await CLITests.baton(["fork", id, "--from-seq", "4", "--reason", "again"])
            #expect(noStep.status == 64)
            #expect(noStep.output.contains("--step"), "\(noStep.output)")
            let unknown = try await CLITests.baton(["fork", id + "-none", "--from-seq", "0", "--reason", "x"])
            #expect(unknown.status == 4)
            #expect(try await client.queries.task(id)?.branch == 0)

            let reason = "redo the tail \(TestServers.uniqueName("r"))"
            let forked = try await CLITests.baton(["fork", id, "--from-seq", "2", "--reason", reason, "--actor", "ana@ops", "-o", "json"])
            #expect(forked.status == 0, "\(forked.error)")
            let items = try #require(try CLIOperatorTests.json(forked.output)["items"] as? [[String: Any]])
            let report = try #require(items.first)
            #expect(report["id"] as? String == id)
            #expect(report["action"] as? String == "fork")
            #expect(report["result"] as? String == "done")
            #expect(report["status"] as? String == "queued")
            #expect(report["branch"] as? Int == 1)
            #expect(report["seq"] as? Int == 2)
            #expect(report["step"] as? String == "append")

            let again = try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker])
            #expect(again.branch == 1 && again.seq == 4)
            let records = try await Harness.records(client, id)
            #expect(records.count == 4)
            #expect(Array(records.prefix(2)) == before)
            #expect(records.map { $0.prefix(2) } == ["1:", "2:", "3:", "4:"])

            let history = try await CLITests.baton(["history", id, "--json"])
            #expect(history.status == 0, "\(history.error)")
            let events = try #require(try CLIOperatorTests.json(history.output)["items"] as? [[String: Any]])
            #expect(events.allSatisfy { $0["branch"] is Int })
            #expect(Set(events.compactMap { $0["branch"] as? Int }) == [0, 1])
            let fork = try #require(events.first { $0["type"] as? String == "forked" })
            #expect(fork["branch"] as? Int == 1)
            #expect(fork["seq"] as? Int == 2)
            #expect(fork["step"] as? String == "append")
            let data = try #require(fork["data"] as? [String: Any])
            #expect(data["reason"] as? String == reason)
            #expect(data["actor"] as? String == "ana@ops")
            #expect(data["from_seq"] as? Int == 2)
            #expect(data["from_branch"] as? Int == 0)
            let succeeded = events.filter { $0["type"] as? String == "succeeded" }.compactMap { $0["branch"] as? Int }
            #expect(succeeded == [0, 1])
            let commitsOnBranch1 = events.filter { $0["branch"] as? Int == 1 && $0["type"] as? String == "step_committed" }
            #expect(commitsOnBranch1.compactMap { $0["seq"] as? Int } == [3])

            let audit = try await CLITests.baton(["audit", "--limit", "200", "-o", "json"])
            let entries = try #require(try CLIOperatorTests.json(audit.output)["items"] as? [[String: Any]])
            let entry = try #require(entries.first { $0["reason"] as? String == reason })
            #expect(entry["action"] as? String == "fork")
            #expect(entry["actor"] as? String == "ana@ops")
            #expect(entry["target"] as? String == id)
            await worker.process.stop()
        }
    }

    @Test("a running step forbids a fork: exit 5 naming running, nothing changes")
    func forkOfARunningTaskIsAConflict() async throws {
        let agent = TestServers.uniqueName("cli-fork-run")
        let id = try await CLIOperatorTests.withStore { store in
            let id = try await HTTPAPITests.task(agent: agent, queue: agent, store: store)
            let message = StepMessage(task: id, agent: agent, step: "fetch", seq: 0, branch: 0, attempt: 1)
            // A lease far longer than the test: on a loaded CI box the CLI below started 60+ s after this claim, the
            // lease had expired, and a live worker's stalled-task sweep had re-queued the task (a clean-clone CI run, fifteenth
            // session).
            guard case .run = try await store.claim(message, worker: "cli-fork-test", leaseMilliseconds: 900_000) else {
                Issue.record("the claim did not run the step")
                return id
            }
            return id
        }
        let result = try await CLITests.baton(["fork", id, "--from-seq", "0", "--reason", "too early"])
        #expect(result.status == 5)
        #expect(result.output.contains("running") && result.output.contains("pause or cancel"), "\(result.output)")
        try await Harness.withClient { client in
            let task = try #require(try await client.queries.task(id))
            #expect(task.status == "running" && task.branch == 0)
            #expect(try await client.queries.history(id).allSatisfy { $0.type != "forked" })
        }
    }
}
