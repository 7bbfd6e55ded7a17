/// A Lua script run with `EVALSHA`, e.g. `RedisScript("return redis.call('GET', KEYS[1])")`.
///
/// The script's SHA1 is computed once, when the value is created, exactly as Redis computes it. A
/// connection loads the script (`SCRIPT LOAD`, pipelined in front of the first `EVALSHA` on that
/// connection) and, when the server has forgotten it (`SCRIPT FLUSH`, a restart), loads it again and
/// re-runs the `EVALSHA`: callers never see `NOSCRIPT`.
public struct RedisScript: Sendable, Hashable {
    /// The Lua source.
    public let source: String
    /// The SHA1 of the source in lower-case hex: the name Redis knows the script by.
    public let sha1: String

    /// Creates a script from its Lua source.
    public init(_ source: String) {
        self.source = source
        self.sha1 = SHA1.hexDigest(of: Array(source.utf8))
    }
}
