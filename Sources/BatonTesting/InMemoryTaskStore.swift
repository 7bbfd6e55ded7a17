import Baton
import Foundation
import Synchronization

/// A ``TaskStore`` in memory: a real backend that applies the rules of the production Lua scripts
/// (`Scripts.swift`) one for one, not a mock of Redis.
///
/// Each method runs under one lock, as each script runs atomically in Redis, and checks before it writes:
/// submits are idempotent by id; a claim checks the terminal status, then the message's branch, seq and
/// attempt against the task (behind: stale, ahead: future), a lease held by a live worker (a duplicate
/// delivery), paused or waiting status, the cancel and pause flags, and budget limits reached (`>=`),
/// before it raises the fencing token and takes the lease; charges are pending per attempt (fencing
/// token) until the commit folds them in; side effects are first-writer-wins and re-apply their recorded
/// charges to the attempt that reuses them; a commit is fenced unless token, seq and `running` status all
/// match, and writes the checkpoint, counters, status, event and outbox together.
///
/// Time comes from a ``TestClock`` instead of Redis `TIME`, and worker liveness from ``heartbeat(worker:)``
/// instead of the `baton:workers` sorted set, so leases, deadlines and retry timers move only when a test
/// moves the clock.
///
/// What it does not model: Redis persistence (AOF `everysec` losing the last second on an OS crash),
/// replication, network partitions and timeouts between worker and Redis (every call here either happens
/// whole or not at all, and its answer always arrives), the status and outbox indexes used for listing,
/// and tenant-wide budgets. The event history is capped exactly at ``Settings/eventsMaxLength`` where Redis
/// trims approximately (`MAXLEN ~`).
public final class InMemoryTaskStore: TaskStore {
    /// Settings mirroring `RedisTaskStore.Settings`.
    public struct Settings: Sendable {
        /// Events kept per task.
        public var eventsMaxLength = 1000
        /// Checkpoint versions kept per task.
        public var checkpointsKept = 5
        /// A lease whose holder has not sent a heartbeat for this long is treated as expired.
        public var workerStaleMilliseconds: Int64 = 10_000
        /// Unconsumed signals kept per task (see `RedisTaskStore.Settings.signalMailboxCap`).
        public var signalMailboxCap = SignalLimits.mailboxCap
        /// Daily limits per tenant (see `RedisTaskStore.Settings.tenantBudgets`).
        public var tenantBudgets = TenantBudgets()
        public init() {}
    }

    /// Where a simulated worker crash happens (see ``crashNextClaim(of:at:)``).
    public enum CrashPoint: Sendable, Hashable {
        /// Right after the claim: every later call of that attempt fails, so nothing it does is recorded.
        case afterClaim
        /// After the step's code ran (its side effects and charges are recorded), before its commit.
        case beforeCommit
    }

    /// The error a doomed attempt's calls throw: the worker "died" at that point.
    public struct SimulatedCrash: Error, Sendable, CustomStringConvertible {
        public var task: String
        public var token: Int64
        public var description: String { "simulated worker crash (task \(task), fencing token \(token))" }
    }

    public let clock: TestClock
    public let settings: Settings
    let state = Mutex(Storage())

    public init(clock: TestClock = TestClock(), settings: Settings = Settings()) {
        self.clock = clock
        self.settings = settings
    }

    // MARK: - Stored data

    struct Pending {
        var token: Int64?
        var charge = Charge()
        /// Side effects whose charges this attempt counted (once each).
        var effects: Set<String> = []
    }

    struct Record {
        var id: String
        var agent: String
        var input: String
        var status: String
        var step: String
        var seq: Int64 = 0
        var attempt: Int64 = 1
        var branch: Int64 = 0
        var fence: Int64 = 0
        var createdAt: Int64
        var updatedAt: Int64
        var startedAt: Int64?
        var finishedAt: Int64?
        var tenant: String
        var labels: String
        var notify: String
        var queue: String
        var root: String
        var parent: String
        var leaseOwner = ""
        var leaseUntil: Int64 = 0
        var cancel = ""
        var pause = ""
        var pausedFrom = ""
        var statusReason = ""
        var error = ""
        var result = ""
        var progressFraction: Double?
        var progressMessage = ""
        var nextTimer: Int64?
        /// The cap that parked the task in `needs_review`.
        var review = ""
        var limits: BudgetLimits
        var usage = BudgetUsage()
        var pending = Pending()
        var checkpoints: [Int64: String] = [:]
        var events: [TaskEventRecord] = []
        var outbox: [String: OutboxMessage] = [:]
        /// Effect records as JSON text, exactly as the effects hash holds them.
        var effects: [String: String] = [:]
        /// Effects whose charges a commit already counted (never charged again).
        var chargedEffects: Set<String> = []
        /// The wait or sleep in force (status `waiting`/`sleeping`).
        var wait: WaitRecord?
        /// The timer member of that wait (`""` when it has no timer).
        var waitTimer = ""
        /// What woke the task, as JSON (the `wakeup` field); `""` after the resumed step committed.
        var wakeup = ""
        /// The signal mailbox: received, not yet consumed, by id.
        var signals: [String: StoredSignal] = [:]
        /// Signal ids received, oldest first (deduplication; the last ``SignalLimits/seenIDsKept``).
        var seenSignals: [String] = []
        var signalCounter: Int64 = 0
        /// Children started (`parallel`) and ended; the ended ones' outcomes by child id.
        var childrenTotal: Int64 = 0
        var childrenDone: Int64 = 0
        var children: [String: String] = [:]
        /// The ancestors whose budgets this child's charges count against (parent first).
        var up: [String] = []
    }

    struct WaitRecord {
        var kind: String
        var signals: [String]
        var next: String
        var onTimeout: String?
        var due: Int64?
        var dueKind: String?
    }

    struct StoredSignal {
        var n: Int64
        var id: String
        var name: String
        var payload: String
        var actor: String
        var reason: String
        var at: Int64
    }

    struct Storage {
        var tasks: [String: Record] = [:]
        /// Timer member (JSON of an outbox message) → due time, like the timers sorted set.
        var timers: [String: Int64] = [:]
        /// Worker id → last heartbeat (Unix ms).
        var workers: [String: Int64] = [:]
        var eventCounter = 0
        var outboxCounter = 0
        var crashPlan: (task: String?, point: CrashPoint)?
        var doomed: [String: (token: Int64, point: CrashPoint)] = [:]
        var crashes = 0
        /// `tenant|yyyy-mm-dd` → the tenant's counters that UTC day (the `tenant:{name}:day` hashes).
        var tenantDays: [String: Charge] = [:]
    }

    /// The counters key of `tenant` for the UTC day of `now` (ms).
    static func tenantDay(_ tenant: String, now: Int64) -> String {
        tenant + "|" + TenantBudgets.day(Date(timeIntervalSince1970: Double(now) / 1000))
    }

    /// The daily tenant limit the counters reached (`>=`) as words, with the amount: the scripts' `tenant_reached`.
    func tenantReached(_ storage: Storage, tenant: String, now: Int64) -> (kind: String, amount: String)? {
        guard let l = settings.tenantBudgets.limits[tenant], !tenant.isEmpty else { return nil }
        let used = storage.tenantDays[Self.tenantDay(tenant, now: now)] ?? Charge()
        if let max = l.maxCostMicrosPerDay, used.costMicros >= max {
            return ("tenant \(tenant) daily cost", String(format: "$%.2f", Double(max) / 1_000_000) + " per day")
        }
        if let max = l.maxTokensPerDay, used.tokens >= max { return ("tenant \(tenant) daily tokens", "\(max) per day") }
        return nil
    }

    /// What tenant `tenant` spent on the UTC day of the store's clock.
    public func tenantUsage(_ tenant: String) -> Charge {
        let now = clock.nowMilliseconds
        return state.withLock { $0.tenantDays[Self.tenantDay(tenant, now: now)] ?? Charge() }
    }

    static let terminal: Set<String> = ["succeeded", "failed", "cancelled", "budget_exceeded", "dead_lettered"]

    func addEvent(
        _ storage: inout Storage, _ record: inout Record, _ type: String, seq: Int64, branch: Int64, step: String, now: Int64,
        data: String
    ) {
        storage.eventCounter += 1
        let value = (try? JSONValue.parse(Array(data.utf8))) ?? .string(data)
        record.events.append(
            TaskEventRecord(
                id: "\(now)-\(storage.eventCounter)", type: type, seq: seq, branch: branch, step: step, atMilliseconds: now, data: value))
        if record.events.count > settings.eventsMaxLength { record.events.removeFirst(record.events.count - settings.eventsMaxLength) }
    }

    func newOutboxID(_ storage: inout Storage) -> String {
        storage.outboxCounter += 1
        let text = String(storage.outboxCounter)
        return String(repeating: "0", count: max(0, 12 - text.count)) + text
    }

    /// Which limit committed counters have reached (`>=`), or nil: the script's `reached`.
    static func reached(_ r: Record, now: Int64) -> String? {
        let l = r.limits
        let u = r.usage
        if let max = l.maxSteps, u.steps >= max { return "steps" }
        if let max = l.maxCostMicros, u.costMicros >= max { return "cost" }
        if let max = l.maxTokens, u.tokens >= max { return "tokens" }
        if let max = l.maxToolCalls, u.toolCalls >= max { return "tool_calls" }
        if let deadline = l.deadlineMilliseconds, now >= deadline { return "deadline" }
        return nil
    }

    /// A reached cap in words with its limit (the scripts' `cap_text`): `cost limit reached ($1.00)`.
    static func capText(_ over: String, _ l: BudgetLimits) -> String {
        let limit: String? =
            switch over {
            case "cost": l.maxCostMicros.map { String(format: "$%.2f", Double($0) / 1_000_000) }
            case "tokens": l.maxTokens.map(String.init)
            case "steps": l.maxSteps.map(String.init)
            case "tool_calls": l.maxToolCalls.map(String.init)
            case "handoffs": l.maxHandoffs.map(String.init)
            default: nil
            }
        return "\(over) limit reached" + (limit.map { " (\($0))" } ?? "")
    }

    /// Parks a task in `needs_review` at a cap (the scripts' `park`): no message, no lease.
    func park(_ storage: inout Storage, _ r: inout Record, over: String, now: Int64, seq: Int64, text: String? = nil) {
        let text = text ?? Self.capText(over, r.limits)
        r.status = "needs_review"
        r.statusReason = "needs review: " + text
        r.review = over
        r.updatedAt = now
        r.leaseOwner = ""
        r.leaseUntil = 0
        addEvent(
            &storage, &r, "needs_review", seq: seq, branch: r.branch, step: r.step, now: now,
            data: JSONValue.object(["kind": .string(over), "reason": .string(text)]).jsonString)
    }

    /// `cost limit reached`, or for a child stopped by an ancestor's limit `cost limit of the parent task reached`.
    static func stopReason(_ over: String, own: Bool) -> String {
        own ? "\(over) limit reached" : "\(over) limit of the parent task reached"
    }

    static func budgetError(_ over: String) -> String {
        JSONValue.object([
            "code": "budget_exceeded", "message": .string("the \(over) limit was reached"), "bucket": "budget", "retryable": false,
        ]).jsonString
    }

    private func checkCrash(_ storage: inout Storage, task: String, token: Int64, commit: Bool) throws {
        guard let doom = storage.doomed[task], doom.token == token else { return }
        if commit || doom.point == .afterClaim {
            if commit {
                storage.doomed[task] = nil
                storage.crashes += 1
            }
            throw SimulatedCrash(task: task, token: token)
        }
    }

    // MARK: - TaskStore

    public func submit(_ task: NewTask) async throws -> SubmitOutcome {
        let now = clock.nowMilliseconds
        return state.withLock { storage in
            if let existing = storage.tasks[task.id] { return .exists(status: existing.status) }
            var record = Record(
                id: task.id, agent: task.agent, input: task.inputJSON, status: "queued", step: task.firstStep, createdAt: now,
                updatedAt: now, tenant: task.tenant, labels: task.labelsJSON, notify: task.notifyJSON, queue: task.queue,
                root: RedisKeys.root(of: task.id), parent: task.parent, limits: task.limits)
            record.checkpoints[0] = task.stateJSON
            addEvent(&storage, &record, "submitted", seq: 0, branch: 0, step: task.firstStep, now: now, data: "{}")
            record.outbox[task.outboxID ?? newOutboxID(&storage)] = .step(task.firstMessage, queue: task.queue)
            storage.tasks[task.id] = record
            return .created
        }
    }

    public func claim(_ message: StepMessage, worker: String, leaseMilliseconds: Int64) async throws -> ClaimOutcome {
        let now = clock.nowMilliseconds
        return state.withLock { storage in
            guard var r = storage.tasks[message.task] else { return .missing }
            if Self.terminal.contains(r.status) { return .terminal(r.status) }
            if message.branch < r.branch { return .stale }
            if message.branch > r.branch {
                return .future("the task is on branch \(r.branch), the message names branch \(message.branch)")
            }
            if message.seq < r.seq { return .stale }
            if message.seq > r.seq { return .future("the task is at seq \(r.seq), the message names seq \(message.seq)") }
            if message.attempt < r.attempt { return .stale }
            if message.attempt > r.attempt {
                return .future("the task is at attempt \(r.attempt), the message names attempt \(message.attempt)")
            }
            if !r.leaseOwner.isEmpty && r.leaseUntil > now,
                r.leaseOwner == worker || storage.workers[r.leaseOwner].map({ $0 > now - settings.workerStaleMilliseconds }) == true
            {
                return .leased(by: r.leaseOwner)
            }
            if ["paused", "waiting", "sleeping", "needs_review"].contains(r.status) { return .inactive(r.status) }
            defer { storage.tasks[message.task] = r }
            if !r.cancel.isEmpty {
                r.status = "cancelled"
                r.finishedAt = now
                r.updatedAt = now
                r.leaseOwner = ""
                r.leaseUntil = 0
                addEvent(&storage, &r, "cancelled", seq: r.seq, branch: r.branch, step: r.step, now: now, data: r.cancel)
                storage.tasks[message.task] = r
                childDone(&storage, r, now: now)
                return .stopped("cancelled")
            }
            if !r.pause.isEmpty {
                let data = r.pause
                r.status = "paused"
                r.pause = ""
                r.updatedAt = now
                r.leaseOwner = ""
                r.leaseUntil = 0
                addEvent(&storage, &r, "paused", seq: r.seq, branch: r.branch, step: r.step, now: now, data: data)
                return .stopped("paused")
            }
            if Self.reached(r, now: now) == nil, let (kind, amount) = tenantReached(storage, tenant: r.tenant, now: now) {
                let text = "\(kind) limit reached (\(amount))"
                if r.limits.reviewOnLimit {
                    park(&storage, &r, over: kind, now: now, seq: r.seq, text: text)
                    return .stopped("needs_review")
                }
                r.status = "budget_exceeded"
                r.finishedAt = now
                r.updatedAt = now
                r.error = Self.budgetError(kind)
                r.leaseOwner = ""
                r.leaseUntil = 0
                r.statusReason = text
                addEvent(
                    &storage, &r, "budget_exceeded", seq: r.seq, branch: r.branch, step: r.step, now: now,
                    data: JSONValue.object(["kind": .string(kind)]).jsonString)
                storage.tasks[message.task] = r
                childDone(&storage, r, now: now)
                return .stopped("budget_exceeded")
            }
            if let over = Self.reached(r, now: now), r.limits.reviewOnLimit {
                park(&storage, &r, over: over, now: now, seq: r.seq)
                return .stopped("needs_review")
            }
            // A child stops when an ancestor's limit is reached too (the parent's limit is not the child's to review).
            let ownOver = Self.reached(r, now: now)
            if let over = ownOver ?? reachedUp(storage, r, now: now) {
                r.status = "budget_exceeded"
                r.finishedAt = now
                r.updatedAt = now
                r.error = Self.budgetError(over)
                r.leaseOwner = ""
                r.leaseUntil = 0
                r.statusReason = ownOver != nil ? "\(over) limit reached" : "\(over) limit of the parent task reached"
                addEvent(
                    &storage, &r, "budget_exceeded", seq: r.seq, branch: r.branch, step: r.step, now: now,
                    data: JSONValue.object(["kind": .string(over)]).jsonString)
                storage.tasks[message.task] = r
                childDone(&storage, r, now: now)
                return .stopped("budget_exceeded")
            }
            r.fence += 1
            r.status = "running"
            r.leaseOwner = worker
            r.leaseUntil = now + leaseMilliseconds
            r.updatedAt = now
            r.statusReason = ""
            if r.startedAt == nil {
                r.startedAt = now
                addEvent(&storage, &r, "started", seq: r.seq, branch: r.branch, step: r.step, now: now, data: "{}")
            }
            if let plan = storage.crashPlan, plan.task == nil || plan.task == r.id {
                storage.crashPlan = nil
                storage.doomed[r.id] = (r.fence, plan.point)
            }
            var claimed = ClaimedTask(
                id: r.id, agent: r.agent, step: r.step, seq: message.seq, branch: message.branch, attempt: message.attempt,
                token: r.fence, stateJSON: Array((r.checkpoints[r.seq] ?? "").utf8), inputJSON: Array(r.input.utf8),
                limits: r.limits, usage: r.usage, queue: "", wakeupJSON: r.wakeup, claimedAtMilliseconds: now)
            claimed.tenantLimited = settings.tenantBudgets.hasLimits(r.tenant)
            return .run(claimed)
        }
    }

    public func renewLease(task: String, token: Int64, worker: String, leaseMilliseconds: Int64) async throws -> LeaseStatus {
        let now = clock.nowMilliseconds
        return try state.withLock { storage in
            try checkCrash(&storage, task: task, token: token, commit: false)
            guard var r = storage.tasks[task], r.fence == token, r.leaseOwner == worker, r.status == "running" else { return .lost }
            r.leaseUntil = now + leaseMilliseconds
            storage.tasks[task] = r
            return .held(cancelRequested: !r.cancel.isEmpty, pauseRequested: !r.pause.isEmpty)
        }
    }

    private enum ChargeMode { case charge, effectGet, effectPut(String) }

    private enum ChargeReply {
        case fenced
        case absent
        case ok(over: String?, record: String?)
    }

    /// The charge script: `charge`, `effect_get` and `effect_put` in one.
    private func chargeScript(task: String, token: Int64, charge: Charge, key: String, mode: ChargeMode) throws -> ChargeReply {
        try state.withLock { storage in
            try checkCrash(&storage, task: task, token: token, commit: false)
            guard var r = storage.tasks[task], r.fence == token, r.status == "running" else { return .fenced }
            var amount = charge
            var existingRecord: String?
            switch mode {
            case .charge: break
            case .effectGet, .effectPut:
                if let existing = r.effects[key] {
                    existingRecord = existing
                    let decoded = try JSONCoding.decoder.decode(EffectRecord.self, from: Data(existing.utf8))
                    amount = r.chargedEffects.contains(key) ? Charge() : decoded.charge
                } else if case .effectPut(let record) = mode {
                    r.effects[key] = record
                } else {
                    return .absent
                }
            }
            if r.pending.token != token { r.pending = Pending(token: token) }
            if case .charge = mode {
            } else if r.pending.effects.contains(key) {
                amount = Charge()
            } else {
                r.pending.effects.insert(key)
            }
            // A tenant with daily limits: admitted while its counter is below the limit; a refused charge counts nowhere.
            let now = clock.nowMilliseconds
            let tenantLimits = settings.tenantBudgets.limits[r.tenant]
            var tenantOver: String?
            if let l = tenantLimits, !r.tenant.isEmpty, amount.costMicros > 0 || amount.tokens > 0 {
                let day = Self.tenantDay(r.tenant, now: now)
                let used = storage.tenantDays[day] ?? Charge()
                if amount.costMicros > 0, let max = l.maxCostMicrosPerDay, used.costMicros >= max {
                    return .ok(over: "tenant \(r.tenant) daily cost", record: existingRecord)
                }
                if amount.tokens > 0, let max = l.maxTokensPerDay, used.tokens >= max {
                    return .ok(over: "tenant \(r.tenant) daily tokens", record: existingRecord)
                }
                let after = used + Charge(costMicros: amount.costMicros, tokens: amount.tokens)
                storage.tenantDays[day] = after
                if let max = l.maxCostMicrosPerDay, after.costMicros > max {
                    tenantOver = "tenant \(r.tenant) daily cost"
                } else if let max = l.maxTokensPerDay, after.tokens > max {
                    tenantOver = "tenant \(r.tenant) daily tokens"
                }
            }
            r.pending.charge = r.pending.charge + amount
            storage.tasks[task] = r
            let l = r.limits
            let u = r.usage
            let p = r.pending.charge
            var over: String?
            if let max = l.maxCostMicros, u.costMicros + p.costMicros > max {
                over = "cost"
            } else if let max = l.maxTokens, u.tokens + p.tokens > max {
                over = "tokens"
            } else if let max = l.maxToolCalls, u.toolCalls + p.toolCalls > max {
                over = "tool_calls"
            }
            return .ok(over: over ?? tenantOver, record: existingRecord)
        }
    }

    public func charge(task: String, token: Int64, _ charge: Charge) async throws -> ChargeOutcome {
        switch try chargeScript(task: task, token: token, charge: charge, key: "", mode: .charge) {
        case .ok(let over, _): return over.map { .exceeded($0) } ?? .ok
        case .absent, .fenced: return .fenced
        }
    }

    public func effect(task: String, token: Int64, key: String) async throws -> EffectLookup {
        try lookup(chargeScript(task: task, token: token, charge: Charge(), key: key, mode: .effectGet), fallback: nil)
    }

    public func recordEffect(task: String, token: Int64, key: String, record: EffectRecord) async throws -> EffectLookup {
        let encoded = try JSONCoding.string(record)
        return try lookup(
            chargeScript(task: task, token: token, charge: record.charge, key: key, mode: .effectPut(encoded)), fallback: record)
    }

    private func lookup(_ reply: ChargeReply, fallback: EffectRecord?) throws -> EffectLookup {
        switch reply {
        case .fenced: return .fenced
        case .absent: return .absent
        case .ok(let over, let raw):
            let record = try raw.map { try JSONCoding.decoder.decode(EffectRecord.self, from: Data($0.utf8)) } ?? fallback
            guard let record else { return .absent }
            return .recorded(record, exceeded: over)
        }
    }

    public func progress(task: String, token: Int64, fraction: Double, message: String) async throws {
        let now = clock.nowMilliseconds
        let data = try JSONCoding.string(["fraction": JSONValue.double(fraction), "message": .string(message)])
        try state.withLock { storage in
            try checkCrash(&storage, task: task, token: token, commit: false)
            guard var r = storage.tasks[task], r.fence == token, r.status == "running" else { return }
            r.progressFraction = fraction
            r.progressMessage = message
            r.updatedAt = now
            addEvent(&storage, &r, "progress", seq: r.seq, branch: r.branch, step: r.step, now: now, data: data)
            storage.tasks[task] = r
        }
    }

    public func commit(_ commit: Commit) async throws -> CommitOutcome {
        let now = clock.nowMilliseconds
        return try state.withLock { storage in
            guard var r = storage.tasks[commit.task], r.fence == commit.token, r.seq == commit.seq, r.status == "running" else {
                return .fenced
            }
            try checkCrash(&storage, task: commit.task, token: commit.token, commit: true)
            var commitKind = commit.kind
            if case .parallel(let spec) = commit.kind, r.childrenTotal + Int64(spec.children.count) > Int64(spec.maxChildren) {
                // Over the cap of children per task: the task fails, nothing is created.
                let message =
                    "step \(r.step) started \(spec.children.count) children after \(r.childrenTotal), over the cap of \(spec.maxChildren) children per task (limits.max_children)"
                commitKind = .fail(
                    errorJSON: JSONValue.object([
                        "code": "max_children", "message": .string(message), "bucket": "max_children", "retryable": false,
                    ]).jsonString)
            }
            var delta = commit.charge
            if r.pending.token == commit.token {
                delta = delta + r.pending.charge
                r.chargedEffects.formUnion(r.pending.effects)
                r.pending = Pending()
            }
            r.usage.costMicros += delta.costMicros
            r.usage.tokens += delta.tokens
            r.usage.toolCalls += delta.toolCalls
            var newSeq = r.seq
            switch commitKind {
            case .next, .handoff, .complete, .fail, .budget, .wait, .parallel:
                newSeq += 1
                r.wakeup = ""
                r.checkpoints[newSeq] = commit.stateJSON
                let old = newSeq - Int64(settings.checkpointsKept)
                if old >= 0 { r.checkpoints[old] = nil }
                r.usage.steps += 1
            case .retry, .dead:
                break
            }
            var status: String
            var eventType: String
            var reason = ""
            var outboxMessage: OutboxMessage?
            var waitRecord: WaitRecord?
            var eventData = commit.eventDataJSON
            let overUp = chargeAncestors(&storage, r, charge: delta, steps: newSeq != r.seq ? 1 : 0, now: now)
            var parallel: ParallelSpec?
            var reviewOver: String?
            r.seq = newSeq
            r.updatedAt = now
            r.leaseOwner = ""
            r.leaseUntil = 0
            switch commitKind {
            case .next, .handoff:
                var handoffs: Int64 = 0
                if case .handoff = commit.kind {
                    r.usage.handoffs += 1
                    handoffs = r.usage.handoffs
                }
                var own = Self.reached(r, now: now)
                if own == nil, let max = r.limits.maxHandoffs, handoffs > max { own = "handoffs" }
                // An ancestor's limit stops a child (the parent's limit is not the child's to review).
                let over = own ?? overUp
                if !r.cancel.isEmpty {
                    (status, eventType) = ("cancelled", "cancelled")
                } else if let own, r.limits.reviewOnLimit {
                    (status, eventType) = ("needs_review", "needs_review")
                    reviewOver = own
                } else if let over {
                    (status, eventType, reason) = ("budget_exceeded", "budget_exceeded", Self.stopReason(over, own: own != nil))
                    r.error = Self.budgetError(over)
                } else if !r.pause.isEmpty {
                    (status, eventType) = ("paused", "paused")
                    r.pause = ""
                } else {
                    status = "queued"
                    if case .handoff = commit.kind { eventType = "handoff" } else { eventType = "step_committed" }
                    outboxMessage = commit.next
                }
                // A handoff runs the same step again (see the report: RedisTaskStore passes "" here).
                if case .next(let step) = commit.kind { r.step = step }
                r.attempt = 1
            case .complete(let resultJSON):
                (status, eventType) = ("succeeded", "succeeded")
                r.result = resultJSON
            case .fail(let errorJSON):
                (status, eventType) = ("failed", "failed")
                r.error = errorJSON
                if case .parallel = commit.kind { eventData = errorJSON }
            case .budget(let kind, _) where r.limits.reviewOnLimit && r.cancel.isEmpty:
                // The step stopped at a charge: its partial state is committed and the same step runs again on resume.
                (status, eventType) = ("needs_review", "needs_review")
                reviewOver = kind
            case .budget(let kind, let errorJSON):
                (status, eventType, reason) = ("budget_exceeded", "budget_exceeded", "\(kind) limit reached")
                r.error = errorJSON
            case .retry(let delay, let errorJSON, let bucket, let timer):
                (status, eventType) = ("retrying", "retrying")
                r.attempt += 1
                reason = "attempt \(r.attempt) after \(bucket)"
                r.error = errorJSON
                r.nextTimer = now + delay
                storage.timers[try JSONCoding.string(timer)] = now + delay
            case .dead(let deadReason, let errorJSON, let deadLetter):
                (status, eventType, reason) = ("dead_lettered", "dead_lettered", deadReason)
                r.error = errorJSON
                outboxMessage = deadLetter
            case .parallel(let spec):
                r.attempt = 1
                if !r.cancel.isEmpty {
                    (status, eventType) = ("cancelled", "cancelled")
                } else if let over = Self.reached(r, now: now) ?? overUp {
                    (status, eventType, reason) = (
                        "budget_exceeded", "budget_exceeded", Self.stopReason(over, own: Self.reached(r, now: now) != nil)
                    )
                    r.error = Self.budgetError(over)
                } else {
                    var due: Int64?
                    if let deadline = r.limits.deadlineMilliseconds { due = deadline }
                    waitRecord = WaitRecord(
                        kind: "children", signals: [], next: spec.join, onTimeout: nil, due: due, dueKind: due.map { _ in "deadline" })
                    parallel = spec
                    r.step = spec.join
                    (status, eventType) = ("waiting", "waiting")
                    reason = "waiting for \(spec.children.count) children" + (due.map { ", deadline \(WaitSpec.iso($0))" } ?? "")
                    var data: [String: JSONValue] = ["next": .string(spec.join), "children": .int(Int64(spec.children.count))]
                    if let due {
                        data["deadline"] = .string(WaitSpec.iso(due))
                        r.nextTimer = due
                    }
                    eventData = JSONValue.object(data).jsonString
                }
            case .wait(let spec):
                r.attempt = 1
                if !r.cancel.isEmpty {
                    (status, eventType) = ("cancelled", "cancelled")
                } else if let over = (r.limits.reviewOnLimit ? nil : Self.reached(r, now: now)) ?? overUp {
                    (status, eventType, reason) = (
                        "budget_exceeded", "budget_exceeded", Self.stopReason(over, own: Self.reached(r, now: now) != nil)
                    )
                    r.error = Self.budgetError(over)
                } else {
                    var due: Int64?
                    var dueKind: String?
                    // A sleep's delay (sleep(for:)) is due as a time; a wait's is its timeout.
                    if let delay = spec.delayMilliseconds { (due, dueKind) = (now + delay, spec.kind == "sleep" ? "time" : "timeout") }
                    if let at = spec.atMilliseconds, due.map({ at < $0 }) ?? true { (due, dueKind) = (at, "time") }
                    // The budget's deadline ends a wait too: its timer stops the task (budget_exceeded) then.
                    if let deadline = r.limits.deadlineMilliseconds, due.map({ deadline < $0 }) ?? true {
                        (due, dueKind) = (deadline, "deadline")
                    }
                    let wait = WaitRecord(
                        kind: spec.kind, signals: spec.signals, next: spec.next, onTimeout: spec.onTimeout, due: due, dueKind: dueKind)
                    waitRecord = wait
                    r.step = spec.next
                    (status, eventType) = spec.kind == "sleep" ? ("sleeping", "sleeping") : ("waiting", "waiting")
                    reason = WaitSpec.statusReason(kind: spec.kind, signals: spec.signals, dueMilliseconds: due, dueKind: dueKind)
                    var data: [String: JSONValue] = ["next": .string(spec.next)]
                    if !spec.signals.isEmpty { data["signals"] = .array(spec.signals.map(JSONValue.string)) }
                    if let onTimeout = spec.onTimeout { data["on_timeout"] = .string(onTimeout) }
                    if let due {
                        let key = dueKind == "time" ? "at" : (dueKind == "deadline" ? "deadline" : "timeout_at")
                        data[key] = .string(WaitSpec.iso(due))
                        r.nextTimer = due
                    }
                    eventData = JSONValue.object(data).jsonString
                }
            }
            if let reviewOver {
                let text = Self.capText(reviewOver, r.limits)
                reason = "needs review: " + text
                r.review = reviewOver
                eventData = JSONValue.object(["kind": .string(reviewOver), "reason": .string(text)]).jsonString
            }
            r.status = status
            r.statusReason = reason
            if Self.terminal.contains(status) { r.finishedAt = now }
            // As the Redis commit script: the commit's token and what it added to the counters (`baton verify` sums them).
            eventData = Self.withCommitCounts(eventData, token: commit.token, charge: delta, steps: newSeq != commit.seq ? 1 : 0)
            addEvent(&storage, &r, eventType, seq: newSeq, branch: r.branch, step: r.step, now: now, data: eventData)
            var outboxID: String?
            if status == "queued" || status == "dead_lettered" {
                let id = newOutboxID(&storage)
                if let outboxMessage { r.outbox[id] = outboxMessage }
                outboxID = id
            }
            if Self.terminal.contains(status) { childDone(&storage, r, now: now) }
            if let parallel, let wait = waitRecord {
                createChildren(&storage, &r, parallel, now: now)
                if parallel.children.isEmpty {
                    outboxID = wake(&storage, &r, wait: wait, trigger: ["trigger": "children", "total": 0], now: now)
                    status = "queued"
                } else {
                    Self.registerWait(&storage, &r, wait, seq: newSeq)
                }
            } else if let wait = waitRecord {
                // A signal that arrived before the wait began is consumed now; a time already passed fires now.
                if let signal = Self.takeSignal(&r, names: wait.signals) {
                    outboxID = wake(&storage, &r, wait: wait, trigger: Self.signalTrigger(signal), now: now)
                    status = "queued"
                } else if let due = wait.due, due <= now {
                    outboxID = wake(&storage, &r, wait: wait, trigger: ["trigger": .string(wait.dueKind ?? "time")], now: now)
                    status = "queued"
                } else {
                    Self.registerWait(&storage, &r, wait, seq: newSeq)
                }
            }
            storage.tasks[commit.task] = r
            return .committed(status: status, seq: newSeq, outboxID: outboxID)
        }
    }

    /// `data` (a JSON object) with `fence` and `charged` added, as the Redis commit script writes them.
    static func withCommitCounts(_ data: String, token: Int64, charge: Charge, steps: Int64) -> String {
        guard case .object(var object)? = try? JSONValue.parse(Array((data.isEmpty ? "{}" : data).utf8)) else { return data }
        object["fence"] = .int(token)
        object["charged"] = [
            "cost": .int(charge.costMicros), "tokens": .int(charge.tokens), "tool_calls": .int(charge.toolCalls), "steps": .int(steps),
        ]
        return JSONValue.object(object).jsonString
    }

    // MARK: - Waits and signals

    /// Removes and returns the earliest signal in the mailbox named one of `names`.
    static func takeSignal(_ r: inout Record, names: [String]) -> StoredSignal? {
        guard let best = r.signals.values.filter({ names.contains($0.name) }).min(by: { $0.n < $1.n }) else { return nil }
        r.signals[best.id] = nil
        return best
    }

    /// Records a wait that did not fire at once: the task keeps it, with its timer when it has a due time.
    static func registerWait(_ storage: inout Storage, _ r: inout Record, _ wait: WaitRecord, seq: Int64) {
        r.wait = wait
        r.waitTimer = ""
        if let due = wait.due {
            let member = JSONValue.object(["wake": .string(r.id), "seq": .int(seq), "branch": .int(r.branch)]).jsonString
            r.waitTimer = member
            storage.timers[member] = due
        }
    }

    static func signalTrigger(_ signal: StoredSignal) -> [String: JSONValue] {
        [
            "trigger": "signal", "name": .string(signal.name), "id": .string(signal.id), "p": .string(signal.payload),
            "actor": .string(signal.actor), "reason": .string(signal.reason), "at": .int(signal.at),
        ]
    }

    /// Wakes a waiting or sleeping task, as the scripts' `wake`: the resumed step's message goes to the
    /// outbox, the trigger to `wakeup`, a `woke` event to the history. Returns the outbox id.
    func wake(_ storage: inout Storage, _ r: inout Record, wait: WaitRecord, trigger: [String: JSONValue], now: Int64) -> String {
        var trigger = trigger
        let kind = trigger["trigger"]?.stringValue ?? "time"
        let step = kind != "signal" ? (wait.onTimeout ?? wait.next) : wait.next
        trigger["woke_at"] = .int(now)
        if let due = wait.due { trigger["due_at"] = .int(due) }
        r.status = "queued"
        r.step = step
        r.attempt = 1
        r.wakeup = JSONValue.object(trigger).jsonString
        r.wait = nil
        if !r.waitTimer.isEmpty { storage.timers[r.waitTimer] = nil }
        r.waitTimer = ""
        r.nextTimer = nil
        r.statusReason = ""
        r.updatedAt = now
        let id = newOutboxID(&storage)
        r.outbox[id] = .step(StepMessage(task: r.id, agent: r.agent, step: step, seq: r.seq, branch: r.branch, attempt: 1), queue: r.queue)
        var data: [String: JSONValue] = ["trigger": .string(kind)]
        for key in ["name", "id", "actor", "reason", "due_at"] { if let value = trigger[key] { data[key] = value } }
        addEvent(&storage, &r, "woke", seq: r.seq, branch: r.branch, step: step, now: now, data: JSONValue.object(data).jsonString)
        return id
    }

    public func signal(_ signal: TaskSignal) async throws -> SignalOutcome {
        let now = clock.nowMilliseconds
        return state.withLock { storage in
            guard var r = storage.tasks[signal.task] else { return .notFound }
            if r.seenSignals.contains(signal.id) { return .duplicate(status: r.status) }
            if Self.terminal.contains(r.status) { return .terminal(status: r.status) }
            let wait = r.status == "waiting" ? r.wait.flatMap { $0.signals.contains(signal.name) ? $0 : nil } : nil
            if wait == nil && r.signals.count >= settings.signalMailboxCap { return .mailboxFull(cap: settings.signalMailboxCap) }
            r.seenSignals.append(signal.id)
            if r.seenSignals.count > SignalLimits.seenIDsKept { r.seenSignals.removeFirst(r.seenSignals.count - SignalLimits.seenIDsKept) }
            r.signalCounter += 1
            r.updatedAt = now
            addEvent(&storage, &r, "signal_received", seq: r.seq, branch: r.branch, step: r.step, now: now, data: signal.eventDataJSON)
            let stored = StoredSignal(
                n: r.signalCounter, id: signal.id, name: signal.name, payload: signal.payloadJSON, actor: signal.actor,
                reason: signal.reason,
                at: now)
            defer { storage.tasks[signal.task] = r }
            if let wait {
                _ = wake(&storage, &r, wait: wait, trigger: Self.signalTrigger(stored), now: now)
                return .woke
            }
            r.signals[signal.id] = stored
            return .stored(status: r.status)
        }
    }

    public func fireWaitTimer(task: String, timer: String) async throws -> Bool {
        let now = clock.nowMilliseconds
        return state.withLock { storage in fireWaitTimer(&storage, task: task, timer: timer, now: now) }
    }

    func fireWaitTimer(_ storage: inout Storage, task: String, timer: String, now: Int64) -> Bool {
        storage.timers[timer] = nil
        guard var r = storage.tasks[task], r.status == "waiting" || r.status == "sleeping", r.waitTimer == timer, let wait = r.wait
        else { return false }
        if wait.dueKind == "deadline" && r.limits.reviewOnLimit {
            // Parked instead: a raise resumes the wait's timeout step (else its `then` step), as if it timed out.
            r.step = wait.onTimeout ?? wait.next
            r.attempt = 1
            r.wait = nil
            r.waitTimer = ""
            r.nextTimer = nil
            r.wakeup = JSONValue.object(["trigger": "timeout", "woke_at": .int(now), "due_at": .int(wait.due ?? now)]).jsonString
            park(&storage, &r, over: "deadline", now: now, seq: r.seq)
            storage.tasks[task] = r
            return false
        }
        if wait.dueKind == "deadline" {
            // The budget's deadline came first: the task stops where it waits, its state kept.
            r.status = "budget_exceeded"
            r.error = Self.budgetError("deadline")
            r.finishedAt = now
            r.updatedAt = now
            r.statusReason = "deadline limit reached"
            r.wait = nil
            r.waitTimer = ""
            r.nextTimer = nil
            addEvent(&storage, &r, "budget_exceeded", seq: r.seq, branch: r.branch, step: r.step, now: now, data: #"{"kind":"deadline"}"#)
            storage.tasks[task] = r
            childDone(&storage, r, now: now)
            let data = JSONValue.object(["reason": "the parent task reached its deadline", "actor": "baton"]).jsonString
            cancelChildren(&storage, of: task, total: r.childrenTotal, data: data, now: now)
            return false
        }
        _ = wake(&storage, &r, wait: wait, trigger: ["trigger": .string(wait.dueKind ?? "time")], now: now)
        storage.tasks[task] = r
        return true
    }

    /// The task of a wait timer member, or nil for a step-message timer.
    static func waitTimerTask(_ member: String) -> String? {
        guard member.hasPrefix("{\"branch\""), let value = try? JSONValue.parse(Array(member.utf8)) else { return nil }
        return value["wake"]?.stringValue
    }

    public func outboxDone(task: String, ids: [String]) async throws {
        outboxDoneWithoutWaiting(task: task, ids: ids)
    }

    /// At once (a lock, no task): what a test reads next sees the entries gone.
    public func outboxDoneWithoutWaiting(task: String, ids: [String]) {
        state.withLock { storage in
            for id in ids { storage.tasks[task]?.outbox[id] = nil }
        }
    }

    public func pendingOutbox(task: String) async throws -> [String: OutboxMessage] {
        state.withLock { $0.tasks[task]?.outbox ?? [:] }
    }
}
