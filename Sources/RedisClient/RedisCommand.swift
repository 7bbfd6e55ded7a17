/// One Redis command and its binary-safe arguments, e.g. `RedisCommand("SET", key, value)`.
///
/// Arguments are bytes: `String` (UTF-8), `[UInt8]`, `Int`, `Double` and the other
/// ``RedisArgumentConvertible`` types are encoded into one contiguous buffer when the command is built, so
/// the connection thread hands them to hiredis without copying them again. Any byte, including NUL, CR,
/// LF and 0xFF, is sent as is.
///
/// Commands that put the connection into another protocol mode (`SUBSCRIBE`, `MONITOR`) and blocking
/// commands that wait longer than ``RedisConfiguration/commandTimeout`` are not supported.
public struct RedisCommand: Sendable, Hashable {
    /// Every argument, the command name first, back to back.
    var storage: [UInt8]
    /// The length of each argument in ``storage``.
    var lengths: [Int]
    /// The script this command runs with `EVALSHA`: the connection loads it when the server does not know it.
    var script: RedisScript?

    /// Creates a command from its name and arguments, e.g. `RedisCommand("HSET", key, "field", 42)`.
    public init(_ name: String, _ arguments: any RedisArgumentConvertible...) {
        self.init(name, arguments: arguments)
    }

    /// Creates a command from its name and an array of arguments.
    public init(_ name: String, arguments: [any RedisArgumentConvertible]) {
        storage = []
        storage.reserveCapacity(arguments.reduce(name.utf8.count) { $0 + $1.redisByteCountEstimate })
        lengths = []
        lengths.reserveCapacity(arguments.count + 1)
        append(name)
        for argument in arguments {
            append(argument)
        }
    }

    /// Creates a command from raw byte arguments, the command name first.
    ///
    /// An empty array makes a command that the server rejects; give at least the name.
    public init(bytes arguments: [[UInt8]]) {
        storage = []
        storage.reserveCapacity(arguments.reduce(0) { $0 + $1.count })
        lengths = arguments.map(\.count)
        for argument in arguments {
            storage.append(contentsOf: argument)
        }
    }

    /// Appends one argument.
    public mutating func append(_ argument: some RedisArgumentConvertible) {
        let before = storage.count
        argument.appendRedisArgument(to: &storage)
        lengths.append(storage.count - before)
    }

    /// Appends one argument made of two strings back to back (a key's base and its suffix), without building the
    /// joined string first.
    public mutating func append(_ first: String, joinedWith second: String) {
        let before = storage.count
        storage.append(contentsOf: first.utf8)
        storage.append(contentsOf: second.utf8)
        lengths.append(storage.count - before)
    }

    /// Makes room for `arguments` more arguments of `bytes` bytes in all (a hint: appending more still works).
    public mutating func reserve(arguments: Int, bytes: Int) {
        storage.reserveCapacity(storage.count + bytes)
        lengths.reserveCapacity(lengths.count + arguments)
    }

    /// Appends several arguments.
    public mutating func append(contentsOf arguments: [any RedisArgumentConvertible]) {
        for argument in arguments {
            append(argument)
        }
    }

    /// The number of arguments, the command name included.
    public var count: Int { lengths.count }

    /// Every argument as bytes, the command name first.
    public var arguments: [[UInt8]] {
        var result: [[UInt8]] = []
        result.reserveCapacity(lengths.count)
        var offset = 0
        for length in lengths {
            result.append(Array(storage[offset..<offset + length]))
            offset += length
        }
        return result
    }

    /// The command name in upper case (`GET`), for errors and logs; never an argument.
    ///
    /// A first argument that does not look like a command name (non-ASCII, long) is shown as `?` so that
    /// a misplaced secret does not leak into a log.
    public var name: String {
        guard let length = lengths.first, length > 0, length <= 32 else { return "?" }
        var result = ""
        for byte in storage[0..<length] {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"):
                result.unicodeScalars.append(Unicode.Scalar(byte - 32))
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"):
                result.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                return "?"
            }
        }
        return result
    }

    /// The total size of the arguments in bytes.
    public var byteCount: Int { storage.count }

    /// Appends the command as the server reads it (RESP: an array of bulk strings), e.g.
    /// `*2\r\n$3\r\nGET\r\n$1\r\nk\r\n` for `GET k`.
    func appendRESP(to buffer: inout [UInt8]) {
        buffer.reserveCapacity(buffer.count + storage.count + 16 * lengths.count + 16)
        buffer.append(UInt8(ascii: "*"))
        Self.appendDecimal(lengths.count, to: &buffer)
        buffer.append(UInt8(ascii: "\r"))
        buffer.append(UInt8(ascii: "\n"))
        storage.withUnsafeBufferPointer { bytes in
            var offset = 0
            for length in lengths {
                buffer.append(UInt8(ascii: "$"))
                Self.appendDecimal(length, to: &buffer)
                buffer.append(UInt8(ascii: "\r"))
                buffer.append(UInt8(ascii: "\n"))
                buffer.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[offset..<offset + length]))
                buffer.append(UInt8(ascii: "\r"))
                buffer.append(UInt8(ascii: "\n"))
                offset += length
            }
        }
    }

    /// Appends a non-negative integer's decimal digits.
    static func appendDecimal(_ value: Int, to buffer: inout [UInt8]) {
        // Most significant digit first, so nothing is reversed in place (`buffer[start...].reverse()` copied the slice:
        // a `malloc` per number, ~7 % of a worker's `malloc` calls, as every argument's length is one).
        let value = UInt(max(0, value))
        var divisor: UInt = 1
        while value / divisor >= 10 { divisor *= 10 }
        repeat {
            buffer.append(UInt8(ascii: "0") + UInt8(truncatingIfNeeded: (value / divisor) % 10))
            divisor /= 10
        } while divisor > 0
    }
}

extension RedisCommand {
    /// `EVALSHA <sha> <keyCount>` for a script, its keys and arguments to be appended (``append(_:)``) by the caller:
    /// for a hot path that builds them without an array of boxed values. The connection loads the script when the
    /// server does not know it, as with ``evalSHA(_:keys:args:)``.
    public static func evalSHA(_ script: RedisScript, keyCount: Int) -> RedisCommand {
        var command = RedisCommand("EVALSHA", script.sha1, keyCount)
        command.script = script
        return command
    }

    /// `EVALSHA` for a script: the connection loads the script when the server does not know it
    /// (first use on a connection, after `SCRIPT FLUSH` or a server restart) and retries.
    public static func evalSHA(
        _ script: RedisScript,
        keys: [any RedisArgumentConvertible] = [],
        args: [any RedisArgumentConvertible] = []
    ) -> RedisCommand {
        var command = RedisCommand("EVALSHA", script.sha1, keys.count)
        command.storage.reserveCapacity(
            command.storage.count + keys.reduce(0) { $0 + $1.redisByteCountEstimate } + args.reduce(0) { $0 + $1.redisByteCountEstimate })
        command.lengths.reserveCapacity(command.lengths.count + keys.count + args.count)
        command.append(contentsOf: keys)
        command.append(contentsOf: args)
        command.script = script
        return command
    }
}
