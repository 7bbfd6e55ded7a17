import Foundation

/// Encodes an agent's state for its checkpoint, once per step: the same bytes as ``JSONCoding/encoder`` (keys sorted
/// by `<`, slashes unescaped, the same escapes and number forms), in about half its time. Foundation's encoder was
/// the worker's largest single cost of a step hop (~11 % of its CPU in `baton bench stepchain`).
///
/// It covers what agents' states are made of: structs, enums, arrays, dictionaries, optionals, strings, booleans,
/// integers and finite floating-point numbers. Anything else — `Date`, `Data`, `URL`, `Decimal` (which Foundation
/// special-cases), a non-finite number, `superEncoder`, an `encode(to:)` that reads `codingPath` — makes
/// ``encode(_:)`` return nil, and the caller uses Foundation's encoder, so the output never differs.
/// `CheckpointEncoderTests` compares the two on many shapes.
enum CheckpointEncoder {
    /// The JSON text of `value`, or nil when Foundation's encoder must write it (see the type's documentation).
    static func encode<T: Encodable>(_ value: T) -> String? {
        if isSpecial(T.self) { return nil }
        let root = Slot()
        let encoder = TreeEncoder(slot: root)
        do {
            try value.encode(to: encoder)
        } catch {
            return nil
        }
        if encoder.state.readPath { return nil }
        guard let node = root.node else { return nil }
        var out: [UInt8] = []
        // The nodes' own estimate of the text: one allocation for the output, not a doubling per power of two.
        out.reserveCapacity(encoder.state.bytes + 16)
        write(node, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// The types Foundation's encoder writes in its own way.
    static func isSpecial(_ type: Any.Type) -> Bool {
        let id = ObjectIdentifier(type)
        return id == ObjectIdentifier(Date.self) || id == ObjectIdentifier(Data.self) || id == ObjectIdentifier(URL.self)
            || id == ObjectIdentifier(Decimal.self)
    }

    /// Not `indirect`: the containers are classes, so a node holds no node by value, and a string or number in an
    /// array or object costs no box of its own.
    enum Node {
        case string(String)
        /// A number, `true`, `false` or `null`, as written.
        case raw(String)
        case array(ArrayBox)
        case object(ObjectBox)
    }

    final class ArrayBox {
        var items: [Node] = []
    }

    final class ObjectBox {
        var keys: [String] = []
        var values: [Node] = []
    }

    /// Where a single value goes (the root, or a value that encodes itself through an encoder of its own): a node set
    /// once the value is encoded. Containers hold their nodes directly: a nested container's box is a class, filled
    /// after it is put.
    final class Slot {
        var node: Node?
        init(_ node: Node? = nil) { self.node = node }
    }

    /// Why the fast path gives up (the caller falls back to Foundation).
    struct Unsupported: Error {}

    final class SharedState {
        var readPath = false
        /// About the length of the JSON text of the nodes put so far (escapes aside): the output's capacity.
        var bytes = 0

        func count(_ node: Node) {
            switch node {
            case .string(let text): bytes += text.utf8.count + 3
            case .raw(let text): bytes += text.utf8.count + 1
            case .array, .object: bytes += 2
            }
        }
    }

    static func number<F: BinaryFloatingPoint & CustomStringConvertible>(_ value: F) throws -> Node {
        guard value.isFinite else { throw Unsupported() }
        var text = value.description
        if text.hasSuffix(".0") { text.removeLast(2) }
        return .raw(text)
    }

    static func node<T: Encodable>(for value: T, state: SharedState) throws -> Node {
        switch value {
        case let string as String: return .string(string)
        case let int as Int: return .raw(String(int))
        case let bool as Bool: return .raw(bool ? "true" : "false")
        case let double as Double: return try number(double)
        case let int as Int64: return .raw(String(int))
        default: break
        }
        if isSpecial(T.self) { throw Unsupported() }
        let slot = Slot()
        let encoder = TreeEncoder(slot: slot, state: state)
        try value.encode(to: encoder)
        // A type that encodes nothing is `{}` for Foundation.
        return slot.node ?? .object(ObjectBox())
    }

    // MARK: - Writing

    static func write(_ node: Node, to out: inout [UInt8]) {
        switch node {
        case .string(let text): JSONText.appendQuoted(text, to: &out)
        case .raw(let text): out.append(contentsOf: text.utf8)
        case .array(let box):
            out.append(UInt8(ascii: "["))
            for (index, item) in box.items.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                write(item, to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let box):
            out.append(UInt8(ascii: "{"))
            // Sorted by key; a key encoded twice keeps its last value, as in Foundation's dictionary.
            let order = box.keys.indices.sorted { box.keys[$0] < box.keys[$1] || (box.keys[$0] == box.keys[$1] && $0 < $1) }
            var first = true
            for (position, index) in order.enumerated() {
                if position + 1 < order.count && box.keys[order[position + 1]] == box.keys[index] { continue }
                if !first { out.append(UInt8(ascii: ",")) }
                first = false
                JSONText.appendQuoted(box.keys[index], to: &out)
                out.append(UInt8(ascii: ":"))
                write(box.values[index], to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    // MARK: - The Encoder

    final class TreeEncoder: Encoder, StateHolder {
        let slot: Slot
        let state: SharedState
        init(slot: Slot, state: SharedState = SharedState()) {
            self.slot = slot
            self.state = state
        }

        /// Not tracked: reading it sends the value to Foundation's encoder (which tracks it).
        var userInfo: [CodingUserInfoKey: Any] { [:] }

        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            let box: ObjectBox
            if case .object(let existing) = slot.node {
                box = existing
            } else {
                box = ObjectBox()
                slot.node = .object(box)
            }
            return KeyedEncodingContainer(Keyed<Key>(box: box, state: state))
        }

        func unkeyedContainer() -> any UnkeyedEncodingContainer {
            let box: ArrayBox
            if case .array(let existing) = slot.node {
                box = existing
            } else {
                box = ArrayBox()
                slot.node = .array(box)
            }
            return Unkeyed(box: box, state: state)
        }

        func singleValueContainer() -> any SingleValueEncodingContainer { Single(slot: slot, state: state) }
    }

    struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol, StateHolder {
        let box: ObjectBox
        let state: SharedState

        func put(_ node: Node, _ key: Key) {
            let name = key.stringValue
            state.bytes += name.utf8.count + 3
            state.count(node)
            box.keys.append(name)
            box.values.append(node)
        }

        mutating func encodeNil(forKey key: Key) throws { put(.raw("null"), key) }
        mutating func encode(_ value: Bool, forKey key: Key) throws { put(.raw(value ? "true" : "false"), key) }
        mutating func encode(_ value: String, forKey key: Key) throws { put(.string(value), key) }
        mutating func encode(_ value: Double, forKey key: Key) throws { put(try number(value), key) }
        mutating func encode(_ value: Float, forKey key: Key) throws { put(try number(value), key) }
        mutating func encode(_ value: Int, forKey key: Key) throws { put(.raw(String(value)), key) }
        mutating func encode(_ value: Int8, forKey key: Key) throws { put(.raw(String(value)), key) }
        mutating func encode(_ value: Int16, forKey key: Key) throws { put(.raw(String(value)), key) }
        mutating func encode(_ value: Int32, forKey key: Key) throws { put(.raw(String(value)), key) }
        mutating func encode(_ value: Int64, forKey key: Key) throws { put(.raw(String(value)), key) }
        mutating func encode(_ value: UInt, forKey key: Key) throws { put(.raw(String(value)), key) }
        mutating func encode(_ value: UInt8, forKey key: Key) throws { put(.raw(String(value)), key) }
        mutating func encode(_ value: UInt16, forKey key: Key) throws { put(.raw(String(value)), key) }
        mutating func encode(_ value: UInt32, forKey key: Key) throws { put(.raw(String(value)), key) }
        mutating func encode(_ value: UInt64, forKey key: Key) throws { put(.raw(String(value)), key) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws { put(try node(for: value, state: state), key) }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key)
            -> KeyedEncodingContainer<NestedKey>
        {
            let nested = ObjectBox()
            put(.object(nested), key)
            return KeyedEncodingContainer(Keyed<NestedKey>(box: nested, state: state))
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            let nested = ArrayBox()
            put(.array(nested), key)
            return Unkeyed(box: nested, state: state)
        }

        mutating func superEncoder() -> any Encoder { unsupportedEncoder() }
        mutating func superEncoder(forKey key: Key) -> any Encoder { unsupportedEncoder() }
    }

    struct Unkeyed: UnkeyedEncodingContainer, NodeSink {
        let box: ArrayBox
        let state: SharedState
        var count: Int { box.items.count }

        func put(_ node: Node) {
            state.count(node)
            box.items.append(node)
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            let nested = ObjectBox()
            put(.object(nested))
            return KeyedEncodingContainer(Keyed<NestedKey>(box: nested, state: state))
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            let nested = ArrayBox()
            put(.array(nested))
            return Unkeyed(box: nested, state: state)
        }

        mutating func superEncoder() -> any Encoder { unsupportedEncoder() }
    }

    struct Single: SingleValueEncodingContainer, NodeSink {
        let slot: Slot
        let state: SharedState

        func put(_ node: Node) {
            state.count(node)
            slot.node = node
        }
    }

    /// Where an unkeyed or single-value container puts each value: one set of `encode` overloads for both.
    protocol NodeSink: StateHolder {
        func put(_ node: Node)
    }

    /// What every container and the encoder share: the run's state, `codingPath`, and `superEncoder`'s answer.
    protocol StateHolder {
        var state: SharedState { get }
    }
}

extension CheckpointEncoder.StateHolder {
    /// Not tracked: reading it sends the value to Foundation's encoder (which tracks it).
    var codingPath: [any CodingKey] {
        state.readPath = true
        return []
    }

    /// `superEncoder` is rare in states: the path is marked unsupported and Foundation writes the value.
    func unsupportedEncoder() -> any Encoder {
        state.readPath = true
        return CheckpointEncoder.TreeEncoder(slot: CheckpointEncoder.Slot(), state: state)
    }
}

extension CheckpointEncoder.NodeSink {
    typealias Node = CheckpointEncoder.Node

    mutating func encodeNil() throws { put(.raw("null")) }
    mutating func encode(_ value: Bool) throws { put(.raw(value ? "true" : "false")) }
    mutating func encode(_ value: String) throws { put(.string(value)) }
    mutating func encode(_ value: Double) throws { put(try CheckpointEncoder.number(value)) }
    mutating func encode(_ value: Float) throws { put(try CheckpointEncoder.number(value)) }
    mutating func encode(_ value: Int) throws { put(.raw(String(value))) }
    mutating func encode(_ value: Int8) throws { put(.raw(String(value))) }
    mutating func encode(_ value: Int16) throws { put(.raw(String(value))) }
    mutating func encode(_ value: Int32) throws { put(.raw(String(value))) }
    mutating func encode(_ value: Int64) throws { put(.raw(String(value))) }
    mutating func encode(_ value: UInt) throws { put(.raw(String(value))) }
    mutating func encode(_ value: UInt8) throws { put(.raw(String(value))) }
    mutating func encode(_ value: UInt16) throws { put(.raw(String(value))) }
    mutating func encode(_ value: UInt32) throws { put(.raw(String(value))) }
    mutating func encode(_ value: UInt64) throws { put(.raw(String(value))) }
    mutating func encode<T: Encodable>(_ value: T) throws { put(try CheckpointEncoder.node(for: value, state: state)) }
}
