import RedisClient

extension RedisTaskStore {
    /// Runs an operator or sweep action on one task (cancel, pause, resume, redrive, stalled, dead); returns
    /// the script's answer (`[outcome, status]`). For a fork, `extra` is the seq of the checkpoint and
    /// `expectedSeq` the step (empty: the one the history names). For a redrive, `extra` is a new input (JSON; empty keeps it) and
    /// `details` a JSON object added to the `redriven` event.
    public func control(
        task id: String, action: String, reason: String, actor: String, extra: String = "", expectedSeq: String = "", details: String = ""
    ) async throws -> [String] {
        let bucket = keys.bucket(of: id)
        let reply = try await redis.evalSHA(
            Self.controlScript,
            keys: [
                keys.task(id), keys.events(id), keys.indexPrefix(bucket: bucket), keys.outbox(id), keys.outboxIndex(bucket: bucket),
                keys.checkpointPrefix(id), keys.workers, keys.eventsPending(bucket: bucket),
            ],
            args: [action, reason, actor, settings.eventsMaxLength, id, Self.outboxID(), extra, expectedSeq, details])
        return (reply.array ?? []).map { $0.string ?? "" }
    }

    /// Republishes `id` from its checkpoint when its step's worker vanished: status `running` and the lease expired,
    /// and its holder silent (no heartbeat within `worker.stale_after`) or the lease expired longer than that ago. A
    /// holder that still heartbeats is alive but late (a stall outlived its lease): it gets `worker.stale_after` more,
    /// as republishing would run its step, and a side effect in flight, a second time. Answers `[outcome, status]`:
    /// `republished` or `live`.
    public func republishStalled(task id: String, actor: String) async throws -> [String] {
        try await control(
            task: id, action: "stalled", reason: "lease expired", actor: actor, extra: "0",
            expectedSeq: String(settings.workerStaleMilliseconds))
    }
}

extension RedisTaskStore {
    /// Raises a task's limits (the raise script): answers `[outcome, …]` — `missing`, `terminal status`,
    /// `no_limit field`, `still kind words`, `raised status` or `resumed queued` (its parked step in the outbox).
    public func raiseBudget(task id: String, _ raise: BudgetRaise, reason: String, actor: String) async throws -> [String] {
        let bucket = keys.bucket(of: id)
        var args: [any RedisArgumentConvertible] = [
            id, actor, reason, settings.eventsMaxLength, Self.outboxID(), settings.tenantBudgets.json, tenantKeyPrefix,
        ]
        for change in raise.changes {
            args.append(change.field)
            args.append(change.relative ? "+" : "=")
            args.append(change.value)
        }
        let reply = try await redis.evalSHA(
            Self.raiseScript,
            keys: [
                keys.task(id), keys.budget(id), keys.events(id), keys.indexPrefix(bucket: bucket), keys.outbox(id),
                keys.outboxIndex(bucket: bucket), keys.eventsPending(bucket: bucket),
            ],
            args: args)
        if let error = reply.errorMessage { throw BatonError(.internalError, "Redis rejected the raise script: \(error)") }
        return (reply.array ?? []).map { $0.string ?? "" }
    }
}
