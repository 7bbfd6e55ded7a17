import Foundation

/// Which pending approvals a bulk approve acts on (`baton approve --agent … --tenant … --older-than …`,
/// `POST /v1/bulk {"action": "approve"}`): the Inbox's filters. Only tasks waiting for the signal `approve` are
/// selected, never a task in `needs_review` (that one needs a budget raise, a decision about money).
public struct ApprovalSelection: Sendable, Hashable, CustomStringConvertible {
    public var agent: String?
    public var tenant: String?
    /// Only approvals that have waited at least this long (its text as given, e.g. `1h`).
    public var olderThan: String?

    public init(agent: String? = nil, tenant: String? = nil, olderThan: String? = nil) throws {
        func nonEmpty(_ value: String?) -> String? { value.flatMap { $0.isEmpty ? nil : $0 } }
        self.agent = nonEmpty(agent)
        self.tenant = nonEmpty(tenant)
        self.olderThan = nonEmpty(olderThan)
        if let text = self.olderThan, DurationText.parse(text) == nil {
            throw BatonError(.invalidMessage, "older-than must be a duration such as 30m, 1h or 2d; got '\(text)'", field: "older_than")
        }
    }

    /// True when it selects nothing in particular (a bulk approve then needs an explicit "all").
    public var isEmpty: Bool { agent == nil && tenant == nil && olderThan == nil }

    /// `agent=a,tenant=t,older-than=1h` (the audit entry's filter), `all` when empty.
    public var description: String {
        let parts = [agent.map { "agent=\($0)" }, tenant.map { "tenant=\($0)" }, olderThan.map { "older-than=\($0)" }].compactMap { $0 }
        return parts.isEmpty ? "all" : parts.joined(separator: ",")
    }
}

extension BatonClient {
    /// The approval of a waiting task. With `edit` (an RFC 7396 merge patch) its payload is the edited document:
    /// `payload` with the patch applied, or the task's input when no payload is given (what the approver reviewed);
    /// the step the approval wakes sees it as its `context.wakeup` payload, and the task's history records the
    /// patch and its author (``TaskSignal/approval(task:base:edit:id:actor:reason:)``). Send it with ``signal(_:audit:)``.
    public func approval(task: String, payload: JSONValue?, edit: JSONValue?, id: String? = nil, actor: String, reason: String)
        async throws -> TaskSignal
    {
        var base = payload
        if edit != nil, base == nil {
            let input = try await redis.send("HGET", store.settings.keys.task(task), "input").string
            base = input.flatMap { try? JSONValue.parse(Array($0.utf8)) }
        }
        return TaskSignal.approval(task: task, base: base, edit: edit, id: id, actor: actor, reason: reason)
    }

    /// The pending approvals `selection` picks, oldest first (at most `limit`).
    public func pendingApprovals(_ selection: ApprovalSelection, limit: Int = 10_000) async throws -> [InboxItem] {
        let items = try await queries.inbox(
            agent: selection.agent, tenant: selection.tenant, olderThan: selection.olderThan.flatMap(DurationText.parse), limit: limit)
        return items.filter { $0.kind == "approval" }
    }

    /// Approves each of `tasks` (no edit) with one audit entry for all of them (`approve` with the filter and the
    /// count of tasks it woke); calls `progress` after each. A task that stopped waiting since it was selected keeps
    /// the approval in its mailbox (`stored`) like any signal, and is not counted.
    public func approveAll(
        _ tasks: [String], filter: String, actor: String, reason: String, progress: @Sendable (Int) async -> Void = { _ in }
    ) async throws -> [SignalReport] {
        var reports: [SignalReport] = []
        for (index, task) in tasks.enumerated() {
            let signal = TaskSignal.approval(task: task, base: nil, edit: nil, actor: actor, reason: reason)
            reports.append(SignalReport(signal, outcome: try await self.signal(signal, audit: false)))
            await progress(index + 1)
        }
        let done = reports.filter { $0.result == "woke" }.map(\.task)
        let shown = done.prefix(50).joined(separator: ",") + (done.count > 50 ? ",…" : "")
        try await queries.audit(actor: actor, action: "approve", target: shown, filter: filter, count: done.count, reason: reason)
        return reports
    }
}
