import Baton
import Foundation

/// A task as ``InMemoryTaskStore`` holds it at one instant: the fields `baton status` shows, plus the
/// checkpoint and the full event history, for assertions in tests.
public struct TaskSnapshot: Sendable, Hashable {
    public var id: String
    public var agent: String
    /// `queued, running, retrying, paused, …` or a terminal status.
    public var status: String
    /// The step that runs next (or ran last, for a terminal task).
    public var step: String
    /// Committed steps on this task's path: the checkpoint version.
    public var seq: Int64
    /// 0, then +1 per redrive.
    public var branch: Int64
    /// 1 for a step's first attempt, 2 for its first retry, …
    public var attempt: Int64
    /// The current fencing token: how many claims ran a step.
    public var fence: Int64
    public var statusReason: String
    /// The error of a failed, retrying, dead-lettered or budget-stopped task.
    public var error: JSONValue?
    /// The result of a succeeded task.
    public var result: JSONValue?
    /// The checkpoint at ``seq`` (JSON text), the state the next step starts from.
    public var stateJSON: String
    public var limits: BudgetLimits
    /// Committed counters (charges of a step count once its commit folds them in).
    public var usage: BudgetUsage
    /// Holder of the lease, empty when none.
    public var leaseOwner: String
    /// When the lease ends (Unix ms on the ``TestClock``), 0 when none.
    public var leaseUntilMilliseconds: Int64
    /// When the retry timer fires (Unix ms), for a `retrying` task.
    public var nextTimerMilliseconds: Int64?
    /// Set while a cancel or pause request waits for the running step's commit.
    public var cancelRequested: Bool
    public var pauseRequested: Bool
    public var progressFraction: Double?
    public var progressMessage: String
    public var tenant: String
    public var events: [TaskEventRecord]
    /// What woke the task (JSON of the `wakeup` field), `""` when the current step did not follow a wait.
    public var wakeupJSON: String
    /// The signal names a `waiting` task waits for.
    public var waitingForSignals: [String]
    /// When the wait's or sleep's timer fires (Unix ms on the ``TestClock``), if it has one.
    public var waitDueMilliseconds: Int64?
    /// Names of the signals in the mailbox (received, not yet consumed), oldest first.
    public var pendingSignals: [String]
    /// The parent of a child task (``StepOutcome/parallel(_:then:)``), `""` for a root task.
    public var parentID: String = ""
    /// A parent's children: started and ended so far.
    public var childrenTotal: Int64 = 0
    public var childrenDone: Int64 = 0

    /// Whether the status is terminal (`succeeded, failed, cancelled, budget_exceeded, dead_lettered`).
    public var isTerminal: Bool { TaskView.terminalStatuses.contains(status) }

    /// The event types in order, e.g. `["submitted", "started", "step_committed", …]`.
    public var eventTypes: [String] { events.map(\.type) }

    /// The events of one type, in order.
    public func events(ofType type: String) -> [TaskEventRecord] { events.filter { $0.type == type } }

    /// The checkpoint decoded as `type` (an agent's `State`).
    public func state<S: Decodable>(as type: S.Type) throws -> S {
        try JSONCoding.decoder.decode(type, from: Data(stateJSON.utf8))
    }
}

/// One entry of a task's append-only history, as the Lua scripts `XADD` it.
public struct TaskEventRecord: Sendable, Hashable {
    /// A stream-like id: `<ms>-<n>`.
    public var id: String
    /// `submitted, started, step_committed, handoff, progress, retrying, succeeded, failed, cancelled, paused,
    /// resumed, redriven, forked, budget_exceeded, dead_lettered`.
    public var type: String
    public var seq: Int64
    public var branch: Int64
    public var step: String
    /// Unix milliseconds on the ``TestClock``.
    public var atMilliseconds: Int64
    /// The event's data (`{}` when it has none); a string when the stored text is not JSON.
    public var data: JSONValue
}

/// What a control action answered: the two strings the control script returns (`["requested", "running"]`,
/// `["cancelled", "cancelled"]`, `["conflict", "queued"]`, `["missing", ""]`, …).
public struct ControlResult: Sendable, Hashable, CustomStringConvertible {
    /// `cancelled, requested, paused, already, resumed, redriven, forked, no_checkpoint, no_step, republished, live, dead_lettered, stale,
    /// terminal, conflict, missing`.
    public var outcome: String
    /// The status after the action (for `redriven`: the new branch, as the script answers).
    public var status: String

    public init(_ outcome: String, _ status: String = "") {
        self.outcome = outcome
        self.status = status
    }

    public var description: String { "\(outcome) (\(status))" }
}
