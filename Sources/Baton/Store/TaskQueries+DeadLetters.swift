import Foundation
import RedisClient

/// Which dead letters a list, a group-by or a bulk action selects. Every set field must match; an empty filter
/// selects all.
public struct DeadLetterFilter: Sendable, Hashable, CustomStringConvertible {
    public var agent: String?
    public var step: String?
    /// The failure bucket (e.g. `provider_5xx`).
    public var bucket: String?
    /// The dead-letter reason (`retries_exhausted`, `permanent_error`, `delivery_limit`, `malformed`, …).
    public var reason: String?
    public var fingerprint: String?
    /// Only letters taken in within this many milliseconds.
    public var sinceMilliseconds: Int64?

    public init(
        agent: String? = nil, step: String? = nil, bucket: String? = nil, reason: String? = nil, fingerprint: String? = nil,
        sinceMilliseconds: Int64? = nil
    ) {
        self.agent = agent
        self.step = step
        self.bucket = bucket
        self.reason = reason
        self.fingerprint = fingerprint
        self.sinceMilliseconds = sinceMilliseconds
    }

    public var isEmpty: Bool { self == DeadLetterFilter() }

    public func matches(_ letter: DeadLetterView) -> Bool {
        (agent == nil || letter.agent == agent) && (step == nil || letter.step == step) && (bucket == nil || letter.bucket == bucket)
            && (reason == nil || letter.reason == reason) && (fingerprint == nil || letter.fingerprint == fingerprint)
    }

    /// `agent=report step=outline since=3600000ms`, or `all` for the empty filter: how the audit stream records it.
    public var description: String {
        let parts = [
            agent.map { "agent=\($0)" }, step.map { "step=\($0)" }, bucket.map { "bucket=\($0)" }, reason.map { "reason=\($0)" },
            fingerprint.map { "fingerprint=\($0)" }, sinceMilliseconds.map { "since=\($0)ms" },
        ]
        .compactMap { $0 }
        return parts.isEmpty ? "all" : parts.joined(separator: " ")
    }
}

/// What dead letters are grouped by in `baton dead list --group-by`.
public enum DeadLetterGrouping: String, Sendable, CaseIterable {
    case fingerprint, agent, step, bucket, reason
}

/// One group of dead letters (`baton dead list --group-by …`).
public struct DeadLetterGroup: Codable, Sendable, Hashable {
    /// What the group is by (`fingerprint`, `agent`, …).
    public var groupBy: String
    /// The group's value: the fingerprint, the agent name, …; `-` for letters without one.
    public var key: String
    public var count: Int
    /// When the group's first and last letters were taken in (ISO-8601).
    public var firstSeen: String
    public var lastSeen: String
    /// The error message of the group's most recent letter.
    public var sample: String
    /// For a fingerprint group: what the fingerprint is of.
    public var agent: String?
    public var step: String?
    public var bucket: String?

    enum CodingKeys: String, CodingKey {
        case groupBy = "group_by"
        case key, count
        case firstSeen = "first_seen"
        case lastSeen = "last_seen"
        case sample, agent, step, bucket
    }
}

/// One entry of the audit stream `baton:audit`.
public struct AuditEntry: Codable, Sendable, Hashable {
    public var id: String
    public var at: String
    public var actor: String
    public var action: String
    /// The task or dead letter, or for a bulk action the ids it acted on (at most 50, then `…`).
    public var target: String?
    /// The filter of a bulk action (`agent=x bucket=y`, `all`), or nil for an action on named targets.
    public var filter: String?
    public var count: Int
    public var reason: String
}

extension TaskQueries {
    /// The fields of a dead letter but its body (which may be large): what filters and groups need.
    static let deadLetterFields = [
        "id", "task_id", "agent", "step", "seq", "branch", "reason", "error", "field", "bucket", "attempts", "worker", "dead_at",
        "fingerprint",
    ]

    /// The dead letters that match `filter`, newest first: at most `limit` of them, and how many match in all.
    ///
    /// Reads every dead-letter id (within `since`) and then the letters in chunks, without their bodies; the
    /// bodies of the letters returned are read when `withBody`. With a `limit` it stops reading letters once the
    /// page is full (`total` is then nil).
    public func deadLetters(matching filter: DeadLetterFilter, limit: Int? = nil, withBody: Bool = true) async throws -> (
        items: [DeadLetterView], total: Int?, scores: [String: Int64]
    ) {
        var (items, total, scores) = try await scanDeadLetters(filter, limit: limit)
        if withBody {
            for start in stride(from: 0, to: items.count, by: 200) {
                let range = start..<min(items.count, start + 200)
                let bodies = try await redis.pipeline(
                    items[range].map { RedisCommand("HGET", keys.deadItem(bucket: keys.bucket(of: $0.id), id: $0.id), "body") })
                for (index, body) in zip(range, bodies) { items[index].body = body.string ?? "" }
            }
        }
        return (items, total, scores)
    }

    func scanDeadLetters(_ filter: DeadLetterFilter, limit: Int?) async throws -> (
        items: [DeadLetterView], total: Int?, scores: [String: Int64]
    ) {
        // Letters are scored by Redis's clock at intake: the window is counted back from Redis's now, not this machine's.
        var minScore = "-inf"
        if let since = filter.sinceMilliseconds { minScore = String(try await redis.serverTimeMilliseconds() - since) }
        let replies = try await redis.pipeline(
            (0..<keys.bucketCount).map { RedisCommand("ZREVRANGEBYSCORE", keys.dead(bucket: $0), "+inf", minScore, "WITHSCORES") })
        var entries: [(id: String, bucket: Int, score: Int64)] = []
        for (bucket, reply) in replies.enumerated() {
            let flat = reply.array ?? []
            var index = 0
            while index + 1 < flat.count {
                if let id = flat[index].string { entries.append((id, bucket, Int64(flat[index + 1].string ?? "") ?? 0)) }
                index += 2
            }
        }
        entries.sort { $0.score != $1.score ? $0.score > $1.score : $0.id > $1.id }
        var items: [DeadLetterView] = []
        var scores: [String: Int64] = [:]
        var total = 0
        for start in stride(from: 0, to: entries.count, by: 200) {
            let chunk = entries[start..<min(entries.count, start + 200)]
            let letters = try await redis.pipeline(
                chunk.map { RedisCommand("HMGET", arguments: [keys.deadItem(bucket: $0.bucket, id: $0.id)] + Self.deadLetterFields) })
            for (entry, reply) in zip(chunk, letters) {
                var fields: [String: String] = [:]
                for (name, value) in zip(Self.deadLetterFields, reply.array ?? []) { if let value = value.string { fields[name] = value } }
                guard !fields.isEmpty else { continue }
                let letter = DeadLetterView(fields: fields)
                guard !letter.id.isEmpty, filter.matches(letter) else { continue }
                total += 1
                if let limit, items.count >= limit { continue }
                items.append(letter)
                scores[letter.id] = entry.score
            }
            if let limit, items.count >= limit { return (items, nil, scores) }
        }
        return (items, total, scores)
    }

    /// Dead letters grouped, the largest group first. An unfiltered group-by fingerprint reads the group records
    /// kept at intake (cheap) when they count every letter; anything else reads the letters.
    public func deadLetterGroups(by grouping: DeadLetterGrouping, filter: DeadLetterFilter = DeadLetterFilter()) async throws
        -> [DeadLetterGroup]
    {
        var groups: [String: DeadLetterGroup] = [:]
        func add(_ key: String, count: Int, first: Int64, last: Int64, sample: String, agent: String?, step: String?, bucket: String?) {
            let firstText = TaskView.iso(String(first)) ?? ""
            let lastText = TaskView.iso(String(last)) ?? ""
            guard var group = groups[key] else {
                groups[key] = DeadLetterGroup(
                    groupBy: grouping.rawValue, key: key, count: count, firstSeen: firstText, lastSeen: lastText, sample: sample,
                    agent: agent, step: step, bucket: bucket)
                return
            }
            group.count += count
            if firstText < group.firstSeen { group.firstSeen = firstText }
            if lastText > group.lastSeen {
                group.lastSeen = lastText
                group.sample = sample
            }
            groups[key] = group
        }
        // The group records count letters taken in since fingerprints existed; when they do not cover every
        // letter (older ones), read the letters instead.
        var recordsCoverAll = false
        if grouping == .fingerprint && filter.isEmpty {
            let sizes = try await redis.pipeline((0..<keys.bucketCount).map { RedisCommand("ZCARD", keys.dead(bucket: $0)) })
            let total = sizes.compactMap(\.int).reduce(0, +)
            let counts = try await redis.pipeline(
                (0..<keys.bucketCount).map {
                    RedisCommand(
                        "EVAL",
                        "local n = 0 for _, f in ipairs(redis.call('SMEMBERS', KEYS[1])) do n = n + tonumber(redis.call('HGET', ARGV[1] .. f, 'count') or '0') end return n",
                        1, keys.deadGroups(bucket: $0), keys.deadGroupPrefix(bucket: $0))
                })
            recordsCoverAll = counts.compactMap(\.int).reduce(0, +) == total
        }
        if recordsCoverAll {
            let sets = try await redis.pipeline((0..<keys.bucketCount).map { RedisCommand("SMEMBERS", keys.deadGroups(bucket: $0)) })
            let members = sets.enumerated().flatMap { bucket, reply in (reply.array ?? []).compactMap(\.string).map { (bucket, $0) } }
            for start in stride(from: 0, to: members.count, by: 200) {
                let chunk = members[start..<min(members.count, start + 200)]
                let replies = try await redis.pipeline(
                    chunk.map { RedisCommand("HGETALL", keys.deadGroup(bucket: $0.0, fingerprint: $0.1)) })
                for (member, reply) in zip(chunk, replies) {
                    let f = Self.hash(reply)
                    guard let count = Int(f["count"] ?? ""), count > 0 else { continue }
                    func nonEmpty(_ key: String) -> String? { f[key].flatMap { $0.isEmpty ? nil : $0 } }
                    add(
                        member.1, count: count, first: Int64(f["first_seen"] ?? "") ?? 0, last: Int64(f["last_seen"] ?? "") ?? 0,
                        sample: f["sample"] ?? "", agent: nonEmpty("agent"), step: nonEmpty("step"), bucket: nonEmpty("bucket"))
                }
            }
        } else {
            let (letters, _, scores) = try await deadLetters(matching: filter, withBody: false)
            // Oldest first, so the sample ends as the newest letter's message.
            for letter in letters.reversed() {
                let score = scores[letter.id] ?? 0
                let key: String
                switch grouping {
                case .fingerprint: key = letter.fingerprint
                case .agent: key = letter.agent ?? "-"
                case .step: key = letter.step ?? "-"
                case .bucket: key = letter.bucket ?? "-"
                case .reason: key = letter.reason
                }
                let isFingerprint = grouping == .fingerprint
                add(
                    key, count: 1, first: score, last: score, sample: letter.error, agent: isFingerprint ? letter.agent : nil,
                    step: isFingerprint ? letter.step : nil, bucket: isFingerprint ? (letter.bucket ?? letter.reason) : nil)
            }
        }
        return groups.values.sorted { $0.count != $1.count ? $0.count > $1.count : ($0.lastSeen, $0.key) > ($1.lastSeen, $1.key) }
    }

    /// The audit stream, newest first.
    public func auditEntries(limit: Int = 50) async throws -> [AuditEntry] {
        let reply = try await redis.send(RedisCommand("XREVRANGE", keys.audit, "+", "-", "COUNT", limit))
        return (reply.array ?? []).compactMap { entry -> AuditEntry? in
            guard let parts = entry.array, parts.count == 2, let id = parts[0].string else { return nil }
            let f = Self.hash(parts[1])
            func nonEmpty(_ key: String) -> String? { f[key].flatMap { $0.isEmpty ? nil : $0 } }
            return AuditEntry(
                id: id, at: TaskView.iso(f["at"]) ?? "", actor: f["actor"] ?? "", action: f["action"] ?? "", target: nonEmpty("target"),
                filter: nonEmpty("filter"), count: Int(f["count"] ?? "") ?? 0, reason: f["reason"] ?? "")
        }
    }
}
