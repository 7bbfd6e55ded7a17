import Foundation
import Testing

@testable import Baton

/// The word-at-a-time scan for bytes a JSON string escapes agrees with the byte-at-a-time rule, and the quoted text
/// with the generic encoder's, wherever the escaped byte falls in a word.
@Suite("JSON string escaping")
struct JSONTextEscapeTests {
    static func needsEscape(_ byte: UInt8) -> Bool { byte < 0x20 || byte == 0x22 || byte == 0x5C }

    @Test func theWordTestMatchesTheByteRuleForEveryPairOfBytes() {
        // Every pair of byte values, at two positions of a word of plain filler: a borrow from one byte's test into
        // the next is where such tricks go wrong.
        var mismatches: [String] = []
        for first in 0...255 {
            for second in 0...255 {
                for (a, b) in [(0, 1), (3, 4), (6, 7), (0, 7)] {
                    var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: 8)
                    bytes[a] = UInt8(first)
                    bytes[b] = UInt8(second)
                    let word = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
                    let expected = bytes.contains(where: Self.needsEscape)
                    if JSONText.wordNeedsEscape(word) != expected, mismatches.count < 5 { mismatches.append("\(bytes)") }
                }
            }
        }
        #expect(mismatches.isEmpty)
    }

    @Test func theScanFindsTheFirstEscapedByteAtEveryOffset() {
        for length in 0...40 {
            for position in 0..<max(1, length) {
                for special: UInt8 in [0x00, 0x0A, 0x1F, 0x22, 0x5C] {
                    var bytes = Array(repeating: UInt8(ascii: "x"), count: length)
                    if length > 0 { bytes[position] = special }
                    let expected = bytes.firstIndex(where: Self.needsEscape)
                    bytes.withUnsafeBufferPointer { buffer in
                        #expect(JSONText.firstEscape(in: buffer) == expected, "length \(length), byte \(special) at \(position)")
                        // From an offset past it, the next one (none here).
                        if let expected { #expect(JSONText.firstEscape(in: buffer, from: expected + 1) == nil) }
                    }
                }
            }
        }
    }

    @Test func quotedTextMatchesTheEncoderWhereverTheEscapesFall() throws {
        var generator = SystemRandomNumberGenerator()
        let pieces = ["a", "plain text ", "\"", "\\", "\n", "\t", "\u{01}", "\u{1F}", "é", "🎉", "/", "\u{7F}"]
        for _ in 0..<500 {
            let text = (0..<Int.random(in: 0...30, using: &generator)).map { _ in pieces.randomElement(using: &generator)! }.joined()
            #expect(JSONText.quoted(text) == (try JSONCoding.string(text)), "\(Array(text.utf8))")
            var out: [UInt8] = []
            JSONText.appendQuoted(text, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == JSONText.quoted(text))
        }
    }
}
