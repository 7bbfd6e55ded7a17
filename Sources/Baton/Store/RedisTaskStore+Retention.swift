import RedisClient

extension RedisTaskStore {
    static let purgeFinishedScript = RedisScript(Scripts.purgeFinished)

    /// The statuses whose tasks retention deletes. A dead-lettered task is kept: `baton dead redrive` needs it.
    public static let purgeableStatuses = ["succeeded", "failed", "cancelled", "budget_exceeded"]

    /// What one retention round did.
    public struct PurgeResult: Sendable, Equatable {
        /// Tasks deleted.
        public var purged = 0
        /// Tasks past their retention kept for now: events, webhooks or outbox messages not out yet, or children
        /// still running.
        public var pending = 0
        /// Whether some index had more candidates than `limit`: call again.
        public var more = false
    }

    /// Deletes every key of the finished tasks (``purgeableStatuses``) that ended at least `olderThan` ago by Redis's
    /// clock: task hash, budget, history, checkpoints, effects, signals, children's results, and the status index
    /// entry. Looks at most `limit` candidates per bucket and status. Each task is checked and deleted in one script,
    /// so any number of workers may run this at once.
    public func purgeFinished(olderThan retention: Duration, limit: Int = 500) async throws -> PurgeResult {
        let retentionMilliseconds = retention.wholeMilliseconds
        let time = try await redis.send("TIME").array ?? []
        let now = (Int64(time.first?.string ?? "") ?? 0) * 1000 + (Int64(time.dropFirst().first?.string ?? "") ?? 0) / 1000
        let cutoff = now - retentionMilliseconds
        var lookups: [(bucket: Int, status: String)] = []
        var commands: [RedisCommand] = []
        for bucket in 0..<keys.bucketCount {
            for status in Self.purgeableStatuses {
                lookups.append((bucket, status))
                commands.append(
                    RedisCommand("ZRANGEBYSCORE", keys.index(bucket: bucket, status: status), "-inf", cutoff, "LIMIT", 0, limit))
            }
        }
        var result = PurgeResult()
        var purges: [RedisCommand] = []
        // Checkpoints below the task's seq: those kept, and some that a larger `checkpoints_kept` left before.
        let window = settings.checkpointsKept + 64
        for (lookup, reply) in zip(lookups, try await redis.pipeline(commands)) {
            let ids = (reply.array ?? []).compactMap(\.string)
            if ids.count >= limit { result.more = true }
            for id in ids {
                purges.append(
                    .evalSHA(
                        Self.purgeFinishedScript,
                        keys: [
                            keys.task(id), keys.indexPrefix(bucket: lookup.bucket), keys.eventsPending(bucket: lookup.bucket),
                            keys.webhooksDue(bucket: lookup.bucket),
                        ], args: [id, retentionMilliseconds, window, lookup.status]))
            }
        }
        guard !purges.isEmpty else { return result }
        for reply in try await redis.pipeline(purges) {
            switch reply.string {
            case "purged": result.purged += 1
            case "pending": result.pending += 1
            default: break
            }
        }
        return result
    }
}
