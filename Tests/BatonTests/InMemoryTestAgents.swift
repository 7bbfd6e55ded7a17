import Baton
import Synchronization

/// Counts what the test agents did, and lets a test run code in the middle of a step.
final class Probe: Sendable {
    typealias Hook = @Sendable (_ task: String, _ seq: Int64) async -> Void
    private let state = Mutex<(runs: [Int64: Int], effects: Int, hook: Hook?)>(([:], 0, nil))

    func setHook(_ hook: @escaping Hook) { state.withLock { $0.hook = hook } }
    var hook: Hook? { state.withLock { $0.hook } }
    func recordRun(seq: Int64) { state.withLock { $0.runs[seq, default: 0] += 1 } }
    func recordEffect() { state.withLock { $0.effects += 1 } }
    /// How many times the step at `seq` ran.
    func runs(seq: Int64) -> Int { state.withLock { $0.runs[seq] ?? 0 } }
    /// How many step runs in total.
    var totalRuns: Int { state.withLock { $0.runs.values.reduce(0, +) } }
    /// How many side-effect bodies ran.
    var effects: Int { state.withLock { $0.effects } }
}

/// `hook`: `steps` steps of one keyed side effect each (10 tokens), with the probe's hook called first.
struct HookAgent: Agent {
    struct Input: Codable, Sendable { var steps: Int }
    struct State: Codable, Sendable { var done = 0 }
    static let name = "hook"
    static let steps = ["work"]
    let probe: Probe

    func initialState(for input: Input) throws -> State { State() }

    func run(step: String, context: StepContext<HookAgent>) async throws -> StepOutcome {
        probe.recordRun(seq: context.seq)
        if let hook = probe.hook { await hook(context.taskID, context.seq) }
        try await context.sideEffect("effect-\(context.seq)") {
            probe.recordEffect()
            try await context.charge(tokens: 10)
            return context.seq
        }
        context.state.done += 1
        if context.state.done >= context.input.steps { return .complete(["done": .int(Int64(context.state.done))]) }
        return .next("work")
    }
}

/// `relay`: step `loop` hands off to itself (`.continue`) until `rounds` rounds ran, then `finish` completes.
struct RelayAgent: Agent {
    struct Input: Codable, Sendable { var rounds: Int }
    struct State: Codable, Sendable { var round = 0 }
    static let name = "relay"
    static let steps = ["loop", "finish"]

    func initialState(for input: Input) throws -> State { State() }

    func run(step: String, context: StepContext<RelayAgent>) async throws -> StepOutcome {
        if step == "finish" { return .complete(["rounds": .int(Int64(context.state.round))]) }
        context.state.round += 1
        try await context.charge(tokens: 1)
        return context.state.round >= context.input.rounds ? .next("finish") : .continue
    }
}

/// `effect-then-fail`: one keyed side effect charging 100 tokens, then a retryable failure on attempt 1.
struct EffectThenFailAgent: Agent {
    struct Input: Codable, Sendable {}
    struct State: Codable, Sendable {}
    static let name = "effect-then-fail"
    static let steps = ["call"]
    static var options: AgentOptions { AgentOptions(retry: .exponentialJitter(initial: .seconds(30), jitter: 0)) }
    let probe: Probe

    func initialState(for input: Input) throws -> State { State() }

    func run(step: String, context: StepContext<EffectThenFailAgent>) async throws -> StepOutcome {
        let answer = try await context.sideEffect("model") {
            probe.recordEffect()
            try await context.charge(tokens: 100)
            return "answer"
        }
        if context.attempt == 1 { throw StepError.retryable("the tool after the model call failed", bucket: "tool_error") }
        return .complete(.string(answer))
    }
}
