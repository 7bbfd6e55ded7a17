import Foundation
import RedisClient

extension RedisTaskStore {
    public func signal(_ signal: TaskSignal) async throws -> SignalOutcome {
        let id = signal.task
        let bucket = keys.bucket(of: id)
        let reply = try await redis.evalSHA(
            Self.signalScript,
            keys: [
                keys.task(id), keys.signals(id), keys.signalsSeen(id), keys.events(id), keys.outbox(id), keys.outboxIndex(bucket: bucket),
                keys.indexPrefix(bucket: bucket), keys.timers(bucket: bucket), keys.eventsPending(bucket: bucket),
            ],
            args: [
                id, signal.name, signal.payloadJSON, signal.id, signal.actor, signal.reason, settings.eventsMaxLength, Self.outboxID(),
                settings.signalMailboxCap, SignalLimits.seenIDsKept, signal.eventDataJSON,
            ])
        let parts = (reply.array ?? []).map { $0.string ?? "" }
        let status = parts.count > 1 ? parts[1] : ""
        switch parts.first ?? "" {
        case "woke": return .woke
        case "stored": return .stored(status: status)
        case "duplicate": return .duplicate(status: status)
        case "missing": return .notFound
        case "terminal": return .terminal(status: status)
        case "full": return .mailboxFull(cap: settings.signalMailboxCap)
        default: throw BatonError(.internalError, "the signal script answered '\(parts.first ?? "")'")
        }
    }

    public func fireWaitTimer(task id: String, timer: String) async throws -> Bool {
        try await fireWaitTimers([(id, timer)]).first??.outboxID != nil
    }

    /// A woken task's resumed step, as written to its outbox.
    public struct WokenStep: Sendable {
        public var task: String
        public var outboxID: String
        public var message: OutboxMessage
    }

    /// Fires many wait timers in one pipeline (one script each: each still decides alone whether its task
    /// wakes). Returns, per timer, the resumed step written to the outbox, or nil when the timer lost.
    public func fireWaitTimers(_ timers: [(task: String, timer: String)]) async throws -> [WokenStep?] {
        let commands = timers.map { id, timer in
            let bucket = keys.bucket(of: id)
            return RedisCommand.evalSHA(
                Self.fireWaitTimerScript,
                keys: [
                    keys.task(id), keys.events(id), keys.outbox(id), keys.outboxIndex(bucket: bucket), keys.indexPrefix(bucket: bucket),
                    keys.timers(bucket: bucket), keys.eventsPending(bucket: bucket),
                ],
                args: [id, timer, settings.eventsMaxLength, Self.outboxID()])
        }
        let replies = try await redis.pipeline(commands)
        return zip(timers, replies).map { timer, reply in
            let parts = reply.array ?? []
            guard parts.first?.string == "woke", parts.count >= 4, let outboxID = parts[2].string, let bytes = parts[3].bytes,
                let message = try? JSONCoding.decoder.decode(OutboxMessage.self, from: Data(bytes))
            else { return nil }
            return WokenStep(task: timer.task, outboxID: outboxID, message: message)
        }
    }

    /// The wait and sleep timers of every bucket that come due within `lead` and no earlier round returned
    /// (``Scripts/claimPrewarm``), as `(task, timer member)`.
    public func claimPrewarm(lead: Duration, limit: Int = 200) async throws -> [(task: String, timer: String)] {
        let buckets = 0..<keys.bucketCount
        let reply = try await redis.evalSHA(
            Self.claimPrewarmScript, keys: buckets.map { keys.timers(bucket: $0) } + buckets.map { keys.prewarm(bucket: $0) },
            args: [lead.wholeMilliseconds, limit])
        let flat = (reply.array ?? []).compactMap(\.string)
        return stride(from: 1, to: flat.count, by: 2).compactMap { index in
            Sweeps.waitTimerTask(flat[index]).map { ($0, flat[index]) }
        }
    }

    /// Appends a `waking_soon` event to each task that still waits on its timer, for a wait longer than `lead`, once
    /// per wait (``Scripts/prewarn``). Returns the tasks told, and the errors of the scripts that failed (their tasks'
    /// events are lost: the claim already moved past their timers).
    public func prewarn(_ timers: [(task: String, timer: String)], lead: Duration) async throws -> (told: [String], errors: [String]) {
        guard !timers.isEmpty else { return ([], []) }
        let replies = try await redis.pipeline(
            timers.map { id, timer in
                RedisCommand.evalSHA(
                    Self.prewarnScript, keys: [keys.task(id), keys.events(id), keys.eventsPending(bucket: keys.bucket(of: id))],
                    args: [timer, lead.wholeMilliseconds, settings.eventsMaxLength])
            })
        let told = zip(timers, replies).compactMap { timer, reply in reply.int == 1 ? timer.task : nil }
        return (told, replies.compactMap(\.errorMessage))
    }
}
