import Foundation

/// A task type: typed input and state, and named steps.
///
/// ```swift
/// struct Greeter: Agent {
///     struct Input: Codable, Sendable { var name: String }
///     struct State: Codable, Sendable { var greeted = false }
///     static let name = "greeter"
///     static let steps = ["greet"]
///     func initialState(for input: Input) throws -> State { State() }
///     func run(step: String, context: StepContext<Greeter>) async throws -> StepOutcome {
///         try await context.charge(tokens: 12)
///         context.state.greeted = true
///         return .complete(["hello": .string(context.input.name)])
///     }
/// }
/// ```
public protocol Agent: Sendable {
    associatedtype Input: Codable & Sendable
    associatedtype State: Codable & Sendable

    /// The agent's name: the routing key of its submits (`baton.submit.<name>`).
    static var name: String { get }
    /// The step names; the first is where a new task starts.
    static var steps: [String] { get }
    /// Queue, retry policy and default budget.
    static var options: AgentOptions { get }
    /// What a reached cap does to this agent's tasks when the submit does not say (`budget.on_limit`): stop
    /// them in `budget_exceeded` (`.stop`, the default) or park them in `needs_review` (`.review`).
    static var onLimit: OnLimit { get }

    /// The state a new task starts with.
    func initialState(for input: Input) throws -> State
    /// Runs one step: mutate `context.state`, then say what happens next.
    func run(step: String, context: StepContext<Self>) async throws -> StepOutcome
}

extension Agent {
    public static var options: AgentOptions { AgentOptions() }
    public static var onLimit: OnLimit { .stop }
}

/// Per-agent settings.
public struct AgentOptions: Sendable {
    /// The step queue (`baton.steps.<queue>`) this agent's steps go to.
    public var queue: String
    /// Backoff between attempts of a failed step.
    public var retry: RetryPolicy
    /// Limits applied when a submit states none (a submit's own limits win field by field).
    public var defaultBudget: BudgetRequest?

    public init(queue: String = "default", retry: RetryPolicy = .exponentialJitter(), defaultBudget: BudgetRequest? = nil) {
        self.queue = queue
        self.retry = retry
        self.defaultBudget = defaultBudget
    }
}

/// How long to wait before attempt n+1 of a failed step.
public struct RetryPolicy: Sendable {
    public var initialDelay: Duration
    public var maxDelay: Duration
    public var multiplier: Double
    /// ± this fraction of the delay, at random.
    public var jitter: Double

    /// `initial × multiplier^(attempt−1)`, capped at `max`, ±`jitter`.
    public static func exponentialJitter(
        initial: Duration = .seconds(1), max: Duration = .seconds(300), multiplier: Double = 2, jitter: Double = 0.2
    ) -> RetryPolicy {
        RetryPolicy(initialDelay: initial, maxDelay: max, multiplier: multiplier, jitter: jitter)
    }

    /// The delay before `attempt` (2 for the first retry), in milliseconds.
    public func delayMilliseconds(beforeAttempt attempt: Int64) -> Int64 {
        let initial = Double(initialDelay.components.seconds) * 1000 + Double(initialDelay.components.attoseconds) / 1e15
        let maximum = Double(maxDelay.components.seconds) * 1000 + Double(maxDelay.components.attoseconds) / 1e15
        let exponent = Double(Swift.max(0, attempt - 2))
        var delay = Swift.min(maximum, initial * Foundation.pow(multiplier, exponent))
        if jitter > 0 { delay *= Double.random(in: (1 - jitter)...(1 + jitter)) }
        return Int64(Swift.max(0, delay.rounded()))
    }
}
