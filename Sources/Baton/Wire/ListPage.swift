/// A list as JSON, the shape every list of the CLI (`-o json`) and the HTTP API shares: `{"items": [...]}`,
/// and for a page of a longer list `"next_cursor": "…" | null` (null on the last page).
public struct ListPage<Item: Encodable>: Encodable {
    public var items: [Item]
    /// Whether this is a page (then `next_cursor` is written, null when there is no next page).
    public var paged: Bool
    public var nextCursor: String?

    public init(items: [Item], paged: Bool = true, nextCursor: String?) {
        self.items = items
        self.paged = paged
        self.nextCursor = nextCursor
    }

    enum CodingKeys: String, CodingKey {
        case items
        case nextCursor = "next_cursor"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(items, forKey: .items)
        if paged { try container.encode(nextCursor, forKey: .nextCursor) }
    }
}
