import Baton
import Foundation

extension InMemoryTaskStore {
    /// Runs an operator or sweep action on one task, as the control script of `Scripts.swift` does:
    /// `cancel`, `pause`, `resume`, `redrive`, `stalled` (republish a running task whose lease expired more
    /// than `leaseGraceMilliseconds` ago) and `dead` (mark dead-lettered; with `expectedSeq`, only at that
    /// seq). Actions that enqueue a step write it to the task's outbox; publish it with
    /// `StepExecutor.flushOutbox(task:)`.
    @discardableResult
    public func control(
        task id: String, action: String, reason: String = "", actor: String = "test", leaseGraceMilliseconds: Int64 = 0,
        errorJSON: String = "", expectedSeq: Int64? = nil
    ) -> ControlResult {
        let now = clock.nowMilliseconds
        return state.withLock { storage in
            guard var r = storage.tasks[id] else { return ControlResult("missing") }
            defer { storage.tasks[id] = r }
            let status = r.status
            var data = JSONValue.object(["reason": .string(reason), "actor": .string(actor)]).jsonString
            func enqueue(_ newStatus: String, _ eventType: String) {
                r.status = newStatus
                r.updatedAt = now
                r.leaseOwner = ""
                r.leaseUntil = 0
                r.pause = ""
                r.statusReason = ""
                let message = StepMessage(task: id, agent: r.agent, step: r.step, seq: r.seq, branch: r.branch, attempt: r.attempt)
                r.outbox[newOutboxID(&storage)] = .step(message, queue: r.queue)
                addEvent(&storage, &r, eventType, seq: r.seq, branch: r.branch, step: r.step, now: now, data: data)
            }
            switch action {
            case "cancel":
                if Self.terminal.contains(status) { return ControlResult("terminal", status) }
                if status == "running" {
                    r.cancel = data
                    return ControlResult("requested", status)
                }
                r.status = "cancelled"
                r.cancel = data
                r.finishedAt = now
                r.updatedAt = now
                r.statusReason = reason
                addEvent(&storage, &r, "cancelled", seq: r.seq, branch: r.branch, step: r.step, now: now, data: data)
                storage.tasks[id] = r
                childDone(&storage, r, now: now)
                // A parent's live children are cancelled with it (its join never runs).
                cancelChildren(&storage, of: id, total: r.childrenTotal, data: data, now: now)
                r = storage.tasks[id] ?? r
                return ControlResult("cancelled", "cancelled")
            case "pause":
                if Self.terminal.contains(status) { return ControlResult("terminal", status) }
                if status == "paused" { return ControlResult("already", status) }
                // A waiting or sleeping task keeps waiting; it pauses when it wakes, before the resumed step runs.
                if status == "running" || status == "waiting" || status == "sleeping" {
                    r.pause = data
                    return ControlResult("requested", status)
                }
                r.status = "paused"
                r.pausedFrom = status
                r.updatedAt = now
                r.statusReason = reason
                addEvent(&storage, &r, "paused", seq: r.seq, branch: r.branch, step: r.step, now: now, data: data)
                return ControlResult("paused", "paused")
            case "resume":
                if status == "paused" {
                    enqueue("queued", "resumed")
                    return ControlResult("resumed", "queued")
                }
                if !r.pause.isEmpty {
                    r.pause = ""
                    addEvent(&storage, &r, "resumed", seq: r.seq, branch: r.branch, step: r.step, now: now, data: data)
                    return ControlResult("resumed", status)
                }
                return ControlResult("conflict", status)
            case "redrive":
                if status != "dead_lettered" { return ControlResult("conflict", status) }
                let fromBranch = r.branch
                r.branch += 1
                r.attempt = 1
                r.error = ""
                r.finishedAt = nil
                data =
                    JSONValue.object([
                        "reason": .string(reason), "actor": .string(actor), "from_seq": .int(r.seq), "from_branch": .int(fromBranch),
                    ]).jsonString
                enqueue("queued", "redriven")
                return ControlResult("redriven", String(r.branch))
            case "reject":
                // A human ends a task parked at a cap: cancelled (an operator's decision, not the task's failure).
                if status != "needs_review" { return ControlResult("conflict", status) }
                data = JSONValue.object(["reason": .string(reason), "actor": .string(actor), "action": "reject"]).jsonString
                r.status = "cancelled"
                r.cancel = data
                r.finishedAt = now
                r.updatedAt = now
                r.statusReason = "rejected in review: " + reason
                addEvent(&storage, &r, "cancelled", seq: r.seq, branch: r.branch, step: r.step, now: now, data: data)
                storage.tasks[id] = r
                childDone(&storage, r, now: now)
                r = storage.tasks[id] ?? r
                return ControlResult("cancelled", "cancelled")
            case "stalled":
                if status != "running" || r.leaseUntil + leaseGraceMilliseconds > now { return ControlResult("live", status) }
                // A holder that still heartbeats is alive but late: it gets `workerStaleMilliseconds` more (as on Redis).
                let stale = settings.workerStaleMilliseconds
                if !r.leaseOwner.isEmpty, r.leaseUntil + stale > now, let beat = storage.workers[r.leaseOwner], beat > now - stale {
                    return ControlResult("live", status)
                }
                data =
                    JSONValue.object([
                        "reason": "stalled: the lease expired without a commit; republished from the checkpoint", "actor": .string(actor),
                    ]).jsonString
                enqueue("queued", "retrying")
                return ControlResult("republished", "queued")
            case "dead":
                if Self.terminal.contains(status) { return ControlResult("terminal", status) }
                if let expectedSeq, expectedSeq != r.seq { return ControlResult("stale", status) }
                r.status = "dead_lettered"
                r.error = errorJSON
                r.finishedAt = now
                r.updatedAt = now
                r.leaseOwner = ""
                r.leaseUntil = 0
                r.statusReason = reason
                addEvent(&storage, &r, "dead_lettered", seq: r.seq, branch: r.branch, step: r.step, now: now, data: errorJSON)
                storage.tasks[id] = r
                childDone(&storage, r, now: now)
                r = storage.tasks[id] ?? r
                return ControlResult("dead_lettered", "dead_lettered")
            default:
                return ControlResult("unknown_action", status)
            }
        }
    }

    /// Forks a task as the control script's `fork` action does: a new branch from the kept checkpoint
    /// `fromSeq`, resuming `step` or (nil) the step the newest event of that seq names. Answers `forked` (status:
    /// the new branch), `conflict` (running), `no_checkpoint` (status: the kept seqs, comma-separated), `no_step`
    /// or `missing`. The step goes to the task's outbox.
    @discardableResult
    public func fork(task id: String, fromSeq: Int64, step: String? = nil, reason: String = "", actor: String = "test") -> ControlResult {
        let now = clock.nowMilliseconds
        return state.withLock { storage in
            guard var r = storage.tasks[id] else { return ControlResult("missing") }
            if r.status == "running" { return ControlResult("conflict", r.status) }
            guard fromSeq >= 0, fromSeq <= r.seq, r.checkpoints[fromSeq] != nil else {
                let kept = r.checkpoints.keys.filter { $0 <= r.seq }.sorted().map(String.init).joined(separator: ",")
                return ControlResult("no_checkpoint", kept)
            }
            // The events that name the step that ran before their seq, not the one to run at it.
            let ranBefore: Set<String> = ["succeeded", "failed", "budget_exceeded"]
            let named = r.events.last { $0.seq == fromSeq && !ranBefore.contains($0.type) && !$0.step.isEmpty }?.step
            guard let resumed = step.flatMap({ $0.isEmpty ? nil : $0 }) ?? named else { return ControlResult("no_step", r.status) }
            let fromBranch = r.branch
            let seqBefore = r.seq
            // The checkpoints after the fork point belong to the old path (its events stay in the history).
            for seq in r.checkpoints.keys where seq > fromSeq { r.checkpoints[seq] = nil }
            r.branch += 1
            r.seq = fromSeq
            r.step = resumed
            r.attempt = 1
            r.result = ""
            r.error = ""
            r.finishedAt = nil
            r.cancel = ""
            r.pause = ""
            r.pausedFrom = ""
            r.wait = nil
            r.waitTimer = ""
            r.nextTimer = nil
            r.wakeup = ""
            r.status = "queued"
            r.updatedAt = now
            r.leaseOwner = ""
            r.leaseUntil = 0
            r.statusReason = ""
            let message = StepMessage(task: id, agent: r.agent, step: r.step, seq: r.seq, branch: r.branch, attempt: r.attempt)
            r.outbox[newOutboxID(&storage)] = .step(message, queue: r.queue)
            let data = JSONValue.object([
                "reason": .string(reason), "actor": .string(actor), "from_seq": .int(fromSeq), "from_branch": .int(fromBranch),
                "seq_before": .int(seqBefore),
            ]).jsonString
            addEvent(&storage, &r, "forked", seq: r.seq, branch: r.branch, step: r.step, now: now, data: data)
            storage.tasks[id] = r
            return ControlResult("forked", String(r.branch))
        }
    }

    // MARK: - Sweeps and workers

    /// Records a heartbeat of `worker` at the clock's current time (the `baton:workers` sorted set).
    public func heartbeat(worker: String) {
        let now = clock.nowMilliseconds
        state.withLock { $0.workers[worker] = now }
    }

    /// Removes the due timers (due time ≤ now) and returns their messages, earliest first. In Redis a
    /// claimed timer is re-scored and removed after its publish is confirmed; here a publish cannot fail.
    public func takeDueTimers() -> [OutboxMessage] {
        let now = clock.nowMilliseconds
        return state.withLock { storage in
            let due = storage.timers.filter { $0.value <= now }.sorted { ($0.value, $0.key) < ($1.value, $1.key) }
            var messages: [OutboxMessage] = []
            for (member, _) in due {
                storage.timers[member] = nil
                if let task = Self.waitTimerTask(member) {
                    // A wait or sleep timer wakes the task (its step goes to the task's outbox) if it still wins.
                    _ = fireWaitTimer(&storage, task: task, timer: member, now: now)
                } else if let message = try? JSONCoding.decoder.decode(OutboxMessage.self, from: Data(member.utf8)) {
                    messages.append(message)
                }
            }
            return messages
        }
    }

    /// The tasks the stalled sweep would look at: running, with a lease that has run out.
    public func stalledTasks() -> [String] {
        let now = clock.nowMilliseconds
        return state.withLock { storage in
            storage.tasks.values.filter { $0.status == "running" && $0.leaseUntil <= now }.map(\.id).sorted()
        }
    }

    /// Ids of tasks whose outbox holds entries not yet published.
    public func tasksWithPendingOutbox() -> [String] {
        state.withLock { storage in storage.tasks.values.filter { !$0.outbox.isEmpty }.map(\.id).sorted() }
    }

    /// The next instant (Unix ms) something becomes due: a retry timer, or a running task's lease end.
    public func nextWakeMilliseconds() -> Int64? {
        state.withLock { storage in
            let timer = storage.timers.values.min()
            let lease = storage.tasks.values.filter { $0.status == "running" }.map(\.leaseUntil).min()
            return [timer, lease].compactMap { $0 }.min()
        }
    }

    /// Number of pending timers.
    public var timerCount: Int { state.withLock { $0.timers.count } }

    // MARK: - Fault injection

    /// Makes the worker that next claims a step (of `task`, or of any task) "die" at `point`: calls of that
    /// attempt throw ``SimulatedCrash`` from then on and its commit never happens, so its lease stays until
    /// it expires. ``crashCount`` counts the crashes that happened.
    public func crashNextClaim(of task: String? = nil, at point: CrashPoint) {
        state.withLock { $0.crashPlan = (task, point) }
    }

    /// How many simulated crashes reached the commit (the attempt's work was dropped).
    public var crashCount: Int { state.withLock { $0.crashes } }

    // MARK: - Inspection

    /// The task as stored now, or nil.
    /// The task's input as submitted (JSON text), nil when there is no such task.
    public func inputJSON(of id: String) -> String? {
        state.withLock { $0.tasks[id]?.input }
    }

    public func snapshot(of id: String) -> TaskSnapshot? {
        state.withLock { storage in
            guard let r = storage.tasks[id] else { return nil }
            func json(_ text: String) -> JSONValue? {
                // `JSONValue` is expressible by `nil` (as `.null`): spell out the absent value.
                if text.isEmpty { return JSONValue?.none }
                return (try? JSONValue.parse(Array(text.utf8))) ?? .string(text)
            }
            var snapshot = TaskSnapshot(
                id: r.id, agent: r.agent, status: r.status, step: r.step, seq: r.seq, branch: r.branch, attempt: r.attempt, fence: r.fence,
                statusReason: r.statusReason, error: json(r.error), result: json(r.result), stateJSON: r.checkpoints[r.seq] ?? "",
                limits: r.limits, usage: r.usage, leaseOwner: r.leaseOwner, leaseUntilMilliseconds: r.leaseUntil,
                nextTimerMilliseconds: r.status == "retrying" ? r.nextTimer : nil, cancelRequested: !r.cancel.isEmpty,
                pauseRequested: !r.pause.isEmpty, progressFraction: r.progressFraction, progressMessage: r.progressMessage,
                tenant: r.tenant, events: r.events, wakeupJSON: r.wakeup,
                waitingForSignals: r.wait?.signals ?? [], waitDueMilliseconds: r.wait?.due,
                pendingSignals: r.signals.values.sorted { $0.n < $1.n }.map(\.name))
            snapshot.parentID = r.parent
            snapshot.childrenTotal = r.childrenTotal
            snapshot.childrenDone = r.childrenDone
            return snapshot
        }
    }

    /// The checkpoint stored for `seq` (only the last ``Settings/checkpointsKept`` versions are kept).
    public func checkpoint(of id: String, seq: Int64) -> String? {
        state.withLock { $0.tasks[id]?.checkpoints[seq] }
    }

    /// The recorded side effects of a task: key → result JSON text.
    public func effects(of id: String) -> [String: String] {
        state.withLock { storage in
            (storage.tasks[id]?.effects ?? [:]).compactMapValues {
                try? JSONCoding.decoder.decode(EffectRecord.self, from: Data($0.utf8)).result
            }
        }
    }

    /// All task ids, sorted.
    public var taskIDs: [String] { state.withLock { $0.tasks.keys.sorted() } }
}

extension InMemoryTaskStore {
    /// Raises a task's limits as the raise script of `Scripts.swift` does: answers `missing`, `terminal status`,
    /// `no_limit field`, `still kind` (nothing changed), `raised status` or `resumed queued` (a `needs_review`
    /// task: its parked step is in the outbox; publish it with `StepExecutor.flushOutbox(task:)`).
    @discardableResult
    public func raiseBudget(task id: String, _ raise: BudgetRaise, reason: String, actor: String = "test") -> ControlResult {
        let now = clock.nowMilliseconds
        return state.withLock { storage in
            guard var r = storage.tasks[id] else { return ControlResult("missing") }
            let status = r.status
            if Self.terminal.contains(status) { return ControlResult("terminal", status) }
            var limits = r.limits
            var changes: [String: JSONValue] = [:]
            for change in raise.changes {
                let path: WritableKeyPath<BudgetLimits, Int64?> =
                    switch change.field {
                    case "max_cost": \.maxCostMicros
                    case "max_tokens": \.maxTokens
                    case "max_steps": \.maxSteps
                    case "max_tool_calls": \.maxToolCalls
                    case "max_handoffs": \.maxHandoffs
                    case "max_attempts": \.maxAttempts
                    default: \.deadlineMilliseconds
                    }
                let old = limits[keyPath: path]
                if change.relative && old == nil { return ControlResult("no_limit", change.field) }
                let new = change.relative ? (old ?? 0) + change.value : change.value
                limits[keyPath: path] = new
                changes[change.field] = .object(["from": old.map(JSONValue.int) ?? .null, "to": .int(new)])
            }
            var probe = r
            probe.limits = limits
            var over = Self.reached(probe, now: now)
            if over == nil, let max = limits.maxHandoffs, r.usage.handoffs > max { over = "handoffs" }
            if let over { return ControlResult("still", over) }
            r.limits = limits
            r.updatedAt = now
            let data = JSONValue.object(["actor": .string(actor), "reason": .string(reason), "limits": .object(changes)]).jsonString
            addEvent(&storage, &r, "budget_raised", seq: r.seq, branch: r.branch, step: r.step, now: now, data: data)
            defer { storage.tasks[id] = r }
            guard status == "needs_review" else { return ControlResult("raised", status) }
            r.status = "queued"
            r.statusReason = ""
            let kind = r.review
            r.review = ""
            let message = StepMessage(task: id, agent: r.agent, step: r.step, seq: r.seq, branch: r.branch, attempt: r.attempt)
            r.outbox[newOutboxID(&storage)] = .step(message, queue: r.queue)
            addEvent(
                &storage, &r, "resumed", seq: r.seq, branch: r.branch, step: r.step, now: now,
                data: JSONValue.object([
                    "actor": .string(actor), "reason": .string(reason), "trigger": "budget", "kind": .string(kind),
                ]).jsonString)
            return ControlResult("resumed", "queued")
        }
    }
}
