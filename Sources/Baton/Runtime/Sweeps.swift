import Foundation
import Logging
import RedisClient
import Synchronization

/// The leaderless sweeps every worker runs: due timers, outbox entries left by a crash, stalled tasks, the event
/// relay (``EventRelay``), webhook delivery (``WebhookSender``), and the worker heartbeat. Each claims its work
/// atomically in Redis, so any number of workers may run them.
final class Sweeps: Sendable {
    let store: RedisTaskStore
    let executor: StepExecutor
    let configuration: Worker.Configuration
    let logger: Logger
    private let stopped = Atomic<Bool>(false)
    private let pauses = SweepPauses()
    /// Tasks the outbox sweep re-published without emptying their outbox (each is announced once per process).
    private let retried = Mutex<Set<String>>([])
    /// When this process last warned about each step queue that RabbitMQ has no queue for.
    private let warnedQueues = Mutex<[String: ContinuousClock.Instant]>([:])
    /// Where the stalled sweep's moving page starts in each bucket's active index (none: the next round starts one).
    private enum StalledCursor {
        /// From this score on (the entries at it read again, or past it).
        case from(score: String, inclusive: Bool)
        /// Inside a group of entries that share one score (a parent's children, indexed by one commit), this many in:
        /// such a group larger than a page is walked a page a round, never skipped.
        case within(score: String, offset: Int)

        /// The read of the next page of `key` (entries scored at most `cutoff`).
        func command(_ key: String, cutoff: Int64, page: Int) -> RedisCommand {
            switch self {
            case .from(let score, let inclusive):
                RedisCommand("ZRANGEBYSCORE", key, inclusive ? score : "(" + score, cutoff, "WITHSCORES", "LIMIT", 0, page)
            case .within(let score, let offset):
                RedisCommand("ZRANGEBYSCORE", key, score, score, "WITHSCORES", "LIMIT", offset, page)
            }
        }

        /// Where the next round reads, after this round's page from here (`page` entries at most) came back.
        func next(after entries: [(member: String, score: String)], page: Int) -> StalledCursor? {
            switch self {
            case .within(let score, let offset):
                return entries.count == page ? .within(score: score, offset: offset + page) : .from(score: score, inclusive: false)
            case .from:
                // A short page: the end of the backlog, the next pass starts over.
                guard entries.count == page, let first = entries.first, let last = entries.last else { return nil }
                return first.score == last.score ? .within(score: last.score, offset: page) : .from(score: last.score, inclusive: true)
            }
        }
    }
    private let stalledCursors = Mutex<[Int: StalledCursor]>([:])
    /// Entries the stalled sweep reads per page of a bucket's active index.
    static let stalledPage = 200

    static let heartbeatScript = RedisScript(
        """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('ZADD', KEYS[1], now, ARGV[1])
        -- Workers silent for a day leave the registry (a crashed one never deregisters; autoscaled fleets name each
        -- pod anew): `baton workers` shows a dead worker for a day, and no lease outlives its holder by that much.
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 86400000)
        redis.call('HSET', KEYS[2], 'id', ARGV[1], 'heartbeat_at', now, 'in_flight', ARGV[2], 'info', ARGV[3])
        redis.call('PEXPIRE', KEYS[2], ARGV[4])
        return redis.call('HGET', KEYS[2], 'drain') or ''
        """)

    /// A queued task whose step message no queue takes says so in its `status_reason` (`baton status`, the API);
    /// the claim of its step clears it. KEYS: task. ARGV: reason.
    static let unroutableReasonScript = RedisScript(
        """
        if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
        redis.call('HSET', KEYS[1], 'status_reason', ARGV[1])
        return 1
        """)

    /// Where the event relay publishes (the executor's bus unless given).
    let eventsBus: any MessageBus

    init(
        store: RedisTaskStore, executor: StepExecutor, configuration: Worker.Configuration, logger: Logger,
        eventsBus: (any MessageBus)? = nil
    ) {
        self.eventsBus = eventsBus ?? executor.bus
        self.store = store
        self.executor = executor
        self.configuration = configuration
        self.logger = logger
    }

    var keys: RedisKeys { store.settings.keys }
    var redis: RedisConnection { store.redis }

    func stop() {
        stopped.store(true, ordering: .relaxed)
        pauses.stop()
    }
    var isStopped: Bool { stopped.load(ordering: .relaxed) }

    /// - Parameter onDrainRequest: called (with the request's JSON) when a heartbeat finds a drain request for this
    ///   worker (`baton workers --drain ID`).
    func run(inFlight: @escaping @Sendable () -> Int, onDrainRequest: @escaping @Sendable (String) -> Void = { _ in }) async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.loop(every: self.configuration.timerInterval) { try await self.fireTimers() } }
            group.addTask { await self.loop(every: self.configuration.outboxSweepInterval) { try await self.sweepOutbox() } }
            group.addTask { await self.loop(every: self.configuration.stalledSweepInterval) { try await self.sweepStalled() } }
            if configuration.retention > .zero || configuration.deadLetterRetention > .zero {
                group.addTask {
                    // A second after a round that left a backlog (retention switched on over months of history): up to
                    // 300 tasks per status index and bucket a round; measured, 50,000 succeeded tasks in 16 buckets went
                    // at ~4,300 a second for ~15 % of a Redis core (docs/benchmarks.md), and steps keep going.
                    await self.busyLoop(every: self.configuration.retentionSweepInterval, busyInterval: .seconds(1)) {
                        // Each job on its own: one failing does not hold the other back.
                        var busy = false
                        do { busy = try await self.expireDeadLetters() } catch {
                            self.logger.debug("dead-letter expiry failed; retrying next round", metadata: ["error": "\(error)"])
                        }
                        return try await self.sweepFinished() || busy
                    }
                }
            }
            if configuration.prewarmLead > .zero {
                // Every second, or every lead if shorter, but never more often than the timer sweep.
                let interval = max(self.configuration.timerInterval, min(.seconds(1), self.configuration.prewarmLead))
                group.addTask { await self.loop(every: interval) { try await self.prewarm() } }
            }
            group.addTask {
                let relay = EventRelay(store: self.store, bus: self.eventsBus, logger: self.logger)
                // A round every timer interval (so a busy task's events go out several per round, not one round
                // per event); at once again only while a backlog is left (a full round).
                await self.busyLoop(every: self.configuration.timerInterval) { try await relay.round().full }
            }
            group.addTask {
                let sender = WebhookSender(store: self.store, settings: self.configuration.webhooks, logger: self.logger)
                await sender.run(every: self.configuration.timerInterval * 5) { self.isStopped }
            }
            group.addTask {
                await self.loop(every: self.configuration.heartbeatInterval) {
                    if let request = try await self.heartbeat(inFlight: inFlight()) { onDrainRequest(request) }
                }
            }
        }
    }

    private func loop(every interval: Duration, _ body: @Sendable () async throws -> Void) async {
        while !isStopped && !Task.isCancelled {
            do {
                try await body()
            } catch {
                logger.debug("sweep failed; retrying next round", metadata: ["error": "\(error)"])
            }
            await pause(for: interval)
        }
    }

    /// Sleeps `interval`, or less when the worker stops meanwhile (``SweepPauses``).
    private func pause(for interval: Duration) async { await pauses.pause(for: interval) }

    /// Like ``loop(every:_:)``, but runs the next round at once while a round finds work (the event relay catches
    /// up in batches, then polls).
    /// - Parameter busyInterval: the pause after a round that found work (none: the next round at once).
    private func busyLoop(
        every interval: Duration, busyInterval: Duration = .zero, _ body: @Sendable () async throws -> Bool
    ) async {
        while !isStopped && !Task.isCancelled {
            var busy = false
            do {
                busy = try await body()
            } catch {
                logger.debug("sweep failed; retrying next round", metadata: ["error": "\(error)"])
            }
            await pause(for: busy ? busyInterval : interval)
        }
    }

    /// Records this worker's heartbeat; returns the drain request an operator left for it (its JSON), if any.
    @discardableResult
    func heartbeat(inFlight: Int) async throws -> String? {
        BatonMetrics.setInFlight(worker: configuration.workerID, inFlight)
        let info = JSONValue.object([
            "queues": .array(configuration.queues.map { $0.map(JSONValue.string) } ?? executor.registry.queues.map(JSONValue.string)),
            "agents": .array(executor.registry.names.map(JSONValue.string)), "concurrency": .int(Int64(configuration.concurrency)),
            "pid": .int(Int64(getpid())), "host": .string(ProcessInfo.processInfo.hostName),
            // `baton doctor` warns when live workers disagree (waits between two leads would get no `waking_soon`).
            "prewarm_lead_ms": .int(configuration.prewarmLead.wholeMilliseconds),
        ])
        let ttl = Int64(configuration.heartbeatInterval.components.seconds * 1000) * 15 + 1000
        let drain = try await redis.evalSHA(
            Self.heartbeatScript, keys: [keys.workers, keys.worker(configuration.workerID)],
            args: [configuration.workerID, inFlight, info.jsonString, ttl]
        ).string
        return drain.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Removes this worker from the registry, so leases it still holds count as expired at once.
    func deregister() async throws {
        _ = try await redis.pipeline([
            RedisCommand("ZREM", keys.workers, configuration.workerID), RedisCommand("DEL", keys.worker(configuration.workerID)),
        ])
    }

    /// Publishes the step messages of due timers (retry backoff, sleeps, wait timeouts), then removes them.
    func fireTimers() async throws {
        let reply = try await redis.evalSHA(
            RedisTaskStore.claimTimersScript, keys: (0..<keys.bucketCount).map { keys.timers(bucket: $0) }, args: [200, 30_000])
        let flat = (reply.array ?? []).compactMap(\.string)
        guard !flat.isEmpty else { return }
        // All buckets at once: one pipeline of wake scripts, one confirmed publish, one pipeline of removals.
        var done: [Int: [any RedisArgumentConvertible]] = [:]
        var valid: [(bucket: Int, member: String, message: OutboxMessage)] = []
        var waits: [(task: String, timer: String)] = []
        var waitBuckets: [Int] = []
        var index = 0
        while index + 1 < flat.count {
            defer { index += 2 }
            guard let bucket = Int(flat[index]) else { continue }
            let member = flat[index + 1]
            if let task = Self.waitTimerTask(member) {
                waits.append((task, member))
                waitBuckets.append(bucket)
            } else if let message = try? JSONCoding.decoder.decode(OutboxMessage.self, from: Data(member.utf8)) {
                valid.append((bucket, member, message))
            } else {
                logger.warning("dropping a timer that is not an outbox message", metadata: ["timer": "\(member.prefix(200))"])
                done[bucket, default: []].append(member)
            }
        }
        // Wait and sleep timers: one script each decides whether it still wins (a signal may have won); the
        // resumed steps are published together with the step-message timers. A lost publish stays in the
        // task's outbox for the outbox sweep, so the timer is done either way.
        let woken = waits.isEmpty ? [] : try await store.fireWaitTimers(waits).compactMap { $0 }
        for (bucket, wait) in zip(waitBuckets, waits) { done[bucket, default: []].append(wait.timer) }
        let results = await executor.bus.publish(valid.map(\.message) + woken.map(\.message))
        for (entry, result) in zip(valid, results) where result == nil { done[entry.bucket, default: []].append(entry.member) }
        for (step, result) in zip(woken, results.dropFirst(valid.count)) where result == nil {
            store.outboxDoneWithoutWaiting(task: step.task, ids: [step.outboxID])
        }
        let removals = done.filter { !$0.value.isEmpty }.map { bucket, members in
            RedisCommand("ZREM", arguments: [keys.timers(bucket: bucket)] + members)
        }
        if !removals.isEmpty { _ = try await redis.pipeline(removals) }
    }

    /// Tells the waiting and sleeping tasks whose timer comes due within `sweeps.prewarm_lead` that they wake soon: a
    /// `waking_soon` event (history, `baton.events`, webhooks) for whatever hosts their workspace to warm it up. Best
    /// effort: a worker that dies between finding the timers and telling their tasks loses those events (the tasks
    /// still wake on time).
    func prewarm() async throws {
        let lead = configuration.prewarmLead
        let timers = try await store.claimPrewarm(lead: lead)
        do {
            let (told, errors) = try await store.prewarn(timers, lead: lead)
            if !told.isEmpty { logger.debug("told tasks they wake soon", metadata: ["tasks": "\(told.count)"]) }
            if let first = errors.first {
                logger.warning(
                    "could not tell some tasks they wake soon (their waking_soon events are lost; they still wake on time)",
                    metadata: ["failed": "\(errors.count)", "of": "\(timers.count)", "error": "\(first)"])
            }
        } catch {
            logger.warning(
                "could not tell tasks they wake soon (their waking_soon events are lost; they still wake on time)",
                metadata: ["tasks": "\(timers.count)", "error": "\(error)"])
        }
    }

    /// The task of a wait or sleep timer (`{"wake": id, "seq": n, "branch": b}`), or nil for a step-message timer.
    static func waitTimerTask(_ member: String) -> String? {
        guard member.hasPrefix("{"), !member.contains("\"x\":"), let value = try? JSONValue.parse(Array(member.utf8)) else { return nil }
        return value["wake"]?.stringValue
    }

    /// Re-publishes outbox entries a crash left behind (older than the sweep age).
    func sweepOutbox() async throws {
        let age = configuration.outboxSweepAge.wholeMilliseconds
        let replies = try await redis.pipeline(
            (0..<keys.bucketCount).map {
                .evalSHA(RedisTaskStore.claimOutboxScript, keys: [keys.outboxIndex(bucket: $0)], args: [age, 200, keys.prefix])
            })
        for reply in replies {
            for id in (reply.array ?? []).compactMap(\.string) {
                // Said once per task and process: a broker outage or a missing queue leaves a task to several rounds.
                let announced = retried.withLock { seen in
                    if seen.count >= 10_000 && !seen.contains(id) { seen.removeAll() }
                    return !seen.insert(id).inserted
                }
                if !announced {
                    logger.info("outbox sweep: re-publishing what a crash or an outage left behind", metadata: ["task.id": "\(id)"])
                }
                let left = await executor.flushOutbox(task: id)
                if left.isEmpty {
                    retried.withLock { _ = $0.remove(id) }
                } else if left.contains(where: \.unroutable) {
                    try await postponeUnroutable(task: id, left: left.filter(\.unroutable))
                } else {
                    logger.debug("outbox sweep: not published yet", metadata: ["task.id": "\(id)", "error": "\(left[0].error)"])
                }
            }
        }
    }

    /// The most a task's unroutable step message waits between two tries (``unroutableBackoff(stuck:age:)``).
    static let unroutableBackoffLimit: Duration = .seconds(60)
    /// How often this process warns about one missing queue.
    static let unroutableWarningInterval: Duration = .seconds(300)

    /// The wait before the next try of a task whose step message no queue took, from how long its outbox has been
    /// stuck (since the task's last update, by Redis's clock): at least twice the sweep age, at most
    /// ``unroutableBackoffLimit`` (or twice the age, if that is longer). Tries come after ~10 s, 20 s, 40 s, then every
    /// minute, whichever worker makes them, and a task stuck again after a later commit starts over.
    static func unroutableBackoff(stuck: Duration, age: Duration) -> Duration {
        let least = age * 2
        return min(max(stuck, least), max(unroutableBackoffLimit, least))
    }

    /// What follows a sweep's flush of `task` that left `left` (its unroutable entries). RabbitMQ is up and has no
    /// queue bound for them (a queue no worker has declared yet, or one an operator deleted): a retry five seconds
    /// later would fail the same way, every five seconds, for as long as the queue is missing. So the task's next try
    /// is put off (its outbox-index score moves ahead), the task each message is for says why in its `status_reason`,
    /// and the process warns once per queue every five minutes (debug lines otherwise). Step messages of finished tasks
    /// are dropped: delivered, they would be acked as the duplicates of a finished task, and kept, they would keep the
    /// task whose outbox holds them (a parent holds its children's first steps) from retention forever.
    private func postponeUnroutable(task: String, left: [Outbox.Leftover]) async throws {
        func owner(_ entry: Outbox.Leftover) -> String { entry.message.headers["x-baton-task"] ?? task }
        let owners = Set(left.map(owner)).sorted()
        // The owners' statuses, and when the outbox's own task was last updated (how long it has been stuck).
        let statuses = try await redis.pipeline(
            owners.map { RedisCommand("HGET", keys.task($0), "status") } + [RedisCommand("HGET", keys.task(task), "updated_at")])
        var finished: [String: String] = [:]
        for (id, reply) in zip(owners, statuses) {
            if let status = reply.string, TaskView.terminalStatuses.contains(status) { finished[id] = status }
        }
        let dropped = left.filter { $0.message.exchange == Topology.stepsExchange && finished[owner($0)] != nil }
        if !dropped.isEmpty {
            try await store.outboxDone(task: task, ids: dropped.map(\.id))
            for entry in dropped {
                logger.info(
                    "outbox sweep: dropped the unroutable step message of a finished task",
                    metadata: [
                        "task.id": "\(owner(entry))", "status": "\(finished[owner(entry)] ?? "")", "queue": "\(entry.message.routingKey)",
                    ])
            }
        }
        let kept = left.filter { entry in !dropped.contains { $0.id == entry.id } }
        guard !kept.isEmpty else {
            retried.withLock { _ = $0.remove(task) }
            return
        }
        let now = try await redis.serverTimeMilliseconds()
        let updated = statuses.last?.string.flatMap { Int64($0) } ?? now
        let age = configuration.outboxSweepAge
        let backoff = Self.unroutableBackoff(stuck: .milliseconds(max(0, now - updated)), age: age)
        // The claim re-scored the task to Redis's now; it is claimed again once its score is `age` old.
        try await redis.send(
            RedisCommand("ZADD", keys.outboxIndex(bucket: keys.bucket(of: task)), "XX", "INCR", (backoff - age).wholeMilliseconds, task))
        var reasons: [RedisCommand] = []
        for (id, entries) in Dictionary(grouping: kept, by: owner) where finished[id] == nil {
            let queues = Set(entries.map(\.message.routingKey)).sorted().joined(separator: ",")
            reasons.append(
                .evalSHA(
                    Self.unroutableReasonScript, keys: [keys.task(id)],
                    args: ["step message not published: no queue bound for '\(queues)' (start a worker with --queues \(queues))"]))
        }
        if !reasons.isEmpty { _ = try await redis.pipeline(reasons) }
        for queue in Set(kept.map(\.message.routingKey)).sorted() {
            let metadata: Logger.Metadata = ["task.id": "\(task)", "queue": "\(queue)", "next_try": "\(DurationText.format(backoff))"]
            let clock = ContinuousClock()
            let warn = warnedQueues.withLock { warned in
                if let last = warned[queue], clock.now - last < Self.unroutableWarningInterval { return false }
                if warned.count >= 1_000 { warned.removeAll() }
                warned[queue] = clock.now
                return true
            }
            if warn {
                logger.warning(
                    "step message not published: RabbitMQ has no queue bound to '\(Topology.stepsExchange)' for '\(queue)'; it stays in the task's outbox and is retried with a backoff (up to every \(DurationText.format(Self.unroutableBackoffLimit))), and so do other tasks' for this queue (said again in \(DurationText.format(Self.unroutableWarningInterval)) if it lasts). Fix: start a worker that consumes that queue (`baton worker --queues \(queue)`), or cancel the tasks",
                    metadata: metadata)
            } else {
                logger.debug("step message still unroutable", metadata: metadata)
            }
        }
    }

    /// Discards dead letters older than `limits.dead_letter_retention` (their tasks then follow `limits.retention`);
    /// true when it discarded some (more may be left: the next round comes a second later).
    func expireDeadLetters() async throws -> Bool {
        let retention = configuration.deadLetterRetention
        guard retention > .zero else { return false }
        let expired = try await store.expireDeadLetters(olderThan: retention)
        guard expired > 0 else { return false }
        try await TaskQueries(store: store).audit(
            actor: "sweep:\(configuration.workerID)", action: "dead.expire", target: "dead letters", count: expired,
            reason: "older than limits.dead_letter_retention (\(DurationText.format(retention)))")
        logger.info(
            "retention: discarded dead letters nobody acted on",
            metadata: ["discarded": "\(expired)", "dead_letter_retention": "\(DurationText.format(retention))"])
        return !isStopped
    }

    /// Deletes finished tasks past `limits.retention` (``RedisTaskStore/purgeFinished(olderThan:limit:pages:chunk:)``);
    /// true when the round deleted tasks and left candidates it did not look at (a backlog: the next round starts at
    /// once).
    func sweepFinished() async throws -> Bool {
        guard configuration.retention > .zero else { return false }
        let result = try await store.purgeFinished(olderThan: configuration.retention)
        if result.purged > 0 {
            BatonMetrics.purged().increment(by: result.purged)
            logger.info(
                "retention: deleted finished tasks",
                metadata: ["purged": "\(result.purged)", "retention": "\(DurationText.format(configuration.retention))"])
        }
        return result.more && result.purged > 0 && !isStopped
    }

    /// Republishes tasks whose worker vanished: status running, lease expired, no commit. Running tasks live
    /// in the `queued` (active) index, scored by their last commit, next to queued tasks. Each round reads the oldest
    /// page of every bucket and one more page that moves on from round to round, so a backlog of older queued tasks
    /// (a queue no worker consumes, a batch waiting for free workers) delays a stalled task by a few rounds instead of
    /// hiding it: a page of 200 a round, so 10,000 such tasks in one bucket take ~50 rounds (~4 minutes) to page through.
    func sweepStalled() async throws {
        let lease = executor.settings.leaseMilliseconds
        let cutoff = Int64(Date().timeIntervalSince1970 * 1000) - lease
        let page = Self.stalledPage
        let cursors = stalledCursors.withLock { cursors in (0..<keys.bucketCount).map { cursors[$0] } }
        // Per bucket: the oldest page, then (with a cursor) the page from the cursor on. By score, not by an offset into
        // the index: an offset makes Redis walk the backlog up to it on every read (only a group that shares one score
        // is walked by offset, within the group).
        var commands: [RedisCommand] = []
        for bucket in 0..<keys.bucketCount {
            let key = keys.index(bucket: bucket, status: "queued")
            commands.append(RedisCommand("ZRANGEBYSCORE", key, "-inf", cutoff, "WITHSCORES", "LIMIT", 0, page))
            if let cursor = cursors[bucket] { commands.append(cursor.command(key, cutoff: cutoff, page: page)) }
        }
        var replies = try await redis.pipeline(commands)[...]
        func entries() -> [(member: String, score: String)] {
            let flat = (replies.popFirst()?.array ?? []).compactMap(\.string)
            return stride(from: 1, to: flat.count, by: 2).map { (flat[$0 - 1], flat[$0]) }
        }
        var pages: [[String]] = []
        var next: [Int: StalledCursor] = [:]
        for bucket in 0..<keys.bucketCount {
            let first = entries()
            let later = cursors[bucket] == nil ? nil : entries()
            pages.append(first.map(\.member))
            if let later { pages.append(later.map(\.member)) }
            // No backlog: no cursor. A new backlog: start where the oldest page ended.
            guard first.count == page else { continue }
            guard let cursor = cursors[bucket], let later else {
                next[bucket] = StalledCursor.from(score: first[0].score, inclusive: true).next(after: first, page: page)
                continue
            }
            next[bucket] = cursor.next(after: later, page: page)
        }
        stalledCursors.withLock { $0 = next }
        var seen = Set<String>()
        // A step this worker runs is not stalled, whatever its lease in Redis says (it lapses when the whole process
        // stalls past it); republishing it would run the step, and a side effect in flight, a second time.
        let candidates = pages.joined().filter { seen.insert($0).inserted && !executor.leases.isRunning(task: $0) }
        guard !candidates.isEmpty else { return }
        // Only running tasks can be stalled: the index also holds queued ones (their messages wait in a queue or an
        // outbox), which the script would answer `live` one call each, every round (a backlog of queued tasks made
        // each worker's sweep run thousands of scripts a minute for nothing).
        let fields = try await redis.pipeline(candidates.map { RedisCommand("HMGET", keys.task($0), "status", "agent") })
        for (id, reply) in zip(candidates, fields) where reply.array?.first?.string == "running" {
            let result = try await store.republishStalled(task: id, actor: "sweep:\(configuration.workerID)")
            if result.first == "republished" {
                BatonMetrics.stalledRepublished(reply.array?.last?.string ?? "").increment()
                logger.warning("stalled task republished from its checkpoint", metadata: ["task.id": "\(id)"])
                await executor.flushOutbox(task: id)
            }
        }
    }
}

/// The sweeps' pauses between rounds, cut short when the worker stops: a stopping worker is not held by a long period
/// (the retention sweep's is a minute), and a pause costs one timer, not a wake-up every few hundred milliseconds (an
/// idle worker's sweeps wake ~25 times a second, the timer sweep and the event relay's ten each among them).
final class SweepPauses: Sendable {
    private struct State {
        var stopped = false
        var sleepers: [Int: Task<Void, Never>] = [:]
        var next = 0
    }
    private let state = Mutex(State())

    /// Ends every pause now and each later one at once.
    func stop() {
        let sleepers = state.withLock { state in
            state.stopped = true
            defer { state.sleepers = [:] }
            return Array(state.sleepers.values)
        }
        for sleeper in sleepers { sleeper.cancel() }
    }

    /// Sleeps `interval`, or until ``stop()`` or the calling task's cancellation.
    func pause(for interval: Duration) async {
        let sleeper = Task<Void, Never> { try? await Task.sleep(for: interval) }
        let key: Int? = state.withLock { state in
            guard !state.stopped else { return nil }
            state.next += 1
            state.sleepers[state.next] = sleeper
            return state.next
        }
        guard let key else {
            sleeper.cancel()
            return
        }
        await withTaskCancellationHandler {
            await sleeper.value
        } onCancel: {
            sleeper.cancel()
        }
        state.withLock { _ = $0.sleepers.removeValue(forKey: key) }
    }
}
