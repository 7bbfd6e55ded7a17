import Foundation

/// A task as `baton status --json`, `baton list --json` and `GET /v1/tasks/{id}` show it (DESIGN.md §6).
/// Fields are absent when they do not apply.
public struct TaskView: Codable, Sendable, Hashable {
    public var v = 1
    public var id: String
    public var agent: String
    public var status: String
    public var step: String?
    public var seq: Int64
    public var branch: Int64
    public var attempt: Int64
    public var tenant: String?
    public var labels: [String: String]?
    public var progress: Progress?
    public var budget: Budget
    public var statusReason: String?
    /// What a waiting or sleeping task waits for: `{"signal": name}`, `{"timeout_at": iso}`, `{"at": iso}`, or
    /// `{"deadline": iso}` when the budget's deadline comes first (it stops the task).
    public var waitingFor: [JSONValue]?
    /// Signals received and not yet consumed (the task is not waiting for them yet), oldest first.
    public var signalsPending: [PendingSignal]?
    public var error: JSONValue?
    public var result: JSONValue?
    public var parentID: String?
    /// A parent's children (``StepOutcome/parallel(_:then:)``): how many it started and how many have ended.
    public var children: Children?
    public var lease: Lease?
    public var nextTimerAt: String?
    public var createdAt: String?
    public var updatedAt: String?
    public var finishedAt: String?
    /// The delivery state of the task's `notify.webhook` (absent without one).
    public var webhook: Webhook?

    /// How the task's webhook deliveries go: `failing` while the oldest undelivered event waits for a retry.
    public struct Webhook: Codable, Sendable, Hashable {
        public var url: String
        public var failing: Bool
        public var attempts: Int64
        public var delivered: Int64
        public var lastError: String?
        public var nextAttemptAt: String?
        public var disabled: String?
        enum CodingKeys: String, CodingKey {
            case url, failing, attempts, delivered
            case lastError = "last_error"
            case nextAttemptAt = "next_attempt_at"
            case disabled
        }
    }

    public struct Children: Codable, Sendable, Hashable {
        public var total: Int64
        public var done: Int64

        public init(total: Int64, done: Int64) {
            self.total = total
            self.done = done
        }
    }

    public struct Progress: Codable, Sendable, Hashable {
        public var fraction: Double
        public var message: String
    }

    public struct Budget: Codable, Sendable, Hashable {
        public var used: Used
        public var limits: Limits
        public struct Used: Codable, Sendable, Hashable {
            public var costUSD: Double
            public var tokens: Int64
            public var steps: Int64
            public var toolCalls: Int64
            public var handoffs: Int64
            enum CodingKeys: String, CodingKey {
                case costUSD = "cost_usd"
                case tokens, steps
                case toolCalls = "tool_calls"
                case handoffs
            }
        }
        public struct Limits: Codable, Sendable, Hashable {
            public var maxCostUSD: Double?
            public var maxTokens: Int64?
            public var maxSteps: Int64?
            public var maxToolCalls: Int64?
            public var maxHandoffs: Int64?
            public var maxAttempts: Int64?
            public var deadline: String?
            enum CodingKeys: String, CodingKey {
                case maxCostUSD = "max_cost_usd"
                case maxTokens = "max_tokens"
                case maxSteps = "max_steps"
                case maxToolCalls = "max_tool_calls"
                case maxHandoffs = "max_handoffs"
                case maxAttempts = "max_attempts"
                case deadline
            }
        }
    }

    /// A signal in a task's mailbox.
    public struct PendingSignal: Codable, Sendable, Hashable {
        public var name: String
        public var id: String
        public var payload: JSONValue?
        public var actor: String?
        public var reason: String?
        public var receivedAt: String?
        enum CodingKeys: String, CodingKey {
            case name, id, payload, actor, reason
            case receivedAt = "received_at"
        }
    }

    /// Who holds the task's lease (only while running).
    public struct Lease: Codable, Sendable, Hashable {
        public var owner: String
        public var expiresAt: String
        enum CodingKeys: String, CodingKey {
            case owner
            case expiresAt = "expires_at"
        }
    }

    enum CodingKeys: String, CodingKey {
        case v, id, agent, status, step, seq, branch, attempt, tenant, labels, progress, budget
        case statusReason = "status_reason"
        case waitingFor = "waiting_for"
        case signalsPending = "signals_pending"
        case error, result
        case parentID = "parent_id"
        case children
        case lease
        case nextTimerAt = "next_timer_at"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
        case finishedAt = "finished_at"
        case webhook
    }

    public static let terminalStatuses: Set<String> = ["succeeded", "failed", "cancelled", "budget_exceeded", "dead_lettered"]
    public var isTerminal: Bool { Self.terminalStatuses.contains(status) }
    /// Committed cost in integer micro-dollars.
    public var costMicros: Int64 { Int64((budget.used.costUSD * 1_000_000).rounded()) }

    /// `waiting_for` of a recorded wait (the `wait` field the commit script writes).
    static func waitingFor(_ spec: JSONValue) -> [JSONValue] {
        var out: [JSONValue] = (spec["signals"]?.arrayValue ?? []).compactMap(\.stringValue).map { ["signal": .string($0)] }
        if let due = spec["due"]?.intValue ?? spec["due"]?.doubleValue.map({ Int64($0) }) {
            let text = WaitSpec.iso(due)
            switch spec["due_kind"]?.stringValue {
            case "timeout": out.append(["timeout_at": .string(text)])
            case "deadline": out.append(["deadline": .string(text)])
            default: out.append(["at": .string(text)])
            }
        }
        return out
    }

    static func iso(_ milliseconds: String?) -> String? {
        guard let milliseconds, let ms = Int64(milliseconds), ms > 0 else { return nil }
        return ISO8601DateFormatter.fractional.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
    }

    /// Builds the view from the task and budget hashes.
    init(task t: [String: String], budget b: [String: String], signals: [String: String] = [:]) {
        func nonEmpty(_ key: String) -> String? { t[key].flatMap { $0.isEmpty ? nil : $0 } }
        id = t["id"] ?? ""
        agent = t["agent"] ?? ""
        status = t["status"] ?? "unknown"
        step = nonEmpty("step")
        seq = Int64(t["seq"] ?? "") ?? 0
        branch = Int64(t["branch"] ?? "") ?? 0
        attempt = Int64(t["attempt"] ?? "") ?? 1
        tenant = nonEmpty("tenant")
        if let labels = nonEmpty("labels"), let decoded = try? JSONCoding.decoder.decode([String: String].self, from: Data(labels.utf8)),
            !decoded.isEmpty
        {
            self.labels = decoded
        }
        if let fraction = nonEmpty("progress_fraction").flatMap(Double.init) {
            progress = Progress(fraction: fraction, message: t["progress_message"] ?? "")
        }
        let usage = BudgetUsage(fields: b)
        let limits = BudgetLimits(fields: b)
        budget = Budget(
            used: Budget.Used(
                costUSD: Double(usage.costMicros) / 1_000_000, tokens: usage.tokens, steps: usage.steps, toolCalls: usage.toolCalls,
                handoffs: usage.handoffs),
            limits: Budget.Limits(
                maxCostUSD: limits.maxCostMicros.map { Double($0) / 1_000_000 }, maxTokens: limits.maxTokens, maxSteps: limits.maxSteps,
                maxToolCalls: limits.maxToolCalls, maxHandoffs: limits.maxHandoffs, maxAttempts: limits.maxAttempts,
                deadline: Self.iso(b["deadline"])))
        statusReason = nonEmpty("status_reason")
        if let error = nonEmpty("error") { self.error = try? JSONValue.parse(Array(error.utf8)) }
        if let result = nonEmpty("result") { self.result = try? JSONValue.parse(Array(result.utf8)) }
        parentID = nonEmpty("parent")
        if let total = nonEmpty("children_total").flatMap({ Int64($0) }), total > 0 {
            children = Children(total: total, done: nonEmpty("children_done").flatMap { Int64($0) } ?? 0)
        }
        if status == "running", let owner = nonEmpty("lease_owner") {
            lease = Lease(owner: owner, expiresAt: Self.iso(t["lease_until"]) ?? "")
        }
        if status == "retrying" || status == "waiting" || status == "sleeping" { nextTimerAt = Self.iso(t["next_timer"]) }
        if status == "waiting" || status == "sleeping", let wait = nonEmpty("wait"), let spec = try? JSONValue.parse(Array(wait.utf8)) {
            waitingFor = Self.waitingFor(spec)
            if spec["k"]?.stringValue == "children", let children {
                waitingFor?.insert(["children": .int(max(0, children.total - children.done))], at: 0)
            }
        }
        let pending = signals.values.compactMap { try? JSONValue.parse(Array($0.utf8)) }.sorted {
            ($0["n"]?.intValue ?? 0) < ($1["n"]?.intValue ?? 0)
        }
        if !pending.isEmpty {
            signalsPending = pending.map { entry in
                let text = entry["p"]?.stringValue ?? ""
                func nonEmpty(_ key: String) -> String? { entry[key]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } }
                return PendingSignal(
                    name: entry["name"]?.stringValue ?? "", id: entry["id"]?.stringValue ?? "",
                    payload: text.isEmpty ? nil : ((try? JSONValue.parse(Array(text.utf8))) ?? .string(text)), actor: nonEmpty("actor"),
                    reason: nonEmpty("reason"), receivedAt: entry["at"]?.intValue.map { Self.iso(String($0)) } ?? nil)
            }
        }
        createdAt = Self.iso(t["created_at"])
        updatedAt = Self.iso(t["updated_at"])
        finishedAt = Self.iso(t["finished_at"])
        if let notify = nonEmpty("notify"), let value = try? JSONValue.parse(Array(notify.utf8)), let url = value["webhook"]?.stringValue,
            !url.isEmpty
        {
            webhook = Webhook(
                url: url, failing: t["wh_failing"] == "1", attempts: Int64(t["wh_attempts"] ?? "") ?? 0,
                delivered: Int64(t["wh_delivered"] ?? "") ?? 0, lastError: nonEmpty("wh_error"),
                nextAttemptAt: Self.iso(t["wh_next"]), disabled: nonEmpty("wh_disabled"))
        }
    }
}

/// One entry of a task's append-only history.
public struct TaskEvent: Codable, Sendable, Hashable {
    public var id: String
    public var type: String
    public var seq: Int64
    public var branch: Int64
    public var step: String?
    public var at: String
    public var data: JSONValue?

    public init(id: String, type: String, seq: Int64, branch: Int64, step: String?, at: String, data: JSONValue?) {
        self.id = id
        self.type = type
        self.seq = seq
        self.branch = branch
        self.step = step
        self.at = at
        self.data = data
    }
}

/// A dead letter as `baton dead list --json` shows it (DESIGN.md §6).
public struct DeadLetterView: Codable, Sendable, Hashable {
    public var id: String
    public var taskID: String?
    public var agent: String?
    public var step: String?
    public var seq: Int64?
    public var branch: Int64?
    public var reason: String
    public var error: String
    public var field: String?
    public var bucket: String?
    public var attempts: Int64?
    public var worker: String?
    public var deadAt: String
    public var body: String
    /// The failure's fingerprint (``DeadLetterFingerprint``): computed at intake; for a letter taken in before
    /// fingerprints existed, computed when read.
    public var fingerprint: String

    enum CodingKeys: String, CodingKey {
        case id
        case taskID = "task_id"
        case agent, step, seq, branch, reason, error, field, bucket, attempts, worker
        case deadAt = "dead_at"
        case body, fingerprint
    }

    init(fields f: [String: String]) {
        func nonEmpty(_ key: String) -> String? { f[key].flatMap { $0.isEmpty ? nil : $0 } }
        id = f["id"] ?? ""
        taskID = nonEmpty("task_id")
        agent = nonEmpty("agent")
        step = nonEmpty("step")
        seq = nonEmpty("seq").flatMap { Int64($0) }
        branch = nonEmpty("branch").flatMap { Int64($0) }
        reason = f["reason"] ?? ""
        error = f["error"] ?? ""
        field = nonEmpty("field")
        bucket = nonEmpty("bucket")
        attempts = nonEmpty("attempts").flatMap { Int64($0) }
        worker = nonEmpty("worker")
        deadAt = f["dead_at"] ?? ""
        body = f["body"] ?? ""
        fingerprint =
            nonEmpty("fingerprint")
            ?? DeadLetterFingerprint.compute(agent: agent, step: step, bucket: bucket, reason: reason, message: error, taskID: taskID)
    }
}

/// A worker as `baton workers` shows it.
public struct WorkerView: Codable, Sendable, Hashable {
    public var id: String
    public var heartbeatAt: String
    public var heartbeatAgeSeconds: Double
    public var inFlight: Int64
    public var info: JSONValue?
    /// An operator's drain request not yet honoured: `{"actor", "reason", "requested_at"}` (`baton workers --drain`).
    public var drain: JSONValue? = nil

    enum CodingKeys: String, CodingKey {
        case id
        case heartbeatAt = "heartbeat_at"
        case heartbeatAgeSeconds = "heartbeat_age_s"
        case inFlight = "in_flight"
        case info, drain
    }

    /// The `sweeps.prewarm_lead` the worker runs with (ms), when its heartbeat says (workers before it do not).
    public var prewarmLeadMilliseconds: Int64? { info?["prewarm_lead_ms"]?.intValue }

    /// How many of `workers` run with each `sweeps.prewarm_lead` (ms), when they do not all agree: while they differ,
    /// the larger lead's workers move the pre-warm marks ahead of the others, and waits whose length lies between the
    /// leads get no `waking_soon`. Nil when every worker that says agrees.
    public static func prewarmLeadMismatch(_ workers: [WorkerView]) -> [Int64: Int]? {
        var counts: [Int64: Int] = [:]
        for lead in workers.compactMap(\.prewarmLeadMilliseconds) { counts[lead, default: 0] += 1 }
        return counts.count > 1 ? counts : nil
    }
}
