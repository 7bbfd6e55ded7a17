import Baton
import Foundation

/// `approval`: asks for a human decision and waits for `approve`, `reject` or the timeout, whichever comes
/// first; completes with which one fired and its payload:
/// `{"decision": "approve"|"reject"|"timeout", "payload": …, "actor": …, "reason": …, "signal_id": …}`.
public struct ApprovalAgent: Agent {
    public struct Input: Codable, Sendable {
        public var timeoutSeconds: Double
        /// Optional: the verification run this task belongs to; each step then performs one keyed effect in the run's
        /// effects sink (`<effects_dir or BATON_EFFECTS_DIR>/<run>.effects.jsonl`, see `baton verify`).
        public var run: String?
        public var effectsDir: String?
        public init(timeoutSeconds: Double) { self.timeoutSeconds = timeoutSeconds }
        enum CodingKeys: String, CodingKey {
            case timeoutSeconds = "timeout_seconds"
            case run
            case effectsDir = "effects_dir"
        }
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            timeoutSeconds = try c.decodeIfPresent(Double.self, forKey: .timeoutSeconds) ?? 3600
            (run, effectsDir) = try RunInput(from: decoder).fields
        }
    }

    public struct State: Codable, Sendable {
        public var requested = false
    }

    public static let name = "approval"
    public static let steps = ["request", "decide"]

    public init() {}

    public func initialState(for input: Input) throws -> State {
        guard input.timeoutSeconds >= 0, input.timeoutSeconds <= SleeperAgent.maxSeconds else {
            throw BatonError(
                .invalidMessage, "the input's 'timeout_seconds' must be a number from 0 to \(Int(SleeperAgent.maxSeconds)) (ten years)",
                field: "input.timeout_seconds")
        }
        return State()
    }

    public func run(step: String, context: StepContext<ApprovalAgent>) async throws -> StepOutcome {
        try await RunEffect.perform(context, run: context.input.run, directory: context.input.effectsDir)
        switch step {
        case "request":
            context.state.requested = true
            let timeout = Duration.milliseconds(Int64(context.input.timeoutSeconds * 1000))
            return .wait(for: [.signal("approve"), .signal("reject"), .timeout(timeout)], then: "decide")
        default:
            guard let wakeup = context.wakeup else {
                throw StepError.permanent("step 'decide' ran without a wake-up", bucket: "invalid_state")
            }
            var result: [String: JSONValue] = [:]
            switch wakeup.trigger {
            case .signal(let name, let payload, let id):
                result["decision"] = .string(name)
                result["payload"] = payload
                result["signal_id"] = .string(id)
                if let actor = wakeup.actor { result["actor"] = .string(actor) }
                if let reason = wakeup.reason { result["reason"] = .string(reason) }
            case .timeout, .time, .children:
                result["decision"] = "timeout"
            }
            return .complete(.object(result))
        }
    }
}
