import Foundation
import RedisClient

extension RedisTaskStore {
    /// Stores a dead letter taken in from `baton.dead` with its fingerprint, and counts it in its fingerprint
    /// group, in one script: a redelivered dead letter (same id) is stored and counted once.
    ///
    /// `fields` are the letter's fields (`reason`, `error`, `task_id`, `agent`, `step`, `bucket`, `dead_at`,
    /// `body`, …); `id` and `fingerprint` are computed here when absent. The letter is scored (listed, grouped and
    /// expired by `limits.dead_letter_retention`) by Redis's clock, like every other time the sweeps compare, unless
    /// `now` is given (tests that need an old letter). Returns the id and whether it was new.
    @discardableResult
    public func recordDeadLetter(_ fields: [String: String], now: Date? = nil) async throws -> (id: String, stored: Bool) {
        var fields = fields
        func value(_ key: String) -> String? { fields[key].flatMap { $0.isEmpty ? nil : $0 } }
        let reason = fields["reason"] ?? ""
        let error = fields["error"] ?? ""
        if value("dead_at") == nil { fields["dead_at"] = ISO8601DateFormatter.fractional.string(from: now ?? Date()) }
        let id = value("id") ?? Self.deadLetterID(fields)
        fields["id"] = id
        let fingerprint =
            value("fingerprint")
            ?? DeadLetterFingerprint.compute(
                agent: value("agent"), step: value("step"), bucket: value("bucket"), reason: reason, message: error,
                taskID: value("task_id"))
        fields["fingerprint"] = fingerprint
        let bucket = keys.bucket(of: id)
        var args: [any RedisArgumentConvertible] = [
            now.map { String(Int64($0.timeIntervalSince1970 * 1000)) } ?? "", id, fingerprint, String(error.prefix(1000)),
            value("agent") ?? "",
            value("step") ?? "", value("bucket") ?? reason,
        ]
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            args.append(key)
            args.append(value)
        }
        let reply = try await redis.evalSHA(
            Self.addDeadLetterScript,
            keys: [
                keys.deadItem(bucket: bucket, id: id), keys.dead(bucket: bucket), keys.deadGroup(bucket: bucket, fingerprint: fingerprint),
                keys.deadGroups(bucket: bucket),
            ],
            args: args)
        return (id, reply.int == 1)
    }

    /// Removes a dead letter (after a redrive or a discard) and uncounts it from its fingerprint group, in one
    /// script. Returns false when it was already gone.
    @discardableResult
    public func deleteDeadLetter(_ id: String) async throws -> Bool {
        let bucket = keys.bucket(of: id)
        let reply = try await redis.evalSHA(
            Self.removeDeadLetterScript,
            keys: [
                keys.deadItem(bucket: bucket, id: id), keys.dead(bucket: bucket), keys.deadGroupPrefix(bucket: bucket),
                keys.deadGroups(bucket: bucket),
            ],
            args: [id])
        return reply.int == 1
    }

    /// Discards a dead letter: removes it (``deleteDeadLetter(_:)``), then marks its task discarded, so that retention
    /// deletes the task `limits.retention` later. Returns false when the letter was already gone.
    public func discardDeadLetter(_ id: String) async throws -> Bool {
        let task = try await redis.send(RedisCommand("HGET", keys.deadItem(bucket: keys.bucket(of: id), id: id), "task_id")).string
        guard try await deleteDeadLetter(id) else { return false }
        // After the letter is gone (a crash in between keeps the task, never a letter without its task).
        if let task, !task.isEmpty { try await markDeadLetterDiscarded(task: task) }
        return true
    }

    /// Discards the dead letters taken in more than `olderThan` ago (`limits.dead_letter_retention`), oldest first, at
    /// most `limit` of each bucket; returns how many. An operator who never drains `baton dead` would otherwise keep
    /// every dead letter, and its task, forever.
    public func expireDeadLetters(olderThan: Duration, limit: Int = 100) async throws -> Int {
        let now = try await redis.serverTimeMilliseconds()
        let cutoff = now - olderThan.wholeMilliseconds
        let replies = try await redis.pipeline(
            (0..<keys.bucketCount).map { RedisCommand("ZRANGEBYSCORE", keys.dead(bucket: $0), "-inf", cutoff, "LIMIT", 0, limit) })
        var expired = 0
        for id in replies.flatMap({ ($0.array ?? []).compactMap(\.string) }) {
            do {
                if try await discardDeadLetter(id) { expired += 1 }
            } catch {
                // What was discarded is reported (and audited); the rest waits for the next round.
                if expired > 0 { return expired }
                throw error
            }
        }
        return expired
    }

    /// A stable id, so a redelivered dead letter is stored once: FNV-1a of when, why, the body and the task.
    static func deadLetterID(_ fields: [String: String]) -> String {
        var hash: UInt64 = 14_695_981_039_346_656_037
        for byte in ((fields["dead_at"] ?? "") + (fields["reason"] ?? "") + (fields["body"] ?? "") + (fields["task_id"] ?? "")).utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 1_099_511_628_211
        }
        return TaskID.hex(hash, width: 16)
    }

    /// KEYS: item, dead zset, group hash, groups set. ARGV: now ms, id, fingerprint, sample, agent, step, bucket,
    /// then the item's field/value pairs.
    static let addDeadLetterScript = RedisScript(
        """
        if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
        local now = tonumber(ARGV[1])
        if not now then
          local t = redis.call('TIME')
          now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        end
        local fields = {}
        for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
        redis.call('HSET', KEYS[1], unpack(fields))
        redis.call('ZADD', KEYS[2], now, ARGV[2])
        local count = redis.call('HINCRBY', KEYS[3], 'count', 1)
        local first = tonumber(redis.call('HGET', KEYS[3], 'first_seen') or '')
        local last = tonumber(redis.call('HGET', KEYS[3], 'last_seen') or '')
        if count == 1 or not first or now < first then redis.call('HSET', KEYS[3], 'first_seen', now) end
        if count == 1 or not last or now >= last then
          redis.call('HSET', KEYS[3], 'last_seen', now, 'sample', ARGV[4])
        end
        redis.call('HSET', KEYS[3], 'agent', ARGV[5], 'step', ARGV[6], 'bucket', ARGV[7])
        redis.call('SADD', KEYS[4], ARGV[3])
        return 1
        """)

    /// KEYS: item, dead zset, group key prefix, groups set. ARGV: id. The group lives in the item's bucket (same
    /// hash tag), so its key is built here from the fingerprint stored on the item.
    static let removeDeadLetterScript = RedisScript(
        """
        local fingerprint = redis.call('HGET', KEYS[1], 'fingerprint')
        redis.call('ZREM', KEYS[2], ARGV[1])
        if redis.call('DEL', KEYS[1]) == 0 then return 0 end
        if fingerprint and fingerprint ~= '' then
          local count = redis.call('HINCRBY', KEYS[3] .. fingerprint, 'count', -1)
          if count <= 0 then
            redis.call('DEL', KEYS[3] .. fingerprint)
            redis.call('SREM', KEYS[4], fingerprint)
          end
        end
        return 1
        """)
}
