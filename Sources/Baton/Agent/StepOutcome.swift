import Foundation

/// What a step returns: what happens to the task next.
public struct StepOutcome: Sendable {
    enum Kind: Sendable {
        case next(String)
        case handoff
        case complete(JSONValue)
        case fail(StepError)
        case sleep(until: Date, then: String)
        /// A sleep measured from the commit's Redis server time, not from any worker's clock.
        case sleepFor(milliseconds: Int64, then: String)
        case wait(triggers: [WaitTrigger], then: String, onTimeout: String?)
        case parallel(children: [ChildTask], join: String)
    }
    let kind: Kind

    /// Run `step` next (a new message, any worker).
    public static func next(_ step: String) -> StepOutcome { StepOutcome(kind: .next(step)) }
    /// Run the same step again from the committed state: a relay handoff (counts against `max_handoffs`).
    public static var `continue`: StepOutcome { StepOutcome(kind: .handoff) }
    /// The task succeeded with `result`.
    public static func complete(_ result: JSONValue = .null) -> StepOutcome { StepOutcome(kind: .complete(result)) }
    /// The task succeeded with an encodable result.
    public static func complete(encoding result: some Encodable) throws -> StepOutcome {
        let bytes = try JSONCoding.encode(result)
        return StepOutcome(kind: .complete(try JSONValue.parse(bytes)))
    }
    /// Commit the state and sleep until `date`, then run `step` (with ``StepContext/wakeup`` `.time`).
    /// A sleeping task holds no worker, no consumer slot and no message: only Redis keys and a timer.
    public static func sleep(until date: Date, then step: String) -> StepOutcome {
        StepOutcome(kind: .sleep(until: date, then: step))
    }
    /// Commit the state and sleep for `duration`, then run `step` (with ``StepContext/wakeup`` `.time`).
    /// The wake-up time is the commit's Redis server time plus `duration`, never this worker's clock: a worker
    /// whose clock is off by an hour still sleeps a task for `duration` (negative durations count as zero).
    public static func sleep(for duration: Duration, then step: String) -> StepOutcome {
        StepOutcome(kind: .sleepFor(milliseconds: max(0, duration.wholeMilliseconds), then: step))
    }
    /// Commit the state and wait until the first of `triggers` fires (any-of; the first wins atomically):
    /// then run `step`, or `onTimeout` (when given) if a `.timeout` or `.at` fired. A signal sent before the
    /// wait began is kept and consumed at once. ``StepContext/wakeup`` tells the resumed step what fired.
    public static func wait(for triggers: [WaitTrigger], then step: String, onTimeout: String? = nil) -> StepOutcome {
        StepOutcome(kind: .wait(triggers: triggers, then: step, onTimeout: onTimeout))
    }
    /// Commit the state and start `children` as tasks of their own (ids `<this id>/<n>`), created in this step's
    /// commit; this task waits (`waiting_for: [{"children": N}]`) until every child has ended (succeeded, failed,
    /// cancelled, budget_exceeded or dead_lettered), then runs `join` once, with ``StepContext/wakeup``
    /// `.children` and ``StepContext/childResults`` holding each child's status, result and error.
    /// Children share this task's budget (their charges count against its limits too); cancelling this task
    /// cancels its live children. More than `limits.max_children` children per task (default 100) fail the task.
    public static func parallel(_ children: [ChildTask], then join: String) -> StepOutcome {
        StepOutcome(kind: .parallel(children: children, join: join))
    }
    /// The task failed for good (no retry), with its state committed.
    public static func fail(_ error: StepError) -> StepOutcome { StepOutcome(kind: .fail(error)) }
}

/// One child of ``StepOutcome/parallel(_:then:)``: a task of agent `agent` with `input`, its own optional
/// limits (the agent's default budget otherwise; the parent's limits bind it too), and an optional queue.
public struct ChildTask: Sendable {
    public var agent: String
    public var input: JSONValue
    public var budget: BudgetRequest?
    /// The step queue; nil: the agent's own queue.
    public var queue: String?

    public init(agent: String, input: JSONValue = .object([:]), budget: BudgetRequest? = nil, queue: String? = nil) {
        self.agent = agent
        self.input = input
        self.budget = budget
        self.queue = queue
    }

    /// A child whose input is an encodable value.
    public init(agent: String, encoding input: some Encodable, budget: BudgetRequest? = nil, queue: String? = nil) throws {
        self.init(agent: agent, input: try JSONValue.parse(try JSONCoding.encode(input)), budget: budget, queue: queue)
    }
}

/// A step failure: retryable or permanent, with a failure bucket for policy and metrics.
public struct StepError: Error, Sendable, CustomStringConvertible {
    public var message: String
    /// A short class of failure: `rate_limited`, `provider_5xx`, `tool_error`, `invalid_output`, `timeout`, …
    public var bucket: String
    public var retryable: Bool

    public init(_ message: String, bucket: String = "error", retryable: Bool = true) {
        self.message = message
        self.bucket = bucket
        self.retryable = retryable
    }

    /// A failure worth another attempt after a backoff.
    public static func retryable(_ message: String, bucket: String = "error") -> StepError {
        StepError(message, bucket: bucket, retryable: true)
    }
    /// A failure no retry can fix: the step is dead-lettered at once.
    public static func permanent(_ message: String, bucket: String = "error") -> StepError {
        StepError(message, bucket: bucket, retryable: false)
    }

    public var description: String { "\(bucket): \(message)" }

    /// Classifies any thrown error: a ``StepError`` keeps its own class; a decoding error is permanent
    /// (`invalid_output`); cancellation and timeouts are retryable; anything else is retryable (`error`),
    /// as in Temporal — an error is retried unless it says it must not be.
    public static func classify(_ error: any Error) -> StepError {
        if let error = error as? StepError { return error }
        if error is DecodingError || error is EncodingError { return .permanent("\(error)", bucket: "invalid_output") }
        if error is CancellationError { return .retryable("the step was cancelled (worker shutdown)", bucket: "timeout") }
        return .retryable("\(error)", bucket: "error")
    }
}

/// Thrown by ``StepContext/charge(costUSD:tokens:toolCalls:)`` when a limit is crossed. The worker stops the
/// task in `budget_exceeded` with its partial state.
public struct BudgetExceeded: Error, Sendable, CustomStringConvertible {
    /// Which limit: `cost`, `tokens`, `steps`, `tool_calls`, `handoffs`, `attempts`, `deadline`, or a tenant's
    /// daily limit (`tenant <name> daily cost`, `tenant <name> daily tokens`).
    public var kind: String
    public var description: String { "budget exceeded: \(kind) limit reached" }
}
