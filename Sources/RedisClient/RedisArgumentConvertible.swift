import Foundation

/// A value that can be a Redis command argument: it writes its bytes into the command's buffer.
///
/// `String` and `Substring` write UTF-8, `[UInt8]`, `ArraySlice<UInt8>` and `Data` write their bytes as
/// they are, integers write their decimal form, `Double` its shortest round-tripping form (`1.5`, `1e+20`,
/// `inf`), which Redis parses for `INCRBYFLOAT`, `ZADD` and friends.
public protocol RedisArgumentConvertible {
    /// Appends this argument's bytes to `buffer`.
    func appendRedisArgument(to buffer: inout [UInt8])
    /// About how many bytes ``appendRedisArgument(to:)`` appends: a command reserves its buffer once from these
    /// (a multi-kilobyte checkpoint otherwise regrows it several times). Exact for bytes and strings.
    var redisByteCountEstimate: Int { get }
}

extension RedisArgumentConvertible {
    /// Enough for a number.
    public var redisByteCountEstimate: Int { 20 }
}

extension String: RedisArgumentConvertible {
    /// Exact.
    public var redisByteCountEstimate: Int { utf8.count }
    /// Appends the UTF-8 bytes.
    public func appendRedisArgument(to buffer: inout [UInt8]) { buffer.append(contentsOf: utf8) }
}

extension Substring: RedisArgumentConvertible {
    /// Exact.
    public var redisByteCountEstimate: Int { utf8.count }
    /// Appends the UTF-8 bytes.
    public func appendRedisArgument(to buffer: inout [UInt8]) { buffer.append(contentsOf: utf8) }
}

extension Array: RedisArgumentConvertible where Element == UInt8 {
    /// Exact.
    public var redisByteCountEstimate: Int { count }
    /// Appends the bytes as they are.
    public func appendRedisArgument(to buffer: inout [UInt8]) { buffer.append(contentsOf: self) }
}

extension ArraySlice: RedisArgumentConvertible where Element == UInt8 {
    /// Exact.
    public var redisByteCountEstimate: Int { count }
    /// Appends the bytes as they are.
    public func appendRedisArgument(to buffer: inout [UInt8]) { buffer.append(contentsOf: self) }
}

extension Data: RedisArgumentConvertible {
    /// Exact.
    public var redisByteCountEstimate: Int { count }
    /// Appends the bytes as they are.
    public func appendRedisArgument(to buffer: inout [UInt8]) { buffer.append(contentsOf: self) }
}

extension Int: RedisArgumentConvertible {
    /// Appends the decimal form.
    public func appendRedisArgument(to buffer: inout [UInt8]) { buffer.append(contentsOf: String(self).utf8) }
}

extension Int64: RedisArgumentConvertible {
    /// Appends the decimal form.
    public func appendRedisArgument(to buffer: inout [UInt8]) { buffer.append(contentsOf: String(self).utf8) }
}

extension UInt64: RedisArgumentConvertible {
    /// Appends the decimal form.
    public func appendRedisArgument(to buffer: inout [UInt8]) { buffer.append(contentsOf: String(self).utf8) }
}

extension Double: RedisArgumentConvertible {
    /// Appends the shortest form that reads back as the same value (`0.1`, `1e+20`, `inf`, `-inf`).
    public func appendRedisArgument(to buffer: inout [UInt8]) { buffer.append(contentsOf: description.utf8) }
}
