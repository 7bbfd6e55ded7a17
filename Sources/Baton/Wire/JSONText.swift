/// Hand-written JSON for the small fixed-shape messages of the hot path (step messages and outbox
/// entries): the same text `JSONCoding.encoder` writes (compact, keys sorted), without the cost of the
/// generic encoder on every hop.
public enum JSONText {
    /// `value` as a JSON string literal.
    public static func quoted(_ value: String) -> String {
        var value = value
        let plain = value.withUTF8 { firstEscape(in: $0) == nil }
        if plain { return "\"" + value + "\"" }
        var out: [UInt8] = []
        out.reserveCapacity(value.utf8.count + 16)
        appendQuoted(value, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends `value` as a JSON string literal, escaped as Foundation's `JSONEncoder` escapes it: `"`, `\\`, and the
    /// control characters (`\n`, `\r`, `\t`, `\b`, `\f`, else `\u00xx`); `/` and everything else as is.
    static func appendQuoted(_ value: String, to out: inout [UInt8]) {
        out.append(0x22)
        var value = value
        value.withUTF8 { bytes in
            // Runs of plain bytes are copied whole; only the escaped bytes are written one by one.
            var start = 0
            while let index = firstEscape(in: bytes, from: start) {
                if start < index { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<index])) }
                start = index + 1
                let byte = bytes[index]
                out.append(0x5C)
                switch byte {
                case 0x22, 0x5C: out.append(byte)
                case 0x0A: out.append(UInt8(ascii: "n"))
                case 0x0D: out.append(UInt8(ascii: "r"))
                case 0x09: out.append(UInt8(ascii: "t"))
                case 0x08: out.append(UInt8(ascii: "b"))
                case 0x0C: out.append(UInt8(ascii: "f"))
                default:
                    func hex(_ digit: UInt8) -> UInt8 { digit < 10 ? 0x30 + digit : 0x57 + digit }
                    out.append(UInt8(ascii: "u"))
                    out.append(0x30)
                    out.append(0x30)
                    out.append(hex(byte >> 4))
                    out.append(hex(byte & 0x0F))
                }
            }
            if start < bytes.count { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start...])) }
        }
        out.append(0x22)
    }

    /// The index of the first byte from `start` on that a JSON string must escape (below 0x20, `"` or `\\`), or nil.
    /// Eight bytes at a time while none does: a checkpoint is mostly long runs of plain text, and a byte at a time was
    /// ~5 % of a worker's CPU on the step chain with 40 steps (perf, thirteenth session).
    static func firstEscape(in bytes: UnsafeBufferPointer<UInt8>, from start: Int = 0) -> Int? {
        guard let base = bytes.baseAddress else { return nil }
        let count = bytes.count
        var index = start
        while index + 8 <= count {
            if wordNeedsEscape(UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self)) { break }
            index += 8
        }
        while index < count {
            let byte = base[index]
            if byte < 0x20 || byte == 0x22 || byte == 0x5C { return index }
            index += 1
        }
        return nil
    }

    /// Whether one of the eight bytes of `word` is below 0x20, `"` or `\\` (the "has less" and "has zero byte" tests of
    /// Bit Twiddling Hacks: exact as yes/no answers; bytes of 0x80 and above never match).
    @inline(__always) static func wordNeedsEscape(_ word: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        let below = (word &- ones &* 0x20) & ~word & highs
        let quote = word ^ (ones &* 0x22)
        let backslash = word ^ (ones &* 0x5C)
        return (below | ((quote &- ones) & ~quote & highs) | ((backslash &- ones) & ~backslash & highs)) != 0
    }
}

extension JSONText {
    /// `text` without the JSON whitespace (space, tab, line feed, carriage return) at either end, by bytes:
    /// Foundation's `trimmingCharacters(in:)` goes through `NSString` and cost ~4 % of a step hop's worker CPU
    /// when the event relay trimmed every event's data with it.
    public static func trimmed(_ text: String) -> String {
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }
        let utf8 = text.utf8
        guard let first = utf8.first, let last = utf8.last, isSpace(first) || isSpace(last) else { return text }
        guard let start = utf8.firstIndex(where: { !isSpace($0) }), let end = utf8.lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return String(Substring(utf8[start...end]))
    }
}

extension StepMessage {
    /// The message as JSON (keys sorted, as ``JSONCoding/encoder`` writes it).
    public var jsonText: String {
        var out = JSONObjectWriter(capacity: 96 + agent.utf8.count + step.utf8.count + task.utf8.count)
        out.string("agent", agent)
        out.integer("attempt", attempt)
        out.integer("branch", branch)
        out.integer("seq", seq)
        out.string("step", step)
        out.string("task", task)
        out.integer("v", Int64(v))
        return out.finish()
    }

    /// Reads the exact shape ``jsonText`` writes (a flat object of known keys) without the generic decoder;
    /// nil for anything else, which the caller then decodes the slow way (with its precise errors).
    static func fastDecode(_ body: some Collection<UInt8>) -> StepMessage? {
        var scanner = FlatJSONScanner(Array(body))
        var task: String?
        var agent: String?
        var step: String?
        var v: Int64?
        var seq: Int64?
        var branch: Int64?
        var attempt: Int64?
        // A key read twice gives up: the generic decoder reads repeats differently (the first wins there). Keys
        // are matched as bytes, so no key becomes a String (this runs once per delivery).
        func take<T>(_ slot: inout T?, _ value: T?) -> Bool {
            guard slot == nil, let value else { return false }
            slot = value
            return true
        }
        guard scanner.eat(UInt8(ascii: "{")) else { return nil }
        if scanner.eat(UInt8(ascii: "}")) { return nil }
        repeat {
            guard let key = scanner.key(), scanner.eat(UInt8(ascii: ":")) else { return nil }
            let taken: Bool
            if scanner.bytes(key, are: "task") {
                taken = take(&task, scanner.string())
            } else if scanner.bytes(key, are: "agent") {
                taken = take(&agent, scanner.string())
            } else if scanner.bytes(key, are: "step") {
                taken = take(&step, scanner.string())
            } else if scanner.bytes(key, are: "v") {
                taken = take(&v, scanner.integer())
            } else if scanner.bytes(key, are: "seq") {
                taken = take(&seq, scanner.integer())
            } else if scanner.bytes(key, are: "branch") {
                taken = take(&branch, scanner.integer())
            } else if scanner.bytes(key, are: "attempt") {
                taken = take(&attempt, scanner.integer())
            } else {
                taken = false
            }
            guard taken else { return nil }
        } while scanner.eat(UInt8(ascii: ","))
        guard scanner.eat(UInt8(ascii: "}")), scanner.atEnd, let task, let agent, let step, v == 1, let seq, let branch, let attempt
        else { return nil }
        return StepMessage(task: task, agent: agent, step: step, seq: seq, branch: branch, attempt: attempt)
    }
}

extension OutboxMessage {
    /// The entry as JSON (keys sorted, as ``JSONCoding/encoder`` writes it).
    public var jsonText: String {
        var out = JSONObjectWriter(capacity: 64 + body.utf8.count + routingKey.utf8.count + exchange.utf8.count + 96 * headers.count)
        out.string("b", body)
        out.object("h") { object in
            for (key, value) in headers.sorted(by: { $0.key < $1.key }) { object.string(key: key, value) }
        }
        out.string("k", routingKey)
        out.string("x", exchange)
        return out.finish()
    }
}

/// A scanner for flat JSON objects whose strings have no escapes and whose numbers are integers: the fast
/// path only; anything else makes it give up.
struct FlatJSONScanner {
    let bytes: [UInt8]
    var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool {
        mutating get {
            skipSpace()
            return position == bytes.count
        }
    }

    mutating func skipSpace() {
        while position < bytes.count,
            bytes[position] == 0x20 || bytes[position] == 0x0A || bytes[position] == 0x0D || bytes[position] == 0x09
        {
            position += 1
        }
    }

    mutating func eat(_ byte: UInt8) -> Bool {
        skipSpace()
        guard position < bytes.count, bytes[position] == byte else { return false }
        position += 1
        return true
    }

    /// The characters of the string literal at the position when it has no escapes (nil otherwise); the position is
    /// left for the caller to move past the closing quote.
    mutating func unescapedString() -> Range<Int>? {
        skipSpace()
        guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { return nil }
        var end = position + 1
        while end < bytes.count, bytes[end] != UInt8(ascii: "\"") {
            if bytes[end] == UInt8(ascii: "\\") || bytes[end] < 0x20 { return nil }
            end += 1
        }
        guard end < bytes.count else { return nil }
        return (position + 1)..<end
    }

    /// A string without escapes (nil, position unchanged, otherwise).
    mutating func string() -> String? {
        guard let run = unescapedString(), let text = String(validating: bytes[run], as: UTF8.self) else { return nil }
        position = run.upperBound + 1
        return text
    }

    /// An object key without escapes, as the range of its bytes (nil, position unchanged, otherwise): the caller
    /// compares them in place (``bytes(_:are:)``), so no key becomes a String.
    mutating func key() -> Range<Int>? {
        guard let run = unescapedString() else { return nil }
        position = run.upperBound + 1
        return run
    }

    /// Whether the bytes at `run` are exactly `literal`'s.
    func bytes(_ run: Range<Int>, are literal: StaticString) -> Bool {
        run.count == literal.utf8CodeUnitCount
            && bytes[run].elementsEqual(UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    /// A non-negative or negative integer of at most 18 digits (nil, position unchanged, otherwise).
    mutating func integer() -> Int64? {
        skipSpace()
        var end = position
        var negative = false
        if end < bytes.count, bytes[end] == UInt8(ascii: "-") {
            negative = true
            end += 1
        }
        var value: Int64 = 0
        let digitsStart = end
        while end < bytes.count, bytes[end] >= UInt8(ascii: "0"), bytes[end] <= UInt8(ascii: "9"), end - digitsStart < 18 {
            value = value * 10 + Int64(bytes[end] - UInt8(ascii: "0"))
            end += 1
        }
        // JSON has no leading zeros (`01`): leave those to the generic decoder, which refuses them.
        guard end > digitsStart, bytes[digitsStart] != UInt8(ascii: "0") || end == digitsStart + 1 else { return nil }
        if end < bytes.count,
            [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(bytes[end]) || (bytes[end] >= 0x30 && bytes[end] <= 0x39)
        {
            return nil
        }
        position = end
        return negative ? -value : value
    }
}

extension JSONText {
    /// `2026-11-22T10:00:00.000Z` for Unix milliseconds, in UTC, by civil-from-days arithmetic: the event relay
    /// writes one per event, and a `DateFormatter` (ICU) costs more than the rest of the event.
    public static func iso(milliseconds: Int64) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(24)
        appendISO(milliseconds: milliseconds, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends `milliseconds` since 1970 (UTC) as `yyyy-MM-ddTHH:mm:ss.SSSZ`, as ``iso(milliseconds:)`` writes it.
    static func appendISO(milliseconds: Int64, to out: inout [UInt8]) {
        // Years 0 to 9999 (Redis time is always inside; a corrupt reply's field may not be): the arithmetic below
        // cannot overflow, and the text keeps its shape.
        let milliseconds = min(max(milliseconds, -62_167_219_200_000), 253_402_300_799_999)
        let ms = (milliseconds % 1000 + 1000) % 1000
        let seconds = (milliseconds - ms) / 1000
        var days = seconds / 86_400
        var rest = seconds - days * 86_400
        if rest < 0 {
            rest += 86_400
            days -= 1
        }
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        func digits(_ n: Int64, _ width: Int) { appendInteger(n, width: width, to: &out) }
        digits(year, 4)
        out.append(UInt8(ascii: "-"))
        digits(month, 2)
        out.append(UInt8(ascii: "-"))
        digits(day, 2)
        out.append(UInt8(ascii: "T"))
        digits(rest / 3600, 2)
        out.append(UInt8(ascii: ":"))
        digits(rest % 3600 / 60, 2)
        out.append(UInt8(ascii: ":"))
        digits(rest % 60, 2)
        out.append(UInt8(ascii: "."))
        digits(ms, 3)
        out.append(UInt8(ascii: "Z"))
    }

    /// Appends `value` in decimal, zero-padded to `width` digits (a wider number is written whole), without making a
    /// `String`.
    static func appendInteger(_ value: Int64, width: Int = 1, to out: inout [UInt8]) {
        if value < 0 { out.append(UInt8(ascii: "-")) }
        let magnitude = value.magnitude
        var divisor: UInt64 = 1
        var count = 1
        while magnitude / divisor >= 10 {
            divisor *= 10
            count += 1
        }
        if count < width { out.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: width - count)) }
        var rest = magnitude
        while divisor > 0 {
            out.append(UInt8(ascii: "0") + UInt8(rest / divisor))
            rest %= divisor
            divisor /= 10
        }
    }
}

/// Writes one JSON object, member by member, into one buffer (no `String` per piece): the hot path's fixed-shape
/// messages. The caller gives the members in the order they are written; `JSONCoding` sorts keys, so do the callers.
struct JSONObjectWriter {
    private var bytes: [UInt8]
    private var first = true

    init(capacity: Int) {
        bytes = []
        bytes.reserveCapacity(capacity)
        bytes.append(UInt8(ascii: "{"))
    }

    /// The comma before every member but the first.
    private mutating func separator() {
        if !first { bytes.append(UInt8(ascii: ",")) }
        first = false
    }

    private mutating func key(_ name: StaticString) {
        separator()
        bytes.append(UInt8(ascii: "\""))
        name.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: "\":".utf8)
    }

    /// A member whose value is a JSON string.
    mutating func string(_ name: StaticString, _ value: String) {
        key(name)
        JSONText.appendQuoted(value, to: &bytes)
    }

    /// A member with a key known only at run time (escaped as a JSON string).
    mutating func string(key: String, _ value: String) {
        separator()
        JSONText.appendQuoted(key, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        JSONText.appendQuoted(value, to: &bytes)
    }

    mutating func integer(_ name: StaticString, _ value: Int64) {
        key(name)
        JSONText.appendInteger(value, to: &bytes)
    }

    /// A member whose value is already JSON text (a number's description, an embedded object), written as is.
    mutating func json(_ name: StaticString, _ text: String) {
        key(name)
        bytes.append(contentsOf: text.utf8)
    }

    /// A member whose value is a time as `iso(milliseconds:)` writes it.
    mutating func iso(_ name: StaticString, milliseconds: Int64) {
        key(name)
        bytes.append(UInt8(ascii: "\""))
        JSONText.appendISO(milliseconds: milliseconds, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    /// A member whose value is an object that `fill` writes.
    mutating func object(_ name: StaticString, _ fill: (inout JSONObjectWriter) -> Void) {
        key(name)
        var nested = JSONObjectWriter(taking: &bytes)
        fill(&nested)
        nested.bytes.append(UInt8(ascii: "}"))
        swap(&nested.bytes, &bytes)
    }

    /// A nested object that writes on into `buffer` (moved, not copied) and hands it back when done.
    private init(taking buffer: inout [UInt8]) {
        bytes = []
        swap(&bytes, &buffer)
        bytes.append(UInt8(ascii: "{"))
    }

    /// The object's text.
    consuming func finish() -> String {
        bytes.append(UInt8(ascii: "}"))
        return String(decoding: bytes, as: UTF8.self)
    }
}
