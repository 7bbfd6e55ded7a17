import RedisClient

extension RedisTaskStore {
    static let purgeFinishedScript = RedisScript(Scripts.purgeFinished)

    /// KEYS: task, discarded (its bucket's). ARGV: id.
    static let markDiscardedScript = RedisScript(
        """
        if redis.call('HGET', KEYS[1], 'status') ~= 'dead_lettered' then return 0 end
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('HSET', KEYS[1], 'dead_discarded_at', now)
        redis.call('ZADD', KEYS[2], now, ARGV[1])
        return 1
        """)

    /// Records that an operator discarded the dead letter of task `id` (a no-op unless it is dead-lettered): retention
    /// then deletes the task `limits.retention` after the discard. Dead-lettered again later (after a redrive), it
    /// is kept again until that dead letter is discarded too.
    @discardableResult
    public func markDeadLetterDiscarded(task id: String) async throws -> Bool {
        let reply = try await redis.evalSHA(
            Self.markDiscardedScript, keys: [keys.task(id), keys.discarded(bucket: keys.bucket(of: id))], args: [id])
        return reply.int == 1
    }

    /// The statuses whose tasks retention deletes. A dead-lettered task is kept while its dead letter is (`baton dead
    /// redrive` needs it), and deleted `limits.retention` after an operator discards the letter.
    public static let purgeableStatuses = ["succeeded", "failed", "cancelled", "budget_exceeded"]

    /// What one retention round did.
    public struct PurgeResult: Sendable, Equatable {
        /// Tasks deleted.
        public var purged = 0
        /// Tasks past their retention kept for now: events, webhooks or outbox messages not out yet, or children
        /// still running.
        public var pending = 0
        /// Whether some index had more candidates than the pages looked at: call again.
        public var more = false
    }

    /// Deletes every key of the finished tasks (``purgeableStatuses``) that ended at least `olderThan` ago by Redis's
    /// clock: task hash, budget, history, checkpoints, effects, signals, children's results, and the status index
    /// entry. Each task is checked and deleted in one script, so any number of workers may run this at once.
    ///
    /// Reads each bucket's status index oldest first, `limit` candidates at a time and up to `pages` pages, past the
    /// tasks it has to keep for now (a head of tasks whose webhooks are still retried does not block the rest);
    /// sends the scripts `chunk` at a time, so a backlog never holds Redis for long.
    public func purgeFinished(olderThan retention: Duration, limit: Int = 100, pages: Int = 3, chunk: Int = 200) async throws
        -> PurgeResult
    {
        let retentionMilliseconds = retention.wholeMilliseconds
        let now = try await redis.serverTimeMilliseconds()
        let cutoff = now - retentionMilliseconds
        // Checkpoints below the task's seq: those kept, and some that a larger `checkpoints_kept` left before.
        let window = settings.checkpointsKept + 64
        // Each bucket's status indexes, and its discarded dead-lettered tasks (`status` "discarded").
        let indexes = (0..<keys.bucketCount).flatMap { bucket in
            (Self.purgeableStatuses + ["discarded"]).map { (bucket: bucket, status: $0) }
        }
        // Per index, the entries before the next page: those kept (a purged or missing task leaves the index).
        var offsets = [Int](repeating: 0, count: indexes.count)
        var open = Array(indexes.indices)
        var result = PurgeResult()
        for _ in 0..<max(1, pages) where !open.isEmpty {
            let pageReplies = try await redis.pipeline(
                open.map { index in
                    let (bucket, status) = indexes[index]
                    let key = status == "discarded" ? keys.discarded(bucket: bucket) : keys.index(bucket: bucket, status: status)
                    return RedisCommand("ZRANGEBYSCORE", key, "-inf", cutoff, "LIMIT", offsets[index], limit)
                })
            var purges: [(index: Int, command: RedisCommand)] = []
            var stillOpen: [Int] = []
            for (index, reply) in zip(open, pageReplies) {
                let ids = (reply.array ?? []).compactMap(\.string)
                if ids.count >= limit { stillOpen.append(index) }
                offsets[index] += ids.count
                let (bucket, status) = indexes[index]
                for id in ids {
                    let command = RedisCommand.evalSHA(
                        Self.purgeFinishedScript,
                        keys: [
                            keys.task(id), keys.indexPrefix(bucket: bucket), keys.eventsPending(bucket: bucket),
                            keys.webhooksDue(bucket: bucket), keys.discarded(bucket: bucket),
                        ],
                        args: [id, retentionMilliseconds, window, status])
                    purges.append((index, command))
                }
            }
            var start = 0
            while start < purges.count {
                let batch = purges[start..<min(start + max(1, chunk), purges.count)]
                start = batch.endIndex
                for (purge, reply) in zip(batch, try await redis.pipeline(batch.map(\.command))) {
                    switch reply.string {
                    case "purged":
                        result.purged += 1
                        offsets[purge.index] -= 1
                    case "missing", "dropped": offsets[purge.index] -= 1
                    case "pending": result.pending += 1
                    default: break
                    }
                }
            }
            open = stillOpen
        }
        result.more = !open.isEmpty
        return result
    }
}
