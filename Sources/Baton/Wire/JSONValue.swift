import Foundation

/// Any JSON value: task input and results as other services send them, labels, event data.
public enum JSONValue: Sendable, Hashable, Codable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try Self.string(container) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    /// The string, nil when the value is not one; a string that does not decode (invalid UTF-8) throws its own
    /// error, rather than the misleading "expected an object" of the last type tried.
    static func string(_ container: any SingleValueDecodingContainer) throws -> String? {
        do {
            return try container.decode(String.self)
        } catch DecodingError.typeMismatch {
            return nil
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let v): try container.encode(v)
        case .int(let v): try container.encode(v)
        case .double(let v): try container.encode(v)
        case .string(let v): try container.encode(v)
        case .array(let v): try container.encode(v)
        case .object(let v): try container.encode(v)
        }
    }

    /// Parses JSON bytes.
    public static func parse(_ bytes: some Collection<UInt8>) throws -> JSONValue {
        try JSONCoding.checkDepth(bytes, what: "the JSON", limit: JSONCoding.foundationDepth)
        return try JSONDecoder().decode(JSONValue.self, from: Data(bytes))
    }

    /// Compact JSON text with sorted keys.
    public var jsonString: String {
        String(decoding: (try? JSONCoding.encoder.encode(self)) ?? Data("null".utf8), as: UTF8.self)
    }

    public subscript(key: String) -> JSONValue? {
        if case .object(let object) = self { return object[key] }
        return nil
    }

    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
    public var intValue: Int64? {
        switch self {
        case .int(let v): v
        case .double(let v) where v.rounded() == v && abs(v) < 9e18: Int64(v)
        default: nil
        }
    }
    public var doubleValue: Double? {
        switch self {
        case .int(let v): Double(v)
        case .double(let v): v
        default: nil
        }
    }
    public var objectValue: [String: JSONValue]? { if case .object(let o) = self { o } else { nil } }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { a } else { nil } }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral, ExpressibleByFloatLiteral,
    ExpressibleByDictionaryLiteral, ExpressibleByArrayLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(Dictionary(elements, uniquingKeysWith: { $1 })) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(nilLiteral: ()) { self = .null }
}

/// The JSON coders Baton uses everywhere: snake_case keys on the wire, sorted keys, ISO-8601 dates.
public enum JSONCoding {
    public static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }()

    public static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()

    /// Encodes `value` to JSON bytes.
    public static func encode(_ value: some Encodable) throws -> [UInt8] { Array(try encoder.encode(value)) }

    /// Encodes an agent's state for its checkpoint: the same text as ``string(_:)``, by ``CheckpointEncoder`` when it
    /// can (once per step, on the hot path) and by Foundation's encoder otherwise.
    public static func checkpoint(_ value: some Encodable) throws -> String {
        if let text = CheckpointEncoder.encode(value) { return text }
        return try string(value)
    }

    /// Encodes `value` to a JSON string.
    public static func string(_ value: some Encodable) throws -> String { String(decoding: try encoder.encode(value), as: UTF8.self) }

    /// Decodes `type` from JSON bytes, translating decoding errors into a message that names the field.
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: some Collection<UInt8>, what: String) throws(BatonError) -> T {
        try checkDepth(bytes, what: what)
        do {
            return try decoder.decode(type, from: Data(bytes))
        } catch let error as DecodingError {
            if let offset = invalidUTF8(bytes) {
                throw BatonError(.invalidMessage, "\(what) is not valid JSON: it is not UTF-8 (an invalid byte sequence at byte \(offset))")
            }
            throw BatonError(.invalidMessage, describe(error, what: what), field: field(of: error))
        } catch {
            throw BatonError(.invalidMessage, "\(what) is not valid JSON: \(error)")
        }
    }

    /// The deepest nesting of arrays and objects Baton reads from others (`JSONValue.parse`, ``decode(_:from:what:)``).
    /// Deeper JSON is refused with a clear error before Foundation's decoder sees it: its scanner traps (killing
    /// the process) on some inputs just over its own limit of 512, e.g. exactly 513 unclosed `[`, and every
    /// level is a recursion of `JSONValue`'s decoder. 128 is serde_json's default.
    public static let maxDepth = 128

    /// The limit of `JSONValue.parse`, which also reads what Baton stored itself (results, checkpoints, events, an
    /// agent may nest deeper than a message may): Foundation's own limit, checked before Foundation sees the bytes.
    public static let foundationDepth = 512

    /// Throws when `bytes` nest arrays and objects deeper than `limit` (brackets inside strings do not count).
    static func checkDepth(_ bytes: some Collection<UInt8>, what: String, limit: Int = maxDepth) throws(BatonError) {
        let deepest: Int? =
            bytes.withContiguousStorageIfAvailable { depthOverLimit($0, limit: limit) } ?? depthOverLimit(Array(bytes), limit: limit)
        if let deepest {
            throw BatonError(
                .invalidMessage,
                "\(what) nests arrays and objects more than \(limit) levels deep (at byte \(deepest)): the limit is \(limit)")
        }
    }

    /// Refuses an AMQP message whose `content_type` says it is not JSON (absent, `application/json`, `text/json` and
    /// `…+json`, with any parameters, are JSON): the error names the property, not a JSON syntax error.
    public static func checkContentType(_ contentType: String?, what: String) throws(BatonError) {
        guard let contentType else { return }
        let type = (contentType.split(separator: ";", omittingEmptySubsequences: false).first ?? "")
            .trimmingCharacters(in: .whitespaces).lowercased()
        guard !type.isEmpty, type != "application/json", type != "text/json", !type.hasSuffix("+json") else { return }
        throw BatonError(
            .invalidMessage,
            "\(what) has content_type '\(contentType)'; Baton reads JSON: publish it with content_type application/json",
            field: "content_type")
    }

    /// The offset of the first invalid UTF-8 sequence, or nil (only on the error path: Foundation's message for it
    /// is a bare "not valid JSON").
    static func invalidUTF8(_ bytes: some Collection<UInt8>) -> Int? {
        var iterator = bytes.makeIterator()
        var parser = Unicode.UTF8.ForwardParser()
        var offset = 0
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid(let scalar): offset += scalar.count
            case .emptyInput: return nil
            case .error: return offset
            }
        }
    }

    /// The offset of the first bracket past `limit` levels, or nil.
    static func depthOverLimit(_ bytes: some Collection<UInt8>, limit: Int) -> Int? {
        var depth = 0
        var inString = false
        var escaped = false
        var offset = 0
        for byte in bytes {
            defer { offset += 1 }
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > limit { return offset }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
        return nil
    }

    static func path(_ codingPath: [any CodingKey]) -> String {
        codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
    }

    static func field(of error: DecodingError) -> String? {
        switch error {
        case .keyNotFound(let key, let context): return path(context.codingPath + [key])
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return context.codingPath.isEmpty ? nil : path(context.codingPath)
        @unknown default: return nil
        }
    }

    static func describe(_ error: DecodingError, what: String) -> String {
        switch error {
        case .keyNotFound(let key, let context):
            return "\(what) is missing the required field '\(path(context.codingPath + [key]))'"
        case .typeMismatch(let type, let context):
            return "\(what) field '\(path(context.codingPath))' has the wrong type: expected \(jsonTypeName(type))"
        case .valueNotFound(let type, let context):
            return "\(what) field '\(path(context.codingPath))' is null: expected \(jsonTypeName(type))"
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty { return "\(what) is not valid JSON (\(context.debugDescription))" }
            return "\(what) field '\(path(context.codingPath))' is invalid: \(context.debugDescription)"
        @unknown default:
            return "\(what) could not be decoded: \(error)"
        }
    }

    static func jsonTypeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "true or false"
        case is Int.Type, is Int64.Type, is Int32.Type, is UInt.Type, is UInt64.Type: "an integer"
        case is Double.Type, is Float.Type: "a number"
        default:
            String(describing: type).hasPrefix("Array")
                ? "an array" : (String(describing: type).hasPrefix("Dictionary") ? "an object" : "\(type)")
        }
    }
}
