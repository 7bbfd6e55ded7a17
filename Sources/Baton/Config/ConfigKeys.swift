/// Every configuration key Baton reads, with its default and meaning: the one list that `Config/baton.yaml`,
/// the unknown-key check and the README's configuration table follow.
///
/// Keys are dotted (`worker.concurrency`); in the environment they are upper-cased with `BATON_` in front and
/// `_` for `.` (`BATON_WORKER_CONCURRENCY`).
public enum ConfigKeys {
    /// One configuration key.
    public struct Key: Sendable, Hashable {
        /// The dotted name, as in the YAML file.
        public var name: String
        /// The default, written as the YAML file writes it.
        public var defaultValue: String
        /// What it sets.
        public var summary: String

        /// The environment variable that sets it, e.g. `BATON_WORKER_CONCURRENCY`.
        public var environmentName: String {
            "BATON_" + name.uppercased().map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
        }
    }

    public static let amqpURL = "amqp.url"
    public static let redisURL = "redis.url"
    public static let redisKeyPrefix = "redis.key_prefix"
    public static let redisBuckets = "redis.buckets"
    public static let workerQueues = "worker.queues"
    public static let workerConcurrency = "worker.concurrency"
    public static let workerPrefetch = "worker.prefetch"
    public static let workerDrainTimeout = "worker.drain_timeout"
    public static let workerLease = "worker.lease"
    public static let workerTimeSlice = "worker.time_slice"
    public static let workerStateCache = "worker.state_cache"
    public static let workerSpeculativeSteps = "worker.speculative_steps"
    public static let workerHeartbeatInterval = "worker.heartbeat_interval"
    public static let workerStaleAfter = "worker.stale_after"
    public static let sweepsTimerInterval = "sweeps.timer_interval"
    public static let sweepsOutboxInterval = "sweeps.outbox_interval"
    public static let sweepsOutboxAge = "sweeps.outbox_age"
    public static let sweepsStalledInterval = "sweeps.stalled_interval"
    public static let sweepsDeadLetterIntake = "sweeps.dead_letter_intake"
    public static let sweepsRetentionInterval = "sweeps.retention_interval"
    public static let sweepsPrewarmLead = "sweeps.prewarm_lead"
    public static let limitsCheckpointMaxBytes = "limits.checkpoint_max_bytes"
    public static let limitsSubmitMaxBytes = "limits.submit_max_bytes"
    public static let limitsEventsMaxLength = "limits.events_max_length"
    public static let limitsCheckpointsKept = "limits.checkpoints_kept"
    public static let limitsSignalMailbox = "limits.signal_mailbox"
    public static let limitsMaxChildren = "limits.max_children"
    public static let limitsRetention = "limits.retention"
    public static let limitsDeadLetterRetention = "limits.dead_letter_retention"
    public static let budgetDefaultMaxCostUSD = "budget.default_max_cost_usd"
    public static let budgetDefaultMaxTokens = "budget.default_max_tokens"
    public static let budgetDefaultMaxSteps = "budget.default_max_steps"
    public static let budgetDefaultMaxToolCalls = "budget.default_max_tool_calls"
    public static let budgetDefaultMaxHandoffs = "budget.default_max_handoffs"
    public static let budgetDefaultMaxAttempts = "budget.default_max_attempts"
    public static let queuesDeliveryLimit = "queues.delivery_limit"
    public static let queuesStepMaxLength = "queues.step_max_length"
    public static let httpBind = "http.bind"
    public static let httpReadOnly = "http.read_only"
    public static let httpTokenHashes = "http.token_hashes"
    public static let httpMetricsTokenHash = "http.metrics_token_hash"
    public static let webhooksSecret = "webhooks.secret"
    public static let webhooksPreviousSecret = "webhooks.previous_secret"
    public static let webhooksAllowHosts = "webhooks.allow_hosts"
    public static let webhooksRetrySchedule = "webhooks.retry_schedule"
    public static let webhooksTimeout = "webhooks.timeout"
    public static let webhooksConcurrency = "webhooks.concurrency"

    /// Every key, in the order of `Config/baton.yaml`.
    public static let all: [Key] = [
        Key(name: amqpURL, defaultValue: Endpoints.localAMQPURL, summary: "RabbitMQ URL"),
        Key(name: redisURL, defaultValue: Endpoints.localRedisURL, summary: "Redis URL"),
        Key(name: redisKeyPrefix, defaultValue: "\"baton:\"", summary: "prefix of every Redis key"),
        Key(name: redisBuckets, defaultValue: "16", summary: "shards of the global indexes (every worker and client must agree)"),
        Key(name: workerQueues, defaultValue: "[]", summary: "step queues to consume; empty: those of every registered agent"),
        Key(name: workerConcurrency, defaultValue: "64", summary: "steps run at once by one worker"),
        Key(name: workerPrefetch, defaultValue: "128", summary: "unacknowledged deliveries per consumer (1…65535)"),
        Key(name: workerDrainTimeout, defaultValue: "30s", summary: "time running steps get at SIGTERM"),
        Key(name: workerLease, defaultValue: "15s", summary: "lease of a running step, renewed every third"),
        Key(name: workerTimeSlice, defaultValue: "60s", summary: "after it a step's shouldYield is true"),
        Key(
            name: workerStateCache, defaultValue: "1024",
            summary: "tasks whose last committed state a worker keeps decoded, so their next step skips reading it (0: off)"),
        Key(
            name: workerSpeculativeSteps, defaultValue: "true",
            summary: "a worker runs the next step of a task it just committed without claiming it; the commit checks instead"),
        Key(name: workerHeartbeatInterval, defaultValue: "2s", summary: "how often a worker reports itself"),
        Key(name: workerStaleAfter, defaultValue: "10s", summary: "a lease holder silent this long counts as dead"),
        Key(name: sweepsTimerInterval, defaultValue: "100ms", summary: "how often due timers are fired"),
        Key(name: sweepsOutboxInterval, defaultValue: "2s", summary: "how often left-over outboxes are looked for"),
        Key(name: sweepsOutboxAge, defaultValue: "5s", summary: "an outbox this old is republished by the sweep"),
        Key(name: sweepsStalledInterval, defaultValue: "5s", summary: "how often stalled tasks are looked for"),
        Key(name: sweepsDeadLetterIntake, defaultValue: "true", summary: "move baton.dead into Redis for `baton dead`"),
        Key(name: sweepsRetentionInterval, defaultValue: "1m", summary: "how often finished tasks past limits.retention are deleted"),
        Key(
            name: sweepsPrewarmLead, defaultValue: "60s",
            summary: "a waiting or sleeping task's `waking_soon` event comes this long before its timer (0: none)"),
        Key(name: limitsCheckpointMaxBytes, defaultValue: "1048576", summary: "largest checkpoint a step may commit"),
        Key(name: limitsSubmitMaxBytes, defaultValue: "1048576", summary: "largest submit body accepted"),
        Key(name: limitsEventsMaxLength, defaultValue: "1000", summary: "events kept per task"),
        Key(name: limitsCheckpointsKept, defaultValue: "5", summary: "checkpoint versions kept per task"),
        Key(name: limitsSignalMailbox, defaultValue: "100", summary: "signals a task keeps unconsumed; one more is refused"),
        Key(name: limitsMaxChildren, defaultValue: "100", summary: "children a task starts over its life (parallel); more fail it"),
        Key(
            name: limitsRetention, defaultValue: "7d",
            summary:
                "a finished task is deleted this long after it ended, a dead-lettered one after its dead letter is discarded (0: never)"),
        Key(
            name: limitsDeadLetterRetention, defaultValue: "180d",
            summary: "a dead letter nobody redrove or discarded is discarded this long after it was taken in (0: never)"),
        Key(name: budgetDefaultMaxCostUSD, defaultValue: "~", summary: "cost limit of a task whose submit sets none (~: none)"),
        Key(name: budgetDefaultMaxTokens, defaultValue: "~", summary: "token limit of a task whose submit sets none (~: none)"),
        Key(name: budgetDefaultMaxSteps, defaultValue: "10000", summary: "step limit of a task whose submit sets none"),
        Key(name: budgetDefaultMaxToolCalls, defaultValue: "10000", summary: "tool-call limit of a task whose submit sets none"),
        Key(name: budgetDefaultMaxHandoffs, defaultValue: "1000", summary: "handoff limit of a task whose submit sets none"),
        Key(name: budgetDefaultMaxAttempts, defaultValue: "5", summary: "attempts of a step before it is dead-lettered"),
        Key(name: queuesDeliveryLimit, defaultValue: "20", summary: "deliveries of one message before it counts as poison"),
        Key(name: queuesStepMaxLength, defaultValue: "1000000", summary: "messages a step queue holds before publishes are refused"),
        Key(name: httpBind, defaultValue: "127.0.0.1:8080", summary: "where `baton serve` listens (non-loopback needs tokens)"),
        Key(name: httpReadOnly, defaultValue: "false", summary: "`baton serve` refuses every mutating route with 405"),
        Key(name: httpTokenHashes, defaultValue: "[]", summary: "API tokens as role:name:sha256-hex (roles viewer, operator, admin)"),
        Key(name: httpMetricsTokenHash, defaultValue: "~", summary: "sha256 hex of the token /metrics requires (~: /metrics is open)"),
        Key(name: webhooksSecret, defaultValue: "~", summary: "signing secret of webhooks (whsec_<base64> or text); none: deliveries fail"),
        Key(name: webhooksPreviousSecret, defaultValue: "~", summary: "the secret being rotated out: both signatures are sent"),
        Key(name: webhooksAllowHosts, defaultValue: "[]", summary: "loopback/private webhook hosts allowed anyway"),
        Key(
            name: webhooksRetrySchedule, defaultValue: "[5s, 5m, 30m, 2h, 5h, 10h, 10h, 10h, 10h, 12h, 12h]",
            summary: "delays between attempts of one webhook event (±10 % jitter)"),
        Key(name: webhooksTimeout, defaultValue: "10s", summary: "time limit of one webhook request"),
        Key(name: webhooksConcurrency, defaultValue: "16", summary: "tasks whose webhooks one worker delivers at once"),
    ]

    /// The names of ``all``.
    public static let names: Set<String> = Set(all.map(\.name))

    /// The sections (`worker`, `limits`, …): a section left empty in the YAML file is not an unknown key.
    static let sections: Set<String> = Set(all.compactMap { $0.name.split(separator: ".").first.map(String.init) })

    /// The known key closest to `name`, when one is close enough to be a likely typo.
    static func suggestion(for name: String) -> String? {
        let scored = all.map { ($0.name, editDistance(name, $0.name)) }.min { $0.1 < $1.1 }
        guard let scored, scored.1 <= max(2, name.count / 4) else { return nil }
        return scored.0
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
