import Foundation
import Testing

@testable import Baton

/// The checkpoint encoder writes exactly what Foundation's encoder (`JSONCoding.encoder`) writes, or declines.
@Suite("Checkpoint encoder")
struct CheckpointEncoderTests {
    enum Mood: String, Codable { case calm, tense }

    enum Shape: Codable, Equatable {
        case circle(radius: Double)
        case named(String, sides: Int)
        case none
    }

    struct Inner: Codable {
        var name: String
        var score: Double?
        var tags: [String]
    }

    struct Everything: Codable {
        var text: String
        var int: Int
        var int8: Int8
        var int16: Int16
        var int32: Int32
        var int64: Int64
        var uint: UInt
        var uint8: UInt8
        var uint16: UInt16
        var uint32: UInt32
        var uint64: UInt64
        var double: Double
        var float: Float
        var flag: Bool
        var optional: String?
        var missing: Int?
        var nullsInside: [Int?]
        var mood: Mood
        var shapes: [Shape]
        var inner: Inner
        var inners: [Inner]
        var byName: [String: Int]
        var byNumber: [Int: String]
        var nested: [[String: [Double]]]
        var set: Set<String>
        // Keys that sort differently by bytes and by case-insensitive order.
        var B: Int
        var a_b: Int
        var aB: Int
        var é: String
        var x10: Int
        var x9: Int
    }

    static func random(_ generator: inout some RandomNumberGenerator) -> Everything {
        let alphabet: [String] = [
            "a", "Z", "é", "\"", "\\", "/", "\n", "\r", "\t", "\u{08}", "\u{0C}", "\u{01}", "\u{1F}", "\u{7F}",
            "\u{2028}", "😀", " ", "{", "}", "0", "ab",
        ]
        func text() -> String {
            (0..<Int.random(in: 0...12, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }.joined()
        }
        func double() -> Double {
            [
                0, -0.0, 1, 0.1, 1e20, 1e-7, 123_456_789.125, Double.leastNonzeroMagnitude, 1.797_693_134_862_315_7e308, .pi, -2.5,
                Double.random(in: -1e6...1e6, using: &generator), Double(Float.random(in: 0...1, using: &generator)),
            ]
            .randomElement(using: &generator)!
        }
        func inner() -> Inner {
            Inner(
                name: text(), score: Bool.random(using: &generator) ? double() : nil,
                tags: (0..<Int.random(in: 0...3, using: &generator)).map { _ in text() })
        }
        return Everything(
            text: text(), int: Int.random(in: Int.min...Int.max, using: &generator), int8: .random(in: .min ... .max, using: &generator),
            int16: .random(in: .min ... .max, using: &generator), int32: .random(in: .min ... .max, using: &generator),
            int64: .random(in: .min ... .max, using: &generator), uint: .random(in: .min ... .max, using: &generator),
            uint8: .random(in: .min ... .max, using: &generator), uint16: .random(in: .min ... .max, using: &generator),
            uint32: .random(in: .min ... .max, using: &generator), uint64: .random(in: .min ... .max, using: &generator), double: double(),
            float: [Float(0.1), 1, 3.4e38, -0.0, .random(in: -10...10, using: &generator)].randomElement(using: &generator)!,
            flag: .random(using: &generator), optional: Bool.random(using: &generator) ? text() : nil, missing: nil,
            nullsInside: [nil, 1, nil], mood: Bool.random(using: &generator) ? .calm : .tense,
            shapes: [.circle(radius: double()), .named(text(), sides: 3), .none], inner: inner(), inners: [inner(), inner()],
            byName: Dictionary(uniqueKeysWithValues: (0..<Int.random(in: 0...6, using: &generator)).map { ("\(text())\($0)", $0) }),
            byNumber: [3: text(), -1: text(), 20: text()], nested: [["k": [double(), double()], "": []], [:]], set: Set([text(), text()]),
            B: 1, a_b: 2, aB: 3, é: text(), x10: 10, x9: 9)
    }

    @Test func writesWhatFoundationWritesForManyShapes() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            let value = Self.random(&generator)
            let fast = try #require(CheckpointEncoder.encode(value), "declined a plain state")
            #expect(fast == (try JSONCoding.string(value)))
            // And it reads back as the same value.
            let back = try JSONCoding.decoder.decode(Everything.self, from: Data(fast.utf8))
            #expect(back.text == value.text && back.shapes == value.shapes && back.byNumber == value.byNumber)
        }
    }

    @Test func writesAStepchainStateAndTopLevelValuesAsFoundationDoes() throws {
        let values: [any Encodable] = [
            "top \u{01} level", 42, -0.0, true, [1, 2], [String: String](), ["b": 1, "a": 2, "A": 3, "_": 4], Optional<Int>.none as Int?,
            Records(records: ["1:" + String(repeating: "x", count: 198), "2:"]),
        ]
        for value in values { try Self.expectSameAsFoundation(value) }
    }

    static func expectSameAsFoundation<T: Encodable>(_ value: T) throws {
        let fast = try #require(CheckpointEncoder.encode(value), "declined \(value)")
        #expect(fast == (try JSONCoding.string(value)), "\(value)")
    }

    static func declines<T: Encodable>(_ value: T) -> Bool { CheckpointEncoder.encode(value) == nil }

    /// The shape of `stepchain`'s state.
    struct Records: Codable {
        var records: [String]
    }

    struct WithDate: Codable {
        var at: Date
        var data: Data
    }

    struct ReadsPath: Encodable {
        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(encoder.codingPath.count)
        }
    }

    struct Nested: Encodable {
        var value: ReadsPath
        var when: [Date]
    }

    @Test func declinesWhatFoundationWritesItsOwnWayAndTheFallbackStillMatches() throws {
        let declined: [any Encodable] = [
            WithDate(at: Date(timeIntervalSince1970: 1_795_394_015), data: Data([1, 2, 3])), [Date()], Double.nan, [Double.infinity],
            URL(string: "https://example.com/a/b")!, Decimal(string: "1.25")!, ReadsPath(),
            Nested(value: ReadsPath(), when: []),
        ]
        for value in declined {
            let declinedIt = Self.declines(value)
            #expect(declinedIt, "\(value)")
        }
        // JSONCoding.checkpoint falls back to Foundation: the same text, and Foundation's error for what it refuses.
        let dated = WithDate(at: Date(timeIntervalSince1970: 1_795_394_015), data: Data([1, 2, 3]))
        #expect(try JSONCoding.checkpoint(dated) == (try JSONCoding.string(dated)))
        #expect(throws: EncodingError.self) { try JSONCoding.checkpoint([Double.nan]) }
    }

    @Test func anAgentWhoseStateWasDeclinedOnceUsesFoundationFromThenOnWithTheSameText() throws {
        let encoding = StateEncoding()
        let plain = Records(records: ["1:x"])
        #expect(try encoding.encode(plain) == (try JSONCoding.string(plain)))
        #expect(!encoding.usesFoundationOnly)
        let dated = WithDate(at: Date(timeIntervalSince1970: 1_795_394_015), data: Data([1]))
        #expect(try encoding.encode(dated) == (try JSONCoding.string(dated)))
        #expect(encoding.usesFoundationOnly)
        #expect(try encoding.encode(plain) == (try JSONCoding.string(plain)))
    }
}
