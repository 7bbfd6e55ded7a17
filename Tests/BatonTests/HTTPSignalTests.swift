import Baton
import Foundation
import TestSupport
import Testing

@testable import Baton

extension HTTPAPITests {
    /// A task of `agent` waiting for `approve` or `reject`, written through the store (claimed, then committed as a wait).
    static func waitingTask(agent: String) async throws -> String {
        try await CLIOperatorTests.withStore { store in
            let id = try await Self.task(agent: agent, queue: agent, store: store)
            let claim = try await store.claim(
                StepMessage(task: id, agent: agent, step: "fetch", seq: 0, branch: 0, attempt: 1), worker: "http-test",
                leaseMilliseconds: 5000)
            guard case .run(let claimed) = claim else { throw HTTPTestClient.TestError(description: "not claimed: \(claim)") }
            let wait = StepExecutor.waitSpec([.signal("approve"), .signal("reject")], then: "decide", onTimeout: nil)
            let outcome = try await store.commit(
                Commit(task: id, token: claimed.token, seq: 0, kind: .wait(wait), stateJSON: "{}", next: nil))
            guard case .committed(status: "waiting", _, _, _) = outcome else {
                throw HTTPTestClient.TestError(description: "not waiting: \(outcome)")
            }
            return id
        }
    }

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(4)))
    func signalsApproveRejectInboxAndStatsOverHTTP() async throws {
        let agent = TestServers.uniqueName("http-signal")
        let id = try await Self.waitingTask(agent: agent)
        let other = try await Self.waitingTask(agent: agent)
        try await Self.withServer { http, client in
            // The inbox lists both approvals, oldest first; the CLI shows the same.
            let inbox = try await http.request("GET", "/v1/inbox?agent=\(agent)", token: Self.viewer)
            #expect(inbox.status == 200, "\(inbox.body)")
            let items = try #require(inbox.json["items"] as? [[String: Any]])
            #expect(items.map { ($0["task"] as? [String: Any])?["id"] as? String } == [id, other])
            #expect(items.allSatisfy { $0["kind"] as? String == "approval" })
            let cli = try await CLITests.baton(["inbox", "--agent", agent, "--json"])
            #expect(cli.status == 0)
            #expect(cli.output.contains(id) && cli.output.contains(other))
            let none = try await CLITests.baton(["inbox", "--agent", agent, "--older-than", "1h", "-q"])
            #expect(none.status == 0 && none.output.isEmpty)

            // A signal it does not wait for is kept; a bad name is a 422; a viewer may not signal.
            let kept = try await http.request(
                "POST", "/v1/tasks/\(id)/signals/callback", token: Self.operatorToken, body: #"{"payload": {"n": 1}, "reason": "hook"}"#)
            #expect(kept.status == 200, "\(kept.body)")
            #expect(kept.json["result"] as? String == "stored" && kept.json["status"] as? String == "waiting")
            #expect(try await client.queries.task(id)?.signalsPending?.map(\.name) == ["callback"])
            Self.expectProblem(
                try await http.request("POST", "/v1/tasks/\(id)/signals/no%20spaces", token: Self.operatorToken), 422, "invalid-signal")
            Self.expectProblem(try await http.request("POST", "/v1/tasks/\(id)/approve", token: Self.viewer), 403, "forbidden")
            Self.expectProblem(
                try await http.request("POST", "/v1/tasks/\(id)-none/approve", token: Self.operatorToken), 404, "not-found")

            // approve wakes it once: the same id again is a duplicate.
            let body = #"{"comment": "looks right", "id": "approve-1", "payload": {"ok": true}}"#
            let approved = try await http.request("POST", "/v1/tasks/\(id)/approve", token: Self.operatorToken, body: body)
            #expect(approved.status == 200, "\(approved.body)")
            #expect(approved.json["result"] as? String == "woke")
            #expect(approved.json["actor"] as? String == "http:ana (operator)")
            let again = try await http.request("POST", "/v1/tasks/\(id)/approve", token: Self.operatorToken, body: body)
            #expect(again.json["result"] as? String == "duplicate")
            let woke = try await client.queries.history(id).filter { $0.type == "woke" }
            #expect(woke.count == 1)
            #expect(woke.first?.data?["reason"]?.stringValue == "looks right")

            // reject of a waiting task is the signal 'reject'; of an ended one a 409.
            let rejected = try await http.request(
                "POST", "/v1/tasks/\(other)/reject", token: Self.operatorToken, body: #"{"reason": "no"}"#)
            #expect(rejected.json["result"] as? String == "woke" && rejected.json["signal"] as? String == "reject")
            // Each signal that was taken is in the audit stream with the token's actor and its reason.
            let audited = try await client.queries.auditEntries(limit: 1000).filter { $0.target == id || $0.target == other }
            #expect(audited.contains { $0.action == "signal.callback" && $0.target == id && $0.reason == "hook" })
            #expect(audited.contains { $0.action == "signal.approve" && $0.target == id && $0.reason == "looks right" })
            #expect(audited.contains { $0.action == "signal.reject" && $0.target == other && $0.reason == "no" })
            #expect(audited.allSatisfy { $0.actor == "http:ana (operator)" })
            _ = try await client.act("cancel", task: other, reason: "done", actor: "test")
            Self.expectProblem(try await http.request("POST", "/v1/tasks/\(other)/reject", token: Self.operatorToken), 409, "conflict")

            // Stats: the same object as `baton stats --json`.
            let stats = try await http.request("GET", "/v1/stats?since=1h&sample=20", token: Self.viewer)
            #expect(stats.status == 200, "\(stats.body)")
            #expect(stats.json["counts"] is [String: Any])
            #expect((stats.json["sampled_tasks"] as? Int ?? 99) <= 20)
            Self.expectProblem(try await http.request("GET", "/v1/stats?since=soon", token: Self.viewer), 400, "bad-request")
        }
    }
}
