import Baton

/// `{"items": [...]}`.
struct Items<Item: Encodable>: Encodable {
    var items: [Item]
}

/// A page of tasks: `{"items": [...], "next_cursor": "…" | null}` (null on the last page).
struct Page<Item: Encodable>: Encodable {
    var items: [Item]
    var nextCursor: String?

    enum CodingKeys: String, CodingKey {
        case items
        case nextCursor = "next_cursor"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(items, forKey: .items)
        try container.encode(nextCursor, forKey: .nextCursor)
    }
}

/// Dead letters: `{"items": [...], "total": n | null}` (null when the page filled before every match was counted).
struct DeadPage: Encodable {
    var items: [DeadLetterView]
    var total: Int?

    enum CodingKeys: String, CodingKey { case items, total }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(items, forKey: .items)
        try container.encode(total, forKey: .total)
    }
}

/// What one action did to one task or dead letter: `{"id", "action", "result", "status", "branch", "reason"}`, with
/// `result` one of `done`, `requested`, `not_found`, `conflict` (the shape of the CLI's `-o json`).
struct ActionReport: Encodable {
    var id: String
    var action: String
    var result: String
    var status: String?
    /// For a redrive of a task: the new branch.
    var branch: Int64?
    var reason: String

    init(id: String, action: String, outcome: BatonClient.ActionResult, reason: String) {
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

/// The answer of a bulk dead-letter action: a dry run's count and samples, or a real run's count (done), the
/// number selected and one report per letter.
struct BulkReport: Encodable {
    var dryRun: Bool
    var action: String
    /// How the audit stream records the filter (`agent=x step=y`, `all`).
    var filter: String
    var count: Int
    var selected: Int?
    var samples: [DeadLetterView]?
    var items: [ActionReport]?

    init(
        dryRun: Bool, action: String, filter: String, count: Int, selected: Int? = nil, samples: [DeadLetterView]? = nil,
        items: [ActionReport]? = nil
    ) {
        self.dryRun = dryRun
        self.action = action
        self.filter = filter
        self.count = count
        self.selected = selected
        self.samples = samples
        self.items = items
    }

    enum CodingKeys: String, CodingKey {
        case dryRun = "dry_run"
        case action, filter, count, selected, samples, items
    }
}
