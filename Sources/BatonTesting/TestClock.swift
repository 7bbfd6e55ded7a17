import Foundation
import Synchronization

/// A clock that only moves when a test moves it: the in-memory backend's stand-in for Redis `TIME`.
///
/// Leases, deadlines, retry timers and heartbeats of ``InMemoryTaskStore`` are all read from it, so a retry
/// with a five-minute backoff or an expired lease takes no real time: ``advance(by:)`` and the harness's
/// ``BatonTestHarness/runUntilIdle(maxDeliveries:)`` jump straight to the next instant anything is due.
public final class TestClock: Sendable {
    private let milliseconds: Mutex<Int64>

    /// Starts at `start` (by default the wall clock at creation, so budget deadlines given as `Date`s
    /// relative to now behave as they would on a worker).
    public init(start: Date = Date()) {
        milliseconds = Mutex(Int64((start.timeIntervalSince1970 * 1000).rounded(.down)))
    }

    /// The current time in Unix milliseconds (what the Lua scripts compute from `TIME`).
    public var nowMilliseconds: Int64 { milliseconds.withLock { $0 } }

    /// The current time.
    public var now: Date { Date(timeIntervalSince1970: Double(nowMilliseconds) / 1000) }

    /// Moves the clock forward by `duration` (negative durations are ignored: time never runs backwards).
    public func advance(by duration: Duration) {
        let delta = Self.milliseconds(of: duration)
        guard delta > 0 else { return }
        milliseconds.withLock { $0 += delta }
    }

    /// Moves the clock forward to `instant` (Unix milliseconds); does nothing if it is already later.
    public func advance(toMilliseconds instant: Int64) {
        milliseconds.withLock { $0 = max($0, instant) }
    }

    /// Whole milliseconds of a duration (rounded down).
    static func milliseconds(of duration: Duration) -> Int64 {
        duration.wholeMilliseconds
    }
}
