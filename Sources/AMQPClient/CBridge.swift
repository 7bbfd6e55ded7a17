import CRabbitMQ
import Glibc

/// C memory for one broker call: names, properties and tables copied into malloc'ed blocks that live until
/// the arena is released, after the C call returned (`amqp_cstring_bytes(swiftString)` would dangle).
/// Used only on the connection thread.
final class CArena {
    /// Pieces are carved from blocks of `blockSize` bytes (one `malloc` for a whole message's names, properties and
    /// headers; a piece larger than a block gets a block of its own). A `malloc` per piece plus a Swift array per string
    /// was ~18 % of a worker's `malloc` calls on the step chain (perf probe, seventeenth session).
    private static let blockSize = 4096
    private var block: UnsafeMutableRawPointer?
    private var used = 0
    private var capacity = 0
    /// Blocks filled before `block`, freed with it.
    private var full: [UnsafeMutableRawPointer] = []

    deinit {
        if let block { free(block) }
        for pointer in full { free(pointer) }
    }

    /// Forgets every piece (their memory is reused by the next ones): after the C call that read them returned.
    func reset() {
        for pointer in full { free(pointer) }
        full.removeAll(keepingCapacity: true)
        used = 0
    }

    private func allocate(_ size: Int) -> UnsafeMutableRawPointer {
        let size = max(size, 1)
        let start = (used + 15) & ~15  // aligned for any C type (table entries hold pointers and 64-bit values)
        if let block, start + size <= capacity {
            used = start + size
            return block + start
        }
        if let block { full.append(block) }
        let bytes = max(Self.blockSize, size)
        let fresh = malloc(bytes)!  // malloc only fails when the process is out of memory
        block = fresh
        capacity = bytes
        used = size
        return fresh
    }

    private func copy(_ raw: UnsafeRawBufferPointer) -> amqp_bytes_t {
        guard let source = raw.baseAddress, raw.count > 0 else { return amqp_bytes_t(len: 0, bytes: nil) }
        let pointer = allocate(raw.count)
        pointer.copyMemory(from: source, byteCount: raw.count)
        return amqp_bytes_t(len: raw.count, bytes: pointer)
    }

    func bytes(_ value: [UInt8]) -> amqp_bytes_t {
        value.withUnsafeBytes { copy($0) }
    }

    func bytes(_ value: String) -> amqp_bytes_t {
        var value = value
        return value.withUTF8 { copy(UnsafeRawBufferPointer($0)) }
    }

    func cString(_ value: String) -> UnsafePointer<CChar> {
        var value = value
        return value.withUTF8 { utf8 in
            let pointer = allocate(utf8.count + 1)
            if let source = utf8.baseAddress { pointer.copyMemory(from: source, byteCount: utf8.count) }
            pointer.storeBytes(of: 0, toByteOffset: utf8.count, as: UInt8.self)
            return UnsafePointer(pointer.assumingMemoryBound(to: CChar.self))
        }
    }

    func table(_ table: AMQPTable) -> amqp_table_t {
        if table.isEmpty { return amqp_table_t(num_entries: 0, entries: nil) }
        let entries = allocate(MemoryLayout<amqp_table_entry_t>.stride * table.count).bindMemory(
            to: amqp_table_entry_t.self, capacity: table.count)
        if table.count == 1, let (key, value) = table.first {
            entries.initialize(to: amqp_table_entry_t(key: bytes(key), value: field(value)))
        } else {
            for (index, (key, value)) in table.sorted(by: { $0.key < $1.key }).enumerated() {
                (entries + index).initialize(to: amqp_table_entry_t(key: bytes(key), value: field(value)))
            }
        }
        return amqp_table_t(num_entries: Int32(table.count), entries: entries)
    }

    func field(_ value: AMQPFieldValue) -> amqp_field_value_t {
        var f = amqp_field_value_t()
        func kind(_ k: amqp_field_value_kind_t) { f.kind = UInt8(truncatingIfNeeded: k.rawValue) }
        switch value {
        case .bool(let v):
            kind(AMQP_FIELD_KIND_BOOLEAN)
            f.value.boolean = v ? 1 : 0
        case .int8(let v):
            kind(AMQP_FIELD_KIND_I8)
            f.value.i8 = v
        case .uint8(let v):
            kind(AMQP_FIELD_KIND_U8)
            f.value.u8 = v
        case .int16(let v):
            kind(AMQP_FIELD_KIND_I16)
            f.value.i16 = v
        case .uint16(let v):
            kind(AMQP_FIELD_KIND_U16)
            f.value.u16 = v
        case .int32(let v):
            kind(AMQP_FIELD_KIND_I32)
            f.value.i32 = v
        case .uint32(let v):
            kind(AMQP_FIELD_KIND_U32)
            f.value.u32 = v
        case .int64(let v):
            kind(AMQP_FIELD_KIND_I64)
            f.value.i64 = v
        case .float(let v):
            kind(AMQP_FIELD_KIND_F32)
            f.value.f32 = v
        case .double(let v):
            kind(AMQP_FIELD_KIND_F64)
            f.value.f64 = v
        case .decimal(let scale, let v):
            kind(AMQP_FIELD_KIND_DECIMAL)
            f.value.decimal = amqp_decimal_t(decimals: scale, value: v)
        case .string(let v):
            kind(AMQP_FIELD_KIND_UTF8)
            f.value.bytes = bytes(v)
        case .bytes(let v):
            kind(AMQP_FIELD_KIND_BYTES)
            f.value.bytes = bytes(v)
        case .timestamp(let v):
            kind(AMQP_FIELD_KIND_TIMESTAMP)
            f.value.u64 = v
        case .table(let v):
            kind(AMQP_FIELD_KIND_TABLE)
            f.value.table = table(v)
        case .array(let values):
            kind(AMQP_FIELD_KIND_ARRAY)
            if values.isEmpty {
                f.value.array = amqp_array_t(num_entries: 0, entries: nil)
            } else {
                let entries = allocate(MemoryLayout<amqp_field_value_t>.stride * values.count).bindMemory(
                    to: amqp_field_value_t.self, capacity: values.count)
                for (index, element) in values.enumerated() { (entries + index).initialize(to: field(element)) }
                f.value.array = amqp_array_t(num_entries: Int32(values.count), entries: entries)
            }
        case .void:
            kind(AMQP_FIELD_KIND_VOID)
        }
        return f
    }

    func properties(_ p: AMQPProperties) -> amqp_basic_properties_t {
        var c = amqp_basic_properties_t()
        var flags: UInt32 = 0
        func set(_ flag: Int32) { flags |= UInt32(bitPattern: flag) }
        if let v = p.contentType {
            c.content_type = bytes(v)
            set(AMQP_BASIC_CONTENT_TYPE_FLAG)
        }
        if let v = p.contentEncoding {
            c.content_encoding = bytes(v)
            set(AMQP_BASIC_CONTENT_ENCODING_FLAG)
        }
        if let v = p.headers {
            c.headers = table(v)
            set(AMQP_BASIC_HEADERS_FLAG)
        }
        if let v = p.deliveryMode {
            c.delivery_mode = v
            set(AMQP_BASIC_DELIVERY_MODE_FLAG)
        }
        if let v = p.priority {
            c.priority = v
            set(AMQP_BASIC_PRIORITY_FLAG)
        }
        if let v = p.correlationID {
            c.correlation_id = bytes(v)
            set(AMQP_BASIC_CORRELATION_ID_FLAG)
        }
        if let v = p.replyTo {
            c.reply_to = bytes(v)
            set(AMQP_BASIC_REPLY_TO_FLAG)
        }
        if let v = p.expiration {
            c.expiration = bytes(v)
            set(AMQP_BASIC_EXPIRATION_FLAG)
        }
        if let v = p.messageID {
            c.message_id = bytes(v)
            set(AMQP_BASIC_MESSAGE_ID_FLAG)
        }
        if let v = p.timestamp {
            c.timestamp = v
            set(AMQP_BASIC_TIMESTAMP_FLAG)
        }
        if let v = p.type {
            c.type = bytes(v)
            set(AMQP_BASIC_TYPE_FLAG)
        }
        if let v = p.userID {
            c.user_id = bytes(v)
            set(AMQP_BASIC_USER_ID_FLAG)
        }
        if let v = p.appID {
            c.app_id = bytes(v)
            set(AMQP_BASIC_APP_ID_FLAG)
        }
        c._flags = flags
        return c
    }
}

// MARK: - From C into Swift values (copies: the C memory belongs to the connection's pool)

enum CDecode {
    static func bytes(_ b: amqp_bytes_t) -> [UInt8] {
        guard b.len > 0, let pointer = b.bytes else { return [] }
        return Array(UnsafeRawBufferPointer(start: pointer, count: b.len))
    }

    static func string(_ b: amqp_bytes_t) -> String {
        guard b.len > 0, let pointer = b.bytes else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: pointer, count: b.len), as: UTF8.self)
    }

    static func table(_ t: amqp_table_t) -> AMQPTable {
        var out = AMQPTable()
        guard t.num_entries > 0, let entries = t.entries else { return out }
        for index in 0..<Int(t.num_entries) {
            let entry = entries[index]
            out[string(entry.key)] = field(entry.value)
        }
        return out
    }

    static func field(_ f: amqp_field_value_t) -> AMQPFieldValue {
        func isKind(_ k: amqp_field_value_kind_t) -> Bool { f.kind == UInt8(truncatingIfNeeded: k.rawValue) }
        if isKind(AMQP_FIELD_KIND_BOOLEAN) { return .bool(f.value.boolean != 0) }
        if isKind(AMQP_FIELD_KIND_I8) { return .int8(f.value.i8) }
        if isKind(AMQP_FIELD_KIND_U8) { return .uint8(f.value.u8) }
        if isKind(AMQP_FIELD_KIND_I16) { return .int16(f.value.i16) }
        if isKind(AMQP_FIELD_KIND_U16) { return .uint16(f.value.u16) }
        if isKind(AMQP_FIELD_KIND_I32) { return .int32(f.value.i32) }
        if isKind(AMQP_FIELD_KIND_U32) { return .uint32(f.value.u32) }
        if isKind(AMQP_FIELD_KIND_I64) { return .int64(f.value.i64) }
        if isKind(AMQP_FIELD_KIND_U64) { return .int64(Int64(bitPattern: f.value.u64)) }
        if isKind(AMQP_FIELD_KIND_F32) { return .float(f.value.f32) }
        if isKind(AMQP_FIELD_KIND_F64) { return .double(f.value.f64) }
        if isKind(AMQP_FIELD_KIND_DECIMAL) { return .decimal(scale: f.value.decimal.decimals, value: f.value.decimal.value) }
        if isKind(AMQP_FIELD_KIND_UTF8) {
            let raw = bytes(f.value.bytes)
            return String(validating: raw, as: UTF8.self).map(AMQPFieldValue.string) ?? .bytes(raw)
        }
        if isKind(AMQP_FIELD_KIND_BYTES) { return .bytes(bytes(f.value.bytes)) }
        if isKind(AMQP_FIELD_KIND_TIMESTAMP) { return .timestamp(f.value.u64) }
        if isKind(AMQP_FIELD_KIND_TABLE) { return .table(table(f.value.table)) }
        if isKind(AMQP_FIELD_KIND_ARRAY) {
            let array = f.value.array
            guard array.num_entries > 0, let entries = array.entries else { return .array([]) }
            return .array((0..<Int(array.num_entries)).map { field(entries[$0]) })
        }
        return .void
    }

    static func properties(_ c: amqp_basic_properties_t) -> AMQPProperties {
        var p = AMQPProperties()
        let flags = c._flags
        func has(_ flag: Int32) -> Bool { flags & UInt32(bitPattern: flag) != 0 }
        if has(AMQP_BASIC_CONTENT_TYPE_FLAG) { p.contentType = string(c.content_type) }
        if has(AMQP_BASIC_CONTENT_ENCODING_FLAG) { p.contentEncoding = string(c.content_encoding) }
        if has(AMQP_BASIC_HEADERS_FLAG) { p.headers = table(c.headers) }
        if has(AMQP_BASIC_DELIVERY_MODE_FLAG) { p.deliveryMode = c.delivery_mode }
        if has(AMQP_BASIC_PRIORITY_FLAG) { p.priority = c.priority }
        if has(AMQP_BASIC_CORRELATION_ID_FLAG) { p.correlationID = string(c.correlation_id) }
        if has(AMQP_BASIC_REPLY_TO_FLAG) { p.replyTo = string(c.reply_to) }
        if has(AMQP_BASIC_EXPIRATION_FLAG) { p.expiration = string(c.expiration) }
        if has(AMQP_BASIC_MESSAGE_ID_FLAG) { p.messageID = string(c.message_id) }
        if has(AMQP_BASIC_TIMESTAMP_FLAG) { p.timestamp = c.timestamp }
        if has(AMQP_BASIC_TYPE_FLAG) { p.type = string(c.type) }
        if has(AMQP_BASIC_USER_ID_FLAG) { p.userID = string(c.user_id) }
        if has(AMQP_BASIC_APP_ID_FLAG) { p.appID = string(c.app_id) }
        return p
    }

    static func libraryError(_ status: Int32) -> String {
        guard let text = amqp_error_string2(status) else { return "status \(status)" }
        return String(cString: text)
    }
}
