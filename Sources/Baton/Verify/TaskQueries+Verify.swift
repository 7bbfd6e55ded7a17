import Foundation
import RedisClient

extension TaskQueries {
    /// The root task ids of a run (`baton:run:{id}`, filled at submit from the label `run=<id>`), without `KEYS`.
    public func runTasks(_ run: String) async throws -> [String] {
        var ids: [String] = []
        var cursor = "0"
        repeat {
            let reply = try await redis.send("SSCAN", keys.run(run), cursor, "COUNT", 1000)
            let parts = reply.array ?? []
            cursor = parts.first?.string ?? "0"
            ids.append(contentsOf: (parts.dropFirst().first?.array ?? []).compactMap(\.string))
        } while cursor != "0"
        return ids.sorted()
    }

    /// Everything `baton verify` checks of run `run`: its tasks (from the run index, and their children) with their
    /// hashes, histories, checkpoints and outboxes, the dead letters that name them, and the effects sink at
    /// `effectsPath` (nil: no sink).
    public func runSnapshot(run: String, effectsPath: String?, batch: Int = 200) async throws -> RunSnapshot {
        let roots = try await runTasks(run)
        let now = try await redis.serverTimeMilliseconds()
        var tasks: [String: RunSnapshot.TaskRecord] = [:]
        var pending = roots
        while !pending.isEmpty {
            let ids = Array(pending.prefix(batch))
            pending.removeFirst(ids.count)
            let commands = ids.flatMap { id -> [RedisCommand] in
                let k = keys.of(id)
                return [
                    RedisCommand("HGETALL", k.task), RedisCommand("HGETALL", k.budget), RedisCommand("XRANGE", k.events, "-", "+"),
                    RedisCommand("HLEN", k.outbox),
                ]
            }
            let replies = try await redis.pipeline(commands)
            var found: [RunSnapshot.TaskRecord] = []
            for (i, id) in ids.enumerated() {
                let fields = Self.hash(replies[i * 4])
                guard !fields.isEmpty else { continue }
                var events: [TaskEvent] = []
                for entry in replies[i * 4 + 2].array ?? [] {
                    guard let parts = entry.array, parts.count == 2, let eventID = parts[0].string else { continue }
                    let e = Self.hash(parts[1])
                    events.append(
                        TaskEvent(
                            id: eventID, type: e["type"] ?? "", seq: Int64(e["seq"] ?? "") ?? 0, branch: Int64(e["branch"] ?? "") ?? 0,
                            step: e["step"].flatMap { $0.isEmpty ? nil : $0 }, at: e["at"] ?? "",
                            data: e["data"].flatMap { try? JSONValue.parse(Array($0.utf8)) }))
                }
                let childCount = Int64(fields["children_total"] ?? "") ?? 0
                let children = childCount > 0 ? (1...childCount).map { "\(id)/\($0)" } : []
                found.append(
                    RunSnapshot.TaskRecord(
                        id: id, fields: fields, budget: Self.hash(replies[i * 4 + 1]), events: events, checkpoint: nil,
                        outbox: Int(replies[i * 4 + 3].int ?? 0), children: children))
                pending.append(contentsOf: children)
            }
            let checkpoints = try await redis.pipeline(
                found.map { RedisCommand("GET", keys.checkpoint($0.id, seq: Int64($0.fields["seq"] ?? "") ?? 0)) })
            for (record, reply) in zip(found, checkpoints) {
                var record = record
                record.checkpoint = reply.string.flatMap { try? JSONValue.parse(Array($0.utf8)) }
                tasks[record.id] = record
            }
        }
        let (effects, malformed) = try effectsPath.map { try EffectsSink.read(path: $0) } ?? ([], [])
        var snapshot = RunSnapshot(
            run: run, nowMilliseconds: now, roots: roots, tasks: tasks, effects: effects, malformedEffectLines: malformed,
            deadLetters: try await deadLetterRefs(naming: Set(tasks.keys).union(roots)))
        snapshot.tenantDays = try await tenantDays(tasks.values, now: now)
        return snapshot
    }

    /// The daily counters of the tenants (with limits in this configuration) of `tasks`, for every UTC day from the
    /// first task's creation to the last update.
    func tenantDays(_ tasks: some Sequence<RunSnapshot.TaskRecord>, now: Int64) async throws -> [RunSnapshot.TenantDay] {
        let budgets = store.settings.tenantBudgets
        var spans: [String: (first: Int64, last: Int64)] = [:]
        for task in tasks {
            guard let tenant = task.fields["tenant"], budgets.hasLimits(tenant) else { continue }
            let created = Int64(task.fields["created_at"] ?? "") ?? now
            let updated = Int64(task.fields["updated_at"] ?? "") ?? now
            let span = spans[tenant] ?? (created, updated)
            spans[tenant] = (min(span.first, created), max(span.last, updated))
        }
        var days: [(tenant: String, day: String)] = []
        for (tenant, span) in spans.sorted(by: { $0.key < $1.key }) {
            func day(_ ms: Int64) -> String { TenantBudgets.day(Date(timeIntervalSince1970: Double(ms) / 1000)) }
            var names: [String] = []
            var ms = span.first
            while ms < span.last, names.count < 31 {
                if names.last != day(ms) { names.append(day(ms)) }
                ms += 86_400_000
            }
            if names.last != day(span.last) { names.append(day(span.last)) }
            days.append(contentsOf: names.map { (tenant, $0) })
        }
        let replies = try await redis.pipeline(
            days.map { RedisCommand("HMGET", store.tenantKeyPrefix + "{\($0.tenant)}:" + $0.day, "cost", "tokens") })
        return zip(days, replies).compactMap { day, reply in
            guard let limits = budgets.limits[day.tenant] else { return nil }
            let values = (reply.array ?? []).map { $0.string.flatMap { Int64($0) } ?? 0 }
            return RunSnapshot.TenantDay(
                tenant: day.tenant, day: day.day, costMicros: values.first ?? 0, tokens: values.count > 1 ? values[1] : 0, limits: limits)
        }
    }

    /// The dead letters in Redis whose task is one of `ids` (reads every letter's task id and reason, pipelined).
    func deadLetterRefs(naming ids: Set<String>) async throws -> [RunSnapshot.DeadLetterRef] {
        guard !ids.isEmpty else { return [] }
        let lists = try await redis.pipeline((0..<keys.bucketCount).map { RedisCommand("ZRANGE", keys.dead(bucket: $0), 0, -1) })
        var letters: [(bucket: Int, id: String)] = []
        for (bucket, reply) in lists.enumerated() {
            letters.append(contentsOf: (reply.array ?? []).compactMap(\.string).map { (bucket, $0) })
        }
        var refs: [RunSnapshot.DeadLetterRef] = []
        var start = 0
        while start < letters.count {
            let slice = letters[start..<min(letters.count, start + 1000)]
            start += slice.count
            let replies = try await redis.pipeline(
                slice.map { RedisCommand("HMGET", keys.deadItem(bucket: $0.bucket, id: $0.id), "task_id", "reason") })
            for (letter, reply) in zip(slice, replies) {
                let values = reply.array ?? []
                guard let task = values.first?.string, ids.contains(task) else { continue }
                refs.append(.init(id: letter.id, taskID: task, reason: values.dropFirst().first?.string ?? ""))
            }
        }
        return refs
    }
}
