import Foundation

/// Durations as people write them in `Config/baton.yaml`, environment variables and CLI flags: `100ms`, `30s`,
/// `1.5s`, `5m`, `24h`, `7d`, or a bare number of seconds (`30`).
public enum DurationText {
    /// Parses `text`; nil when it is not a duration or is negative.
    public static func parse(_ text: String) -> Duration? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [(suffix: String, seconds: Double)] = [
            ("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400),
        ]
        var number = trimmed
        var scale = 1.0
        for unit in units where trimmed.hasSuffix(unit.suffix) {
            let candidate = String(trimmed.dropLast(unit.suffix.count))
            // "ms" must win over "s": only accept a suffix whose rest is a number.
            if Double(candidate) != nil {
                number = candidate
                scale = unit.seconds
                break
            }
        }
        guard !number.isEmpty, let value = Double(number), value.isFinite, value >= 0 else { return nil }
        return .milliseconds(Int64((value * scale * 1000).rounded()))
    }

    /// Writes a duration the short way: `250ms`, `30s`, `1.5s`, `5m`, `2h`, `3d`.
    public static func format(_ duration: Duration) -> String {
        let milliseconds = duration.configWholeMilliseconds
        if milliseconds < 1000 { return "\(milliseconds)ms" }
        let seconds = Double(milliseconds) / 1000
        for (suffix, size) in [("d", 86_400.0), ("h", 3600.0), ("m", 60.0)]
        where seconds >= size && seconds.truncatingRemainder(dividingBy: size) == 0 {
            return "\(Int(seconds / size))\(suffix)"
        }
        return seconds == seconds.rounded() ? "\(Int(seconds))s" : String(format: "%.1fs", seconds)
    }
}

extension Duration {
    /// Whole milliseconds (rounded down).
    fileprivate var configWholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
