import Foundation
import RedisClient
import Testing

@testable import Baton

/// The relay's hand-written event JSON says what the generic `JSONValue` form said, and its ISO time is the
/// formatter's.
@Suite("Event body fast path")
struct EventBodyTests {
    @Test func isoTimeMatchesTheFormatter() {
        var generator = SystemRandomNumberGenerator()
        let samples: [Int64] =
            [1, 999, 1000, 86_399_999, 951_782_400_000, 1_795_394_015_418, 4_102_444_800_000]
            + (0..<500).map { _ in Int64.random(in: 1...4_102_444_800_000, using: &generator) }
        for ms in samples {
            #expect(JSONText.iso(milliseconds: ms) == TaskView.iso(String(ms)), "\(ms)")
        }
        // Outside years 0–9999 (only a corrupt reply has such a time) the text is clamped, and nothing overflows.
        #expect(JSONText.iso(milliseconds: .min) == "0000-01-01T00:00:00.000Z")
        #expect(JSONText.iso(milliseconds: .max) == "9999-12-31T23:59:59.999Z")
    }

    @Test func integersAreWrittenAsTheStandardLibraryWritesThem() {
        var generator = SystemRandomNumberGenerator()
        let samples: [Int64] =
            [Int64.min, Int64.min + 1, -100, -1, 0, 1, 9, 10, 99, 100, 999, 1000, Int64.max]
            + (0..<300).map { _ in Int64.random(in: Int64.min...Int64.max, using: &generator) }
        for value in samples {
            var out: [UInt8] = []
            JSONText.appendInteger(value, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == String(value))
        }
        // Zero-padded to a width (the ISO time's fields); a wider number is written whole.
        for (value, width, expected) in [(0, 2, "00"), (7, 2, "07"), (12, 2, "12"), (5, 3, "005"), (999, 3, "999"), (12_345, 2, "12345")] {
            var out: [UInt8] = []
            JSONText.appendInteger(Int64(value), width: width, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == expected)
        }
    }

    @Test(arguments: [
        ("", ""), ("   ", ""), ("{}", "{}"), (" \t{\"a\": 1}\r\n", "{\"a\": 1}"), ("\n{\"é\":\" x \"} ", "{\"é\":\" x \"}"),
        ("é", "é"), (" é ", "é"), ("\u{00A0}{}", "\u{00A0}{}"),
    ])
    func trimmedRemovesJSONWhitespaceAtTheEndsOnly(text: String, expected: String) {
        #expect(JSONText.trimmed(text) == expected)
        // The same as Foundation's trim for JSON's whitespace (no-break space is not JSON whitespace: kept).
        if !text.unicodeScalars.contains("\u{00A0}") {
            #expect(JSONText.trimmed(text) == text.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    static func task(progress: Bool) -> EventTaskInfo {
        func b(_ text: String) -> RedisReply { .bulkString(Array(text.utf8)) }
        var parts: [RedisReply] = [
            b("0-1"), b("report"), b("running"), b(""), b(progress ? "0.25" : ""), b(progress ? "1/4 \"docs\"" : ""), b("1234567"),
            b("310422"),
        ]
        parts.append(.array([]))
        parts.append(.integer(0))
        return EventTaskInfo(id: "t-1/2", parts: parts)
    }

    @Test(arguments: [
        ("step_committed", #"{"worker":"w-1"}"#), ("progress", #"{"fraction":0.5,"message":"2/4 \u00e9"}"#), ("woke", "{}"),
        ("signal_received", #"{"payload":{"a":[1,2,{"b":null}]},"name":"approve"}"#), ("succeeded", ""),
    ])
    func bodyMatchesTheGenericForm(type: String, data: String) throws {
        for withProgress in [false, true] {
            let task = Self.task(progress: withProgress)
            let event = StreamEvent(
                streamID: "1795394015418-3", type: type, seq: 7, branch: 1, step: type == "succeeded" ? "" : "write",
                atMilliseconds: 1_795_394_015_418, dataJSON: data)
            let fast = try JSONValue.parse(Array(EventMessage.body(task: task, event).utf8))
            var expected: [String: JSONValue] = [
                "v": 1, "id": .string(EventMessage.id(task: task.id, event)), "task_id": .string(task.id), "agent": "report", "seq": 7,
                "branch": 1, "type": .string(type), "status": .string(EventMessage.statusOfType[type] ?? "running"),
                "budget": ["cost_usd": .double(1.234567), "tokens": 310_422], "at": .string(TaskView.iso("1795394015418") ?? ""),
                "stream_id": "1795394015418-3",
            ]
            if !event.step.isEmpty { expected["step"] = .string(event.step) }
            let parsed = (try? JSONValue.parse(Array(data.utf8))) ?? .object([:])
            if type == "progress" {
                expected["progress"] = ["fraction": 0.5, "message": .string("2/4 é")]
            } else if withProgress {
                expected["progress"] = ["fraction": 0.25, "message": "1/4 \"docs\""]
            }
            if case .object(let fields) = parsed, !fields.isEmpty { expected["data"] = parsed }
            #expect(fast == .object(expected))
        }
    }
}
