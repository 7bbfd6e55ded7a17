import Baton
import Foundation

/// `sleeper`: sleeps once for `seconds` (holding no worker, no message: only Redis keys and a timer), or until
/// `until_ms` (Unix milliseconds) when given, then completes with how late its wake-up was:
/// `{"lateness_ms": …, "fired_lateness_ms": …, "trigger": "time"}` — `fired_lateness_ms` when its timer fired
/// (the wake was committed) after the due time, `lateness_ms` when this resumed step was claimed after it (the
/// fired lateness plus the wait for a free worker).
public struct SleeperAgent: Agent {
    public struct Input: Codable, Sendable {
        public var seconds: Double
        public var untilMilliseconds: Int64?
        /// Optional: the verification run this task belongs to; each step then performs one keyed effect in the run's
        /// effects sink (`<effects_dir or BATON_EFFECTS_DIR>/<run>.effects.jsonl`, see `baton verify`).
        public var run: String?
        public var effectsDir: String?
        public init(seconds: Double, untilMilliseconds: Int64? = nil) {
            self.seconds = seconds
            self.untilMilliseconds = untilMilliseconds
        }
        enum CodingKeys: String, CodingKey {
            case seconds
            case untilMilliseconds = "until_ms"
            case run
            case effectsDir = "effects_dir"
        }
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            seconds = try c.decodeIfPresent(Double.self, forKey: .seconds) ?? 5
            untilMilliseconds = try c.decodeIfPresent(Int64.self, forKey: .untilMilliseconds)
            (run, effectsDir) = try RunInput(from: decoder).fields
        }
    }

    /// No state of its own: the due time lives in the task's wait record (Redis), and the wake-up reports it.
    public struct State: Codable, Sendable {}

    public static let name = "sleeper"
    /// The longest sleep `seconds` may ask for: ten years.
    public static let maxSeconds: Double = 10 * 365 * 86_400
    public static let steps = ["sleep", "wake"]

    public init() {}

    public func initialState(for input: Input) throws -> State {
        guard input.seconds >= 0, input.seconds <= Self.maxSeconds else {
            throw BatonError(
                .invalidMessage, "the input's 'seconds' must be a number from 0 to \(Int(Self.maxSeconds)) (ten years)",
                field: "input.seconds")
        }
        return State()
    }

    public func run(step: String, context: StepContext<SleeperAgent>) async throws -> StepOutcome {
        try await RunEffect.perform(context, run: context.input.run, directory: context.input.effectsDir)
        switch step {
        case "sleep":
            if let until = context.input.untilMilliseconds {
                return .sleep(until: Date(timeIntervalSince1970: Double(until) / 1000), then: "wake")
            }
            // Measured from the commit's Redis time, so a worker with a wrong clock still sleeps `seconds`.
            return .sleep(for: .milliseconds(Int64((context.input.seconds * 1000).rounded())), then: "wake")
        default:
            let lateness = context.wakeup?.lateness ?? .zero
            let milliseconds = lateness.wholeMilliseconds
            let trigger: String =
                switch context.wakeup?.trigger {
                case .time: "time"
                case .timeout: "timeout"
                case .signal: "signal"
                case .children: "children"
                case nil: "none"
                }
            var result: [String: JSONValue] = ["lateness_ms": .int(milliseconds), "trigger": .string(trigger)]
            if let wakeup = context.wakeup, let due = wakeup.dueAt {
                result["fired_lateness_ms"] = .int(max(0, Int64((wakeup.firedAt.timeIntervalSince(due) * 1000).rounded())))
            }
            return .complete(.object(result))
        }
    }
}
