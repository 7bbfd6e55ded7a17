import Testing

@testable import Baton
@testable import RedisClient

/// The two shapes of the event a commit answers (the commit script): fourteen fields packed into one string joined by NUL
/// bytes, or (when a field holds a NUL) the same fields as an array. The worker must build the same event from both.
struct InlineEventReplyTests {
    static let fields = [
        "1795511716783-0", "1795511716649-0", "report", #"{"webhook":"https://example.com/h"}"#, "0.5", "halfway — ½", "1200",
        "340", "step_committed", "7", "0", "analyse", "1795521178538", #"{"worker":"w-1","fence":3}"#,
    ]
    static let earlier: RedisReply = .array([
        .array([
            .bulkString(Array("1795511716700-0".utf8)),
            .array(
                ["type", "progress", "seq", "6", "branch", "0", "step", "analyse", "at", "1795521178500", "data", "{}"].map {
                    .bulkString(Array($0.utf8))
                }),
        ])
    ])

    @Test func thePackedAndTheArrayShapesGiveTheSameEvent() throws {
        let array = Self.fields.map { RedisReply.bulkString(Array($0.utf8)) } + [Self.earlier]
        let packed = Array(Self.fields.joined(separator: "\u{0}").utf8)
        let fromArray = try #require(RedisTaskStore.inlineEvent(task: "t-1", array))
        let fromPacked = try #require(RedisTaskStore.inlineEvent(task: "t-1", packed: packed, earlier: Self.earlier))
        #expect(fromPacked == fromArray)
        #expect(fromPacked.streamID == "1795511716783-0")
        #expect(fromPacked.cursorBefore == "1795511716649-0")
        #expect(fromPacked.earlier.count == 1)
        #expect(fromPacked.message.routingKey == "report.t-1.step_committed")
        #expect(fromPacked.message.body.contains("halfway — ½"))
    }

    @Test func emptyFieldsKeepTheirPlaces() throws {
        var fields = Self.fields
        fields[3] = ""
        fields[4] = ""
        fields[5] = ""
        let fromArray = try #require(
            RedisTaskStore.inlineEvent(task: "t-2", fields.map { RedisReply.bulkString(Array($0.utf8)) } + [.array([])]))
        let fromPacked = try #require(
            RedisTaskStore.inlineEvent(task: "t-2", packed: Array(fields.joined(separator: "\u{0}").utf8), earlier: .array([])))
        #expect(fromPacked == fromArray)
        #expect(fromPacked.webhook == false)
        #expect(fromPacked.earlier.isEmpty)
    }

    @Test func aPackedReplyWithTheWrongFieldCountIsNoEvent() {
        let short = Array(Self.fields.dropLast().joined(separator: "\u{0}").utf8)
        #expect(RedisTaskStore.inlineEvent(task: "t-3", packed: short, earlier: nil) == nil)
        let long = Array((Self.fields + ["extra"]).joined(separator: "\u{0}").utf8)
        #expect(RedisTaskStore.inlineEvent(task: "t-3", packed: long, earlier: nil) == nil)
    }
}
