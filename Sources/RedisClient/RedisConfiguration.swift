/// How a ``RedisConnection`` connects: the server's URL, timeouts, reconnect backoff and queue cap.
public struct RedisConfiguration: Sendable {
    /// The server and credentials, e.g. `redis://:password@127.0.0.1:6379/0`.
    public var url: RedisURL
    /// How long one connect attempt (TCP connect) may take. Default: 5 seconds.
    public var connectTimeout: Duration = .seconds(5)
    /// How long a read or write on the socket may block before the command fails with
    /// ``RedisError/Code/timeout`` and the connection is rebuilt. Default: 10 seconds.
    ///
    /// Blocking commands (`BLPOP`, `XREAD BLOCK`) must use a server-side timeout below this.
    public var commandTimeout: Duration = .seconds(10)
    /// How long to wait between reconnect attempts after failed ones. Default: ``ReconnectBackoff/default``
    /// (the first reconnect at once, then 50 ms doubling up to 2 s, with jitter).
    public var reconnectBackoff: ReconnectBackoff = .default
    /// The most commands that may wait in the connection's queue; beyond it a call fails at once with
    /// ``RedisError/Code/overloaded`` instead of piling up without bound. Default: 100,000.
    public var maximumQueuedCommands: Int = 100_000

    /// Creates a configuration for a parsed URL, with the documented defaults.
    public init(url: RedisURL) {
        self.url = url
    }

    /// Parses `url` (see ``RedisURL``) and uses the documented defaults for everything else.
    public init(url: String) throws(RedisError) {
        self.url = try RedisURL(parsing: url)
    }
}
