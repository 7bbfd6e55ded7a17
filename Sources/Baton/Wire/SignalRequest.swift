import Foundation

/// A signal as any service publishes it to the `baton.signals` exchange (DESIGN.md §6, `"v": 1`):
/// `{"v": 1, "task_id": "…", "name": "approval", "payload": {…}, "id": "dedupe id"}`. Optional `actor` and
/// `reason` are recorded with the `signal_received` event.
public struct SignalRequest: Codable, Sendable, Hashable {
    public var v: Int
    public var taskID: String
    public var name: String
    public var payload: JSONValue?
    /// The dedupe id: the same id for the same task is delivered once. Absent: a new id (no dedupe).
    public var id: String?
    public var actor: String?
    public var reason: String?

    public init(
        taskID: String, name: String, payload: JSONValue? = nil, id: String? = nil, actor: String? = nil, reason: String? = nil
    ) {
        self.v = 1
        self.taskID = taskID
        self.name = name
        self.payload = payload
        self.id = id
        self.actor = actor
        self.reason = reason
    }

    enum CodingKeys: String, CodingKey {
        case v
        case taskID = "task_id"
        case name, payload, id, actor, reason
    }

    /// Decodes and validates a signal body; the error names the field to fix.
    public static func decode(_ body: some Collection<UInt8>, maxBytes: Int = SignalLimits.payloadMaxBytes + 4096) throws(BatonError)
        -> SignalRequest
    {
        guard body.count <= maxBytes else {
            throw BatonError(.oversized, "the signal is \(body.count) bytes, over the \(maxBytes)-byte limit", field: "payload")
        }
        let request = try JSONCoding.decode(SignalRequest.self, from: body, what: "the signal")
        try request.validate()
        return request
    }

    /// Checks values the JSON types cannot express.
    public func validate() throws(BatonError) {
        guard v == 1 else { throw BatonError(.invalidMessage, "the signal has \"v\": \(v); this worker speaks version 1", field: "v") }
        guard TaskID.isValidPath(taskID) else {
            throw BatonError(
                .invalidMessage, "the signal's 'task_id' must be 1–128 characters of letters, digits, '-', '_' or '.'", field: "task_id")
        }
        guard TaskID.isValidName(name) else {
            throw BatonError(
                .invalidMessage, "the signal's 'name' must be 1–100 characters of letters, digits, '-', '_' or '.'", field: "name")
        }
        if let id, id.isEmpty || id.count > 200 {
            throw BatonError(.invalidMessage, "the signal's 'id' must be 1–200 characters", field: "id")
        }
        if let payload, payload.jsonString.utf8.count > SignalLimits.payloadMaxBytes {
            throw BatonError(
                .oversized, "the signal's 'payload' is over the \(SignalLimits.payloadMaxBytes)-byte limit: store large data elsewhere",
                field: "payload")
        }
    }

    /// The signal for the store (`actor` defaults to `fallbackActor`).
    public func taskSignal(fallbackActor: String) -> TaskSignal {
        TaskSignal(
            task: taskID, name: name, payloadJSON: payload.map(\.jsonString) ?? "", id: id, actor: actor ?? fallbackActor,
            reason: reason ?? "")
    }
}
