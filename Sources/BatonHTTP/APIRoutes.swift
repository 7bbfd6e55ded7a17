import Baton
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// Who made a request: the role of their token and the actor recorded in the audit stream.
struct Caller: Sendable {
    var role: Role
    var actor: String
}

/// The routes of the HTTP API (DESIGN.md §7), each behind its role: reads need viewer, actions operator.
struct APIRoutes: Sendable {
    let configuration: BatonHTTPServer.Configuration
    let client: BatonClient
    let logger: Logger
    var queries: TaskQueries { client.queries }

    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    static let lastEventID = HTTPField.Name("Last-Event-ID")!
    static let taskStatuses: Set<String> = [
        "queued", "running", "waiting", "sleeping", "retrying", "paused", "needs_review", "succeeded", "failed", "cancelled",
        "budget_exceeded", "dead_lettered",
    ]

    typealias Handler = @Sendable (Request, BasicRequestContext, Caller) async throws -> Response

    func register(on router: Router<BasicRequestContext>) {
        router.get("/healthz") { _, _ in try Self.json(["status": "ok"]) }
        router.get("/readyz") { _, _ in
            do {
                _ = try await client.store.redis.send("PING")
                return try Self.json(["status": "ready"])
            } catch {
                throw Problem(
                    .serviceUnavailable, code: "not-ready", title: "Not ready", detail: "Redis does not answer: \(error)",
                    fix: "check redis.url and that Redis runs (`baton doctor`)")
            }
        }
        router.get("/metrics") { request, _ in
            if let required = configuration.metricsTokenDigest {
                let header = request.headers[.authorization] ?? ""
                let given = header.lowercased().hasPrefix("bearer ") ? String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces) : ""
                guard AccessToken.equal(SHA256.hash(Array(given.utf8)), required) else {
                    var problem = Problem(
                        .unauthorized, code: "unauthorized", title: "Unauthorized", detail: "/metrics needs its bearer token",
                        fix: "send `Authorization: Bearer <token>` whose SHA-256 is http.metrics_token_hash")
                    problem.headers[.wwwAuthenticate] = "Bearer realm=\"baton-metrics\""
                    throw problem
                }
            }
            // The fleet's gauges (Redis, broker) and this process's own counters (redrives made here, …).
            let fleet = try await FleetMetrics(store: client.store, queries: queries, amqpURL: configuration.amqpURL).scrape()
            return ProcessMetrics.response(fleet + ProcessMetrics.scrape())
        }
        read(router, "/v1/tasks", listTasks)
        read(router, "/v1/tasks/:id", showTask)
        read(router, "/v1/tasks/:id/history", history)
        // EventSource cannot send headers: the stream alone also takes the token as `?access_token=`.
        router.get("/v1/tasks/:id/events") { request, context in
            try await events(request, context, try authenticate(request, minimum: .viewer, queryToken: true))
        }
        read(router, "/v1/tasks/:id/checkpoint", checkpoint)
        read(router, "/v1/tasks/:id/checkpoints/:seq", checkpoint)
        read(router, "/v1/dead", listDead)
        read(router, "/v1/dead/:id", showDead)
        read(router, "/v1/workers", { _, _, _ in try Self.json(Items(items: try await queries.workers())) })
        read(router, "/v1/audit", audit)
        read(router, "/v1/inbox", inbox)
        read(router, "/v1/stats", stats)
        read(router, "/v1/whoami") { _, _, caller in
            try Self.json(
                JSONValue.object([
                    "role": .string(caller.role.description), "actor": .string(caller.actor),
                    "tokens_required": .bool(!configuration.tokens.isEmpty), "read_only": .bool(configuration.readOnly),
                    "worker_stale_after_s": .double(Double(client.store.settings.workerStaleMilliseconds) / 1000),
                ]))
        }
        read(router, "/v1/queues", queues)
        registerBulk(on: router)
        registerFleet(on: router)
        act(router, "/v1/tasks", submit)
        for action in ["cancel", "pause", "resume"] {
            act(router, RouterPath("/v1/tasks/:id/\(action)")) { request, context, caller in
                try await taskAction(action, request: request, context: context, caller: caller)
            }
        }
        act(router, "/v1/tasks/:id/fork", fork)
        act(router, "/v1/tasks/:id/budget", raiseBudget)
        act(router, "/v1/tasks/:id/signals/:name") { request, context, caller in
            try await signal(try context.parameters.require("name"), request: request, context: context, caller: caller)
        }
        act(router, "/v1/tasks/:id/approve", approve)
        act(router, "/v1/tasks/:id/reject", reject)
        for action in ["redrive", "discard"] {
            act(router, RouterPath("/v1/dead/:id/\(action)")) { request, context, caller in
                try await deadAction(action, request: request, context: context, caller: caller)
            }
            act(router, RouterPath("/v1/dead/\(action)")) { request, _, caller in
                try await bulkDeadAction(action, request: request, caller: caller)
            }
        }
    }

    // MARK: - Access

    /// A GET route that needs the viewer role.
    func read(_ router: Router<BasicRequestContext>, _ path: RouterPath, _ handler: @escaping Handler) {
        router.get(path) { request, context in
            try await handler(request, context, try authenticate(request, minimum: .viewer))
        }
    }

    /// A POST route that changes something: operator role; 405 on a read-only server.
    func act(_ router: Router<BasicRequestContext>, _ path: RouterPath, minimum: Role = .operator, _ handler: @escaping Handler) {
        let readOnly = configuration.readOnly
        router.post(path) { request, context in
            if readOnly {
                var problem = Problem(
                    .methodNotAllowed, code: "read-only", title: "Read-only server",
                    detail: "this server runs with --read-only (http.read_only): it refuses every change",
                    fix: "send changes to a server without --read-only, or use the CLI")
                problem.headers[.allow] = "GET"
                throw problem
            }
            return try await handler(request, context, try authenticate(request, minimum: minimum))
        }
    }

    /// The caller of `request`, or 401 (no or unknown token) / 403 (role too low). With `queryToken` (the event
    /// stream only), a request without an `Authorization` header may give its token as `?access_token=`.
    func authenticate(_ request: Request, minimum: Role, queryToken: Bool = false) throws -> Caller {
        guard !configuration.tokens.isEmpty else { return Caller(role: .admin, actor: "http:anonymous") }
        var unauthorized = Problem(
            .unauthorized, code: "unauthorized", title: "Unauthorized", detail: "this request has no bearer token",
            fix: "send `Authorization: Bearer <token>` with a token of BATON_HTTP_TOKENS or http.token_hashes")
        unauthorized.headers[.wwwAuthenticate] = "Bearer realm=\"baton\""
        var authorization = request.headers[.authorization]
        if authorization == nil, queryToken, let token = Self.nonEmpty(request.uri.queryParameters["access_token"]) {
            authorization = "Bearer " + token
        }
        guard let header = authorization else { throw unauthorized }
        guard header.lowercased().hasPrefix("bearer ") else {
            unauthorized.detail = "the Authorization header is not a bearer token"
            throw unauthorized
        }
        let digest = SHA256.hash(Array(header.dropFirst(7).trimmingCharacters(in: .whitespaces).utf8))
        guard let token = configuration.tokens.first(where: { AccessToken.equal($0.digest, digest) }) else {
            unauthorized.detail = "the bearer token is not one this server accepts"
            unauthorized.headers[.wwwAuthenticate] = "Bearer realm=\"baton\", error=\"invalid_token\""
            throw unauthorized
        }
        guard token.role >= minimum else {
            throw Problem(
                .forbidden, code: "forbidden", title: "Forbidden",
                detail: "the token '\(token.name)' has the role \(token.role); this route needs \(minimum)",
                fix: "use a token with the role \(minimum) or higher")
        }
        let actor = token.name == token.role.description ? "http:\(token.role)" : "http:\(token.name) (\(token.role))"
        return Caller(role: token.role, actor: actor)
    }

    // MARK: - Reads

    func listTasks(_ request: Request, _ context: BasicRequestContext, _ caller: Caller) async throws -> Response {
        let query = request.uri.queryParameters
        var filter = TaskQueries.Filter()
        if let status = query["status"].map(String.init) {
            filter.statuses = status.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            if let unknown = filter.statuses.first(where: { !Self.taskStatuses.contains($0) }) {
                throw Problem.badRequest(
                    "unknown status '\(unknown)'", fix: "use any of " + Self.taskStatuses.sorted().joined(separator: ", "))
            }
        }
        filter.agent = Self.nonEmpty(query["agent"])
        filter.tenant = Self.nonEmpty(query["tenant"])
        filter.bucket = Self.nonEmpty(query["bucket"])
        filter.sinceMilliseconds = try Self.since(query["since"])
        filter.limit = try Self.limit(query["limit"], default: 50, maximum: 1000)
        if let cursor = Self.nonEmpty(query["cursor"]) {
            guard let parsed = TaskQueries.ListCursor(cursor) else {
                throw Problem.badRequest(
                    "the cursor '\(cursor)' is not one this API gave", fix: "pass the next_cursor of the previous page")
            }
            filter.cursor = parsed
        }
        let page = try await queries.list(filter)
        return try Self.json(ListPage(items: page.items, nextCursor: page.nextCursor))
    }

    func showTask(_ request: Request, _ context: BasicRequestContext, _ caller: Caller) async throws -> Response {
        try Self.json(try await task(context))
    }

    func history(_ request: Request, _ context: BasicRequestContext, _ caller: Caller) async throws -> Response {
        let task = try await task(context)
        let query = request.uri.queryParameters
        var branch: Int64?
        if let text = Self.nonEmpty(query["branch"]) {
            guard let value = Int64(text), value >= 0 else {
                throw Problem.badRequest("branch must be a whole number ≥ 0; got '\(text)'", fix: "pass ?branch=0, 1, …")
            }
            branch = value
        }
        let limit = try Self.limit(query["limit"], default: 10_000, maximum: 10_000)
        let events = try await queries.history(task.id, branch: branch, after: Self.nonEmpty(query["after"]) ?? "-", count: limit)
        return try Self.json(Items(items: events))
    }

    /// `GET /v1/tasks/{id}/events`: the history as JSON, or with `Accept: text/event-stream` a live stream.
    func events(_ request: Request, _ context: BasicRequestContext, _ caller: Caller) async throws -> Response {
        guard (request.headers[.accept] ?? "").contains("text/event-stream") else {
            return try await history(request, context, caller)
        }
        let task = try await task(context)
        let after = request.headers[Self.lastEventID] ?? Self.nonEmpty(request.uri.queryParameters["after"]) ?? "-"
        return EventStream(
            task: task.id, after: after, queries: queries, pollInterval: configuration.eventPollInterval,
            keepAlive: configuration.eventKeepAlive
        )
        .response
    }

    func checkpoint(_ request: Request, _ context: BasicRequestContext, _ caller: Caller) async throws -> Response {
        let task = try await task(context)
        var seq: Int64?
        if let text = context.parameters.get("seq") {
            guard let value = Int64(text), value >= 0 else {
                throw Problem.badRequest("the checkpoint seq must be a whole number ≥ 0; got '\(text)'", fix: "use a seq from the history")
            }
            seq = value
        }
        guard let checkpoint = try await queries.checkpoint(task.id, seq: seq) else {
            throw Problem.notFound(
                "task \(task.id) keeps no checkpoint at seq \(seq ?? task.seq) (only the last few are kept)",
                fix: "ask for a recent seq (the task is at seq \(task.seq)), or GET /v1/tasks/\(task.id)/checkpoint for the latest")
        }
        let state = (try? JSONValue.parse(Array(checkpoint.json.utf8))) ?? .string(checkpoint.json)
        return try Self.json(
            JSONValue.object(["v": 1, "task_id": .string(task.id), "seq": .int(checkpoint.seq), "state": state]))
    }

    func listDead(_ request: Request, _ context: BasicRequestContext, _ caller: Caller) async throws -> Response {
        let query = request.uri.queryParameters
        let filter = try Self.deadFilter(
            agent: query["agent"], step: query["step"], bucket: query["bucket"], reason: query["reason"], fingerprint: query["fingerprint"],
            since: query["since"])
        if Self.nonEmpty(query["format"]) == "jsonl" { return try await exportDead(filter, limit: query["limit"]) }
        if let groupBy = Self.nonEmpty(query["group_by"]) {
            guard let grouping = DeadLetterGrouping(rawValue: groupBy) else {
                throw Problem.badRequest(
                    "group_by '\(groupBy)' is not a grouping",
                    fix: "use one of " + DeadLetterGrouping.allCases.map(\.rawValue).joined(separator: ", "))
            }
            return try Self.json(Items(items: try await queries.deadLetterGroups(by: grouping, filter: filter)))
        }
        let limit = try Self.limit(query["limit"], default: 100, maximum: 10_000)
        let (items, total, _) = try await queries.deadLetters(matching: filter, limit: limit)
        return try Self.json(DeadPage(items: items, total: total))
    }

    func showDead(_ request: Request, _ context: BasicRequestContext, _ caller: Caller) async throws -> Response {
        let id = try context.parameters.require("id")
        guard let letter = try await queries.deadLetter(id) else {
            throw Problem.notFound("no dead letter '\(id)'", fix: "list them with GET /v1/dead")
        }
        return try Self.json(letter)
    }

    func audit(_ request: Request, _ context: BasicRequestContext, _ caller: Caller) async throws -> Response {
        let limit = try Self.limit(request.uri.queryParameters["limit"], default: 50, maximum: 1000)
        return try Self.json(Items(items: try await queries.auditEntries(limit: limit)))
    }

    // MARK: - Actions

    /// `POST /v1/tasks`: a submit (DESIGN.md §6); `Idempotency-Key` becomes the task id, so a retried request
    /// never starts a second task.
    func submit(_ request: Request, _ context: BasicRequestContext, _ caller: Caller) async throws -> Response {
        guard case .object(var object) = try await body(request, required: true) else {
            throw Problem.badRequest("the body must be a JSON object: a submit", fix: #"send {"agent": "…", "input": {…}}"#)
        }
        if object["v"] == nil { object["v"] = 1 }
        if let key = request.headers[Self.idempotencyKey] {
            let id = Self.taskID(idempotencyKey: key)
            if let bodyID = object["id"]?.stringValue, bodyID != id {
                throw Problem(
                    .unprocessableContent, code: "id-mismatch", title: "Conflicting ids",
                    detail: "the body's id '\(bodyID)' differs from the task id of the Idempotency-Key ('\(id)')",
                    fix: "drop the body's id or the Idempotency-Key header, or make them equal")
            }
            object["id"] = .string(id)
        }
        let submit = try SubmitRequest.decode(Array(JSONValue.object(object).jsonString.utf8), maxBytes: configuration.maxBodyBytes)
        let reply = try await client.submit(submit, replyTimeout: configuration.submitReplyTimeout)
        if let error = reply.error {
            let unknown = error.code == BatonError.Code.unknownAgent.description
            throw Problem(
                .unprocessableContent, code: error.code.replacingOccurrences(of: "_", with: "-"),
                title: unknown ? "Unknown agent" : "Submit refused", detail: error.message,
                fix: unknown
                    ? "fix 'agent', or deploy a worker that registers agent '\(submit.agent)'" : "fix the submit as the message says")
        }
        try await queries.audit(actor: caller.actor, action: "submit", target: reply.taskID, reason: "agent=\(submit.agent)")
        var headers = HTTPFields()
        headers[.location] = "/v1/tasks/\(reply.taskID)"
        var fields: [String: JSONValue] = ["v": 1, "task_id": .string(reply.taskID), "status": .string(reply.status ?? "submitted")]
        if let warning = reply.warning { fields["warning"] = .string(warning) }
        let answer = JSONValue.object(fields)
        return try Self.json(answer, status: .accepted, headers: headers)
    }

    /// The task id an `Idempotency-Key` stands for: the key itself when it is a valid task id, else a hash of it.
    static func taskID(idempotencyKey key: String) -> String {
        TaskID.isValid(key) ? key : "idem-" + SHA256.hex(key).prefix(32)
    }

    func taskAction(_ action: String, request: Request, context: BasicRequestContext, caller: Caller) async throws -> Response {
        let id = try Self.taskID(context)
        let reason = try await body(request, required: false)?["reason"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } ?? "no reason given"
        let outcome = try await client.act(action, task: id, reason: reason, actor: caller.actor)
        return try Self.report(ActionReport(id: id, action: action, outcome: outcome, reason: reason), noun: "task")
    }

    /// `POST /v1/tasks/{id}/fork` `{"from_seq", "reason", "step"?}`: a new branch from a kept checkpoint.
    func fork(request: Request, context: BasicRequestContext, caller: Caller) async throws -> Response {
        let id = try context.parameters.require("id")
        let body = try await body(request, required: true)
        guard let seq = body?["from_seq"]?.intValue, seq >= 0 else {
            throw Problem(
                .unprocessableContent, code: "from-seq-required", title: "Checkpoint seq required",
                detail: "a fork starts from a kept checkpoint: 'from_seq' is missing or not an integer ≥ 0",
                fix: #"add "from_seq": N (see GET /v1/tasks/{id}/checkpoints/{seq})"#)
        }
        let reason = try Self.reason(body)
        let step = body?["step"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
        let report = try await client.fork(task: id, fromSeq: seq, step: step, reason: reason, actor: caller.actor)
        switch report.result {
        case "not_found":
            throw Problem.notFound("task '\(id)': \(report.message ?? "not found")", fix: "check the id and the seq")
        case "usage":
            throw Problem(
                .unprocessableContent, code: "step-required", title: "Step required", detail: report.message ?? "name the step",
                fix: #"add "step": "NAME" to the body"#)
        case "conflict":
            throw Problem.conflict(
                "cannot fork task '\(id)': it is \(report.status ?? "in a state that forbids it")"
                    + (report.message.map { " (\($0))" } ?? ""),
                fix: "pause or cancel it and wait until no step runs, then fork")
        default: return try Self.json(report)
        }
    }

    /// `POST /v1/tasks/{id}/budget` `{"raise": "max_cost_usd=+2,max_steps=+50" | {"max_cost_usd": "+2", "max_steps": 600}, "reason"}`:
    /// raises the task's limits; a task in `needs_review` resumes.
    func raiseBudget(request: Request, context: BasicRequestContext, caller: Caller) async throws -> Response {
        let id = try context.parameters.require("id")
        let body = try await body(request, required: true)
        let fix = #"send {"raise": "max_cost_usd=+2,max_steps=+50", "reason": "…"} (+n relative, n absolute)"#
        let raise: BudgetRaise
        do {
            switch body?["raise"] {
            case .string(let text): raise = try BudgetRaise(parsing: text)
            case .object(let object):
                raise = try BudgetRaise(
                    entries: object.sorted { $0.key < $1.key }.map { key, value in (key, value.stringValue ?? value.jsonString) })
            default:
                throw Problem(
                    .unprocessableContent, code: "raise-required", title: "Limits required",
                    detail: "'raise' is missing: name the limits to raise", fix: fix)
            }
        } catch let error as BatonError {
            throw Problem(.unprocessableContent, code: "invalid-raise", title: "Invalid limits", detail: error.message, fix: fix)
        }
        let reason = try Self.reason(body)
        let report = try await client.raiseBudget(task: id, raise, reason: reason, actor: caller.actor)
        switch report.result {
        case "not_found":
            throw Problem.notFound("task '\(id)': \(report.message ?? "not found")", fix: "check the id")
        case "conflict":
            throw Problem.conflict(
                "cannot raise the budget of task '\(id)'" + (report.status.map { ": it is \($0)" } ?? "")
                    + (report.message.map { " (\($0))" } ?? ""),
                fix: report.status == nil ? "raise the limit named further" : "a task that ended cannot be raised: fork it instead")
        default: return try Self.json(report)
        }
    }

    /// `POST /v1/tasks/{id}/signals/{name}` (and `approve`) `{"payload"?, "id"?, "reason"? | "comment"?}`: delivers a
    /// signal; the answer says whether it woke the task or was kept in its mailbox. 404 no task, 409 the task ended or
    /// its mailbox is full, 422 a bad name, id or payload.
    func signal(_ name: String, request: Request, context: BasicRequestContext, caller: Caller) async throws -> Response {
        try await signal(name, body: try await body(request, required: false), id: try context.parameters.require("id"), caller: caller)
    }

    func signal(_ name: String, body: JSONValue?, id: String, caller: Caller) async throws -> Response {
        let reason = body?["reason"]?.stringValue ?? body?["comment"]?.stringValue ?? ""
        let request = SignalRequest(
            taskID: id, name: name, payload: body?["payload"], id: body?["id"]?.stringValue, actor: caller.actor, reason: reason)
        do {
            try request.validate()
        } catch {
            throw Problem(
                .unprocessableContent, code: "invalid-signal", title: "Invalid signal", detail: error.message,
                fix: "a signal name and id are letters, digits, '-', '_' or '.'; the payload is JSON under the size limit")
        }
        return try await deliver(request.taskSignal(fallbackActor: caller.actor))
    }

    /// `POST /v1/tasks/{id}/approve` `{"payload"?, "edit"?, "id"?, "comment"? | "reason"?}`: the signal `approve`;
    /// `edit`, an RFC 7396 JSON merge patch, is applied to `payload`, else to the task's input, and the woken step
    /// receives the edited document (the history records the patch and `edited_by`).
    func approve(request: Request, context: BasicRequestContext, caller: Caller) async throws -> Response {
        let id = try Self.taskID(context)
        let body = try await body(request, required: false)
        guard let edit = body?["edit"] else { return try await signal("approve", body: body, id: id, caller: caller) }
        let reason = body?["comment"]?.stringValue ?? body?["reason"]?.stringValue ?? ""
        let check = SignalRequest(
            taskID: id, name: "approve", payload: body?["payload"], id: body?["id"]?.stringValue, actor: caller.actor, reason: reason)
        do {
            try check.validate()
        } catch {
            throw Problem(
                .unprocessableContent, code: "invalid-signal", title: "Invalid signal", detail: error.message,
                fix: "a signal id is letters, digits, '-', '_' or '.'; the payload is JSON under the size limit")
        }
        let signal = try await client.approval(
            task: id, payload: body?["payload"], edit: edit, id: body?["id"]?.stringValue, actor: caller.actor, reason: reason)
        if signal.payloadJSON.utf8.count > SignalLimits.payloadMaxBytes {
            throw Problem(
                .unprocessableContent, code: "invalid-signal", title: "Invalid signal",
                detail: "the edited payload is over the \(SignalLimits.payloadMaxBytes)-byte limit",
                fix: "send a smaller edit, or store large data elsewhere and pass a reference")
        }
        return try await deliver(signal)
    }

    /// Delivers `signal` and answers its ``SignalReport``, or 404 (no task) / 409 (ended, mailbox full).
    func deliver(_ signal: TaskSignal) async throws -> Response {
        let id = signal.task
        let outcome = try await client.signal(signal)
        switch outcome {
        case .notFound:
            throw Problem.notFound(
                "no task '\(id)'",
                fix:
                    "check the id (GET /v1/tasks lists tasks); a finished task is deleted limits.retention after it ended (7 days by default)"
            )
        case .terminal(let status):
            throw Problem.conflict("task '\(id)' already ended (\(status)): it takes no signals", fix: "fork it to continue")
        case .mailboxFull(let cap):
            throw Problem.conflict(
                "task '\(id)' already holds \(cap) signals it does not wait for (its mailbox cap)",
                fix: "let the task consume them, or cancel it")
        default: return try Self.json(SignalReport(signal, outcome: outcome))
        }
    }

    /// `POST /v1/tasks/{id}/reject` `{"reason"?, "payload"?, "id"?}`: ends a task parked in `needs_review` (cancelled),
    /// else sends it the signal `reject`.
    func reject(request: Request, context: BasicRequestContext, caller: Caller) async throws -> Response {
        let id = try context.parameters.require("id")
        let body = try await body(request, required: false)
        let reason = body?["reason"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } ?? "no reason given"
        if let outcome = try await client.rejectReview(task: id, reason: reason, actor: caller.actor) {
            return try Self.report(ActionReport(id: id, action: "reject", outcome: outcome, reason: reason), noun: "task")
        }
        return try await signal("reject", body: body, id: id, caller: caller)
    }

    /// `GET /v1/inbox?agent=&tenant=&older_than=&limit=`: tasks waiting for a person, oldest first.
    func inbox(_ request: Request, _ context: BasicRequestContext, _ caller: Caller) async throws -> Response {
        let query = request.uri.queryParameters
        let olderThan = try Self.since(query["older_than"]).map { Duration.milliseconds($0) }
        let items = try await queries.inbox(
            agent: Self.nonEmpty(query["agent"]), tenant: Self.nonEmpty(query["tenant"]), olderThan: olderThan,
            limit: try Self.limit(query["limit"], default: 100, maximum: 1000))
        return try Self.json(Items(items: items))
    }

    /// `GET /v1/queues`: what `baton queues -o json` prints (``QueueReport``).
    func queues(_ request: Request, _ context: BasicRequestContext, _ caller: Caller) async throws -> Response {
        guard let amqpURL = configuration.amqpURL else {
            throw Problem(
                .serviceUnavailable, code: "no-broker", title: "No broker", detail: "this server was started without a RabbitMQ URL",
                fix: "start baton serve with amqp.url set (BATON_AMQP_URL)")
        }
        let rows = try await QueueReport.collect(
            amqpURL: amqpURL, workers: try await queries.workers(), configuredQueues: [], extra: [])
        return try Self.json(Items(items: rows))
    }

    /// `GET /v1/stats?since=1h&sample=2000`: what `baton stats --json` shows.
    func stats(_ request: Request, _ context: BasicRequestContext, _ caller: Caller) async throws -> Response {
        let query = request.uri.queryParameters
        let since = try Self.since(query["since"]).map { Duration.milliseconds($0) } ?? .seconds(3600)
        let sample = try Self.limit(query["sample"], default: 2000, maximum: 100_000)
        return try Self.json(try await queries.stats(since: since, sample: sample))
    }

    func deadAction(_ action: String, request: Request, context: BasicRequestContext, caller: Caller) async throws -> Response {
        let id = try context.parameters.require("id")
        let body = try await body(request, required: true)
        let reason = try Self.reason(body)
        let outcome: BatonClient.ActionResult
        if action == "redrive" {
            outcome = try await client.redrive(deadLetter: id, reason: reason, actor: caller.actor, patch: body?["patch"])
        } else {
            outcome = try await client.discard(deadLetter: id, reason: reason, actor: caller.actor)
        }
        return try Self.report(ActionReport(id: id, action: action, outcome: outcome, reason: reason), noun: "dead letter")
    }

    /// `POST /v1/dead/redrive|discard`: every dead letter a filter selects. `dry_run` answers the count and five
    /// samples and changes nothing; a real run acts on each and writes one audit entry for the call.
    func bulkDeadAction(_ action: String, request: Request, caller: Caller) async throws -> Response {
        let body = try await body(request, required: true)
        let reason = try Self.reason(body)
        let filter = try Self.bulkSelection(body, action: action)
        let dryRun = body?["dry_run"] == .bool(true)
        let selected = try await queries.deadLetters(matching: filter, withBody: false).items
        if dryRun {
            var samples: [DeadLetterView] = []
            for letter in selected.prefix(5) { if let full = try await queries.deadLetter(letter.id) { samples.append(full) } }
            return try Self.json(
                BulkReport(dryRun: true, action: action, filter: filter.description, count: selected.count, samples: samples))
        }
        let patch = body?["patch"]
        var reports: [ActionReport] = []
        for letter in selected {
            let outcome: BatonClient.ActionResult
            if action == "redrive" {
                outcome = try await client.redrive(deadLetter: letter.id, reason: reason, actor: caller.actor, patch: patch, audit: false)
            } else {
                outcome = try await client.discard(deadLetter: letter.id, reason: reason, actor: caller.actor, audit: false)
            }
            reports.append(ActionReport(id: letter.id, action: action, outcome: outcome, reason: reason))
        }
        let done = reports.filter { $0.result == "done" || $0.result == "requested" }
        let shown = done.prefix(50).map(\.id).joined(separator: ",") + (done.count > 50 ? ",…" : "")
        try await queries.audit(
            actor: caller.actor, action: "dead.\(action)", target: shown, filter: filter.description, count: done.count, reason: reason)
        return try Self.json(
            BulkReport(
                dryRun: false, action: action, filter: filter.description, count: done.count, selected: selected.count, items: reports))
    }

    // MARK: - Helpers

    /// The `{id}` of a task route: a child task's `/` travels percent-encoded (`GET /v1/tasks/abc%2F1`).
    static func taskID(_ context: BasicRequestContext) throws -> String {
        let raw = try context.parameters.require("id")
        return raw.removingPercentEncoding ?? raw
    }

    func task(_ context: BasicRequestContext) async throws -> TaskView {
        let id = try Self.taskID(context)
        guard let task = try await queries.task(id) else {
            throw Problem.notFound(
                "no task '\(id)'",
                fix:
                    "check the id (GET /v1/tasks lists tasks); a finished task is deleted limits.retention after it ended (7 days by default)"
            )
        }
        return task
    }

    /// The JSON body, nil when empty and not `required`.
    func body(_ request: Request, required: Bool) async throws -> JSONValue? {
        let buffer = try await request.body.collect(upTo: configuration.maxBodyBytes)
        guard buffer.readableBytes > 0 else {
            if required {
                throw Problem.badRequest("the request has no body", fix: "send a JSON object with Content-Type: application/json")
            }
            return nil
        }
        do {
            return try JSONValue.parse(Array(buffer.readableBytesView))
        } catch {
            throw Problem.badRequest("the body is not valid JSON: \(error)", fix: "send a JSON object")
        }
    }

    static func reason(_ body: JSONValue?) throws -> String {
        guard let reason = body?["reason"]?.stringValue, !reason.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw Problem(
                .unprocessableContent, code: "reason-required", title: "Reason required",
                detail: "a redrive, discard, fork or budget raise must say why: 'reason' is missing or empty",
                fix: #"add "reason": "…" to the body (it is recorded in the audit stream)"#)
        }
        return reason
    }

    /// The dead letters a bulk body selects: its `filter` object, or `"all": true` (exactly one of them).
    static func bulkSelection(_ body: JSONValue?, action: String) throws -> DeadLetterFilter {
        let filterJSON = body?["filter"] ?? .object([:])
        guard case .object = filterJSON else {
            throw Problem.badRequest("'filter' must be an object", fix: #"send "filter": {"agent": "…", "bucket": "…"}"#)
        }
        let filter = try Self.deadFilter(
            agent: filterJSON["agent"]?.stringValue, step: filterJSON["step"]?.stringValue, bucket: filterJSON["bucket"]?.stringValue,
            reason: filterJSON["reason"]?.stringValue, fingerprint: filterJSON["fingerprint"]?.stringValue,
            since: filterJSON["since"]?.stringValue)
        let all = body?["all"] == .bool(true)
        guard !filter.isEmpty || all else {
            throw Problem(
                .unprocessableContent, code: "no-selection", title: "Nothing selected",
                detail: "a bulk \(action) needs a filter, or \"all\": true to act on every dead letter",
                fix: #"send "filter": {"agent", "step", "bucket", "reason", "fingerprint", "since"} or "all": true"#)
        }
        if all && !filter.isEmpty {
            throw Problem.badRequest("\"all\": true selects every dead letter, and a filter was given too", fix: "drop 'all' or 'filter'")
        }
        return filter
    }

    static func deadFilter(
        agent: (some StringProtocol)?, step: (some StringProtocol)?, bucket: (some StringProtocol)?, reason: (some StringProtocol)?,
        fingerprint: (some StringProtocol)?, since: (some StringProtocol)?
    ) throws -> DeadLetterFilter {
        DeadLetterFilter(
            agent: nonEmpty(agent), step: nonEmpty(step), bucket: nonEmpty(bucket), reason: nonEmpty(reason),
            fingerprint: nonEmpty(fingerprint), sinceMilliseconds: try self.since(since))
    }

    static func nonEmpty(_ value: (some StringProtocol)?) -> String? {
        guard let value, !value.isEmpty else { return nil }
        return String(value)
    }

    static func since(_ value: (some StringProtocol)?) throws -> Int64? {
        guard let text = nonEmpty(value) else { return nil }
        guard let duration = DurationText.parse(text) else {
            throw Problem.badRequest("since must be a duration such as 30m, 24h or 7d; got '\(text)'", fix: "pass ?since=24h")
        }
        return duration.wholeMilliseconds
    }

    static func limit(_ value: (some StringProtocol)?, default defaultValue: Int, maximum: Int) throws -> Int {
        guard let text = nonEmpty(value) else { return defaultValue }
        guard let limit = Int(text), (1...maximum).contains(limit) else {
            throw Problem.badRequest("limit must be a whole number from 1 to \(maximum); got '\(text)'", fix: "pass ?limit=50")
        }
        return limit
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) throws -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(bytes: try JSONCoding.encode(value))))
    }

    /// A done (200) or requested (202) action, or its not-found (404) / conflict (409) problem.
    static func report(_ report: ActionReport, noun: String) throws -> Response {
        switch report.result {
        case "not_found":
            throw Problem.notFound("no \(noun) '\(report.id)'", fix: "check the id")
        case "conflict":
            throw Problem.conflict(
                "cannot \(report.action) \(noun) '\(report.id)': it is \(report.status ?? "in a state that forbids it")",
                fix: "look at its status (GET) and act only when it allows \(report.action)")
        case "requested": return try json(report, status: .accepted)
        default: return try json(report)
        }
    }
}
