import Foundation

/// A new task, as any service publishes it to the `baton.submit` exchange (DESIGN.md §6, `"v": 1`).
public struct SubmitRequest: Codable, Sendable, Hashable {
    public var v: Int
    /// Optional client-chosen id: resubmitting the same id is a no-op.
    public var id: String?
    public var agent: String
    public var input: JSONValue
    public var budget: BudgetRequest?
    public var tenant: String?
    public var labels: [String: String]?
    public var notify: Notify?

    public struct Notify: Codable, Sendable, Hashable {
        public var webhook: String?
        public var events: [String]?
        public init(webhook: String? = nil, events: [String]? = nil) {
            self.webhook = webhook
            self.events = events
        }
    }

    public init(
        id: String? = nil, agent: String, input: JSONValue = .object([:]), budget: BudgetRequest? = nil, tenant: String? = nil,
        labels: [String: String]? = nil, notify: Notify? = nil
    ) {
        self.v = 1
        self.id = id
        self.agent = agent
        self.input = input
        self.budget = budget
        self.tenant = tenant
        self.labels = labels
        self.notify = notify
    }

    enum CodingKeys: String, CodingKey { case v, id, agent, input, budget, tenant, labels, notify }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        v = try c.decode(Int.self, forKey: .v)
        id = try c.decodeIfPresent(String.self, forKey: .id)
        agent = try c.decode(String.self, forKey: .agent)
        input = try c.decodeIfPresent(JSONValue.self, forKey: .input) ?? .object([:])
        budget = try c.decodeIfPresent(BudgetRequest.self, forKey: .budget)
        tenant = try c.decodeIfPresent(String.self, forKey: .tenant)
        labels = try c.decodeIfPresent([String: String].self, forKey: .labels)
        notify = try c.decodeIfPresent(Notify.self, forKey: .notify)
    }

    /// Decodes and validates a submit body; the error names the field to fix.
    public static func decode(_ body: some Collection<UInt8>, maxBytes: Int) throws(BatonError) -> SubmitRequest {
        guard body.count <= maxBytes else {
            throw BatonError(
                .oversized, "the submit is \(body.count) bytes, over the \(maxBytes)-byte limit (submit.max_bytes)", field: nil)
        }
        let request = try JSONCoding.decode(SubmitRequest.self, from: body, what: "the submit")
        try request.validate()
        return request
    }

    /// Checks values the JSON types cannot express.
    public func validate() throws(BatonError) {
        guard v == 1 else { throw BatonError(.invalidMessage, "the submit has \"v\": \(v); this worker speaks version 1", field: "v") }
        guard TaskID.isValidName(agent) else {
            throw BatonError(
                .invalidMessage, "the submit's 'agent' must be 1–100 characters of letters, digits, '-', '_' or '.'", field: "agent")
        }
        if let id, !TaskID.isValid(id) {
            throw BatonError(.invalidMessage, "the submit's 'id' must be 1–128 characters of letters, digits, '-', '_' or '.'", field: "id")
        }
        try budget?.validate()
        if let webhook = notify?.webhook { try WebhookTarget.validate(webhook) }
        for name in notify?.events ?? [] where !EventMessage.filterNames.contains(name) {
            throw BatonError(
                .invalidMessage,
                "notify.events names '\(name)', not an event type (or 'status', 'progress', '*'); see README \"Events and webhooks\"",
                field: "notify.events")
        }
    }
}

/// Budget limits as a submit states them (`max_cost_usd` in dollars; stored as integer micro-dollars).
public struct BudgetRequest: Codable, Sendable, Hashable {
    public var maxCostUSD: Double?
    public var maxTokens: Int64?
    public var maxSteps: Int64?
    public var maxToolCalls: Int64?
    public var maxHandoffs: Int64?
    public var maxAttempts: Int64?
    public var deadline: Date?
    /// What a reached cap does: stop the task (`budget_exceeded`, the default) or park it in `needs_review`.
    public var onLimit: OnLimit?

    public init(
        maxCostUSD: Double? = nil, maxTokens: Int64? = nil, maxSteps: Int64? = nil, maxToolCalls: Int64? = nil, maxHandoffs: Int64? = nil,
        maxAttempts: Int64? = nil, deadline: Date? = nil, onLimit: OnLimit? = nil
    ) {
        self.onLimit = onLimit
        self.maxCostUSD = maxCostUSD
        self.maxTokens = maxTokens
        self.maxSteps = maxSteps
        self.maxToolCalls = maxToolCalls
        self.maxHandoffs = maxHandoffs
        self.maxAttempts = maxAttempts
        self.deadline = deadline
    }

    enum CodingKeys: String, CodingKey {
        case maxCostUSD = "max_cost_usd"
        case maxTokens = "max_tokens"
        case maxSteps = "max_steps"
        case maxToolCalls = "max_tool_calls"
        case maxHandoffs = "max_handoffs"
        case maxAttempts = "max_attempts"
        case deadline
        case onLimit = "on_limit"
    }

    func validate() throws(BatonError) {
        let checks: [(String, Double?)] = [
            ("budget.max_cost_usd", maxCostUSD), ("budget.max_tokens", maxTokens.map(Double.init)),
            ("budget.max_steps", maxSteps.map(Double.init)),
            ("budget.max_tool_calls", maxToolCalls.map(Double.init)), ("budget.max_handoffs", maxHandoffs.map(Double.init)),
            ("budget.max_attempts", maxAttempts.map(Double.init)),
        ]
        for (field, value) in checks {
            if let value, !(value >= 0) || !value.isFinite {
                throw BatonError(.invalidMessage, "the submit's '\(field)' must be a number ≥ 0", field: field)
            }
        }
        if let maxCostUSD, maxCostUSD > 1_000_000_000 {
            throw BatonError(
                .invalidMessage, "the submit's 'budget.max_cost_usd' must be at most 1000000000 (a billion dollars)",
                field: "budget.max_cost_usd")
        }
        if let maxAttempts, maxAttempts < 1 {
            throw BatonError(.invalidMessage, "the submit's 'budget.max_attempts' must be at least 1", field: "budget.max_attempts")
        }
        if let maxCostUSD, maxCostUSD > 1_000_000_000 {
            throw BatonError(.invalidMessage, "the submit's 'budget.max_cost_usd' is too large", field: "budget.max_cost_usd")
        }
    }
}

/// Task ids: client-chosen or generated; time-sortable when generated.
public enum TaskID {
    /// A new id: 12 hex digits of milliseconds since the epoch, then 10 random hex digits.
    public static func generate() -> String {
        let ms = UInt64(Date().timeIntervalSince1970 * 1000)
        let random = UInt64.random(in: 0..<(1 << 40))
        return hex(ms, width: 12) + hex(random, width: 10)
    }

    static func hex(_ value: UInt64, width: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - text.count)) + text
    }

    /// ASCII letters, digits, `-`, `_` and `.` (checked on bytes: every other byte, non-ASCII included, is refused).
    static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
            true
        default: false
        }
    }

    /// Whether `id` can be a task id (no braces, colons or slashes: they have meaning in Redis keys).
    public static func isValid(_ id: String) -> Bool { (1...128).contains(id.utf8.count) && id.utf8.allSatisfy(isAllowed) }

    /// Whether `id` names a task or a child task: `<root>/<n>/<n>…` — a valid root id, then up to
    /// ``maxChildDepth`` `/`-separated decimal child numbers. Submitted ids stay ``isValid(_:)`` (no `/`):
    /// only a `parallel` outcome creates child ids.
    public static func isValidPath(_ id: String) -> Bool {
        guard id.utf8.contains(UInt8(ascii: "/")) else { return isValid(id) }
        let parts = id.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        guard parts.count <= maxChildDepth + 1, id.utf8.count <= 256, let root = parts.first, (1...128).contains(root.count),
            root.allSatisfy(isAllowed)
        else { return false }
        return parts.dropFirst().allSatisfy { part in
            (1...9).contains(part.count) && part.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
        }
    }

    /// How deep children may nest (a child's child's …).
    public static let maxChildDepth = 8

    /// The parent of a child id (`a/3/1` → `a/3`), nil for a root id.
    public static func parent(of id: String) -> String? {
        guard let slash = id.utf8.lastIndex(of: UInt8(ascii: "/")) else { return nil }
        return String(id[..<slash])
    }

    /// Whether `name` can be an agent, step or queue name.
    public static func isValidName(_ name: String) -> Bool { (1...100).contains(name.utf8.count) && name.utf8.allSatisfy(isAllowed) }
}

/// What a reached cap (cost, tokens, steps, tool calls, handoffs, deadline, a tenant's daily limit) does to a task
/// (`budget.on_limit` on the wire: `"stop"` or `"review"`).
public struct OnLimit: Sendable, Hashable, Codable, CustomStringConvertible {
    enum Base: String, Sendable { case stop, review }
    let base: Base

    /// Stop the task in `budget_exceeded` with its partial state saved (the default).
    public static let stop = OnLimit(base: .stop)
    /// Park the task in `needs_review` with its partial state saved, until `baton budget --raise` resumes it or
    /// `baton reject`/`cancel` ends it.
    public static let review = OnLimit(base: .review)

    init(base: Base) { self.base = base }

    /// `"stop"` or `"review"`; nil for anything else.
    public init?(_ text: String) {
        guard let base = Base(rawValue: text) else { return nil }
        self.base = base
    }

    public var description: String { base.rawValue }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = OnLimit(text) else {
            throw DecodingError.dataCorrupted(
                DecodingError.Context(
                    codingPath: decoder.codingPath, debugDescription: "budget.on_limit must be \"stop\" or \"review\" (got \"\(text)\")"))
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(base.rawValue)
    }
}
