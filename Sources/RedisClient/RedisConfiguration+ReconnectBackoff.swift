extension RedisConfiguration {
    /// The delay between reconnect attempts: exponential, capped, with jitter.
    public struct ReconnectBackoff: Sendable, Hashable {
        /// The delay after the first failed attempt.
        public var initialDelay: Duration
        /// The longest delay between two attempts.
        public var maximumDelay: Duration

        /// Waits `initialDelay` after the first failure, doubles after each further failure up to
        /// `maximumDelay`, and randomises each delay between half and all of it.
        public static func exponential(initialDelay: Duration, maximumDelay: Duration) -> ReconnectBackoff {
            ReconnectBackoff(initialDelay: initialDelay, maximumDelay: maximumDelay)
        }

        /// 50 ms, doubling up to 2 s.
        public static let `default` = ReconnectBackoff.exponential(initialDelay: .milliseconds(50), maximumDelay: .seconds(2))

        /// The delay before the next attempt after `failures` consecutive failed attempts (0 means at once).
        func delay(afterFailures failures: Int) -> Duration {
            guard failures > 0 else { return .zero }
            var delay = initialDelay
            for _ in 1..<min(failures, 32) where delay < maximumDelay {
                delay *= 2
            }
            delay = min(delay, maximumDelay)
            return delay * Double.random(in: 0.5...1.0)
        }
    }
}
