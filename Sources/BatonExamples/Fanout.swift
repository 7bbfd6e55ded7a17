import Baton

/// `fanout`: starts `children` child tasks of agent `agent` (default `stepchain`, each running `steps` steps, or
/// `child_input` when given; on `child_queue` when given) with ``StepOutcome/parallel(_:then:)``, and its join step completes with their
/// results: `{"children": 10, "succeeded": 10, "records": 30, "statuses": {"succeeded": 10}}` (`records`: the
/// sum of the children's `records` results).
public struct FanoutAgent: Agent {
    public struct Input: Codable, Sendable {
        public var children: Int = 10
        public var steps: Int = 3
        public var agent: String = "stepchain"
        public var childInput: JSONValue?
        /// The children's step queue (nil: their agent's queue).
        public var childQueue: String?
        /// Optional: the verification run this task belongs to; each step then performs one keyed effect in the run's
        /// effects sink (`<effects_dir or BATON_EFFECTS_DIR>/<run>.effects.jsonl`, see `baton verify`).
        public var run: String?
        public var effectsDir: String?

        enum CodingKeys: String, CodingKey {
            case children, steps, agent
            case childInput = "child_input"
            case childQueue = "child_queue"
            case run
            case effectsDir = "effects_dir"
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            children = try c.decodeIfPresent(Int.self, forKey: .children) ?? 10
            steps = try c.decodeIfPresent(Int.self, forKey: .steps) ?? 3
            agent = try c.decodeIfPresent(String.self, forKey: .agent) ?? "stepchain"
            childInput = try c.decodeIfPresent(JSONValue.self, forKey: .childInput)
            childQueue = try c.decodeIfPresent(String.self, forKey: .childQueue)
            (run, effectsDir) = try RunInput(from: decoder).fields
            guard (0...10_000).contains(children) else {
                throw DecodingError.dataCorruptedError(forKey: .children, in: c, debugDescription: "must be between 0 and 10000")
            }
            guard (1...100_000).contains(steps) else {
                throw DecodingError.dataCorruptedError(forKey: .steps, in: c, debugDescription: "must be between 1 and 100000")
            }
        }
    }

    public struct State: Codable, Sendable {
        public var started = 0
    }

    public static let name = "fanout"
    public static let steps = ["fan", "join"]

    public init() {}

    public func initialState(for input: Input) throws -> State { State() }

    public func run(step: String, context: StepContext<FanoutAgent>) async throws -> StepOutcome {
        let input = context.input
        try await RunEffect.perform(context, run: input.run, directory: input.effectsDir)
        switch step {
        case "fan":
            var childInput = input.childInput ?? ["steps": .int(Int64(input.steps)), "record_bytes": 16]
            // The children of a verification run belong to it (unless their input names a run of its own).
            if let run = input.run, case .object(var object) = childInput, object["run"] == nil {
                object["run"] = .string(run)
                if let directory = input.effectsDir { object["effects_dir"] = .string(directory) }
                childInput = .object(object)
            }
            context.state.started = input.children
            return .parallel(
                (0..<input.children).map { _ in ChildTask(agent: input.agent, input: childInput, queue: input.childQueue) }, then: "join")
        default:
            var statuses: [String: JSONValue] = [:]
            var records: Int64 = 0
            for child in context.childResults.values {
                statuses[child.status] = .int((statuses[child.status]?.intValue ?? 0) + 1)
                records += child.result["records"]?.intValue ?? 0
            }
            return .complete([
                "children": .int(Int64(context.childResults.count)),
                "succeeded": .int(Int64(context.childResults.values.filter(\.succeeded).count)), "records": .int(records),
                "statuses": .object(statuses),
            ])
        }
    }
}
