import Baton
import Foundation

/// `stepchain`: the benchmark and crash-test workload of research/peers.md. Each step appends one record of
/// `record_bytes` bytes, charges `tokens_per_step` tokens and `cost_usd_per_step` dollars, and the task
/// completes after `steps` steps. With `effect_log`, the charge runs inside a keyed side effect that also
/// appends a line to that file (an effects sink outside Redis for crash tests).
public struct StepChainAgent: Agent {
    public struct Input: Codable, Sendable {
        public var steps: Int = 20
        public var recordBytes: Int = 200
        public var tokensPerStep: Int64 = 100
        public var costUSDPerStep: Double = 0.0001
        /// Optional: a file outside Redis where every executed side effect appends one line (an effects sink
        /// for crash tests). Each line: `task step key token`.
        public var effectLog: String?
        /// Optional: the verification run this task belongs to; each step then performs one keyed effect in the run's
        /// effects sink (`<effects_dir or BATON_EFFECTS_DIR>/<run>.effects.jsonl`, see `baton verify`).
        public var run: String?
        public var effectsDir: String?
        /// Optional: every step waits this long (milliseconds, 0…600000) before it commits, as a slow tool call would:
        /// a step that outlives RabbitMQ's `consumer_timeout` (the chaos runner's `consumer_timeout` fault).
        public var sleepMilliseconds: Int = 0

        enum CodingKeys: String, CodingKey {
            case steps
            case recordBytes = "record_bytes"
            case tokensPerStep = "tokens_per_step"
            case costUSDPerStep = "cost_usd_per_step"
            case effectLog = "effect_log"
            case run
            case effectsDir = "effects_dir"
            case sleepMilliseconds = "sleep_ms"
        }

        public init(
            steps: Int = 20, recordBytes: Int = 200, tokensPerStep: Int64 = 100, costUSDPerStep: Double = 0.0001, effectLog: String? = nil
        ) {
            self.steps = steps
            self.recordBytes = recordBytes
            self.tokensPerStep = tokensPerStep
            self.costUSDPerStep = costUSDPerStep
            self.effectLog = effectLog
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            steps = try c.decodeIfPresent(Int.self, forKey: .steps) ?? 20
            recordBytes = try c.decodeIfPresent(Int.self, forKey: .recordBytes) ?? 200
            tokensPerStep = try c.decodeIfPresent(Int64.self, forKey: .tokensPerStep) ?? 100
            costUSDPerStep = try c.decodeIfPresent(Double.self, forKey: .costUSDPerStep) ?? 0.0001
            effectLog = try c.decodeIfPresent(String.self, forKey: .effectLog)
            (run, effectsDir) = try RunInput(from: decoder).fields
            sleepMilliseconds = try c.decodeIfPresent(Int.self, forKey: .sleepMilliseconds) ?? 0
            guard (1...100_000).contains(steps) else {
                throw DecodingError.dataCorruptedError(forKey: .steps, in: c, debugDescription: "must be between 1 and 100000")
            }
            guard (0...65_536).contains(recordBytes) else {
                throw DecodingError.dataCorruptedError(forKey: .recordBytes, in: c, debugDescription: "must be between 0 and 65536")
            }
            guard (0...600_000).contains(sleepMilliseconds) else {
                throw DecodingError.dataCorruptedError(
                    forKey: .sleepMilliseconds, in: c, debugDescription: "must be between 0 and 600000 (milliseconds)")
            }
        }
    }

    public struct State: Codable, Sendable {
        public var records: [String] = []
    }

    public static let name = "stepchain"
    public static let steps = ["append"]

    public init() {}

    public func initialState(for input: Input) throws -> State { State() }

    public func run(step: String, context: StepContext<StepChainAgent>) async throws -> StepOutcome {
        let n = context.state.records.count + 1
        let input = context.input
        let key = "record-\(n)"
        try await RunEffect.perform(context, run: input.run, directory: input.effectsDir)
        if input.sleepMilliseconds > 0 { try await Task.sleep(for: .milliseconds(input.sleepMilliseconds)) }
        if let path = input.effectLog {
            // A keyed side effect, logged outside Redis: crash tests count each key once.
            try await context.sideEffect(key) {
                try EffectLog.append(path: path, line: "\(context.taskID) \(step) \(key) \(context.attempt)")
                try await context.charge(costUSD: input.costUSDPerStep, tokens: input.tokensPerStep)
                return n
            }
        } else {
            try await context.charge(costUSD: input.costUSDPerStep, tokens: input.tokensPerStep)
        }
        CrashPoint.hit("in_step", task: context.taskID, seq: context.seq)
        let prefix = "\(n):"
        let padding = max(0, input.recordBytes - prefix.utf8.count)
        context.state.records.append(
            prefix
                + String(unsafeUninitializedCapacity: padding) { buffer in
                    buffer.initialize(repeating: UInt8(ascii: "x"))
                    return padding
                })
        if n >= input.steps {
            return .complete(["records": .int(Int64(context.state.records.count))])
        }
        return .next("append")
    }
}

/// An append-only, fsync'd log file: the effects sink that crash tests and `baton verify` count from,
/// outside Redis.
public enum EffectLog {
    public static func append(path: String, line: String) throws {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        guard fd >= 0 else { throw StepError.retryable("cannot open effect log \(path): errno \(errno)", bucket: "tool_error") }
        defer { close(fd) }
        let bytes = Array((line + "\n").utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw StepError.retryable("short write to effect log \(path)", bucket: "tool_error") }
        fsync(fd)
    }
}
