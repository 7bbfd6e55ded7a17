import Foundation
import RedisClient

/// Reads for the CLI and the HTTP API: task views, lists, history, dead letters, workers. Always from
/// Redis, never a cache: what they show is the truth at the moment of the call.
public struct TaskQueries: Sendable {
    public let store: RedisTaskStore
    var keys: RedisKeys { store.settings.keys }
    var redis: RedisConnection { store.redis }

    public init(store: RedisTaskStore) { self.store = store }

    static func hash(_ reply: RedisReply) -> [String: String] {
        let flat = reply.array ?? []
        var out: [String: String] = [:]
        var index = 0
        while index + 1 < flat.count {
            out[flat[index].string ?? ""] = flat[index + 1].string ?? ""
            index += 2
        }
        return out
    }

    /// The task, or nil when no task has this id.
    public func task(_ id: String) async throws -> TaskView? {
        guard TaskID.isValid(id) || id.contains("/") else { return nil }
        let replies = try await redis.pipeline([RedisCommand("HGETALL", keys.task(id)), RedisCommand("HGETALL", keys.budget(id))])
        let task = Self.hash(replies[0])
        guard !task.isEmpty else { return nil }
        return TaskView(task: task, budget: Self.hash(replies[1]))
    }

    /// Filters for ``list(_:)``.
    public struct Filter: Sendable {
        public var statuses: [String] = []
        public var agent: String?
        public var tenant: String?
        public var bucket: String?
        /// Only tasks updated since this many milliseconds ago.
        public var sinceMilliseconds: Int64?
        public var limit = 50
        /// Return tasks updated before this score (Unix ms) — the cursor of the previous page.
        public var cursor: Int64?
        public init() {}
    }

    /// Tasks by most recent update, filtered; returns the page and the cursor of the next page.
    public func list(_ filter: Filter) async throws -> (items: [TaskView], nextCursor: String?) {
        // Running tasks live in the `queued` (active) index; the hash says which they are.
        let allStatuses = [
            "queued", "waiting", "sleeping", "retrying", "paused", "needs_review", "succeeded", "failed", "cancelled", "budget_exceeded",
            "dead_lettered",
        ]
        let statuses = filter.statuses.isEmpty ? allStatuses : Array(Set(filter.statuses.map { $0 == "running" ? "queued" : $0 })).sorted()
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let minScore = filter.sinceMilliseconds.map { String(now - $0) } ?? "-inf"
        let maxScore = filter.cursor.map { "(" + String($0) } ?? "+inf"
        let fetch = max(1, min(filter.limit, 1000)) * 2 + 10
        var commands: [RedisCommand] = []
        for bucket in 0..<keys.bucketCount {
            for status in statuses {
                commands.append(
                    RedisCommand(
                        "ZREVRANGEBYSCORE", keys.index(bucket: bucket, status: status), maxScore, minScore, "WITHSCORES", "LIMIT", 0, fetch)
                )
            }
        }
        var candidates: [(id: String, score: Int64)] = []
        var seen = Set<String>()
        for reply in try await redis.pipeline(commands) {
            let flat = reply.array ?? []
            var index = 0
            while index + 1 < flat.count {
                if let id = flat[index].string, let score = Int64(flat[index + 1].string ?? ""), seen.insert(id).inserted {
                    candidates.append((id, score))
                }
                index += 2
            }
        }
        candidates.sort { $0.score != $1.score ? $0.score > $1.score : $0.id > $1.id }
        var items: [TaskView] = []
        var lastScore: Int64? = nil
        var position = 0
        while items.count < filter.limit && position < candidates.count {
            let chunk = candidates[position..<min(candidates.count, position + 100)]
            position += chunk.count
            let replies = try await redis.pipeline(
                chunk.flatMap { [RedisCommand("HGETALL", keys.task($0.id)), RedisCommand("HGETALL", keys.budget($0.id))] })
            for (offset, candidate) in chunk.enumerated() {
                let task = Self.hash(replies[offset * 2])
                guard !task.isEmpty else { continue }
                let view = TaskView(task: task, budget: Self.hash(replies[offset * 2 + 1]))
                if let agent = filter.agent, view.agent != agent { continue }
                if let tenant = filter.tenant, view.tenant != tenant { continue }
                if !filter.statuses.isEmpty && !filter.statuses.contains(view.status) { continue }
                if let bucket = filter.bucket, view.error?["bucket"]?.stringValue != bucket { continue }
                items.append(view)
                lastScore = candidate.score
                if items.count == filter.limit { break }
            }
        }
        let more = items.count == filter.limit && (position < candidates.count || candidates.count >= fetch)
        return (items, more ? lastScore.map(String.init) : nil)
    }

    /// The task's events, oldest first (optionally one branch only).
    public func history(_ id: String, branch: Int64? = nil, after: String = "-", count: Int = 10_000) async throws -> [TaskEvent] {
        let reply = try await redis.send(RedisCommand("XRANGE", keys.events(id), after == "-" ? "-" : "(" + after, "+", "COUNT", count))
        var events: [TaskEvent] = []
        for entry in reply.array ?? [] {
            guard let parts = entry.array, parts.count == 2, let id = parts[0].string else { continue }
            let fields = Self.hash(parts[1])
            let event = TaskEvent(
                id: id, type: fields["type"] ?? "", seq: Int64(fields["seq"] ?? "") ?? 0, branch: Int64(fields["branch"] ?? "") ?? 0,
                step: fields["step"].flatMap { $0.isEmpty ? nil : $0 }, at: TaskView.iso(fields["at"]) ?? "",
                data: fields["data"].flatMap { try? JSONValue.parse(Array($0.utf8)) })
            if let branch, event.branch != branch { continue }
            events.append(event)
        }
        return events
    }

    /// The checkpoint (state JSON) after `seq`, or the latest when nil.
    public func checkpoint(_ id: String, seq: Int64? = nil) async throws -> (seq: Int64, json: String)? {
        guard let task = try await task(id) else { return nil }
        let at = seq ?? task.seq
        guard let json = try await redis.send("GET", keys.checkpoint(id, seq: at)).string else { return nil }
        return (at, json)
    }

    /// Dead letters, newest first.
    public func deadLetters(limit: Int = 100) async throws -> [DeadLetterView] {
        let ids = try await redis.pipeline(
            (0..<keys.bucketCount).map { RedisCommand("ZREVRANGE", keys.dead(bucket: $0), 0, limit, "WITHSCORES") })
        var entries: [(id: String, bucket: Int, score: Int64)] = []
        for (bucket, reply) in ids.enumerated() {
            let flat = reply.array ?? []
            var index = 0
            while index + 1 < flat.count {
                if let id = flat[index].string { entries.append((id, bucket, Int64(flat[index + 1].string ?? "") ?? 0)) }
                index += 2
            }
        }
        entries.sort { $0.score > $1.score }
        entries = Array(entries.prefix(limit))
        let replies = try await redis.pipeline(entries.map { RedisCommand("HGETALL", keys.deadItem(bucket: $0.bucket, id: $0.id)) })
        return replies.map { DeadLetterView(fields: Self.hash($0)) }.filter { !$0.id.isEmpty }
    }

    /// One dead letter by id.
    public func deadLetter(_ id: String) async throws -> DeadLetterView? {
        let fields = Self.hash(try await redis.send("HGETALL", keys.deadItem(bucket: keys.bucket(of: id), id: id)))
        return fields.isEmpty ? nil : DeadLetterView(fields: fields)
    }

    /// Removes a dead letter from the store (after a redrive or a discard), recording why in the audit stream.
    public func removeDeadLetter(_ id: String, action: String, reason: String, actor: String) async throws {
        let bucket = keys.bucket(of: id)
        _ = try await redis.pipeline([
            RedisCommand("ZREM", keys.dead(bucket: bucket), id), RedisCommand("DEL", keys.deadItem(bucket: bucket, id: id)),
            RedisCommand(
                "XADD", keys.audit, "MAXLEN", "~", 100_000, "*", "actor", actor, "action", action, "target", id, "count", 1, "reason",
                reason,
                "at", Int64(Date().timeIntervalSince1970 * 1000)),
        ])
    }

    /// Records a mutating operator action in the audit stream.
    public func audit(actor: String, action: String, target: String, count: Int = 1, reason: String) async throws {
        try await redis.send(
            RedisCommand(
                "XADD", keys.audit, "MAXLEN", "~", 100_000, "*", "actor", actor, "action", action, "target", target, "count", count,
                "reason", reason,
                "at", Int64(Date().timeIntervalSince1970 * 1000)))
    }

    /// Workers that sent a heartbeat, most recent first.
    public func workers() async throws -> [WorkerView] {
        let reply = try await redis.send("ZREVRANGE", keys.workers, 0, -1, "WITHSCORES")
        let time = try await redis.send("TIME").array ?? []
        let now = (Int64(time.first?.string ?? "") ?? 0) * 1000 + (Int64(time.dropFirst().first?.string ?? "") ?? 0) / 1000
        let flat = reply.array ?? []
        var ids: [(String, Int64)] = []
        var index = 0
        while index + 1 < flat.count {
            if let id = flat[index].string { ids.append((id, Int64(flat[index + 1].string ?? "") ?? 0)) }
            index += 2
        }
        let infos = try await redis.pipeline(ids.map { RedisCommand("HGETALL", keys.worker($0.0)) })
        return zip(ids, infos).map { entry, infoReply in
            let info = Self.hash(infoReply)
            return WorkerView(
                id: entry.0, heartbeatAt: TaskView.iso(String(entry.1)) ?? "", heartbeatAgeSeconds: Double(now - entry.1) / 1000,
                inFlight: Int64(info["in_flight"] ?? "") ?? 0, info: info["info"].flatMap { try? JSONValue.parse(Array($0.utf8)) })
        }
    }
}
