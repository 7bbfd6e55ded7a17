/// A reply from Redis (RESP2): a bulk string, a status, an integer, an array, null or an error.
///
/// The helpers (``string``, ``int``, ``bytes``, ``array``, ``isNull``) give the value in the shape a
/// caller wants, or nil when the reply has another shape.
public enum RedisReply: Sendable, Hashable {
    /// A bulk string: binary-safe bytes (`GET`, `HGET`, most string results).
    case bulkString([UInt8])
    /// A status reply such as `OK` or `PONG`.
    case status(String)
    /// An integer reply (`INCR`, `DEL`, `EXISTS`).
    case integer(Int)
    /// An array reply (`MGET`, `HGETALL`, `EXEC`, a Lua table); elements may be any reply, nested.
    case array([RedisReply])
    /// The null bulk string or null array (a missing key, a Lua `false`).
    case null
    /// An error reply, e.g. `WRONGTYPE Operation against a key holding the wrong kind of value`.
    case error(String)

    /// A bulk string decoded as UTF-8 (invalid bytes become U+FFFD), a status, or an integer in decimal.
    public var string: String? {
        switch self {
        case .bulkString(let bytes): String(decoding: bytes, as: UTF8.self)
        case .status(let text): text
        case .integer(let value): String(value)
        default: nil
        }
    }

    /// An integer reply, or a bulk string or status that holds a decimal integer.
    public var int: Int? {
        switch self {
        case .integer(let value): value
        case .bulkString(let bytes): Int(String(decoding: bytes, as: UTF8.self))
        case .status(let text): Int(text)
        default: nil
        }
    }

    /// A bulk string or status reply that holds a number (`INCRBYFLOAT`, `ZSCORE`), or an integer reply.
    public var double: Double? {
        switch self {
        case .integer(let value): Double(value)
        case .bulkString(let bytes): Double(String(decoding: bytes, as: UTF8.self))
        case .status(let text): Double(text)
        default: nil
        }
    }

    /// The bytes of a bulk string or status reply.
    public var bytes: [UInt8]? {
        switch self {
        case .bulkString(let bytes): bytes
        case .status(let text): Array(text.utf8)
        default: nil
        }
    }

    /// The elements of an array reply.
    public var array: [RedisReply]? {
        if case .array(let elements) = self { return elements }
        return nil
    }

    /// True for the null reply (missing key, Lua `false`).
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// The server's words when this is an error reply.
    public var errorMessage: String? {
        if case .error(let message) = self { return message }
        return nil
    }

    /// True for an error reply.
    public var isError: Bool { errorMessage != nil }
}
