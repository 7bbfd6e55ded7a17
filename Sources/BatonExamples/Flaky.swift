import Baton

/// `flaky`: fails its step `fail_times` times with a retryable `provider_5xx` error (or once with a
/// permanent error when `permanent`, in the failure bucket `bucket`, default `invalid_request`), then succeeds. A redriven task (branch ≥ 1) stands for "the provider
/// recovered" and succeeds at once.
public struct FlakyAgent: Agent {
    public struct Input: Codable, Sendable {
        public var failTimes: Int64 = 2
        public var permanent: Bool = false
        /// The failure bucket of the permanent failure (a dead-letter group of its own, e.g. for one test's letters).
        public var bucket: String = "invalid_request"
        /// Optional: the verification run this task belongs to; each step then performs one keyed effect in the run's
        /// effects sink (`<effects_dir or BATON_EFFECTS_DIR>/<run>.effects.jsonl`, see `baton verify`).
        public var run: String?
        public var effectsDir: String?
        enum CodingKeys: String, CodingKey {
            case failTimes = "fail_times"
            case permanent, bucket, run
            case effectsDir = "effects_dir"
        }
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            failTimes = try c.decodeIfPresent(Int64.self, forKey: .failTimes) ?? 2
            permanent = try c.decodeIfPresent(Bool.self, forKey: .permanent) ?? false
            bucket = try c.decodeIfPresent(String.self, forKey: .bucket) ?? "invalid_request"
            (run, effectsDir) = try RunInput(from: decoder).fields
        }
        public init(failTimes: Int64, permanent: Bool = false) {
            self.failTimes = failTimes
            self.permanent = permanent
        }
    }

    public struct State: Codable, Sendable {
        public var succeededOnAttempt: Int64?
    }

    public static let name = "flaky"
    public static let steps = ["call"]
    public static var options: AgentOptions { AgentOptions(retry: .exponentialJitter(initial: .milliseconds(200), max: .seconds(2))) }

    public init() {}

    public func initialState(for input: Input) throws -> State { State() }

    public func run(step: String, context: StepContext<FlakyAgent>) async throws -> StepOutcome {
        // The effect comes first: a retry finds it recorded in Redis and does not call the sink again.
        try await RunEffect.perform(context, run: context.input.run, directory: context.input.effectsDir)
        if context.branch == 0 {
            if context.input.permanent {
                throw StepError.permanent("the provider rejected the request (scripted permanent failure)", bucket: context.input.bucket)
            }
            if context.attempt <= context.input.failTimes {
                throw StepError.retryable(
                    "the provider answered 503 (scripted failure \(context.attempt) of \(context.input.failTimes))", bucket: "provider_5xx")
            }
        }
        context.state.succeededOnAttempt = context.attempt
        return .complete(["attempt": .int(context.attempt), "branch": .int(context.branch)])
    }
}
