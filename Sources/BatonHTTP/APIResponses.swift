import Baton

/// `{"items": [...]}`.
struct Items<Item: Encodable>: Encodable {
    var items: [Item]
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
