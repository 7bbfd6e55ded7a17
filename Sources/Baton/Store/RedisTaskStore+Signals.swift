import RedisClient

extension RedisTaskStore {
    public func signal(_ signal: TaskSignal) async throws -> SignalOutcome {
        let id = signal.task
        let bucket = keys.bucket(of: id)
        let reply = try await redis.evalSHA(
            Self.signalScript,
            keys: [
                keys.task(id), keys.signals(id), keys.signalsSeen(id), keys.events(id), keys.outbox(id), keys.outboxIndex(bucket: bucket),
                keys.indexPrefix(bucket: bucket), keys.timers(bucket: bucket),
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
        let bucket = keys.bucket(of: id)
        let reply = try await redis.evalSHA(
            Self.fireWaitTimerScript,
            keys: [
                keys.task(id), keys.events(id), keys.outbox(id), keys.outboxIndex(bucket: bucket), keys.indexPrefix(bucket: bucket),
                keys.timers(bucket: bucket),
            ],
            args: [id, timer, settings.eventsMaxLength, Self.outboxID()])
        return reply.array?.first?.string == "woke"
    }
}
