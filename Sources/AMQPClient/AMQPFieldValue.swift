/// A header or argument table: field names to values. The broker does not keep the order of entries.
public typealias AMQPTable = [String: AMQPFieldValue]

/// One value of an AMQP field table (message headers, queue and exchange arguments).
public enum AMQPFieldValue: Sendable, Hashable {
    case bool(Bool)
    case int8(Int8)
    case uint8(UInt8)
    case int16(Int16)
    case uint16(UInt16)
    case int32(Int32)
    case uint32(UInt32)
    case int64(Int64)
    case float(Float)
    case double(Double)
    case decimal(scale: UInt8, value: UInt32)
    /// A UTF-8 long string (kind `S`).
    case string(String)
    /// Raw bytes (kind `x`).
    case bytes([UInt8])
    /// Seconds since the epoch (kind `T`).
    case timestamp(UInt64)
    case table(AMQPTable)
    case array([AMQPFieldValue])
    case void

    /// The value as an integer, whatever its integer width.
    public var intValue: Int64? {
        switch self {
        case .int8(let v): Int64(v)
        case .uint8(let v): Int64(v)
        case .int16(let v): Int64(v)
        case .uint16(let v): Int64(v)
        case .int32(let v): Int64(v)
        case .uint32(let v): Int64(v)
        case .int64(let v): v
        case .timestamp(let v): Int64(exactly: v)
        default: nil
        }
    }

    /// The value as a string (from `S` or from UTF-8 bytes).
    public var stringValue: String? {
        switch self {
        case .string(let s): s
        case .bytes(let b): String(validating: b, as: UTF8.self)
        default: nil
        }
    }
}

extension AMQPFieldValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int64(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}
