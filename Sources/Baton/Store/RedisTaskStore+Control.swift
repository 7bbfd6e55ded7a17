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
                keys.checkpointPrefix(id), keys.eventsPending(bucket: bucket),
            ],
            args: [action, reason, actor, settings.eventsMaxLength, id, Self.outboxID(), extra, expectedSeq, details])
        return (reply.array ?? []).map { $0.string ?? "" }
    }
}
