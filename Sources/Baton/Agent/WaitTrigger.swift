import Foundation

/// One wake-up condition of ``StepOutcome/wait(for:then:onTimeout:)``: a named signal, a timeout, or a
/// point in time. A wait lists any-of triggers; the first to fire wins atomically (one Lua script), the
/// others are cancelled.
public struct WaitTrigger: Sendable, Hashable {
    enum Base: Sendable, Hashable {
        case signal(String)
        case timeout(Duration)
        case at(Date)
    }
    let base: Base

    /// A signal named `name` (`baton signal TASK NAME`, `baton approve`, the `baton.signals` exchange).
    public static func signal(_ name: String) -> WaitTrigger { WaitTrigger(base: .signal(name)) }
    /// Fires `duration` after the wait began (measured by Redis time when the wait is committed).
    public static func timeout(_ duration: Duration) -> WaitTrigger { WaitTrigger(base: .timeout(duration)) }
    /// Fires at `date`.
    public static func at(_ date: Date) -> WaitTrigger { WaitTrigger(base: .at(date)) }
}

/// What woke a task that waited or slept: ``StepContext/wakeup`` of the step that resumes it.
public struct Wakeup: Sendable, Hashable {
    /// Which trigger fired.
    ///
    /// Decision (docs/design-decisions.md): a plain enum, so steps can `switch` over it; a new kind of
    /// trigger would be a new case, which a `default:` in user code absorbs.
    public enum Trigger: Sendable, Hashable {
        /// A signal: its name, payload (`null` when it had none) and dedupe id.
        case signal(name: String, payload: JSONValue, id: String)
        /// The wait's `.timeout(…)` fired first.
        case timeout
        /// A sleep's time, or the wait's `.at(…)`, came.
        case time
        /// Every child of ``StepOutcome/parallel(_:then:)`` ended (``StepContext/childResults`` has them).
        case children

        var isSignal: Bool {
            if case .signal = self { return true }
            return false
        }
    }

    public var trigger: Trigger
    /// When the timer was due (timeouts and times).
    public var dueAt: Date?
    /// When the trigger fired (the wake was committed).
    public var firedAt: Date
    /// Who sent the signal and why (signals only).
    public var actor: String?
    public var reason: String?
    /// How late the resumed step started after the timer was due (timeouts and times); nil for signals.
    public var lateness: Duration?

    /// Parses the `wakeup` field the wake scripts write; `claimedAt` is when the resumed step was claimed
    /// (Unix ms, Redis time).
    init?(json: String, claimedAt: Int64) {
        guard !json.isEmpty, let value = try? JSONValue.parse(Array(json.utf8)) else { return nil }
        func ms(_ key: String) -> Int64? { value[key]?.intValue ?? value[key]?.doubleValue.map { Int64($0) } }
        switch value["trigger"]?.stringValue {
        case "signal":
            let payloadText = value["p"]?.stringValue ?? ""
            let payload = payloadText.isEmpty ? JSONValue.null : ((try? JSONValue.parse(Array(payloadText.utf8))) ?? .string(payloadText))
            trigger = .signal(name: value["name"]?.stringValue ?? "", payload: payload, id: value["id"]?.stringValue ?? "")
            actor = value["actor"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
            reason = value["reason"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
        case "timeout": trigger = .timeout
        case "time": trigger = .time
        case "children": trigger = .children
        default: return nil
        }
        let fired = ms("woke_at") ?? claimedAt
        firedAt = Date(timeIntervalSince1970: Double(fired) / 1000)
        if trigger == .children || trigger.isSignal {
            dueAt = nil
            lateness = nil
        } else if let due = ms("due_at") {
            dueAt = Date(timeIntervalSince1970: Double(due) / 1000)
            lateness = .milliseconds(max(0, claimedAt - due))
        }
    }

    /// The signal's name, or nil when a timer fired.
    public var signalName: String? {
        if case .signal(let name, _, _) = trigger { return name }
        return nil
    }

    /// The signal's payload (`null` when it had none, or a timer fired).
    public var payload: JSONValue {
        if case .signal(_, let payload, _) = trigger { return payload }
        return .null
    }
}

/// A wait or sleep as committed: what the commit script records on the task (the `wait` field) and turns
/// into a timer.
public struct WaitSpec: Sendable, Hashable {
    /// `wait` or `sleep`.
    public var kind: String
    public var signals: [String]
    /// A `.timeout(…)`, measured from the commit (Redis time).
    public var delayMilliseconds: Int64?
    /// A `.at(…)` or a sleep's time (Unix ms).
    public var atMilliseconds: Int64?
    /// The step that runs when a signal (or a sleep's time) wakes the task.
    public var next: String
    /// The step that runs when a timer wakes a wait (nil: `next`).
    public var onTimeout: String?

    public init(
        kind: String, signals: [String], delayMilliseconds: Int64?, atMilliseconds: Int64?, next: String, onTimeout: String?
    ) {
        self.kind = kind
        self.signals = signals
        self.delayMilliseconds = delayMilliseconds
        self.atMilliseconds = atMilliseconds
        self.next = next
        self.onTimeout = onTimeout
    }

    /// The JSON the commit script reads (absent keys, never `null`: Lua's cjson turns `null` into a
    /// userdata that is not `nil`).
    public var json: String {
        var object: [String: JSONValue] = [
            "k": .string(kind), "signals": .array(signals.map(JSONValue.string)), "next": .string(next),
        ]
        if let delayMilliseconds { object["delay_ms"] = .int(delayMilliseconds) }
        if let atMilliseconds { object["at_ms"] = .int(atMilliseconds) }
        if let onTimeout { object["on_timeout"] = .string(onTimeout) }
        return JSONValue.object(object).jsonString
    }

    /// "waiting for approve or reject, timeout 2026-11-23T10:00:00Z", "sleeping until 2026-…".
    public static func statusReason(kind: String, signals: [String], dueMilliseconds: Int64?, dueKind: String?) -> String {
        let due = dueMilliseconds.map { Self.iso($0) }
        if kind == "sleep" { return (dueKind == "deadline" ? "sleeping until the deadline " : "sleeping until ") + (due ?? "?") }
        var text = "waiting for "
        text += signals.isEmpty ? "a timer" : signals.joined(separator: " or ")
        if let due {
            switch dueKind {
            case "time": text += ", until \(due)"
            case "deadline": text += ", deadline \(due)"
            default: text += ", timeout \(due)"
            }
        }
        return text
    }

    /// `2026-11-23T10:00:00Z` (whole seconds, as the Lua scripts write it).
    public static func iso(_ milliseconds: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds / 1000)))
    }
}
