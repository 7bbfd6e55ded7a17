/// A step message on `baton.steps` (internal; may change). The task's state lives in Redis.
public struct StepMessage: Codable, Sendable, Hashable {
    public var v: Int = 1
    public var task: String
    public var agent: String
    public var step: String
    public var seq: Int64
    public var branch: Int64
    public var attempt: Int64

    public init(task: String, agent: String, step: String, seq: Int64, branch: Int64, attempt: Int64) {
        self.task = task
        self.agent = agent
        self.step = step
        self.seq = seq
        self.branch = branch
        self.attempt = attempt
    }

    public static func decode(_ body: some Collection<UInt8>) throws(BatonError) -> StepMessage {
        let message: StepMessage
        if let fast = fastDecode(body) {
            message = fast
        } else {
            message = try JSONCoding.decode(StepMessage.self, from: body, what: "the step message")
        }
        guard message.v == 1 else { throw BatonError(.invalidMessage, "the step message has \"v\": \(message.v); expected 1", field: "v") }
        guard TaskID.isValidPath(message.task) else {
            throw BatonError(.invalidMessage, "the step message's 'task' is not a valid task id", field: "task")
        }
        guard message.seq >= 0, message.branch >= 0, message.attempt >= 1 else {
            throw BatonError(.invalidMessage, "the step message's seq/branch must be ≥ 0 and attempt ≥ 1", field: "seq")
        }
        return message
    }
}
