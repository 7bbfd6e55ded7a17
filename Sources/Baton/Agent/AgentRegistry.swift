import Foundation
import Logging
import Synchronization

/// The agents a worker serves, by name, behind a type-erased runner.
public struct AgentRegistry: Sendable {
    var runners: [String: AgentRunner] = [:]

    public init() {}

    /// Registers `agent` (replacing one with the same name).
    public mutating func register<A: Agent>(_ agent: A) {
        runners[A.name] = AgentRunner(agent)
    }

    public var names: [String] { runners.keys.sorted() }
    public var queues: [String] { Set(runners.values.map(\.options.queue)).sorted() }
    subscript(name: String) -> AgentRunner? { runners[name] }
}

/// One agent with its types erased: decodes input and state, runs a step, encodes the state.
struct AgentRunner: Sendable {
    struct StepResult: Sendable {
        var outcome: Result<StepOutcome, any Error>
        /// The state after the step, encoded; nil when it could not be encoded (then `outcome` is a failure).
        var stateJSON: String?
        /// What the step charged (for the worker's metrics).
        var charged = Charge()
        /// What the step charged that no store holds yet: its commit carries it.
        var uncommitted = Charge()
        /// The decoded input and the state the step left (a ``StickyState``), for the worker's ``StateCache``.
        var sticky: (any Sendable)? = nil
    }

    let name: String
    let steps: [String]
    let options: AgentOptions
    let onLimit: OnLimit
    /// The first checkpoint of a task with this input (JSON), and the input and state decoded (a ``StickyState``, for a
    /// worker that runs the task's first step speculatively).
    let start: @Sendable ([UInt8]) throws -> (stateJSON: String, sticky: any Sendable)
    let run: @Sendable (ClaimedTask, StepEnvironment, ContinuousClock.Instant, Logger) async -> StepResult

    /// The first checkpoint of a task with this input (JSON).
    func initialState(_ inputJSON: [UInt8]) throws -> String { try start(inputJSON).stateJSON }

    init<A: Agent>(_ agent: A) {
        name = A.name
        steps = A.steps
        options = A.options
        onLimit = A.onLimit
        start = { inputJSON in
            let input: A.Input
            do {
                input = try JSONCoding.decoder.decode(A.Input.self, from: Data(inputJSON))
            } catch let error as DecodingError {
                let field = JSONCoding.field(of: error).map { "input." + $0 } ?? "input"
                throw BatonError(
                    .invalidMessage,
                    JSONCoding.describe(error, what: "the input of agent '\(A.name)'").replacingOccurrences(
                        of: "field '", with: "field 'input."),
                    field: field)
            }
            let state = try agent.initialState(for: input)
            return (try JSONCoding.checkpoint(state), StickyState(input: input, state: state))
        }
        let inputs = DecodedInputs<A.Input>()
        let stateEncoding = StateEncoding()
        run = { claimed, environment, deadline, logger in
            let input: A.Input
            let state: A.State
            do {
                if let cached = claimed.cachedState {
                    // The claim skipped the checkpoint and input because this worker holds them decoded.
                    guard let sticky = cached as? StickyState<A.Input, A.State> else {
                        return StepResult(
                            outcome: .failure(
                                StepError.retryable("the cached state of task \(claimed.id) is not a \(A.self) state", bucket: "internal")),
                            stateJSON: nil)
                    }
                    input = sticky.input
                    state = sticky.state
                } else {
                    input = try inputs.value(for: claimed.id, json: claimed.inputJSON) {
                        try JSONCoding.decoder.decode(A.Input.self, from: Data(claimed.inputJSON))
                    }
                    state = try JSONCoding.decoder.decode(A.State.self, from: Data(claimed.stateJSON))
                }
            } catch {
                return StepResult(
                    outcome: .failure(
                        StepError.permanent(
                            "the checkpoint or input of task \(claimed.id) does not decode as \(A.self): \(error)", bucket: "invalid_state")
                    ),
                    stateJSON: nil)
            }
            let context = StepContext<A>(
                state: state, input: input, claimed: claimed, deadline: deadline, logger: logger, environment: environment)
            let outcome: Result<StepOutcome, any Error>
            do {
                outcome = .success(try await agent.run(step: claimed.step, context: context))
            } catch {
                outcome = .failure(error)
            }
            do {
                return StepResult(
                    outcome: outcome, stateJSON: try stateEncoding.encode(context.state), charged: context.charged,
                    uncommitted: context.uncommitted, sticky: StickyState(input: input, state: context.state))
            } catch {
                return StepResult(
                    outcome: .failure(StepError.permanent("the state does not encode: \(error)", bucket: "invalid_state")), stateJSON: nil,
                    charged: context.charged, uncommitted: context.uncommitted)
            }
        }
    }
}

/// How one agent's states are encoded for their checkpoints: by ``CheckpointEncoder`` until it declines one (a `Date`
/// in the state, say), then by Foundation's encoder from then on, so a state type the fast path cannot write is not
/// walked twice on every step. Either way the text is the same.
final class StateEncoding: Sendable {
    private let foundationOnly = Atomic<Bool>(false)

    func encode(_ state: some Encodable) throws -> String {
        if !foundationOnly.load(ordering: .relaxed) {
            if let text = CheckpointEncoder.encode(state) { return text }
            foundationOnly.store(true, ordering: .relaxed)
        }
        return try JSONCoding.string(state)
    }

    var usesFoundationOnly: Bool { foundationOnly.load(ordering: .relaxed) }
}

/// The decoded inputs of recent tasks: a task's input rarely changes (a redrive may patch it), and decoding it
/// on every step costs more than comparing its bytes.
final class DecodedInputs<Input: Sendable>: Sendable {
    private let entries = Mutex<[String: (json: [UInt8], value: Input)]>([:])
    private let capacity = 4096

    func value(for task: String, json: [UInt8], decode: () throws -> Input) rethrows -> Input {
        if let hit = entries.withLock({ $0[task] }), hit.json == json { return hit.value }
        let value = try decode()
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[task] = (json, value)
        }
        return value
    }
}
