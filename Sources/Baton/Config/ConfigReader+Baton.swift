import Configuration
import Foundation

/// Typed, validated reads of Baton's keys.
///
/// Scalars are read as strings and parsed here, so a YAML number, an environment variable and a flag go through
/// the same checks and give the same message. A value that is present but wrong throws a ``BatonError`` with
/// code ``BatonError/Code/configuration`` whose `field` is the key; ``BatonConfiguration/load(file:environment:overrides:workerID:)``
/// adds where the value came from.
extension ConfigReader {
    /// The raw text of `key`, nil when no provider has it. YAML's null (`~`, `null`, empty) reads as nil.
    func batonText(_ key: String) -> String? {
        guard let text = string(forKey: ConfigKey(key))?.trimmingCharacters(in: .whitespaces) else { return nil }
        return ["", "~", "null"].contains(text.lowercased()) ? nil : text
    }

    func batonString(_ key: String, default defaultValue: String) -> String {
        batonText(key) ?? defaultValue
    }

    func batonInt(_ key: String, default defaultValue: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text = batonText(key) else { return defaultValue }
        guard let value = Int(text.replacingOccurrences(of: "_", with: "")), range.contains(value) else {
            throw Self.invalid(key, text, "a whole number " + Self.describe(range))
        }
        return value
    }

    /// An optional limit: absent, `~` or `none` mean no limit.
    func batonLimit(_ key: String, default defaultValue: Int64?) throws -> Int64? {
        guard let text = batonText(key) else { return defaultValue }
        if text.lowercased() == "none" { return nil }
        guard let value = Int64(text.replacingOccurrences(of: "_", with: "")), value >= 1 else {
            throw Self.invalid(key, text, "a whole number ≥ 1, or ~ for no limit")
        }
        return value
    }

    /// An optional amount in US dollars: absent, `~` or `none` mean no limit.
    func batonDollars(_ key: String, default defaultValue: Double?) throws -> Double? {
        guard let text = batonText(key) else { return defaultValue }
        if text.lowercased() == "none" { return nil }
        guard let value = Double(text.replacingOccurrences(of: "$", with: "")), value.isFinite, value > 0 else {
            throw Self.invalid(key, text, "an amount in US dollars > 0, or ~ for no limit")
        }
        return value
    }

    func batonDuration(_ key: String, default defaultValue: Duration, minimum: Duration = .milliseconds(1)) throws -> Duration {
        guard let text = batonText(key) else { return defaultValue }
        guard let value = DurationText.parse(text), value >= minimum else {
            throw Self.invalid(key, text, "a duration of at least \(DurationText.format(minimum)) (e.g. 250ms, 30s, 5m, 1h)")
        }
        return value
    }

    func batonBool(_ key: String, default defaultValue: Bool) throws -> Bool {
        guard let text = batonText(key) else { return defaultValue }
        switch text.lowercased() {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default: throw Self.invalid(key, text, "true or false")
        }
    }

    /// A list: a YAML sequence, a comma-separated environment variable or flag. Empty means `nil`.
    func batonList(_ key: String) -> [String]? {
        let items = (stringArray(forKey: ConfigKey(key)) ?? [])
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        return items.isEmpty ? nil : items
    }

    static func invalid(_ key: String, _ text: String, _ expected: String) -> BatonError {
        BatonError(.configuration, "\(key) must be \(expected); got \"\(text)\"", field: key)
    }

    static func describe(_ range: ClosedRange<Int>) -> String {
        if range.upperBound == .max { return "≥ \(range.lowerBound)" }
        return "from \(range.lowerBound) to \(range.upperBound)"
    }
}
