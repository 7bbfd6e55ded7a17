/// What one signal did, as `baton signal … -o json` and `POST /v1/tasks/{id}/signals/{name}` (and `approve`,
/// `reject`) answer it.
public struct SignalReport: Codable, Sendable, Hashable {
    public var task: String
    public var signal: String
    public var id: String
    /// `woke`, `stored`, `duplicate`, `not_found`, `terminal` or `mailbox_full`.
    public var result: String
    /// The task's status after the signal (or the status that refused it).
    public var status: String?
    public var actor: String
    public var reason: String?
    /// True for an approval the approver edited (`--edit`): its payload is the patched document.
    public var edited: Bool?

    public init(_ signal: TaskSignal, outcome: SignalOutcome) {
        task = signal.task
        self.signal = signal.name
        id = signal.id
        actor = signal.actor
        reason = signal.reason.isEmpty ? nil : signal.reason
        edited = signal.edit == nil ? nil : true
        switch outcome {
        case .woke: (result, status) = ("woke", "queued")
        case .stored(let status): (result, self.status) = ("stored", status)
        case .duplicate(let status): (result, self.status) = ("duplicate", status)
        case .notFound: result = "not_found"
        case .terminal(let status): (result, self.status) = ("terminal", status)
        case .mailboxFull: result = "mailbox_full"
        }
    }

    enum CodingKeys: String, CodingKey {
        case task = "task_id"
        case signal, id, result, status, actor, reason, edited
    }
}
