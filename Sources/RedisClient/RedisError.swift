/// An error from the Redis client: what failed, which command, the server's words, and what to fix.
///
/// The error names the command (`SET`, `EVALSHA`) but never its arguments, which may hold secrets or
/// large payloads, and names the server by its redacted URL (`redis://:***@host:port/db`).
public struct RedisError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure this is. New codes may be added; switch with a `default`.
    public var code: Code
    /// The name of the command that failed (`GET`, `EVALSHA`), if one did; never its arguments.
    public var command: String?
    /// The server's error reply (`WRONGTYPE Operation against a key…`), when the server sent one.
    public var serverMessage: String?
    /// A sentence for humans: what happened and what to fix.
    public var message: String

    /// Creates an error.
    public init(code: Code, command: String? = nil, serverMessage: String? = nil, message: String) {
        self.code = code
        self.command = command
        self.serverMessage = serverMessage
        self.message = message
    }

    /// The message, prefixed with the code.
    public var description: String { "RedisError.\(code): \(message)" }
}

extension RedisError {
    /// The kind of a ``RedisError``: a struct around an enum, so that new codes do not break callers.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        enum Base: String, Sendable, Hashable {
            case connectionFailed, authenticationFailed, connectionLost, timeout, server, noScript
            case `protocol`, invalidURL, closed, overloaded
        }

        let base: Base

        init(_ base: Base) { self.base = base }

        /// The server could not be reached (refused, unresolvable host, connect timeout) or the
        /// `SELECT` of the URL's database failed.
        public static let connectionFailed = Code(.connectionFailed)
        /// The server refused `AUTH`, or requires a password that the URL does not give.
        public static let authenticationFailed = Code(.authenticationFailed)
        /// The connection broke while a command was in flight; the command may or may not have run.
        public static let connectionLost = Code(.connectionLost)
        /// No reply arrived within the command timeout; the command may or may not have run.
        public static let timeout = Code(.timeout)
        /// The server answered the command with an error reply (see ``RedisError/serverMessage``).
        public static let server = Code(.server)
        /// The server does not know the script (`NOSCRIPT`), even after the client loaded it again.
        public static let noScript = Code(.noScript)
        /// The reply could not be parsed, or a command could not be encoded.
        public static let `protocol` = Code(.protocol)
        /// The URL is malformed.
        public static let invalidURL = Code(.invalidURL)
        /// The connection was closed by ``RedisConnection/close()`` before the command ran.
        public static let closed = Code(.closed)
        /// Too many commands are queued on the connection (see ``RedisConfiguration/maximumQueuedCommands``).
        public static let overloaded = Code(.overloaded)

        /// The code's name, e.g. `connectionLost`.
        public var description: String { base.rawValue }
    }
}
