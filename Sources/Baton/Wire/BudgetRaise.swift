import Foundation

/// A change of a task's limits for `baton budget TASK --raise …` and `POST /v1/tasks/{id}/budget`:
/// `max_cost_usd=+2,max_steps=+50` (relative `+n`) or `max_cost_usd=10` (absolute); `deadline=+2h` or an ISO-8601 time.
public struct BudgetRaise: Sendable, Hashable {
    /// One limit's change, as stored (cost in micro-dollars, deadline in Unix ms).
    public struct Change: Sendable, Hashable {
        /// The stored field: `max_cost`, `max_tokens`, `max_steps`, `max_tool_calls`, `max_handoffs`, `max_attempts`, `deadline`.
        public var field: String
        /// The name as the user wrote it (`max_cost_usd`).
        public var name: String
        public var relative: Bool
        public var value: Int64
    }

    public var changes: [Change]

    /// The names accepted, with their stored field.
    static let fields: [(name: String, field: String)] = [
        ("max_cost_usd", "max_cost"), ("max_tokens", "max_tokens"), ("max_steps", "max_steps"), ("max_tool_calls", "max_tool_calls"),
        ("max_handoffs", "max_handoffs"), ("max_attempts", "max_attempts"), ("deadline", "deadline"),
    ]

    /// The user's name of a stored field (`max_cost` → `max_cost_usd`).
    public static func name(ofField field: String) -> String { fields.first { $0.field == field }?.name ?? field }

    /// Parses `max_cost_usd=+2,max_steps=+50`; the error names the entry to fix.
    public init(parsing text: String) throws(BatonError) {
        var entries: [(String, String)] = []
        for pair in text.split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, !parts[1].isEmpty else {
                throw BatonError(.invalidMessage, "a raise looks like max_cost_usd=+2,max_steps=+50 (got '\(pair)')", field: "raise")
            }
            entries.append((parts[0], parts[1]))
        }
        try self.init(entries: entries)
    }

    /// Parses name → value entries (values as text: `+2`, `10`, `+2h`, `2026-12-01T00:00:00Z`).
    public init(entries: [(String, String)]) throws(BatonError) {
        guard !entries.isEmpty else {
            throw BatonError(.invalidMessage, "name at least one limit to raise, e.g. max_cost_usd=+2", field: "raise")
        }
        var changes: [Change] = []
        for (name, raw) in entries {
            guard let field = Self.fields.first(where: { $0.name == name })?.field else {
                throw BatonError(
                    .invalidMessage,
                    "unknown limit '\(name)' (known: \(Self.fields.map(\.name).joined(separator: ", ")))", field: "raise")
            }
            guard !changes.contains(where: { $0.field == field }) else {
                throw BatonError(.invalidMessage, "'\(name)' is named twice", field: "raise")
            }
            let relative = raw.hasPrefix("+")
            let text = relative ? String(raw.dropFirst()) : raw
            let value: Int64?
            switch field {
            case "max_cost":
                value = Double(text).flatMap { $0.isFinite && $0 >= 0 && $0 <= 1_000_000_000 ? Charge.micros(fromUSD: $0) : nil }
            case "deadline":
                if relative {
                    value = DurationText.parse(text).map {
                        $0.wholeMilliseconds
                    }
                } else {
                    value = (ISO8601DateFormatter.fractional.date(from: text) ?? ISO8601DateFormatter().date(from: text)).map {
                        Int64($0.timeIntervalSince1970 * 1000)
                    }
                }
            default:
                value = Int64(text).flatMap { $0 >= 0 ? $0 : nil }
            }
            guard let value else {
                let expected =
                    switch field {
                    case "max_cost": "+dollars or dollars (e.g. +2 or 7.50)"
                    case "deadline": "+duration (e.g. +2h) or an ISO-8601 time"
                    default: "+n or n, a whole number ≥ 0"
                    }
                throw BatonError(.invalidMessage, "'\(name)=\(raw)' is not valid: expected \(expected)", field: "raise")
            }
            changes.append(Change(field: field, name: name, relative: relative, value: value))
        }
        self.changes = changes
    }
}
