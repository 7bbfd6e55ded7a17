import Baton

/// `spender`: charges `cost_usd_per_step` every step until its budget stops it (default budget: $5), or, with
/// `steps`, succeeds after that many spending steps.
public struct SpenderAgent: Agent {
    public struct Input: Codable, Sendable {
        public var costUSDPerStep: Double = 1.0
        /// Succeed after this many spending steps (absent: spend until a limit stops the task).
        public var steps: Int?
        /// Optional: the verification run this task belongs to; each step then performs one keyed effect in the run's
        /// effects sink (`<effects_dir or BATON_EFFECTS_DIR>/<run>.effects.jsonl`, see `baton verify`).
        public var run: String?
        public var effectsDir: String?
        enum CodingKeys: String, CodingKey {
            case costUSDPerStep = "cost_usd_per_step"
            case steps, run
            case effectsDir = "effects_dir"
        }
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            costUSDPerStep = try c.decodeIfPresent(Double.self, forKey: .costUSDPerStep) ?? 1.0
            steps = try c.decodeIfPresent(Int.self, forKey: .steps)
            (run, effectsDir) = try RunInput(from: decoder).fields
        }
    }

    public struct State: Codable, Sendable {
        public var steps: Int = 0
        public var spentMicros: Int64 = 0
    }

    public static let name = "spender"
    public static let steps = ["spend"]
    public static var options: AgentOptions { AgentOptions(defaultBudget: BudgetRequest(maxCostUSD: 5)) }

    public init() {}

    public func initialState(for input: Input) throws -> State { State() }

    public func run(step: String, context: StepContext<SpenderAgent>) async throws -> StepOutcome {
        try await RunEffect.perform(context, run: context.input.run, directory: context.input.effectsDir)
        if let steps = context.input.steps, context.state.steps >= steps {
            return .complete(["steps": .int(Int64(context.state.steps)), "spent_micros": .int(context.state.spentMicros)])
        }
        context.state.steps += 1
        context.state.spentMicros += Charge.micros(fromUSD: context.input.costUSDPerStep)
        try await context.charge(costUSD: context.input.costUSDPerStep, tokens: 1000)
        return .next("spend")
    }
}
