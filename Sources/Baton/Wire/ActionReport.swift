/// What one operator action did to one task or dead letter, as the CLI (`-o json`: `{"items": [these]}`) and
/// the HTTP API report it: `{"id", "action", "result", "status", "branch", "reason"}`; a fork adds `seq` and `step`
/// (where the new branch starts), and a refused fork a `message` saying why.
public struct ActionReport: Encodable, Sendable {
    public var id: String
    public var action: String
    /// `done`, `requested`, `not_found`, `conflict` or (a fork that needs `--step`) `usage`.
    public var result: String
    /// The status after the action (done), or the status that forbade it (conflict).
    public var status: String?
    /// For a redrive or fork of a task: the new branch.
    public var branch: Int64?
    /// For a fork: the seq of the checkpoint the new branch starts from.
    public var seq: Int64?
    /// For a fork: the step the new branch runs first.
    public var step: String?
    public var reason: String
    /// Why the action was refused, when the result alone does not say it.
    public var message: String?

    public init(id: String, action: String, outcome: BatonClient.ActionResult, reason: String) {
        self.id = id
        self.action = action
        self.reason = reason
        switch outcome {
        case .done(let status) where action == "redrive" && Int64(status) != nil:
            // The store answers a task's redrive with its new branch; the task is queued again.
            result = "done"
            self.status = "queued"
            branch = Int64(status)
        case .done(let status):
            result = "done"
            self.status = status.isEmpty ? nil : status
        case .requested: result = "requested"
        case .notFound: result = "not_found"
        case .conflict(let status):
            result = "conflict"
            self.status = status
        }
    }
}
