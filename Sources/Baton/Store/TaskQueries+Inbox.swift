import Foundation

/// One task that waits for a person: `baton inbox` and `GET /v1/inbox`.
public struct InboxItem: Codable, Sendable, Hashable {
    /// `approval` (waiting for the signal `approve`) or `needs_review` (parked at a cap).
    public var kind: String
    /// When it began waiting (its last update).
    public var since: String?
    public var ageSeconds: Double
    public var task: TaskView

    enum CodingKeys: String, CodingKey {
        case kind, since
        case ageSeconds = "age_s"
        case task
    }
}

extension TaskQueries {
    /// Tasks waiting for a person, oldest first: waiting for an `approve` signal, or parked in `needs_review`.
    /// At most `scan` tasks of those two statuses are read (newest first) before the oldest-first sort.
    public func inbox(
        agent: String? = nil, tenant: String? = nil, olderThan: Duration? = nil, limit: Int = 100, scan: Int = 10_000, now: Date = Date()
    ) async throws -> [InboxItem] {
        var filter = Filter()
        filter.statuses = ["waiting", "needs_review"]
        filter.agent = agent
        filter.tenant = tenant
        filter.limit = 1000
        var views: [TaskView] = []
        while views.count < scan {
            let page = try await list(filter)
            views.append(contentsOf: page.items)
            guard let next = page.nextCursor else { break }
            filter.cursor = ListCursor(next)
        }
        let minimumAge = olderThan.map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 } ?? 0
        let format = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        var items: [InboxItem] = []
        for view in views {
            let kind: String
            if view.status == "needs_review" {
                kind = "needs_review"
            } else if view.waitingFor?.contains(where: { $0["signal"]?.stringValue == "approve" }) == true {
                kind = "approval"
            } else {
                continue
            }
            let since = view.updatedAt.flatMap { try? format.parse($0) }
            let age = since.map { max(0, now.timeIntervalSince($0)) } ?? 0
            guard age >= minimumAge else { continue }
            items.append(InboxItem(kind: kind, since: view.updatedAt, ageSeconds: (age * 1000).rounded() / 1000, task: view))
        }
        items.sort { ($0.ageSeconds, $0.task.id) > ($1.ageSeconds, $1.task.id) }
        return Array(items.prefix(max(1, limit)))
    }
}
