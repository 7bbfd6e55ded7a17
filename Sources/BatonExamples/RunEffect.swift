import Baton

/// The keyed external effect that the example agents perform once per step when their input names a verification
/// run (`"run": "<id>"`, and optionally `"effects_dir"`; else the worker's `BATON_EFFECTS_DIR`): one attempt recorded
/// in the run's ``EffectsSink`` under the idempotency key `<task>#<seq>` (the seq the step commits) with the step's
/// fencing token, inside ``StepContext/sideEffect(_:_:)`` so a retry after the effect was recorded in Redis does not
/// call the sink again. `baton verify --run <id>` counts these entries.
enum RunEffect {
    static func perform<A: Agent>(_ context: StepContext<A>, run: String?, directory: String?) async throws {
        guard let run else { return }
        let sink = try EffectsSink.shared(run: run, directory: directory)
        let seq = context.seq + 1
        let key = "\(context.taskID)#\(seq)"
        try await context.sideEffect(key) {
            let outcome = try await sink.apply(
                task: context.taskID, step: context.step, seq: seq, key: key, token: context.fencingToken, attempt: context.attempt)
            // Crash tests: killed after the external call, before Redis recorded it (the re-run is a replay).
            CrashPoint.hit("in_effect", task: context.taskID, seq: context.seq)
            if outcome == .fenced {
                throw StepError.retryable(
                    "the effects sink refused fencing token \(context.fencingToken) of task \(context.taskID): a newer lease exists",
                    bucket: "fenced")
            }
            return outcome.rawValue
        }
    }
}

/// The optional input fields of a verification run, shared by the example agents.
struct RunInput: Codable, Sendable {
    var run: String?
    var effectsDir: String?
    enum CodingKeys: String, CodingKey {
        case run
        case effectsDir = "effects_dir"
    }
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        run = try c.decodeIfPresent(String.self, forKey: .run)
        effectsDir = try c.decodeIfPresent(String.self, forKey: .effectsDir)
        if let run, !TaskID.isValidName(run) {
            throw DecodingError.dataCorruptedError(
                forKey: .run, in: c, debugDescription: "a run id is 1–100 letters, digits, '-', '_' or '.'")
        }
    }
    init() {}

    var fields: (String?, String?) { (run, effectsDir) }
}
