import AMQPClient
import BatonHTTP
import Foundation
import Logging
import RedisClient
import ServiceLifecycle
import TestSupport
import Testing

@testable import Baton

/// `baton serve` end to end: the server runs in this process on an ephemeral loopback port, on the real RabbitMQ
/// and Redis, and is called over a real socket. Fixtures are made with unique ids and agent names (the servers are
/// shared, nothing is flushed).
@Suite("HTTP API", .serialized)
struct HTTPAPITests {
    static let logger = Logger(label: "baton.http-tests")
    static let viewer = "viewer-token-\(UInt64.random(in: 0..<UInt64.max))"
    static let operatorToken = "operator-token-\(UInt64.random(in: 0..<UInt64.max))"
    static let tokens = [
        AccessToken(role: .viewer, name: "viewer", token: viewer), AccessToken(role: .operator, name: "ana", token: operatorToken),
    ]

    /// Runs `body` against a server started for it (stopped gracefully afterwards).
    static func withServer<T: Sendable>(
        readOnly: Bool = false, tokens: [AccessToken] = tokens, metricsToken: String? = nil, broker: Bool = false,
        _ body: @Sendable (HTTPTestClient, BatonClient) async throws -> T
    ) async throws -> T {
        let client = try await BatonClient.connect(
            amqpURL: TestServers.amqpURL, redisURL: TestServers.redisURL, publishing: true, logger: logger)
        var configuration = BatonHTTPServer.Configuration(host: "127.0.0.1", port: 0, readOnly: readOnly, tokens: tokens)
        configuration.submitReplyTimeout = .seconds(20)
        configuration.eventPollInterval = .milliseconds(50)
        if broker { configuration.amqpURL = TestServers.amqpURL }
        configuration.metricsTokenDigest = try metricsToken.map { try AccessToken.parse(metricsHash: AccessToken.hash($0)) }
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let server = BatonHTTPServer(configuration: configuration, client: client, logger: logger) { continuation.yield($0) }
        let group = ServiceGroup(configuration: .init(services: [.init(service: server)], logger: logger))
        let result: Result<T, any Error> = await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try? await group.run() }
            var iterator = ports.makeAsyncIterator()
            let outcome: Result<T, any Error>
            if let port = await iterator.next(), port > 0 {
                do { outcome = .success(try await body(HTTPTestClient(port: port), client)) } catch { outcome = .failure(error) }
            } else {
                outcome = .failure(HTTPTestClient.TestError(description: "the server did not start"))
            }
            await group.triggerGracefulShutdown()
            await tasks.waitForAll()
            return outcome
        }
        await client.close()
        return try result.get()
    }

    /// A queued task of `agent` written through the store, its first step message dropped (as if consumed).
    static func task(agent: String, queue: String, store: RedisTaskStore) async throws -> String {
        let id = TestServers.uniqueName("http-task")
        _ = try await store.submit(
            NewTask(
                id: id, agent: agent, inputJSON: #"{"n":1}"#, stateJSON: #"{"records":[]}"#, firstStep: "fetch", queue: queue,
                limits: BudgetLimits(maxSteps: 5, maxAttempts: 1)))
        try await store.outboxDone(task: id, ids: Array(try await store.pendingOutbox(task: id).keys))
        return id
    }

    /// Checks a problem+json answer: its status, `type`, and that `detail` and `fix` say something.
    static func expectProblem(
        _ reply: HTTPTestClient.Reply, _ status: Int, _ code: String, detail: String? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(reply.status == status, "\(reply.status): \(reply.body)", sourceLocation: sourceLocation)
        #expect(reply.headers["content-type"] == "application/problem+json", sourceLocation: sourceLocation)
        let json = reply.json
        #expect(json["type"] as? String == "urn:baton:problem:\(code)", "\(reply.body)", sourceLocation: sourceLocation)
        #expect(json["status"] as? Int == status, sourceLocation: sourceLocation)
        #expect((json["title"] as? String)?.isEmpty == false, sourceLocation: sourceLocation)
        #expect((json["fix"] as? String)?.isEmpty == false, sourceLocation: sourceLocation)
        if let detail { #expect((json["detail"] as? String)?.contains(detail) == true, "\(reply.body)", sourceLocation: sourceLocation) }
    }

    // MARK: - Reads and roles

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(4)))
    func readsHaveTheirShapesAndRolesAreEnforced() async throws {
        let agent = TestServers.uniqueName("http-reads")
        let made = try await CLIOperatorTests.deadLetters(
            agent: agent, queue: agent,
            [
                .init(step: "fetch", bucket: "provider_5xx", error: { "HTTP 502 for \($0)" }),
                .init(step: "parse", bucket: "bad_output", error: { "no JSON in \($0)" }),
            ])
        let queued = try await CLIOperatorTests.withStore { try await Self.task(agent: agent, queue: agent, store: $0) }
        try await Self.withServer { http, _ in
            // Open routes and authentication.
            let health = try await http.request("GET", "/healthz")
            #expect(health.status == 200 && health.json["status"] as? String == "ok")
            #expect(try await http.request("GET", "/readyz").status == 200)
            let anonymous = try await http.request("GET", "/v1/tasks")
            Self.expectProblem(anonymous, 401, "unauthorized", detail: "no bearer token")
            #expect(anonymous.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
            Self.expectProblem(try await http.request("GET", "/v1/tasks", token: "not-a-token"), 401, "unauthorized", detail: "not one")

            // Task list: filters and cursors, newest first.
            let first = try await http.request("GET", "/v1/tasks?agent=\(agent)&limit=2", token: Self.viewer)
            #expect(first.status == 200 && first.headers["content-type"] == "application/json")
            let cursor = try #require(first.json["next_cursor"] as? String, "\(first.body)")
            let second = try await http.request("GET", "/v1/tasks?agent=\(agent)&limit=2&cursor=\(cursor)", token: Self.viewer)
            #expect(second.json["next_cursor"] is NSNull, "the last page has next_cursor null: \(second.body)")
            let listed = (first.items + second.items).compactMap { $0["id"] as? String }
            #expect(Set(listed) == Set(made.map(\.task) + [queued]) && listed.count == 3)
            let byStatus = try await http.request("GET", "/v1/tasks?agent=\(agent)&status=queued", token: Self.viewer)
            #expect(byStatus.items.compactMap { $0["id"] as? String } == [queued])
            Self.expectProblem(
                try await http.request("GET", "/v1/tasks?status=done", token: Self.viewer), 400, "bad-request",
                detail: "unknown status 'done'")
            Self.expectProblem(
                try await http.request("GET", "/v1/tasks?cursor=abc", token: Self.viewer), 400, "bad-request", detail: "cursor")
            Self.expectProblem(try await http.request("GET", "/v1/tasks?limit=0", token: Self.viewer), 400, "bad-request", detail: "limit")

            // One task, its history and checkpoints.
            let view = try await http.request("GET", "/v1/tasks/\(queued)", token: Self.viewer)
            #expect(view.json["id"] as? String == queued && view.json["agent"] as? String == agent)
            #expect(view.json["status"] as? String == "queued" && view.json["v"] as? Int == 1)
            Self.expectProblem(try await http.request("GET", "/v1/tasks/nope-\(agent)", token: Self.viewer), 404, "not-found")
            let history = try await http.request("GET", "/v1/tasks/\(queued)/history", token: Self.viewer)
            #expect(history.items.first?["type"] as? String == "submitted")
            let eventsJSON = try await http.request("GET", "/v1/tasks/\(queued)/events", token: Self.viewer)
            #expect(eventsJSON.items.compactMap { $0["id"] as? String } == history.items.compactMap { $0["id"] as? String })
            let checkpoint = try await http.request("GET", "/v1/tasks/\(queued)/checkpoint", token: Self.viewer)
            #expect(checkpoint.json["seq"] as? Int == 0 && checkpoint.json["task_id"] as? String == queued)
            #expect((checkpoint.json["state"] as? [String: Any])?["records"] as? [Any] != nil, "\(checkpoint.body)")
            #expect(try await http.request("GET", "/v1/tasks/\(queued)/checkpoints/0", token: Self.viewer).json["seq"] as? Int == 0)
            Self.expectProblem(
                try await http.request("GET", "/v1/tasks/\(queued)/checkpoints/99", token: Self.viewer), 404, "not-found",
                detail: "no checkpoint at seq 99")

            // Dead letters: list with filters, one, groups.
            let dead = try await http.request("GET", "/v1/dead?agent=\(agent)", token: Self.viewer)
            #expect(dead.json["total"] as? Int == 2)
            #expect(Set(dead.items.compactMap { $0["id"] as? String }) == Set(made.map(\.letter)))
            let fetch = try #require(dead.items.first { $0["step"] as? String == "fetch" })
            #expect(fetch["reason"] as? String == "retries_exhausted" && fetch["bucket"] as? String == "provider_5xx")
            #expect(fetch["task_id"] as? String == made[0].task && (fetch["body"] as? String)?.isEmpty == false)
            let one = try await http.request("GET", "/v1/dead/\(made[1].letter)", token: Self.viewer)
            #expect(one.json["step"] as? String == "parse" && one.json["task_id"] as? String == made[1].task)
            Self.expectProblem(try await http.request("GET", "/v1/dead/nope-\(agent)", token: Self.viewer), 404, "not-found")
            let groups = try await http.request("GET", "/v1/dead?agent=\(agent)&group_by=step", token: Self.viewer)
            #expect(Set(groups.items.compactMap { $0["key"] as? String }) == ["fetch", "parse"])
            #expect(groups.items.allSatisfy { $0["count"] as? Int == 1 && $0["group_by"] as? String == "step" })
            Self.expectProblem(
                try await http.request("GET", "/v1/dead?group_by=colour", token: Self.viewer), 400, "bad-request", detail: "colour")

            // Workers and audit answer lists.
            #expect(try await http.request("GET", "/v1/workers", token: Self.viewer).json["items"] is [Any])
            #expect(try await http.request("GET", "/v1/audit?limit=5", token: Self.viewer).items.count <= 5)

            // A viewer cannot act; nobody without a token can; nothing changed.
            Self.expectProblem(
                try await http.request("POST", "/v1/tasks/\(queued)/cancel", token: Self.viewer), 403, "forbidden",
                detail: "needs operator")
            Self.expectProblem(
                try await http.request(
                    "POST", "/v1/dead/redrive", token: Self.viewer, body: #"{"filter": {"agent": "\#(agent)"}, "reason": "x"}"#), 403,
                "forbidden")
            Self.expectProblem(try await http.request("POST", "/v1/tasks/\(queued)/pause"), 401, "unauthorized")
            #expect(try await http.request("GET", "/v1/tasks/\(queued)", token: Self.viewer).json["status"] as? String == "queued")
            #expect(try await http.request("GET", "/v1/dead?agent=\(agent)", token: Self.viewer).json["total"] as? Int == 2)

            Self.expectProblem(try await http.request("GET", "/v1/nothing", token: Self.viewer), 404, "not-found", detail: "no route")
        }
    }

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(4)))
    func aReadOnlyServerRefusesEveryMutatingRouteWith405() async throws {
        let agent = TestServers.uniqueName("http-ro")
        let queued = try await CLIOperatorTests.withStore { try await Self.task(agent: agent, queue: agent, store: $0) }
        try await Self.withServer(readOnly: true) { http, _ in
            let routes =
                [
                    "/v1/tasks", "/v1/tasks/\(queued)/cancel", "/v1/tasks/\(queued)/pause", "/v1/tasks/\(queued)/resume",
                    "/v1/dead/x/redrive", "/v1/dead/x/discard", "/v1/dead/redrive", "/v1/dead/discard",
                ] + Self.otherMutatingRoutes(task: queued)
            for route in routes {
                let reply = try await http.request("POST", route, token: Self.operatorToken, body: #"{"reason": "r", "all": true}"#)
                Self.expectProblem(reply, 405, "read-only", detail: "--read-only")
                #expect(reply.headers["allow"] == "GET", "\(route)")
            }
            #expect(try await http.request("GET", "/v1/tasks/\(queued)", token: Self.viewer).json["status"] as? String == "queued")
        }
    }

    // MARK: - Actions, audit and live events

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(4)))
    func taskActionsStreamLiveInOrderAndAreAuditedWithTheTokensActor() async throws {
        let agent = TestServers.uniqueName("http-act")
        let id = try await CLIOperatorTests.withStore { try await Self.task(agent: agent, queue: agent, store: $0) }
        try await Self.withServer { http, client in
            let stream = try await http.events("/v1/tasks/\(id)/events", token: Self.viewer)
            defer { stream.close() }
            #expect(stream.status == 200 && stream.headers["content-type"] == "text/event-stream")
            let backlog = try await stream.next(1)
            #expect(backlog.map(\.type) == ["submitted"])

            let reason = "maintenance \(agent)"
            let paused = try await http.request(
                "POST", "/v1/tasks/\(id)/pause", token: Self.operatorToken, body: #"{"reason": "\#(reason)"}"#)
            #expect(paused.status == 200 && paused.json["result"] as? String == "done" && paused.json["status"] as? String == "paused")
            let live = try await stream.next(1)
            #expect(live.map(\.type) == ["paused"], "the stream delivers the new event while it is open")

            #expect(
                try await http.request("POST", "/v1/tasks/\(id)/resume", token: Self.operatorToken).json["status"] as? String == "queued")
            #expect(
                try await http.request("POST", "/v1/tasks/\(id)/cancel", token: Self.operatorToken, body: #"{"reason": "\#(reason)"}"#)
                    .json["status"] as? String == "cancelled")
            let rest = try await stream.next(2)
            #expect(rest.map(\.type) == ["resumed", "cancelled"])
            let streamed = backlog + live + rest
            let history = try await client.queries.history(id)
            #expect(streamed.map(\.id) == history.map(\.id), "ids are the stream ids, in stream order")
            let data = try #require(try JSONSerialization.jsonObject(with: Data(live[0].data.utf8)) as? [String: Any])
            #expect(data["type"] as? String == "paused" && (data["data"] as? [String: Any])?["actor"] as? String == "http:ana (operator)")

            // Last-Event-ID resumes exactly after the event named.
            let resumed = try await http.events("/v1/tasks/\(id)/events", token: Self.viewer, lastEventID: backlog[0].id)
            defer { resumed.close() }
            #expect(try await resumed.next(3).map(\.id) == streamed.dropFirst().map(\.id))

            // A cancelled task cannot be paused: 409 naming its status; unknown tasks are 404.
            Self.expectProblem(
                try await http.request("POST", "/v1/tasks/\(id)/pause", token: Self.operatorToken), 409, "conflict", detail: "cancelled")
            Self.expectProblem(
                try await http.request("POST", "/v1/tasks/nope-\(agent)/cancel", token: Self.operatorToken), 404, "not-found")
            Self.expectProblem(
                try await http.request(
                    "GET", "/v1/tasks/nope-\(agent)/events", token: Self.viewer, headers: ["Accept": "text/event-stream"]),
                404, "not-found")

            let audit = try await client.queries.auditEntries(limit: 500).filter { $0.target == id }
            #expect(audit.map(\.action) == ["cancel", "resume", "pause"], "newest first")
            #expect(audit.allSatisfy { $0.actor == "http:ana (operator)" })
            #expect(audit.first?.reason == reason)
        }
    }

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(4)))
    func forkOfACancelledTaskStartsBranchOneFromTheKeptCheckpoint() async throws {
        let agent = TestServers.uniqueName("http-fork")
        let id = try await CLIOperatorTests.withStore { try await Self.task(agent: agent, queue: agent, store: $0) }
        try await Self.withServer { http, client in
            _ = try await http.request("POST", "/v1/tasks/\(id)/cancel", token: Self.operatorToken, body: #"{"reason": "stop"}"#)
            Self.expectProblem(
                try await http.request("POST", "/v1/tasks/\(id)/fork", token: Self.operatorToken, body: #"{"from_seq": 0}"#), 422,
                "reason-required")
            Self.expectProblem(
                try await http.request("POST", "/v1/tasks/\(id)/fork", token: Self.operatorToken, body: #"{"reason": "again"}"#), 422,
                "from-seq-required")
            Self.expectProblem(
                try await http.request(
                    "POST", "/v1/tasks/\(id)/fork", token: Self.operatorToken, body: #"{"from_seq": 3, "reason": "again"}"#), 404,
                "not-found", detail: "the kept seqs are 0")
            Self.expectProblem(
                try await http.request("POST", "/v1/tasks/\(id)/fork", token: Self.viewer, body: #"{"from_seq": 0, "reason": "again"}"#),
                403, "forbidden")

            let reason = "retry from the start \(agent)"
            let forked = try await http.request(
                "POST", "/v1/tasks/\(id)/fork", token: Self.operatorToken, body: #"{"from_seq": 0, "reason": "\#(reason)"}"#)
            #expect(forked.status == 200, "\(forked.body)")
            #expect(forked.json["result"] as? String == "done" && forked.json["status"] as? String == "queued")
            #expect(forked.json["branch"] as? Int == 1 && forked.json["seq"] as? Int == 0 && forked.json["step"] as? String == "fetch")

            let task = try #require(try await client.queries.task(id))
            #expect(task.status == "queued" && task.branch == 1 && task.seq == 0 && task.step == "fetch")
            let history = try await client.queries.history(id)
            #expect(history.map(\.type) == ["submitted", "cancelled", "forked"])
            #expect(history.map(\.branch) == [0, 0, 1])
            let audit = try await client.queries.auditEntries(limit: 500).filter { $0.target == id }
            #expect(audit.map(\.action) == ["fork", "cancel"], "newest first")
            #expect(audit.first?.reason == reason && audit.first?.actor == "http:ana (operator)")
        }
    }

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(4)))
    func budgetRaiseResumesATaskInReview() async throws {
        let agent = TestServers.uniqueName("http-budget")
        let id = try await CLIOperatorTests.withStore { store in
            let id = TestServers.uniqueName("http-review")
            // max_steps 0 with review: the first claim parks the task in needs_review.
            _ = try await store.submit(
                NewTask(
                    id: id, agent: agent, inputJSON: "{}", stateJSON: "{}", firstStep: "fetch", queue: agent,
                    limits: BudgetLimits(maxSteps: 0, maxAttempts: 1, reviewOnLimit: true)))
            try await store.outboxDone(task: id, ids: Array(try await store.pendingOutbox(task: id).keys))
            let claim = try await store.claim(
                StepMessage(task: id, agent: agent, step: "fetch", seq: 0, branch: 0, attempt: 1), worker: "http-test",
                leaseMilliseconds: 1000)
            guard case .stopped("needs_review") = claim else { throw HTTPTestClient.TestError(description: "not parked: \(claim)") }
            return id
        }
        try await Self.withServer { http, client in
            let path = "/v1/tasks/\(id)/budget"
            #expect(try await client.queries.task(id)?.statusReason == "needs review: steps limit reached (0)")
            Self.expectProblem(
                try await http.request("POST", path, token: Self.operatorToken, body: #"{"raise": "max_steps=+5"}"#), 422, "reason-required"
            )
            Self.expectProblem(
                try await http.request("POST", path, token: Self.operatorToken, body: #"{"reason": "more"}"#), 422, "raise-required")
            Self.expectProblem(
                try await http.request("POST", path, token: Self.operatorToken, body: #"{"raise": "max_money=+5", "reason": "more"}"#), 422,
                "invalid-raise", detail: "max_money")
            Self.expectProblem(
                try await http.request("POST", path, token: Self.operatorToken, body: #"{"raise": "max_steps=0", "reason": "more"}"#), 409,
                "conflict", detail: "steps limit reached")
            Self.expectProblem(
                try await http.request("POST", path, token: Self.viewer, body: #"{"raise": "max_steps=+5", "reason": "more"}"#), 403,
                "forbidden")
            Self.expectProblem(
                try await http.request(
                    "POST", "/v1/tasks/\(id)-none/budget", token: Self.operatorToken, body: #"{"raise": "max_steps=+5", "reason": "more"}"#),
                404, "not-found")
            #expect(try await client.queries.task(id)?.status == "needs_review")

            let raised = try await http.request(
                "POST", path, token: Self.operatorToken, body: #"{"raise": {"max_steps": "+5", "max_cost_usd": 2}, "reason": "approved"}"#)
            #expect(raised.status == 200, "\(raised.body)")
            #expect(raised.json["result"] as? String == "done" && raised.json["status"] as? String == "queued")
            let task = try #require(try await client.queries.task(id))
            #expect(task.status == "queued")
            #expect(task.budget.limits.maxSteps == 5 && task.budget.limits.maxCostUSD == 2)
            let history = try await client.queries.history(id)
            #expect(history.map(\.type) == ["submitted", "needs_review", "budget_raised", "resumed"])
            #expect(history.last?.data?["actor"]?.stringValue == "http:ana (operator)")
            let audit = try await client.queries.auditEntries(limit: 500).filter { $0.target == id }
            #expect(audit.map(\.action) == ["budget.raise"])
        }
    }

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(4)))
    func bulkRedriveDryRunChangesNothingThenRedrivesExactlyTheMatchesWithAnAuditEntry() async throws {
        let agent = TestServers.uniqueName("http-bulk")
        let made = try await CLIOperatorTests.deadLetters(
            agent: agent, queue: agent,
            (0..<5).map { index in
                .init(step: index < 3 ? "fetch" : "parse", bucket: "provider_5xx", error: { "HTTP 502 for \($0)" })
            })
        let targets = Array(made.prefix(3))
        let others = Array(made.suffix(2))
        let reason = "provider recovered \(agent)"
        try await CLIOperatorTests.withStepQueue(agent) { channel in
            try await Self.withServer { http, client in
                let selection = #""filter": {"agent": "\#(agent)", "step": "fetch"}, "reason": "\#(reason)""#
                // Mistakes are problems that say what to fix; they change nothing.
                Self.expectProblem(
                    try await http.request(
                        "POST", "/v1/dead/redrive", token: Self.operatorToken, body: #"{"filter": {"agent": "\#(agent)"}}"#),
                    422, "reason-required")
                Self.expectProblem(
                    try await http.request("POST", "/v1/dead/redrive", token: Self.operatorToken, body: #"{"reason": "r"}"#), 422,
                    "no-selection", detail: "\"all\": true")
                Self.expectProblem(
                    try await http.request("POST", "/v1/dead/redrive", token: Self.operatorToken, body: "{not json"), 400, "bad-request",
                    detail: "not valid JSON")

                let dry = try await http.request(
                    "POST", "/v1/dead/redrive", token: Self.operatorToken, body: "{\(selection), \"dry_run\": true}")
                #expect(dry.status == 200, "\(dry.body)")
                #expect(dry.json["dry_run"] as? Bool == true && dry.json["count"] as? Int == 3)
                #expect(dry.json["filter"] as? String == "agent=\(agent) step=fetch")
                let samples = (dry.json["samples"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
                #expect(Set(samples) == Set(targets.map(\.letter)))
                for pair in made {
                    #expect(try await client.queries.task(pair.task)?.status == "dead_lettered", "the dry run changed nothing")
                    #expect(try await client.queries.deadLetter(pair.letter) != nil)
                }
                #expect(try await client.queries.auditEntries(limit: 200).contains { $0.reason == reason } == false)

                let real = try await http.request("POST", "/v1/dead/redrive", token: Self.operatorToken, body: "{\(selection)}")
                #expect(real.status == 200, "\(real.body)")
                #expect(real.json["dry_run"] as? Bool == false && real.json["count"] as? Int == 3 && real.json["selected"] as? Int == 3)
                #expect(Set(real.items.compactMap { $0["id"] as? String }) == Set(targets.map(\.letter)))
                #expect(real.items.allSatisfy { $0["result"] as? String == "done" && $0["branch"] as? Int == 1 })
                for pair in targets {
                    let task = try await client.queries.task(pair.task)
                    #expect(task?.status == "queued" && task?.branch == 1)
                    #expect(try await client.queries.deadLetter(pair.letter) == nil)
                    let redriven = try await client.queries.history(pair.task).filter { $0.type == "redriven" }
                    #expect(redriven.count == 1 && redriven.first?.data?["actor"]?.stringValue == "http:ana (operator)")
                }
                for pair in others {
                    #expect(try await client.queries.task(pair.task)?.status == "dead_lettered", "outside the filter: untouched")
                    #expect(try await client.queries.deadLetter(pair.letter) != nil)
                }
                let messages = try await CLIOperatorTests.stepMessages(channel, queue: agent, count: 3)
                #expect(Set(messages.map(\.task)) == Set(targets.map(\.task)))
                #expect(messages.allSatisfy { $0.branch == 1 })

                let entries = try await client.queries.auditEntries(limit: 200).filter { $0.reason == reason }
                #expect(entries.count == 1)
                #expect(entries.first?.action == "dead.redrive" && entries.first?.count == 3)
                #expect(entries.first?.actor == "http:ana (operator)" && entries.first?.filter == "agent=\(agent) step=fetch")
                #expect(Set(entries.first?.target?.split(separator: ",").map(String.init) ?? []) == Set(targets.map(\.letter)))

                // One letter by id: discard, then it is gone.
                let discard = try await http.request(
                    "POST", "/v1/dead/\(others[0].letter)/discard", token: Self.operatorToken, body: #"{"reason": "\#(reason) (discard)"}"#)
                #expect(discard.status == 200 && discard.json["result"] as? String == "done", "\(discard.body)")
                #expect(try await client.queries.deadLetter(others[0].letter) == nil)
                Self.expectProblem(
                    try await http.request(
                        "POST", "/v1/dead/\(others[0].letter)/discard", token: Self.operatorToken, body: #"{"reason": "again"}"#), 404,
                    "not-found")
                let single = try await client.queries.auditEntries(limit: 200).first { $0.reason == "\(reason) (discard)" }
                #expect(single?.action == "dead.discard" && single?.target == others[0].letter)

                // One letter by id with a merge patch: a new branch runs with the patched input.
                let redrive = try await http.request(
                    "POST", "/v1/dead/\(others[1].letter)/redrive", token: Self.operatorToken,
                    body: #"{"reason": "\#(reason) (patch)", "patch": {"n": 2, "extra": true}}"#)
                #expect(redrive.status == 200 && redrive.json["branch"] as? Int == 1, "\(redrive.body)")
                let input = try await client.store.redis.send("HGET", client.store.settings.keys.task(others[1].task), "input").string
                #expect(input.map { Array($0.utf8) }.flatMap { try? JSONValue.parse($0) } == JSONValue.object(["n": 2, "extra": true]))
            }
        }
    }

    // MARK: - Submit, with a real worker

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(3)))
    func aSubmitWithAnIdempotencyKeyStartsOneTaskThatAWorkerRunsAndItsEventsStream() async throws {
        try await Harness.withClient { (client: BatonClient) async throws in
            let worker = try await Harness.startWorker("http-submit", client: client)
            defer { worker.process.sigkill() }
            try await Self.withServer { http, _ in
                let key = TestServers.uniqueName("http-submit")
                let body = #"{"agent": "stepchain", "input": {"steps": 3, "record_bytes": 16}, "labels": {"via": "http"}}"#
                let first = try await http.request(
                    "POST", "/v1/tasks", token: Self.operatorToken, headers: ["Idempotency-Key": key], body: body)
                #expect(first.status == 202, "\(first.body)")
                #expect(first.json["task_id"] as? String == key && first.json["status"] as? String == "queued")
                #expect(first.headers["location"] == "/v1/tasks/\(key)")
                let done = try await Harness.waitForStatus(client, key, ["succeeded"], workers: [worker])
                #expect(done.labels?["via"] == "http")

                let again = try await http.request(
                    "POST", "/v1/tasks", token: Self.operatorToken, headers: ["Idempotency-Key": key], body: body)
                #expect(again.status == 202 && again.json["task_id"] as? String == key, "\(again.body)")
                let history = try await client.queries.history(key)
                #expect(history.filter { $0.type == "submitted" }.count == 1, "a retried request starts no second task")

                // The whole history streams in order, ending with succeeded.
                let stream = try await http.events("/v1/tasks/\(key)/events", token: Self.viewer)
                defer { stream.close() }
                let events = try await stream.next(history.count)
                #expect(events.map(\.id) == history.map(\.id))
                #expect(events.last?.type == "succeeded")

                // Bad submits: a missing field is named; the key and the body's id must agree; viewers cannot submit.
                Self.expectProblem(
                    try await http.request("POST", "/v1/tasks", token: Self.operatorToken, body: #"{"input": {}}"#), 422, "invalid-message",
                    detail: "agent")
                Self.expectProblem(
                    try await http.request(
                        "POST", "/v1/tasks", token: Self.operatorToken, headers: ["Idempotency-Key": key],
                        body: #"{"id": "other", "agent": "stepchain"}"#), 422, "id-mismatch")
                Self.expectProblem(try await http.request("POST", "/v1/tasks", token: Self.viewer, body: body), 403, "forbidden")
                let audit = try await client.queries.auditEntries(limit: 500).filter { $0.target == key && $0.action == "submit" }
                #expect(audit.count == 2 && audit.allSatisfy { $0.actor == "http:ana (operator)" })
            }
        }
    }

    // MARK: - The `baton serve` command

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(4)))
    func theServeCommandRefusesAnOpenAddressAndServesUntilSIGTERM() async throws {
        let open = try await CLITests.baton(["serve", "--bind", "0.0.0.0:0"], environment: ["BATON_HTTP_TOKENS": ""])
        #expect(open.status == 2)
        #expect(open.error.contains("refusing to listen on 0.0.0.0:0 without API tokens"), "\(open.error)")
        #expect(open.error.contains("BATON_HTTP_TOKENS"))
        let short = try await CLITests.baton(["serve"], environment: ["BATON_HTTP_TOKENS": "operator:short"])
        #expect(short.status == 2 && short.error.contains("at least 8 characters"), "\(short.error)")
        let badBind = try await CLITests.baton(["serve", "--bind", "8080"])
        #expect(badBind.status == 64 && badBind.error.contains("host:port"), "\(badBind.error)")

        let port = try TestPorts.free()
        var environment = Harness.environment(["BATON_HTTP_TOKENS": "viewer:dash:\(Self.viewer)"])
        environment["BATON_CONFIG"] = nil
        let server = try WorkerProcess.start(
            executable: try Harness.baton(), arguments: ["serve", "--bind", "127.0.0.1:\(port)", "--read-only"], environment: environment,
            outputFile: try TestFiles.path("serve") + ".log")
        defer { server.sigkill() }
        let listening = await eventually { server.output.contains("listening on http://127.0.0.1:\(port) (read-only) with 1 token") }
        #expect(listening, "\(server.output)")
        let http = HTTPTestClient(port: port)
        #expect(try await http.request("GET", "/healthz").status == 200)
        #expect(try await http.request("GET", "/v1/workers", token: Self.viewer).status == 200)
        Self.expectProblem(try await http.request("POST", "/v1/tasks", token: Self.viewer, body: "{}"), 405, "read-only")
        // The fleet's event stream works on a read-only server too (on a broker connection of its own), and an
        // open stream does not hold up the shutdown.
        let stream = try await http.events("/v1/events?access_token=\(Self.viewer)", token: nil)
        defer { stream.close() }
        #expect(stream.status == 200 && stream.headers["content-type"] == "text/event-stream", "\(server.output)")
        #expect(server.sigterm())
        #expect(await server.waitForExit(timeout: .seconds(15)) == 0, "\(server.output)")
    }

    // MARK: - Metrics

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(4)))
    func metricsShowTheFleetsGaugesAndHonourTheirOwnToken() async throws {
        let agent = TestServers.uniqueName("http-metrics")
        _ = try await CLIOperatorTests.deadLetters(
            agent: agent, queue: agent, (0..<2).map { _ in .init(step: "fetch", bucket: "provider_5xx", error: { "HTTP 502 for \($0)" }) })
        _ = try await CLIOperatorTests.withStore { try await Self.task(agent: agent, queue: agent, store: $0) }
        try await Self.withServer { http, _ in
            let metrics = try await http.request("GET", "/metrics")
            #expect(metrics.status == 200 && metrics.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
            #expect(
                metrics.body.contains("baton_dead_letters{agent=\"\(agent)\",bucket=\"provider_5xx\"} 2"), "\(metrics.body.prefix(2000))")
            #expect(metrics.body.contains("baton_tasks{agent=\"\(agent)\",status=\"queued\"} 1"))
            #expect(metrics.body.contains("# TYPE baton_workers gauge") && metrics.body.contains("baton_workers{state=\"live\"}"))
        }
        let token = "metrics-token-\(agent)"
        try await Self.withServer(metricsToken: token) { http, _ in
            Self.expectProblem(try await http.request("GET", "/metrics"), 401, "unauthorized", detail: "/metrics")
            Self.expectProblem(try await http.request("GET", "/metrics", token: Self.operatorToken), 401, "unauthorized")
            #expect(try await http.request("GET", "/metrics", token: token).body.contains("baton_tasks{agent=\"\(agent)\""))
        }
    }
}
