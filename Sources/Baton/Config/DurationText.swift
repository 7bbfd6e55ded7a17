import Foundation

/// Durations as people write them in `Config/baton.yaml`, environment variables and CLI flags: `100ms`, `30s`,
/// `1.5s`, `5m`, `24h`, `7d`, or a bare number of seconds (`30`).
public enum DurationText {
    /// The longest duration ``parse(_:)`` accepts: 100 years (anything longer is a typo, and would not fit
    /// the millisecond counts that leases, timers and Redis scores use).
    public static let maxSeconds: Double = 100 * 365 * 86_400

    /// Parses `text`; nil when it is not a duration, is negative or is longer than ``maxSeconds``.
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
        guard !number.isEmpty, let value = Double(number), value >= 0, value * scale <= maxSeconds else { return nil }
        return .milliseconds(Int64((value * scale * 1000).rounded()))
    }

    /// Writes a duration the short way: `250ms`, `30s`, `1.5s`, `5m`, `2h`, `3d`.
    public static func format(_ duration: Duration) -> String {
        let milliseconds = duration.wholeMilliseconds
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
    /// Whole milliseconds (rounded toward zero), saturating: a duration beyond ±Int64.max / 2 milliseconds
    /// (~146 million years) counts as that, never a crash. Every place that turns a caller's duration into the
    /// millisecond counts of leases, timers and Redis scores goes through this.
    public var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        let limit = Int64.max / 2
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1000)
        if overflow || whole > limit || whole < -limit { return seconds < 0 ? -limit : limit }
        return whole + attoseconds / 1_000_000_000_000_000
    }
}
