import Foundation
import RedisClient

/// What `baton stats --json` and `GET /v1/stats` return: the fleet's counts now, and what the histories of the
/// tasks updated in the window say about time in each state, retries, waits and stalled tasks.
///
/// Decision (docs/design-decisions.md): counts come from the status indexes (exact, all time). The rest is
/// computed from the event streams of the tasks updated within `since`, most recent first, at most `sample` of
/// them (`sampled_tasks`, `truncated` say how many were read). Running tasks share the active index with queued
/// ones and a claim writes no event, so `queued` counts both and the time-in-state key is `active`.
public struct FleetStats: Codable, Sendable, Hashable {
    public var v = 1
    public var since: String
    public var generatedAt: String
    /// Tasks by status now (the `queued` index also holds running tasks; `running` is the steps in flight on live workers).
    public var counts: [String: Int]
    public var running: Int
    public var pendingReviews: PendingReviews
    public var sampledTasks: Int
    public var truncated: Bool
    /// Seconds spent in each state (intervals that ended within the sampled histories): `active` (queued or running),
    /// `waiting`, `sleeping`, `retrying`, `paused`, `needs_review`, and `total` (submit to end, finished tasks).
    public var timeInState: [String: Percentiles]
    public var retries: Retries
    public var waits: Waits
    public var stalled: Stalled
    public var recovery: Recovery

    public struct PendingReviews: Codable, Sendable, Hashable {
        /// Tasks parked in `needs_review`.
        public var needsReview: Int
        /// Waiting tasks whose wait includes an `approve` signal (among the sampled ones).
        public var approvals: Int
        enum CodingKeys: String, CodingKey {
            case needsReview = "needs_review"
            case approvals
        }
    }

    public struct Percentiles: Codable, Sendable, Hashable {
        public var samples: Int
        public var p50: Double
        public var p95: Double
        enum CodingKeys: String, CodingKey {
            case samples
            case p50 = "p50_s"
            case p95 = "p95_s"
        }

        public init(samples: Int, p50: Double, p95: Double) {
            self.samples = samples
            self.p50 = p50
            self.p95 = p95
        }

        /// The nearest-rank p50 and p95 of `values` (seconds, rounded to the millisecond); nil when there are none.
        init?(_ values: [Double]) {
            guard !values.isEmpty else { return nil }
            let sorted = values.sorted()
            func rank(_ p: Double) -> Double { sorted[min(sorted.count - 1, max(0, Int((p * Double(sorted.count)).rounded(.up)) - 1))] }
            func ms(_ seconds: Double) -> Double { (seconds * 1000).rounded() / 1000 }
            self.init(samples: sorted.count, p50: ms(rank(0.5)), p95: ms(rank(0.95)))
        }
    }

    public struct Retries: Codable, Sendable, Hashable {
        public var total: Int
        /// Retries after which the task went past that step (a later event of the same branch has a higher seq).
        public var resolved: Int
        public var shareResolved: Double?
        public var byBucket: [String: Bucket]
        public struct Bucket: Codable, Sendable, Hashable {
            public var retries: Int
            public var resolved: Int
            public var shareResolved: Double?
            enum CodingKeys: String, CodingKey {
                case retries, resolved
                case shareResolved = "share_resolved"
            }
        }
        enum CodingKeys: String, CodingKey {
            case total, resolved
            case shareResolved = "share_resolved"
            case byBucket = "by_bucket"
        }
    }

    public struct Waits: Codable, Sendable, Hashable {
        /// Waits and sleeps begun.
        public var total: Int
        /// Of those, woken by a trigger (signal, timeout or time).
        public var resumed: Int
        public var shareResumed: Double?
        public var byTrigger: [String: Int]
        /// Still waiting or sleeping now.
        public var open: Int
        enum CodingKeys: String, CodingKey {
            case total, resumed
            case shareResumed = "share_resumed"
            case byTrigger = "by_trigger"
            case open
        }
    }

    public struct Stalled: Codable, Sendable, Hashable {
        /// Tasks republished from their checkpoint after a lease expired without a commit.
        public var republished: Int
        /// Of those, the ones whose step was then committed.
        public var recovered: Int
    }

    /// Failures handed to a person and what became of them (research/users.md: the time from a failure to a recovery
    /// decision, the runs that need manual cleanup, the share of runs resumed from a valid checkpoint).
    public struct Recovery: Codable, Sendable, Hashable {
        /// Escalations in the sampled histories: a step dead-lettered, a task parked in `needs_review` at a limit.
        public var escalated: Int
        /// Of those, decided: a dead letter redriven, forked or discarded; a review raised, resumed or stopped. Mostly by
        /// a person; also automatically (a dead letter expired by `limits.dead_letter_retention`, a parked task
        /// cancelled with its parent or stopped at its deadline).
        public var decided: Int
        /// Seconds from the escalation to its decision.
        public var timeToDecision: Percentiles?
        /// What waits for a person now, exactly and whatever its age (not from the sample): dead letters nobody redrove
        /// or discarded and tasks parked in `needs_review` (the runs that need manual cleanup), and the oldest one's age
        /// in seconds by Redis's clock.
        public var pending: Int
        public var oldestPendingSeconds: Double?
        /// Redrives in the sampled histories (a new branch from the last good checkpoint), and how many of them ran to
        /// success (the next end of the task after the redrive was `succeeded`).
        public var redriven: Int
        public var redrivenSucceeded: Int
        public var shareRedrivenSucceeded: Double?
        enum CodingKeys: String, CodingKey {
            case escalated, decided, pending, redriven
            case timeToDecision = "time_to_decision"
            case oldestPendingSeconds = "oldest_pending_seconds"
            case redrivenSucceeded = "redriven_succeeded"
            case shareRedrivenSucceeded = "share_redriven_succeeded"
        }
    }

    enum CodingKeys: String, CodingKey {
        case v, since, counts, running
        case generatedAt = "generated_at"
        case pendingReviews = "pending_reviews"
        case sampledTasks = "sampled_tasks"
        case truncated
        case timeInState = "time_in_state"
        case retries, waits, stalled, recovery
    }
}

extension TaskQueries {
    /// Every status a task can have (DESIGN.md §1), as the indexes name them (`running` lives in `queued`).
    static let indexedStatuses = [
        "queued", "retrying", "waiting", "sleeping", "paused", "needs_review", "succeeded", "failed", "cancelled", "budget_exceeded",
        "dead_lettered",
    ]

    /// The fleet's statistics: counts now, and the histories of at most `sample` tasks updated within `since`.
    public func stats(since: Duration, sample: Int = 2000, now: Date = Date()) async throws -> FleetStats {
        let sinceMilliseconds = since.wholeMilliseconds
        var commands: [RedisCommand] = []
        for status in Self.indexedStatuses {
            for bucket in 0..<keys.bucketCount { commands.append(RedisCommand("ZCARD", keys.index(bucket: bucket, status: status))) }
        }
        let sizes = try await redis.pipeline(commands)
        var counts: [String: Int] = [:]
        for (index, status) in Self.indexedStatuses.enumerated() {
            let slice = sizes[(index * keys.bucketCount)..<((index + 1) * keys.bucketCount)]
            counts[status] = slice.reduce(0) { $0 + ($1.int ?? 0) }
        }
        let running = try await workers().filter { $0.heartbeatAgeSeconds < 30 }.reduce(0) { $0 + Int($1.inFlight) }

        // The sample: tasks updated in the window, most recent first.
        var views: [TaskView] = []
        var filter = Filter()
        filter.sinceMilliseconds = sinceMilliseconds
        filter.limit = min(1000, max(1, sample))
        var truncated = false
        while views.count < sample {
            let page = try await list(filter)
            views.append(contentsOf: page.items.prefix(sample - views.count))
            guard let next = page.nextCursor else { break }
            if views.count >= sample {
                truncated = true
                break
            }
            filter.cursor = ListCursor(next)
        }
        var histories: [(TaskView, [TaskEvent])] = []
        for chunk in stride(from: 0, to: views.count, by: 64).map({ Array(views[$0..<min(views.count, $0 + 64)]) }) {
            let read = try await withThrowingTaskGroup(of: (TaskView, [TaskEvent]).self) { group in
                for view in chunk { group.addTask { (view, try await self.history(view.id)) } }
                var out: [(TaskView, [TaskEvent])] = []
                for try await entry in group { out.append(entry) }
                return out
            }
            histories.append(contentsOf: read)
        }
        // In one pipeline: when each sampled dead letter was discarded (a discard leaves no event: its task keeps
        // `dead_discarded_at`, ms), and what waits for a person, exactly (the sample covers only tasks updated in the
        // window, and the oldest waits are the ones that matter): every bucket's dead letters and `needs_review` index.
        let deadLettered = views.filter { $0.status == "dead_lettered" }.map(\.id)
        var people = deadLettered.map { RedisCommand("HGET", keys.task($0), "dead_discarded_at") }
        for bucket in 0..<keys.bucketCount {
            people.append(RedisCommand("ZCARD", keys.dead(bucket: bucket)))
            people.append(RedisCommand("ZRANGE", keys.dead(bucket: bucket), 0, 0, "WITHSCORES"))
            people.append(RedisCommand("ZRANGE", keys.index(bucket: bucket, status: "needs_review"), 0, 0, "WITHSCORES"))
        }
        let replies = try await redis.pipeline(people)
        let redisNow = try await redis.serverTimeMilliseconds()
        var discardedAt: [String: Double] = [:]
        for (id, reply) in zip(deadLettered, replies) {
            if let ms = reply.string.flatMap(Double.init) { discardedAt[id] = ms / 1000 }
        }
        var stats = Self.summarize(histories, discardedAt: discardedAt)
        var letters = 0
        var oldest: Double?
        for (index, reply) in replies.dropFirst(deadLettered.count).enumerated() {
            if index % 3 == 0 {
                letters += reply.int ?? 0
            } else if let score = reply.array?.last?.string.flatMap(Double.init) {
                oldest = min(oldest ?? score, score)
            }
        }
        stats.recovery.pending = letters + (counts["needs_review"] ?? 0)
        stats.recovery.oldestPendingSeconds = oldest.map { max(0, (Double(redisNow) - $0) / 1000) }
        stats.counts = counts
        stats.running = running
        stats.pendingReviews.needsReview = counts["needs_review"] ?? 0
        stats.sampledTasks = views.count
        stats.truncated = truncated
        stats.since = TaskView.iso(String(Self.milliseconds(now) - sinceMilliseconds)) ?? ""
        stats.generatedAt = TaskView.iso(String(Self.milliseconds(now))) ?? ""
        return stats
    }

    static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded(.down)) }

    /// The state an event puts its task in (nil: the event does not change the state).
    static func state(after type: String) -> String? {
        switch type {
        case "submitted", "started", "step_committed", "handoff", "woke", "resumed", "redriven", "forked": "active"
        case "retrying", "waiting", "sleeping", "paused", "needs_review": type
        case _ where TaskView.terminalStatuses.contains(type): "ended"
        default: nil
        }
    }

    /// Time in state, retries, waits, stalled tasks and escalations from task histories (the pure part of
    /// ``stats(since:sample:now:)``).
    /// - Parameter discardedAt: when the dead letter of each dead-lettered task was discarded (Unix seconds), if it was.
    static func summarize(_ histories: [(TaskView, [TaskEvent])], discardedAt: [String: Double] = [:]) -> FleetStats {
        let iso = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        var durations: [String: [Double]] = [:]
        var retries = FleetStats.Retries(total: 0, resolved: 0, byBucket: [:])
        var waits = FleetStats.Waits(total: 0, resumed: 0, byTrigger: [:], open: 0)
        var stalled = FleetStats.Stalled(republished: 0, recovered: 0)
        var approvals = 0
        var recovery = FleetStats.Recovery(escalated: 0, decided: 0, pending: 0, redriven: 0, redrivenSucceeded: 0)
        var decisionTimes: [Double] = []
        for (view, events) in histories {
            let times = events.map { (try? iso.parse($0.at))?.timeIntervalSince1970 }
            var current: (state: String, since: Double)?
            for (index, event) in events.enumerated() {
                guard let at = times[index], let next = state(after: event.type) else { continue }
                if current?.state != next {
                    if let current, current.state != "ended" { durations[current.state, default: []].append(max(0, at - current.since)) }
                    current = (next, at)
                }
                if next == "ended", let start = times.first ?? nil { durations["total", default: []].append(max(0, at - start)) }

                // A later event of the same branch past this seq: the task moved on from the step.
                let movedOn = events[(index + 1)...].contains { $0.branch == event.branch && $0.seq > event.seq }
                switch event.type {
                case "retrying" where event.data?["reason"]?.stringValue?.hasPrefix("stalled") == true:
                    stalled.republished += 1
                    if movedOn { stalled.recovered += 1 }
                case "retrying":
                    let bucket = event.data?["error"]?["bucket"]?.stringValue ?? "error"
                    retries.total += 1
                    retries.byBucket[bucket, default: .init(retries: 0, resolved: 0)].retries += 1
                    if movedOn {
                        retries.resolved += 1
                        retries.byBucket[bucket]?.resolved += 1
                    }
                case "dead_lettered", "needs_review":
                    recovery.escalated += 1
                    // Decided by the next event that moves the task on (a dead letter's redrive or fork; a review's raise,
                    // resume or stop), or, for the task's last dead letter, by its discard (which leaves no event).
                    let decision = events[(index + 1)...].firstIndex { $0.type == "budget_raised" || state(after: $0.type) != nil }
                    if let decision, let decidedAt = times[decision] {
                        recovery.decided += 1
                        decisionTimes.append(max(0, decidedAt - at))
                    } else if decision == nil, event.type == "dead_lettered", let discarded = discardedAt[view.id], discarded >= at {
                        recovery.decided += 1
                        decisionTimes.append(discarded - at)
                    }
                case "redriven":
                    recovery.redriven += 1
                    if events[(index + 1)...].first(where: { state(after: $0.type) == "ended" })?.type == "succeeded" {
                        recovery.redrivenSucceeded += 1
                    }
                case "waiting", "sleeping":
                    waits.total += 1
                    let woke = events[(index + 1)...].first { $0.type == "woke" || state(after: $0.type) != nil }
                    if let woke, woke.type == "woke" {
                        waits.resumed += 1
                        waits.byTrigger[woke.data?["trigger"]?.stringValue ?? "unknown", default: 0] += 1
                    } else if woke == nil && (view.status == "waiting" || view.status == "sleeping") {
                        waits.open += 1
                        if event.data?["signals"]?.arrayValue?.contains(.string("approve")) == true { approvals += 1 }
                    }
                default:
                    break
                }
            }
        }
        retries.shareResolved = retries.total > 0 ? Double(retries.resolved) / Double(retries.total) : nil
        for (bucket, entry) in retries.byBucket {
            retries.byBucket[bucket]?.shareResolved = entry.retries > 0 ? Double(entry.resolved) / Double(entry.retries) : nil
        }
        waits.shareResumed = waits.total > 0 ? Double(waits.resumed) / Double(waits.total) : nil
        recovery.shareRedrivenSucceeded = recovery.redriven > 0 ? Double(recovery.redrivenSucceeded) / Double(recovery.redriven) : nil
        recovery.timeToDecision = FleetStats.Percentiles(decisionTimes)
        var timeInState: [String: FleetStats.Percentiles] = [:]
        for (state, values) in durations { timeInState[state] = FleetStats.Percentiles(values) }
        return FleetStats(
            since: "", generatedAt: "", counts: [:], running: 0, pendingReviews: .init(needsReview: 0, approvals: approvals),
            sampledTasks: 0,
            truncated: false, timeInState: timeInState, retries: retries, waits: waits, stalled: stalled, recovery: recovery)
    }
}
