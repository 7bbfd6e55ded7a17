import Foundation

/// Daily limits per tenant (`tenants.<name>.max_cost_usd_per_day`, `tenants.<name>.max_tokens_per_day`), enforced
/// across all of that tenant's tasks: counters per tenant per UTC day (Redis time) in
/// `<prefix>tenant:{<name>}:<yyyy-mm-dd>` (a hash `cost`, `tokens`, expiring two days later).
///
/// A charge is admitted while the tenant's counter is below the limit and then counted at once (so the day's
/// counter ends at most one charge above the limit); a charge that finds the counter at or above the limit is
/// refused and counted nowhere (the step throws ``BudgetExceeded``); a claim finding the counter at or above the
/// limit stops (or parks) the task before its step runs. Tasks of a tenant without limits pay no extra Redis work.
public struct TenantBudgets: Sendable, Hashable {
    /// The daily limits of one tenant; nil = none.
    public struct Limits: Sendable, Hashable {
        public var maxCostMicrosPerDay: Int64?
        public var maxTokensPerDay: Int64?

        public init(maxCostMicrosPerDay: Int64? = nil, maxTokensPerDay: Int64? = nil) {
            self.maxCostMicrosPerDay = maxCostMicrosPerDay
            self.maxTokensPerDay = maxTokensPerDay
        }

        var isEmpty: Bool { maxCostMicrosPerDay == nil && maxTokensPerDay == nil }
    }

    /// Limits by tenant name.
    public private(set) var limits: [String: Limits] = [:]
    /// The table the scripts read (`{"acme": {"cost": micros, "tokens": n}}`), `""` when no tenant has limits.
    public private(set) var json = ""

    public init(_ limits: [String: Limits] = [:]) {
        self.limits = limits.filter { !$0.value.isEmpty }
        var table: [String: JSONValue] = [:]
        for (name, l) in self.limits {
            var entry: [String: JSONValue] = [:]
            if let cost = l.maxCostMicrosPerDay { entry["cost"] = .int(cost) }
            if let tokens = l.maxTokensPerDay { entry["tokens"] = .int(tokens) }
            table[name] = .object(entry)
        }
        json = table.isEmpty ? "" : JSONValue.object(table).jsonString
    }

    /// Whether `tenant` has any daily limit.
    public func hasLimits(_ tenant: String) -> Bool { !tenant.isEmpty && limits[tenant] != nil }

    /// The UTC day of `date`, as the counters' keys name it (`2026-11-22`).
    public static func day(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC") ?? .current
        let c = calendar.dateComponents([.year, .month, .day], from: date)
        return String(format: "%04d-%02d-%02d", c.year ?? 0, c.month ?? 0, c.day ?? 0)
    }
}
