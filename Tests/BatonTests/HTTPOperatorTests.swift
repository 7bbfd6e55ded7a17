import Baton
import Foundation
import TestSupport
import Testing

@testable import Baton

/// Edit & approve, bulk approve by filter, the fleet's event stream, worker drain and dead-letter export, over HTTP
/// and the CLI, on the real servers.
extension HTTPAPITests {
    /// Reads the fleet stream until `task`'s event of type `last` arrived (other tests' events pass by); returns
    /// the task's events in the order they came.
    static func fleetEvents(of task: String, until last: String, from stream: HTTPTestClient.EventStream) async throws -> [[String: Any]] {
        var mine: [[String: Any]] = []
        for _ in 0..<2000 {
            let batch = try await stream.next(1)
            guard let event = batch.first else { break }
            guard let json = try JSONSerialization.jsonObject(with: Data(event.data.utf8)) as? [String: Any] else { continue }
            guard json["task_id"] as? String == task else { continue }
            #expect(event.type == json["type"] as? String)
            mine.append(json)
            if json["type"] as? String == last { break }
        }
        return mine
    }

    /// The POST routes beyond task cancel/pause/resume and the dead-letter actions.
    static func otherMutatingRoutes(task: String) -> [String] {
        [
            "/v1/tasks/\(task)/fork", "/v1/tasks/\(task)/budget", "/v1/tasks/\(task)/approve", "/v1/tasks/\(task)/reject",
            "/v1/tasks/\(task)/signals/callback", "/v1/bulk", "/v1/workers/w-\(task)/drain",
        ]
    }

    /// Every route of DESIGN.md §7 with its role: no token → 401 (also on the event streams), a viewer reads but
    /// cannot act → 403, and the open routes stay open.
    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(4)))
    func everyRouteNeedsItsRole() async throws {
        let task = TestServers.uniqueName("http-roles")
        let reads = [
            "/v1/tasks", "/v1/tasks/\(task)", "/v1/tasks/\(task)/history", "/v1/tasks/\(task)/events", "/v1/tasks/\(task)/checkpoint",
            "/v1/tasks/\(task)/checkpoints/0", "/v1/inbox", "/v1/dead", "/v1/dead?group_by=agent", "/v1/dead?format=jsonl", "/v1/dead/x",
            "/v1/workers", "/v1/queues", "/v1/stats", "/v1/audit", "/v1/whoami", "/v1/bulk/x", "/v1/events",
        ]
        let actions =
            [
                "/v1/tasks", "/v1/tasks/\(task)/cancel", "/v1/tasks/\(task)/pause", "/v1/tasks/\(task)/resume", "/v1/dead/x/redrive",
                "/v1/dead/x/discard", "/v1/dead/redrive", "/v1/dead/discard",
            ] + Self.otherMutatingRoutes(task: task)
        try await Self.withServer { http, _ in
            for path in reads {
                Self.expectProblem(try await http.request("GET", path), 401, "unauthorized")
                let viewer = try await http.request("GET", path, token: Self.viewer)
                #expect(viewer.status != 401 && viewer.status != 403, "\(path): \(viewer.status) \(viewer.body)")
            }
            for path in actions {
                Self.expectProblem(try await http.request("POST", path, body: "{}"), 401, "unauthorized")
                Self.expectProblem(try await http.request("POST", path, token: Self.viewer, body: "{}"), 403, "forbidden")
            }
            for path in ["/healthz", "/readyz", "/metrics"] { #expect(try await http.request("GET", path).status == 200, "\(path)") }
        }
    }

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(3)))
    func editAndApproveWakesTheStepWithTheEditedInputTheFleetStreamShowsItAndADrainedWorkerExits() async throws {
        try await Harness.withClient { (client: BatonClient) async throws in
            let worker = try await Harness.startWorker("http-ops", client: client)
            defer { worker.process.sigkill() }
            try await Self.withServer(broker: true) { http, _ in
                // The fleet stream: no token → 401; without Accept: text/event-stream → 406; a viewer's ?access_token= works.
                Self.expectProblem(try await http.request("GET", "/v1/events"), 401, "unauthorized")
                Self.expectProblem(try await http.request("GET", "/v1/events", token: Self.viewer), 406, "not-acceptable")
                let stream = try await http.events("/v1/events?agent=approval&access_token=\(Self.viewer)", token: nil)
                defer { stream.close() }
                #expect(stream.status == 200 && stream.headers["content-type"] == "text/event-stream")

                let id = TestServers.uniqueName("http-edit")
                let submit =
                    #"{"id": "\#(id)", "agent": "approval", "input": {"timeout_seconds": 600, "email": {"to": "ops@example.com", "body": "draft", "cc": "boss"}}}"#
                #expect(try await http.request("POST", "/v1/tasks", token: Self.operatorToken, body: submit).status == 202)
                _ = try await Harness.waitForStatus(client, id, ["waiting"], workers: [worker])

                // Inbox: a viewer may not edit & approve; an edit that is not JSON is a 400.
                let edit = #"{"edit": {"email": {"body": "final text", "cc": null}}, "comment": "fixed the wording"}"#
                Self.expectProblem(
                    try await http.request("POST", "/v1/tasks/\(id)/approve", token: Self.viewer, body: edit), 403, "forbidden")
                Self.expectProblem(
                    try await http.request("POST", "/v1/tasks/\(id)/approve", token: Self.operatorToken, body: "{edit"), 400, "bad-request")
                let approved = try await http.request("POST", "/v1/tasks/\(id)/approve", token: Self.operatorToken, body: edit)
                #expect(approved.status == 200, "\(approved.body)")
                #expect(approved.json["result"] as? String == "woke" && approved.json["edited"] as? Bool == true)
                let done = try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker])
                // The woken step received the task's input with the approver's patch applied.
                #expect(done.result?["decision"] == "approve")
                #expect(
                    done.result?["payload"] == ["timeout_seconds": 600, "email": ["to": "ops@example.com", "body": "final text"]],
                    "\(String(describing: done.result))")
                let received = try #require(try await client.queries.history(id).first { $0.type == "signal_received" })
                #expect(received.data?["edit"] == ["email": ["body": "final text", "cc": nil]])
                #expect(received.data?["edited_by"] == "http:ana (operator)")
                let audit = try await client.queries.auditEntries(limit: 1000).first {
                    $0.target == id && $0.action == "signal.approve.edited"
                }
                #expect(audit?.actor == "http:ana (operator)" && audit?.reason == "fixed the wording")

                // The fleet stream carried every event of the task live, in the history's order.
                let streamed = try await Self.fleetEvents(of: id, until: "succeeded", from: stream)
                let history = try await client.queries.history(id)
                #expect(streamed.compactMap { $0["type"] as? String } == history.map(\.type))
                #expect(streamed.compactMap { ($0["seq"] as? Int).map(Int64.init) } == history.map(\.seq))

                // Drain: viewers may not; an unknown worker is a 404; the real worker stops taking steps and exits 0.
                Self.expectProblem(
                    try await http.request("POST", "/v1/workers/\(worker.id)/drain", token: Self.viewer, body: "{}"), 403, "forbidden")
                Self.expectProblem(
                    try await http.request("POST", "/v1/workers/\(worker.id)-none/drain", token: Self.operatorToken, body: "{}"), 404,
                    "not-found")
                let drain = try await http.request(
                    "POST", "/v1/workers/\(worker.id)/drain", token: Self.operatorToken, body: #"{"reason": "host maintenance"}"#)
                #expect(drain.status == 202, "\(drain.body)")
                #expect(await worker.process.waitForExit(timeout: .seconds(30)) == 0, "\(worker.log.suffix(2000))")
                #expect(worker.log.contains("drain request"), "\(worker.log.suffix(2000))")
                #expect(try await client.queries.workers().contains { $0.id == worker.id } == false)
                let drained = try await client.queries.auditEntries(limit: 1000).first { $0.target == worker.id }
                #expect(
                    drained?.action == "worker.drain" && drained?.reason == "host maintenance" && drained?.actor == "http:ana (operator)")
            }
        }
    }

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(4)))
    func bulkApproveDryRunChangesNothingThenApprovesExactlyTheSelectedApprovals() async throws {
        let agent = TestServers.uniqueName("http-bulk-approve")
        let other = TestServers.uniqueName("http-bulk-other")
        var made: [String] = []
        for _ in 0..<3 { made.append(try await Self.waitingTask(agent: agent)) }
        let selected = made
        let untouched = try await Self.waitingTask(agent: other)
        try await Self.withServer { http, client in
            let dry = #"{"action": "approve", "filter": {"agent": "\#(agent)"}, "dry_run": true}"#
            Self.expectProblem(try await http.request("POST", "/v1/bulk", token: Self.viewer, body: dry), 403, "forbidden")
            Self.expectProblem(try await http.request("POST", "/v1/bulk", body: dry), 401, "unauthorized")
            let preview = try await http.request("POST", "/v1/bulk", token: Self.operatorToken, body: dry)
            #expect(preview.status == 200, "\(preview.body)")
            #expect(preview.json["dry_run"] as? Bool == true && preview.json["count"] as? Int == 3)
            #expect(preview.json["filter"] as? String == "agent=\(agent)")
            let samples = try #require(preview.json["samples"] as? [[String: Any]])
            #expect(Set(samples.compactMap { ($0["task"] as? [String: Any])?["id"] as? String }) == Set(selected))
            for id in selected + [untouched] {
                #expect(try await client.queries.task(id)?.status == "waiting", "a dry run changes nothing")
            }

            Self.expectProblem(
                try await http.request("POST", "/v1/bulk", token: Self.operatorToken, body: #"{"action": "approve", "reason": "r"}"#), 422,
                "no-selection")
            Self.expectProblem(
                try await http.request(
                    "POST", "/v1/bulk", token: Self.operatorToken, body: #"{"action": "approve", "filter": {"agent": "\#(agent)"}}"#), 422,
                "reason-required")
            Self.expectProblem(
                try await http.request(
                    "POST", "/v1/bulk", token: Self.operatorToken,
                    body: #"{"action": "approve", "filter": {"older_than": "soon"}, "reason": "r"}"#), 400, "bad-request")

            let body = #"{"action": "approve", "filter": {"agent": "\#(agent)"}, "reason": "release train"}"#
            let started = try await http.request("POST", "/v1/bulk", token: Self.operatorToken, body: body)
            #expect(started.status == 202, "\(started.body)")
            let bulk = try #require(started.json["id"] as? String)
            #expect(started.json["total"] as? Int == 3)
            var status: [String: Any] = [:]
            let finished = try await eventually {
                status = try await http.request("GET", "/v1/bulk/\(bulk)", token: Self.viewer).json
                return status["status"] as? String == "done"
            }
            #expect(finished && status["done"] as? Int == 3 && status["failed"] as? Int == 0, "\(status)")
            for id in selected {
                #expect(try await client.queries.history(id).contains { $0.type == "woke" }, "\(id) was approved")
            }
            #expect(try await client.queries.task(untouched)?.status == "waiting", "another agent's approval is left alone")
            let audit = try await client.queries.auditEntries(limit: 1000).first { $0.action == "approve" && $0.filter == "agent=\(agent)" }
            #expect(audit?.count == 3 && audit?.actor == "http:ana (operator)" && audit?.reason.hasPrefix("release train") == true)
        }
    }

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(3)))
    func cliEditApproveBulkApproveDrainAndDeadExport() async throws {
        // approve --edit: the patch applies to the task's input; the history names the editor.
        let agent = TestServers.uniqueName("cli-approve")
        let edited = try await Self.waitingTask(agent: agent)
        let patchFile = try TestFiles.path("approve-patch") + ".json"
        try Data(#"{"n": 2, "note": "checked"}"#.utf8).write(to: URL(fileURLWithPath: patchFile))
        let approve = try await CLITests.baton([
            "approve", edited, "--edit", "@\(patchFile)", "--comment", "ok", "--actor", "cli:ana", "-o", "json",
        ])
        #expect(approve.status == 0, "\(approve.error)")
        #expect(approve.output.contains(#""edited":true"#) || approve.output.contains(#""edited" : true"#), "\(approve.output)")
        try await CLIOperatorTests.withStore { store in
            let queries = TaskQueries(store: store)
            let received = try #require(try await queries.history(edited).first { $0.type == "signal_received" })
            #expect(received.data?["payload"] == ["n": 2, "note": "checked"])
            #expect(received.data?["edited_by"] == "cli:ana")
        }
        let badEdit = try await CLITests.baton(["approve", edited, "--edit", "{oops"])
        #expect(badEdit.status == 64 && badEdit.error.contains("--edit is not valid JSON"), "\(badEdit.error)")

        // Bulk: never without a selection, a reason, or confirmation; the dry run counts; --yes approves them all.
        let waiting = [try await Self.waitingTask(agent: agent), try await Self.waitingTask(agent: agent)]
        let none = try await CLITests.baton(["approve", "--reason", "r"])
        #expect(none.status == 64 && none.error.contains("--agent"), "\(none.error)")
        let noReason = try await CLITests.baton(["approve", "--agent", agent])
        #expect(noReason.status == 64 && noReason.error.contains("--reason"), "\(noReason.error)")
        let dry = try await CLITests.baton(["approve", "--agent", agent, "--dry-run", "-o", "json"])
        #expect(dry.status == 0, "\(dry.error)")
        let preview = try #require(try JSONSerialization.jsonObject(with: Data(dry.output.utf8)) as? [String: Any])
        #expect(preview["count"] as? Int == 2 && preview["dry_run"] as? Bool == true, "\(dry.output)")
        let unconfirmed = try await CLITests.baton(["approve", "--agent", agent, "--reason", "batch"])
        #expect(unconfirmed.status == 64 && unconfirmed.error.contains("--yes"), "\(unconfirmed.error)")
        let bulk = try await CLITests.baton(["approve", "--agent", agent, "--reason", "batch", "--yes", "-q"])
        #expect(bulk.status == 0, "\(bulk.error)")
        #expect(Set(bulk.output.split(separator: "\n").map(String.init)) == Set(waiting))

        // Drain through the CLI: an unknown worker is exit 4; a real worker exits 0.
        try await Harness.withClient { (client: BatonClient) async throws in
            let unknown = try await CLITests.baton(["workers", "--drain", "no-such-worker-\(agent)"])
            #expect(unknown.status == 4 && unknown.error.contains("no live worker"), "\(unknown.error)")
            let worker = try await Harness.startWorker("cli-drain", client: client)
            defer { worker.process.sigkill() }
            let drain = try await CLITests.baton(["workers", "--drain", worker.id, "--reason", "resize", "-o", "json"])
            #expect(drain.status == 0 && drain.output.contains("drain_requested"), "\(drain.error)")
            #expect(await worker.process.waitForExit(timeout: .seconds(30)) == 0, "\(worker.log.suffix(2000))")
        }
    }

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(4)))
    func deadExportWritesTheFilteredLettersAsJSONLOverTheCLIAndHTTP() async throws {
        let agent = TestServers.uniqueName("dead-export")
        let failure = CLIOperatorTests.Failure(step: "fetch", bucket: "provider_5xx", error: { "upstream 503 for \($0)" })
        let made = try await CLIOperatorTests.deadLetters(agent: agent, queue: agent, [failure, failure])
        let cli = try await CLITests.baton(["dead", "export", "--agent", agent])
        #expect(cli.status == 0, "\(cli.error)")
        let lines = try CLIOperatorTests.jsonLines(cli.output)
        #expect(Set(lines.compactMap { $0["id"] as? String }) == Set(made.map(\.letter)))
        #expect(lines.allSatisfy { $0["agent"] as? String == agent && $0["body"] != nil })
        #expect(cli.error.contains("exported 2 dead letters"))
        try await Self.withServer { http, _ in
            let export = try await http.request("GET", "/v1/dead?format=jsonl&agent=\(agent)", token: Self.viewer)
            #expect(export.status == 200 && export.headers["content-type"] == "application/x-ndjson", "\(export.body)")
            let rows = try CLIOperatorTests.jsonLines(export.body)
            #expect(Set(rows.compactMap { $0["id"] as? String }) == Set(made.map(\.letter)))
            Self.expectProblem(try await http.request("GET", "/v1/dead?format=jsonl&agent=\(agent)"), 401, "unauthorized")
        }
    }
}
