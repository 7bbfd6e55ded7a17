import Foundation
import Logging
import Synchronization

/// Everything a step sees while it runs: the typed state to mutate, the input, budgets, time and the
/// cancellation signal, and side effects that run once per key across retries.
public final class StepContext<A: Agent> {
    /// The task's state; its value when the step returns is the new checkpoint.
    public var state: A.State
    public let input: A.Input
    public let taskID: String
    public let step: String
    /// The task's committed step count before this step.
    public let seq: Int64
    /// 1 on the first attempt of this step, 2 on the first retry, …
    public let attempt: Int64
    public let branch: Int64
    /// Limits of the task, and what was committed before this step.
    public let limits: BudgetLimits
    public let usageBeforeStep: BudgetUsage
    /// When this step's time slice ends: return `.continue` before it (see ``shouldYield``).
    public let deadline: ContinuousClock.Instant
    /// What woke the task before this step: the signal (name, payload, id) or timer that ended its
    /// ``StepOutcome/wait(for:then:onTimeout:)`` or ``StepOutcome/sleep(until:then:)``; nil when the step
    /// did not follow a wait. Kept across retries of the resumed step.
    public let wakeup: Wakeup?
    /// A logger with `task.id`, `task.agent`, `step.name`, `step.attempt` metadata.
    public let logger: Logger
    /// In the join step of ``StepOutcome/parallel(_:then:)`` (``wakeup`` `.children`): every child's outcome,
    /// by child id (`<this id>/<n>`). Empty in other steps; keep what you need in the state.
    public let childResults: [String: ChildResult]

    let environment: StepEnvironment
    /// The tenant has daily limits: charges are checked against its counters in the store (awaited).
    let tenantLimited: Bool
    private var effectCharges: Charge?
    /// What the step charged (committed with the step unless it crashes).
    public private(set) var charged = Charge()
    /// The part of ``charged`` that is in no store yet: the commit carries it.
    var uncommitted = Charge()

    init(
        state: A.State, input: A.Input, claimed: ClaimedTask, deadline: ContinuousClock.Instant, logger: Logger,
        environment: StepEnvironment
    ) {
        self.state = state
        self.input = input
        self.taskID = claimed.id
        self.step = claimed.step
        self.seq = claimed.seq
        self.attempt = claimed.attempt
        self.branch = claimed.branch
        self.limits = claimed.limits
        self.usageBeforeStep = claimed.usage
        self.tenantLimited = claimed.tenantLimited
        self.deadline = deadline
        self.wakeup = Wakeup(json: claimed.wakeupJSON, claimedAt: claimed.claimedAtMilliseconds)
        self.logger = logger
        self.environment = environment
        self.childResults = claimed.childResults.compactMapValues(ChildResult.init(json:))
    }

    /// The fencing token of this step's lease (strictly increasing per task): pass it to an external system that
    /// fences stale writers (the effects sink of ``EffectsSink`` does). Read it inside ``sideEffect(_:_:)``: a step
    /// run speculatively (from the worker's sticky state, see ``StepLease``) claims its lease only there, and before
    /// that this is the token of the task's previous step.
    public var fencingToken: Int64 { environment.lease.token }

    /// The token of this step's lease, claiming it first when the step runs speculatively.
    private func leaseToken() async throws -> Int64 {
        guard let token = await environment.lease.claimed() else { throw LeaseLost() }
        return token
    }

    /// True when the time slice is used up or the worker is shutting down: commit what you have and return
    /// `.continue` so another worker (or this one) picks the task up from the checkpoint.
    public var shouldYield: Bool { ContinuousClock.now >= deadline || environment.signals.draining }

    /// True once someone cancelled the task (seen within one lease renewal), or once this step's lease is lost (another
    /// worker took the task, or the task ended): its work would be dropped, so stop.
    public var isCancelled: Bool { environment.signals.cancelled || environment.signals.leaseLost }

    /// Adds cost (dollars, stored as integer micro-dollars), tokens and tool calls to the task's counters in
    /// Redis at once. Throws ``BudgetExceeded`` when a limit is crossed: the task stops in
    /// `budget_exceeded` (or parks in `needs_review` when its budget's `on_limit` is `review`) with the state as it
    /// is now. A task whose tenant has daily limits waits for the store's answer: a charge finding the tenant's counter
    /// at its limit is refused (counted nowhere) and throws.
    public func charge(costUSD: Double = 0, tokens: Int64 = 0, toolCalls: Int64 = 0) async throws {
        try await charge(Charge(costMicros: Charge.micros(fromUSD: costUSD), tokens: tokens, toolCalls: toolCalls))
    }

    /// Adds integer charges (see ``charge(costUSD:tokens:toolCalls:)``).
    public func charge(_ amount: Charge) async throws {
        guard !amount.isZero else { return }
        if let pending = effectCharges {
            effectCharges = pending + amount
            return
        }
        if tenantLimited {
            // The tenant's counters are shared with its other tasks: the store decides (a refused charge counts nowhere).
            switch try await environment.store.charge(task: taskID, token: try await leaseToken(), amount) {
            case .ok: charged = charged + amount
            case .exceeded(let kind):
                if kind.hasPrefix("tenant ") { throw BudgetExceeded(kind: kind) }
                charged = charged + amount
                throw BudgetExceeded(kind: kind)
            case .fenced: throw LeaseLost()
            }
            return
        }
        charged = charged + amount
        // Only the lease holder charges this task, so the limit check is exact here, and only this attempt's commit
        // counts the charge: it travels with the commit (``Commit/charge``), no store call now.
        uncommitted = uncommitted + amount
        if let exceeded = exceededLimit() { throw BudgetExceeded(kind: exceeded) }
    }

    /// The limit that committed usage plus this step's charges crosses (`>`), if any.
    func exceededLimit() -> String? {
        if let max = limits.maxCostMicros, usageBeforeStep.costMicros + charged.costMicros > max { return "cost" }
        if let max = limits.maxTokens, usageBeforeStep.tokens + charged.tokens > max { return "tokens" }
        if let max = limits.maxToolCalls, usageBeforeStep.toolCalls + charged.toolCalls > max { return "tool_calls" }
        return nil
    }

    /// Reports progress (0…1 and a message): stored on the task and appended to its events.
    public func progress(_ fraction: Double, _ message: String) async {
        let clamped = min(1, max(0, fraction.isFinite ? fraction : 0))
        do {
            try await environment.store.progress(task: taskID, token: try await leaseToken(), fraction: clamped, message: message)
        } catch {
            logger.debug("progress not recorded", metadata: ["error": "\(error)"])
        }
    }

    /// Runs `body` once per `key` for this task, across retries and crashes of later code: the result and
    /// the charges made inside `body` are recorded in Redis; a re-run with the same key returns the
    /// recorded result without running `body` (its charges count once). Pass `key` on to the external
    /// system as an idempotency key where it takes one: a crash inside `body` itself runs it again, and so does
    /// another worker that takes the task over while `body` runs (this worker frozen past its lease and past
    /// `worker.stale_after`, or cut off from Redis that long).
    @discardableResult
    public func sideEffect<R: Codable & Sendable>(_ key: String, _ body: () async throws -> R) async throws -> R {
        guard effectCharges == nil else {
            throw StepError.permanent("side effects cannot be nested (key '\(key)')", bucket: "invalid_usage")
        }
        switch try await environment.store.effect(task: taskID, token: try await leaseToken(), key: key) {
        case .recorded(let record, let exceeded):
            charged = charged + record.charge
            let value = try JSONCoding.decoder.decode(Box<R>.self, from: Data(("{\"v\":" + record.result + "}").utf8)).v
            if let exceeded { throw BudgetExceeded(kind: exceeded) }
            return value
        case .fenced:
            throw LeaseLost()
        case .absent:
            break
        }
        effectCharges = Charge()
        let result: R
        do {
            result = try await body()
        } catch {
            effectCharges = nil
            throw error
        }
        let spent = effectCharges ?? Charge()
        effectCharges = nil
        let encoded = String(decoding: try JSONCoding.encoder.encode(Box(v: result)), as: UTF8.self)
        let resultJSON = try JSONValue.parse(Array(encoded.utf8))["v"]?.jsonString ?? "null"
        switch try await environment.store.recordEffect(
            task: taskID, token: try await leaseToken(), key: key, record: EffectRecord(result: resultJSON, charge: spent))
        {
        case .recorded(let record, let exceeded):
            charged = charged + record.charge
            if let exceeded { throw BudgetExceeded(kind: exceeded) }
            if record.result != resultJSON {
                return try JSONCoding.decoder.decode(Box<R>.self, from: Data(("{\"v\":" + record.result + "}").utf8)).v
            }
            return result
        case .fenced: throw LeaseLost()
        case .absent: return result
        }
    }

    struct Box<V: Codable>: Codable { var v: V }
}

/// How one child of ``StepOutcome/parallel(_:then:)`` ended: ``StepContext/childResults`` of the join step.
public struct ChildResult: Sendable, Hashable {
    /// `succeeded`, `failed`, `cancelled`, `budget_exceeded` or `dead_lettered`.
    public var status: String
    /// The child's result (`null` unless it succeeded).
    public var result: JSONValue
    /// The child's error (`{"code", "message", "bucket", "retryable"}`), nil when it succeeded.
    public var error: JSONValue?
    /// True when result and error were over ``ChildLimits/resultMaxBytes`` and were not kept.
    public var truncated: Bool

    public var succeeded: Bool { status == "succeeded" }

    init?(json: String) {
        guard let value = try? JSONValue.parse(Array(json.utf8)), let status = value["status"]?.stringValue else { return nil }
        self.status = status
        result = value["result"] ?? .null
        error = value["error"].flatMap { $0 == .null ? nil : $0 }
        truncated = value["truncated"] == .bool(true)
    }
}

/// Thrown when this worker no longer holds the task's lease: its work is dropped (another worker owns it).
public struct LeaseLost: Error, Sendable, CustomStringConvertible {
    public var description: String { "the lease on this task was lost (fenced off); the step's work is dropped" }
}

/// Cross-task signals for one running step, set by the lease renewal and the worker's drain.
final class StepSignals: Sendable {
    private let cancelledFlag = Atomic<Bool>(false)
    private let drainingFlag = Atomic<Bool>(false)
    private let leaseLostFlag = Atomic<Bool>(false)
    var cancelled: Bool { cancelledFlag.load(ordering: .relaxed) }
    var draining: Bool { drainingFlag.load(ordering: .relaxed) }
    var leaseLost: Bool { leaseLostFlag.load(ordering: .relaxed) }
    func markCancelled() { cancelledFlag.store(true, ordering: .relaxed) }
    func markDraining() { drainingFlag.store(true, ordering: .relaxed) }
    func markLeaseLost() { leaseLostFlag.store(true, ordering: .relaxed) }
}

/// What a step context needs from the runtime.
struct StepEnvironment: Sendable {
    var store: any TaskStore
    var lease: StepLease
    var signals: StepSignals
}
