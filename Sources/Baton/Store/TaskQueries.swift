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
        let replies = try await redis.pipeline([
            RedisCommand("HGETALL", keys.task(id)), RedisCommand("HGETALL", keys.budget(id)), RedisCommand("HGETALL", keys.signals(id)),
        ])
        let task = Self.hash(replies[0])
        guard !task.isEmpty else { return nil }
        return TaskView(task: task, budget: Self.hash(replies[1]), signals: Self.hash(replies[2]))
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
        /// Where the previous page ended: its `next_cursor` (see ``ListCursor``).
        public var cursor: ListCursor?
        /// How many index entries one call reads at most before it returns a shorter page with a cursor,
        /// so a rare filter over a huge history never turns into one unbounded scan.
        public var scanBudget = 50_000
        public init() {}
    }

    /// A position in the list order (most recently updated first, then id descending): the page continues
    /// strictly after it. Written as `<updated ms>:<task id>`; a bare `<updated ms>` is accepted too.
    public struct ListCursor: Sendable, Equatable, CustomStringConvertible {
        public var score: Int64
        public var id: String?
        public init(score: Int64, id: String?) {
            self.score = score
            self.id = id
        }
        public init?(_ text: String) {
            let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard let score = Int64(parts[0]) else { return nil }
            self.score = score
            self.id = parts.count == 2 ? String(parts[1]) : nil
            if let id, id.isEmpty { return nil }
        }
        public var description: String { id.map { "\(score):\($0)" } ?? String(score) }

        /// True when (score, id) comes after this cursor in list order.
        func precedes(score other: Int64, id otherID: String) -> Bool {
            if other != score { return other < score }
            guard let id else { return false }
            return otherID < id
        }
    }

    /// Tasks by most recent update, filtered; returns the page and the cursor of the next page (nil on the
    /// last page).
    ///
    /// The status indexes are read a window at a time, merged, and only entries that no unread part of any
    /// index can precede are taken; filters that the indexes cannot express (agent, tenant, bucket) are
    /// applied to the task hashes, so a page is never cut short by other tenants' newer tasks.
    public func list(_ filter: Filter) async throws -> (items: [TaskView], nextCursor: String?) {
        // Running tasks live in the `queued` (active) index; the hash says which they are.
        let statuses =
            filter.statuses.isEmpty ? Self.indexedStatuses : Array(Set(filter.statuses.map { $0 == "running" ? "queued" : $0 })).sorted()
        let limit = max(1, min(filter.limit, 1000))
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let minScore = filter.sinceMilliseconds.map { String(now - $0) } ?? "-inf"
        let maxScore = filter.cursor.map { String($0.score) } ?? "+inf"
        let window = limit * 2 + 10

        struct Source {
            let key: String
            var offset = 0
            var exhausted = false
            /// The score of the last entry read: nothing unread in this index is newer.
            var floor: Int64?
        }
        var sources = (0..<keys.bucketCount).flatMap { bucket in statuses.map { Source(key: keys.index(bucket: bucket, status: $0)) } }
        var pending: [(id: String, score: Int64)] = []
        var seen = Set<String>()
        var items: [TaskView] = []
        var last: ListCursor?
        var scanned = 0

        while items.count < limit {
            let open = sources.indices.filter { !sources[$0].exhausted }
            if !open.isEmpty {
                let replies = try await redis.pipeline(
                    open.map {
                        RedisCommand(
                            "ZREVRANGEBYSCORE", sources[$0].key, maxScore, minScore, "WITHSCORES", "LIMIT", sources[$0].offset, window)
                    })
                for (index, reply) in zip(open, replies) {
                    let flat = reply.array ?? []
                    var position = 0
                    while position + 1 < flat.count {
                        if let id = flat[position].string, let score = Int64(flat[position + 1].string ?? "") {
                            sources[index].floor = score
                            if filter.cursor?.precedes(score: score, id: id) ?? true, seen.insert(id).inserted {
                                pending.append((id, score))
                            }
                        }
                        position += 2
                    }
                    sources[index].offset += flat.count / 2
                    scanned += flat.count / 2
                    if flat.count / 2 < window { sources[index].exhausted = true }
                }
            }
            // Entries newer than every open index's floor are final in order; ties at a floor wait for the next read.
            let horizon = sources.filter { !$0.exhausted }.compactMap(\.floor).max()
            pending.sort { $0.score != $1.score ? $0.score > $1.score : $0.id > $1.id }
            let ready = horizon.map { h in pending.prefix { $0.score > h } } ?? pending[...]
            var taken = 0
            for chunkStart in stride(from: ready.startIndex, to: ready.endIndex, by: 100) where items.count < limit {
                let chunk = ready[chunkStart..<min(ready.endIndex, chunkStart + 100)]
                let replies = try await redis.pipeline(
                    chunk.flatMap { [RedisCommand("HGETALL", keys.task($0.id)), RedisCommand("HGETALL", keys.budget($0.id))] })
                for (offset, candidate) in chunk.enumerated() {
                    taken += 1
                    last = ListCursor(score: candidate.score, id: candidate.id)
                    let task = Self.hash(replies[offset * 2])
                    guard !task.isEmpty else { continue }
                    let view = TaskView(task: task, budget: Self.hash(replies[offset * 2 + 1]))
                    if let agent = filter.agent, view.agent != agent { continue }
                    if let tenant = filter.tenant, view.tenant != tenant { continue }
                    if !filter.statuses.isEmpty && !filter.statuses.contains(view.status) { continue }
                    if let bucket = filter.bucket, view.error?["bucket"]?.stringValue != bucket { continue }
                    items.append(view)
                    if items.count == limit { break }
                }
            }
            pending.removeFirst(taken)
            let more = !pending.isEmpty || sources.contains { !$0.exhausted }
            if items.count == limit { return (items, more ? last?.description : nil) }
            if !more { return (items, nil) }
            // A rare filter over a long history: hand back what there is and where to go on.
            if scanned >= filter.scanBudget, let last { return (items, last.description) }
        }
        return (items, nil)
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

    /// Removes a dead letter from the store (after a redrive or a discard) and from its fingerprint group;
    /// records why in the audit stream unless `audit` is false (a bulk action records one entry for all).
    public func removeDeadLetter(_ id: String, action: String, reason: String, actor: String, audit: Bool = true) async throws {
        try await store.deleteDeadLetter(id)
        if audit { try await self.audit(actor: actor, action: action, target: id, reason: reason) }
    }

    /// Records a mutating operator action in the audit stream (`baton:audit`, capped at about 100 000 entries):
    /// actor, action, target (a task, a dead letter, or the ids of a bulk action), filter, count, reason, time.
    public func audit(actor: String, action: String, target: String, filter: String? = nil, count: Int = 1, reason: String)
        async throws
    {
        var arguments: [any RedisArgumentConvertible] = [
            keys.audit, "MAXLEN", "~", 100_000, "*", "actor", actor, "action", action, "target", target, "count", count, "reason", reason,
        ]
        if let filter { arguments += ["filter", filter] }
        arguments += ["at", Int64(Date().timeIntervalSince1970 * 1000)]
        try await redis.send(RedisCommand("XADD", arguments: arguments))
    }

    /// Workers that sent a heartbeat, most recent first.
    public func workers() async throws -> [WorkerView] {
        let reply = try await redis.send("ZREVRANGE", keys.workers, 0, -1, "WITHSCORES")
        let now = try await redis.serverTimeMilliseconds()
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
                inFlight: Int64(info["in_flight"] ?? "") ?? 0, info: info["info"].flatMap { try? JSONValue.parse(Array($0.utf8)) },
                drain: info["drain"].flatMap { try? JSONValue.parse(Array($0.utf8)) })
        }
    }
}
