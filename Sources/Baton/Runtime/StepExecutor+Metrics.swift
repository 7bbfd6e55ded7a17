import Foundation
import RedisClient

/// The worker's metric updates around a step (``BatonMetrics``), kept apart from the step protocol.
extension StepExecutor {
    /// After a step ran: its duration, charges, and what woke it (a resumed task).
    static func recordStep(_ claimed: ClaimedTask, result: AgentRunner.StepResult, took: Duration) {
        BatonMetrics.stepDuration(claimed.agent, claimed.step).record(BatonMetrics.seconds(took))
        if result.charged.costMicros > 0 { BatonMetrics.cost(claimed.agent).increment(by: result.charged.costMicros) }
        // Baton charges tokens as one number (no input/output split): direction is always `total`.
        if result.charged.tokens > 0 { BatonMetrics.tokens(claimed.agent, "total").increment(by: result.charged.tokens) }
        guard !claimed.wakeupJSON.isEmpty, let wakeup = try? JSONValue.parse(Array(claimed.wakeupJSON.utf8)) else { return }
        if let trigger = wakeup["trigger"]?.stringValue { BatonMetrics.resumed(claimed.agent, trigger).increment() }
        if let due = wakeup["due_at"]?.intValue, let woke = wakeup["woke_at"]?.intValue {
            BatonMetrics.timerLag().record(BatonMetrics.seconds(milliseconds: woke - due))
        }
    }

    /// A claim that stopped the task instead of running its step (a limit reached before the step, a cancel,
    /// a pause, a poison step).
    func recordStopped(_ message: StepMessage, status: String) {
        if TaskView.terminalStatuses.contains(status) { BatonMetrics.tasksFinished(message.agent, status).increment() }
        // A poison step (claimed too often without a commit): the claim dead-letters it.
        if status == "dead_lettered" { BatonMetrics.deadLettered(message.agent, "delivery_limit").increment() }
        guard status == "budget_exceeded" || status == "needs_review" else { return }
        countBudgetStop(task: message.task, agent: message.agent)
    }

    /// A limit stopped the task (or parked it for review) in a Lua script, not in the step: the limit's kind is the
    /// start of the task's `status_reason` ("cost limit reached (…)"), read once, off the delivery's path.
    func countBudgetStop(task: String, agent: String) {
        guard let redis = store as? RedisTaskStore else {
            BatonMetrics.budgetExceeded(agent, "unknown").increment()
            return
        }
        let key = redis.settings.keys.task(task)
        Task {
            let reason = (try? await redis.redis.send(RedisCommand("HGET", key, "status_reason")))?.string ?? ""
            let kind = reason.range(of: " limit").map { String(reason[..<$0.lowerBound]) } ?? "unknown"
            BatonMetrics.budgetExceeded(agent, kind.isEmpty || kind.count > 40 ? "unknown" : kind).increment()
        }
    }

    /// After a commit: the step's outcome and what it means for the task.
    func recordCommit(_ claimed: ClaimedTask, kind: Commit.Kind, status: String) {
        BatonMetrics.steps(claimed.agent, claimed.step, BatonMetrics.outcome(kind)).increment()
        switch kind {
        case .handoff: BatonMetrics.handoffs(claimed.agent).increment()
        case .budget(let limit, _): BatonMetrics.budgetExceeded(claimed.agent, limit).increment()
        case _ where status == "budget_exceeded" || status == "needs_review":
            // The commit found the committed usage over a limit.
            countBudgetStop(task: claimed.id, agent: claimed.agent)
        case .retry(_, _, let bucket, _): BatonMetrics.retries(claimed.agent, claimed.step, bucket).increment()
        case .dead(let reason, _, _): BatonMetrics.deadLettered(claimed.agent, reason).increment()
        default: break
        }
        switch kind {
        case .retry, .dead, .budget: break
        default:
            // A retried step succeeded. The bucket of the failure it recovers from is not carried to the retry
            // (the step message names no error): `unknown` (docs/operations.md).
            if claimed.attempt > 1 { BatonMetrics.retriesResolved(claimed.agent, "unknown").increment() }
        }
        guard TaskView.terminalStatuses.contains(status) else { return }
        BatonMetrics.tasksFinished(claimed.agent, status).increment()
        // The task's age at its end: `created_at` is read off the hot path (once per task, not per step).
        guard let redis = store as? RedisTaskStore else { return }
        let key = redis.settings.keys.task(claimed.id)
        let agent = claimed.agent
        let finishedAt = Int64(Date().timeIntervalSince1970 * 1000)
        Task {
            guard let reply = try? await redis.redis.send(RedisCommand("HGET", key, "created_at")),
                let created = reply.string.flatMap({ Int64($0) })
            else { return }
            BatonMetrics.taskDuration(agent, status).record(BatonMetrics.seconds(milliseconds: finishedAt - created))
        }
    }
}
