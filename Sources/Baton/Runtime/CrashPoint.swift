import Foundation

/// Fault injection for crash tests: with `BATON_CRASH_POINT=<point>` (or `<point>@<seq>`) in its
/// environment, a worker SIGKILLs itself when it reaches that point, so tests can crash a real process at
/// an exact place of the protocol. Points: `in_step` (after the step's side effect, before its commit),
/// `after_commit` (before the outbox is published), `after_publish` (before the ack), `in_effect` (the example agents' run effect: after the effects sink applied it,
/// before Redis recorded it). Unset in production.
public enum CrashPoint {
    static let spec: (point: String, seq: Int64?)? = {
        guard let value = ProcessInfo.processInfo.environment["BATON_CRASH_POINT"], !value.isEmpty else { return nil }
        let parts = value.split(separator: "@", maxSplits: 1)
        return (String(parts[0]), parts.count > 1 ? Int64(parts[1]) : nil)
    }()

    /// Kills the process with SIGKILL if `point` (and `seq`, when given) is the configured crash point.
    public static func hit(_ point: String, task: String, seq: Int64) {
        guard let spec, spec.point == point, spec.seq == nil || spec.seq == seq else { return }
        FileHandle.standardError.write(Data("BATON_CRASH_POINT \(point) reached for task \(task) at seq \(seq): SIGKILL\n".utf8))
        kill(getpid(), SIGKILL)
    }
}
