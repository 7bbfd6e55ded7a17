import Baton
import Foundation
import HTTPTypes
import Hummingbird
import RedisClient

/// `POST /v1/bulk` and `GET /v1/bulk/{id}`: a tracked bulk dead-letter redrive or discard. The POST selects the
/// dead letters (the filter of `POST /v1/dead/redrive|discard`), answers 202 with the operation's id at once, and
/// acts on them in the background; the operation's status and progress live in Redis (`<prefix>bulk:<id>`, kept
/// ``BulkOperations/keepSeconds`` after its last change), so any `baton serve` can answer the GET.
///
/// The operation runs in the server that accepted it: if that server stops, the status stays `running` with an
/// old `updated_at`; what was done stays done, and a new POST with the same filter picks up the rest.
enum BulkOperations {
    /// How long an operation's status is kept after its last change (7 days).
    static let keepSeconds = 7 * 86_400
    static let actions = ["redrive", "discard", "approve"]

    static func key(_ store: RedisTaskStore, _ id: String) -> String { store.settings.keys.prefix + "bulk:" + id }
}

extension APIRoutes {
    /// Records a new tracked bulk operation (status `running`, nothing done yet); returns its id and Redis key.
    static func startOperation(
        _ store: RedisTaskStore, action: String, filter: String, reason: String, actor: String, total: Int
    ) async throws -> (id: String, key: String) {
        let id = "bulk-" + TaskID.generate()
        let key = BulkOperations.key(store, id)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        _ = try await store.redis.pipeline([
            RedisCommand(
                "HSET", key, "id", id, "action", action, "filter", filter, "reason", reason, "actor", actor, "status", "running",
                "total", total, "done", 0, "failed", 0, "started_at", now, "updated_at", now),
            RedisCommand("EXPIRE", key, BulkOperations.keepSeconds),
        ])
        return (id, key)
    }

    func registerBulk(on router: Router<BasicRequestContext>) {
        act(router, "/v1/bulk", startBulk)
        read(router, "/v1/bulk/:id", showBulk)
    }

    /// `POST /v1/bulk` `{"action": "redrive"|"discard", "filter": {…}|"all": true, "reason", "patch"?}` → 202
    /// `{"id", "status": "running", "action", "filter", "total"}`.
    func startBulk(_ request: Request, _ context: BasicRequestContext, _ caller: Caller) async throws -> Response {
        let body = try await body(request, required: true)
        guard let action = body?["action"]?.stringValue, BulkOperations.actions.contains(action) else {
            throw Problem(
                .unprocessableContent, code: "invalid-action", title: "Unknown bulk action",
                detail: "'action' must be \"redrive\", \"discard\" or \"approve\"",
                fix: #"send "action": "redrive", "discard" or "approve""#)
        }
        if action == "approve" { return try await startBulkApprove(body, caller: caller) }
        let reason = try Self.reason(body)
        let filter = try Self.bulkSelection(body, action: action)
        let selected = try await queries.deadLetters(matching: filter, withBody: false).items.map(\.id)
        let store = client.store
        let (id, key) = try await Self.startOperation(
            store, action: action, filter: filter.description, reason: reason, actor: caller.actor, total: selected.count)
        let patch = body?["patch"]
        let client = self.client
        let queries = self.queries
        Task {
            var done: [String] = []
            for letter in selected {
                var outcome = "failed"
                do {
                    let result =
                        action == "redrive"
                        ? try await client.redrive(deadLetter: letter, reason: reason, actor: caller.actor, patch: patch, audit: false)
                        : try await client.discard(deadLetter: letter, reason: reason, actor: caller.actor, audit: false)
                    if case .done = result { outcome = "done" } else if case .requested = result { outcome = "done" }
                } catch {
                    _ = try? await store.redis.send("HSET", key, "last_error", "\(letter): \(error)")
                }
                if outcome == "done" { done.append(letter) }
                _ = try? await store.redis.pipeline([
                    RedisCommand("HINCRBY", key, outcome, 1),
                    RedisCommand("HSET", key, "updated_at", Int64(Date().timeIntervalSince1970 * 1000)),
                ])
            }
            let shown = done.prefix(50).joined(separator: ",") + (done.count > 50 ? ",…" : "")
            try? await queries.audit(
                actor: caller.actor, action: "dead.\(action)", target: shown, filter: filter.description, count: done.count,
                reason: reason + " (bulk \(id))")
            let end = Int64(Date().timeIntervalSince1970 * 1000)
            _ = try? await store.redis.pipeline([
                RedisCommand("HSET", key, "status", "done", "finished_at", end, "updated_at", end),
                RedisCommand("EXPIRE", key, BulkOperations.keepSeconds),
            ])
        }
        let answer: JSONValue = [
            "id": .string(id), "status": "running", "action": .string(action), "filter": .string(filter.description),
            "total": .int(Int64(selected.count)),
        ]
        var headers = HTTPFields()
        headers[.location] = "/v1/bulk/\(id)"
        return try Self.json(answer, status: .accepted, headers: headers)
    }

    /// `POST /v1/bulk` `{"action": "approve", "filter": {"agent"?, "tenant"?, "older_than"?} | "all": true, "reason",
    /// "dry_run"?}`: approves the pending approvals the Inbox's filters select (never a task in needs_review). With
    /// `"dry_run": true`: 200 `{"dry_run": true, "action", "filter", "count", "samples": [five Inbox items]}` and
    /// nothing changes; else a tracked operation like a bulk redrive (202, then `GET /v1/bulk/{id}`), with one audit
    /// entry `approve` (filter, count, reason).
    func startBulkApprove(_ body: JSONValue?, caller: Caller) async throws -> Response {
        let filterJSON = body?["filter"] ?? .object([:])
        guard case .object(let fields) = filterJSON else {
            throw Problem.badRequest(
                "'filter' must be an object", fix: #"send "filter": {"agent": "…", "tenant": "…", "older_than": "1h"}"#)
        }
        if let unknown = fields.keys.sorted().first(where: { !["agent", "tenant", "older_than"].contains($0) }) {
            throw Problem.badRequest(
                "a bulk approve filters by agent, tenant and older_than; '\(unknown)' is not one of them", fix: "drop '\(unknown)'")
        }
        let selection: ApprovalSelection
        do {
            selection = try ApprovalSelection(
                agent: filterJSON["agent"]?.stringValue, tenant: filterJSON["tenant"]?.stringValue,
                olderThan: filterJSON["older_than"]?.stringValue)
        } catch let error as BatonError {
            throw Problem.badRequest(error.message, fix: #"pass "older_than": "30m", "1h" or "2d""#)
        }
        let all = body?["all"] == .bool(true)
        guard !selection.isEmpty || all else {
            throw Problem(
                .unprocessableContent, code: "no-selection", title: "Nothing selected",
                detail: "a bulk approve needs a filter, or \"all\": true to approve every pending approval",
                fix: #"send "filter": {"agent", "tenant", "older_than"} or "all": true"#)
        }
        if all && !selection.isEmpty {
            throw Problem.badRequest(
                "\"all\": true selects every pending approval, and a filter was given too", fix: "drop 'all' or 'filter'")
        }
        let items = try await client.pendingApprovals(selection)
        if body?["dry_run"] == .bool(true) {
            return try Self.json(
                JSONValue.object([
                    "dry_run": true, "action": "approve", "filter": .string(selection.description), "count": .int(Int64(items.count)),
                    "samples": try JSONValue.parse(JSONCoding.encode(Array(items.prefix(5)))),
                ]))
        }
        let reason = try Self.reason(body)
        let store = client.store
        let (id, key) = try await Self.startOperation(
            store, action: "approve", filter: selection.description, reason: reason, actor: caller.actor, total: items.count)
        let client = self.client
        let tasks = items.map(\.task.id)
        Task {
            do {
                let reports = try await client.approveAll(
                    tasks, filter: selection.description, actor: caller.actor, reason: reason + " (bulk \(id))"
                ) { processed in
                    _ = try? await store.redis.send(
                        "HSET", key, "done", processed, "updated_at", Int64(Date().timeIntervalSince1970 * 1000))
                }
                let woke = reports.filter { $0.result == "woke" }.count
                _ = try? await store.redis.send("HSET", key, "done", woke, "failed", reports.count - woke)
            } catch {
                _ = try? await store.redis.send("HSET", key, "last_error", "\(error)")
            }
            let end = Int64(Date().timeIntervalSince1970 * 1000)
            _ = try? await store.redis.pipeline([
                RedisCommand("HSET", key, "status", "done", "finished_at", end, "updated_at", end),
                RedisCommand("EXPIRE", key, BulkOperations.keepSeconds),
            ])
        }
        let answer: JSONValue = [
            "id": .string(id), "status": "running", "action": "approve", "filter": .string(selection.description),
            "total": .int(Int64(items.count)),
        ]
        var headers = HTTPFields()
        headers[.location] = "/v1/bulk/\(id)"
        return try Self.json(answer, status: .accepted, headers: headers)
    }

    /// `GET /v1/bulk/{id}`: `{"id", "action", "filter", "reason", "actor", "status": "running"|"done", "total",
    /// "done", "failed", "started_at", "updated_at", "finished_at"?, "last_error"?}` (times in Unix ms).
    func showBulk(_ request: Request, _ context: BasicRequestContext, _ caller: Caller) async throws -> Response {
        let id = try context.parameters.require("id")
        let store = client.store
        let reply = try await store.redis.send("HGETALL", BulkOperations.key(store, id)).array ?? []
        guard !reply.isEmpty else {
            throw Problem.notFound(
                "no bulk operation '\(id)' (kept \(BulkOperations.keepSeconds / 86_400) days after its last change)",
                fix: "use the id POST /v1/bulk answered")
        }
        var object: [String: JSONValue] = [:]
        var index = 0
        while index + 1 < reply.count {
            let field = reply[index].string ?? ""
            let value = reply[index + 1].string ?? ""
            switch field {
            case "total", "done", "failed", "started_at", "updated_at", "finished_at": object[field] = .int(Int64(value) ?? 0)
            default: object[field] = .string(value)
            }
            index += 2
        }
        return try Self.json(JSONValue.object(object))
    }
}
